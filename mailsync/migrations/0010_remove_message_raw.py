from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("mailsync", "0009_message_raw_to_blob_store"),
    ]

    operations = [
        migrations.RemoveField(model_name="message", name="raw"),
    ]

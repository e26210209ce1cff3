from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("mailsync", "0007_sender_image_allowance"),
    ]

    operations = [
        migrations.AddField(
            model_name="message",
            name="raw_sha256",
            field=models.CharField(blank=True, default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.AlterField(
            model_name="message",
            name="raw",
            field=models.BinaryField(editable=False, null=True),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(fields=["raw_sha256"], name="message_raw_sha256_idx"),
        ),
    ]

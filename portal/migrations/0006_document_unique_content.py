"""One document per client and content, step 2 (see 0005): the database keeps it so."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0005_document_merge_duplicates"),
    ]

    operations = [
        migrations.AddConstraint(
            model_name="document",
            constraint=models.UniqueConstraint(
                fields=("client", "sha256"), name="document_unique_content"
            ),
        ),
    ]

"""One document per client and content, step 1: merge the duplicates two concurrent syncs
(or two uploads of one file) left. Step 2 (0006) makes the pair unique; it is a migration of
its own because PostgreSQL cannot alter a table in the transaction that deleted rows other
tables still had deferred foreign key checks for.

Each set of duplicates keeps its oldest document (lowest id, the one the portal already
reused). Every row pointing at a newer duplicate, in any app (mail attachments, ...), is
pointed at the kept one before the duplicate is deleted, so nothing cascades and no link is
lost. The duplicates' files stay in storage: deleting files cannot be rolled back with the
migration, and an operator can remove unreferenced files later.
"""

from django.db import migrations
from django.db.models import Count, Min


def merge_duplicates(apps, schema_editor):
    Document = apps.get_model("portal", "Document")
    # Foreign keys to Document from every app in the migration state (the portal knows none
    # of them by name: it depends on no other app).
    pointers = [
        (model, field.name)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if field.is_relation
        and field.related_model is not None
        and field.related_model._meta.label_lower == "portal.document"
    ]
    groups = (
        Document.objects.values("client_id", "sha256")
        .annotate(n=Count("pk"), keep=Min("pk"))
        .filter(n__gt=1)
        .order_by()
    )
    for group in groups.iterator():
        duplicates = list(
            Document.objects.filter(client_id=group["client_id"], sha256=group["sha256"])
            .exclude(pk=group["keep"])
            .values_list("pk", flat=True)
        )
        for model, name in pointers:
            model._base_manager.filter(**{f"{name}__in": duplicates}).update(
                **{name: group["keep"]}
            )
        Document.objects.filter(pk__in=duplicates).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0004_firm_sending_domain_verified"),
    ]

    operations = [
        migrations.RunPython(merge_duplicates, migrations.RunPython.noop, elidable=True),
    ]

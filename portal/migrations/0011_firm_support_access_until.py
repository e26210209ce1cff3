from django.db import migrations, models
from django.db.models import Max
from django.utils import timezone


def from_active_grants(apps, schema_editor):
    """Firms that let support in today show the owners' banner from the first page."""
    grant_model = apps.get_model("accounts", "SupportGrant")
    firm_model = apps.get_model("portal", "Firm")
    active = (
        grant_model.objects.filter(revoked_at=None, expires_at__gt=timezone.now())
        .values("firm_id")
        .annotate(until=Max("expires_at"))
    )
    for row in active:
        firm_model.objects.filter(pk=row["firm_id"]).update(support_access_until=row["until"])


class Migration(migrations.Migration):
    dependencies = [
        ("portal", "0010_client_billing_address_and_tax_id"),
        ("accounts", "0005_audit_support_reads_and_sign_out"),
    ]

    operations = [
        migrations.AddField(
            model_name="firm",
            name="support_access_until",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.RunPython(from_active_grants, migrations.RunPython.noop),
    ]

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TroubleshootingConfig(AppConfig):
    name = "troubleshooting"
    verbose_name = _("Troubleshooting")

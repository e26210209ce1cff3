import time

from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _

# When this process loaded Django: the status page says "starting" for a while after it.
STARTED_AT = time.time()


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = _("Practice")

    def ready(self) -> None:
        import email_validator
        from django.conf import settings

        # email-validator refuses special-use domains (.test, .local, …). A deployment on a
        # private mail domain, and the test suite on .test, can allow some by name.
        for name in settings.ADDRESS_ALLOWED_SPECIAL_DOMAINS:
            if name in email_validator.SPECIAL_USE_DOMAIN_NAMES:
                email_validator.SPECIAL_USE_DOMAIN_NAMES.remove(name)

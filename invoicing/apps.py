from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class InvoicingConfig(AppConfig):
    name = "invoicing"
    verbose_name = _("Invoicing")

    def ready(self) -> None:
        from anymail.signals import tracking

        # Celery autodiscovers only `tasks.py`; importing the events task module here
        # registers its tasks in every process that loads Django, workers included.
        from invoicing import simulator, tasks_events  # noqa: F401
        from invoicing.webhooks import tracking_received

        tracking.connect(tracking_received, dispatch_uid="invoicing.tracking_received")

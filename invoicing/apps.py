from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class InvoicingConfig(AppConfig):
    name = "invoicing"
    verbose_name = _("Invoicing")

    def ready(self) -> None:
        from anymail.signals import tracking

        # Celery autodiscovers only `invoicing/tasks.py`; importing the delivery task modules
        # here registers their tasks in every process that loads Django, workers included.
        from invoicing.delivery import simulator, tasks  # noqa: F401
        from invoicing.delivery.webhooks import tracking_received

        tracking.connect(tracking_received, dispatch_uid="invoicing.tracking_received")

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def portal(request: HttpRequest) -> dict[str, object]:
    return {
        "current_firm": getattr(request, "firm", None),
        "member_role": getattr(request, "member_role", None),
        # The local outbox, alone or with the mail simulator around it.
        "outbox_enabled": settings.EMAIL_BACKEND
        in ("portal.mail_outbox.OutboxBackend", settings.SIMULATOR_BACKEND),
    }

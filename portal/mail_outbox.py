"""An email backend that keeps mail in the database so it can be read in the browser.

The embedded (development) default: nothing leaves the machine, and the accountant can still
open every invitation, verification and invoice email the portal "sent". A message is tied to
the firm named in its X-Portal-Firm header (set by the portal's own mail builders) and to the
user it was addressed to, which is what decides who may read it.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib.auth import get_user_model
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage

from portal.models import OutboxEmail

FIRM_HEADER = "X-Portal-Firm"


class OutboxBackend(BaseEmailBackend):
    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        user_model = get_user_model()
        sent = 0
        for message in email_messages:
            recipients = message.recipients()
            if not recipients:
                continue
            firm_id = message.extra_headers.get(FIRM_HEADER)
            users = {u.email.lower(): u for u in user_model.objects.filter(email__in=recipients)}
            raw = message.message().as_bytes()
            for recipient in recipients:
                OutboxEmail.objects.create(
                    firm_id=int(firm_id) if firm_id and str(firm_id).isdigit() else None,
                    recipient_user=users.get(recipient.lower()),
                    subject=str(message.subject)[:998],
                    from_email=str(message.from_email)[:998],
                    recipients=recipient,
                    raw=raw,
                )
            sent += 1
        return sent

"""An email backend that keeps mail in the database so it can be read in the browser.

The embedded (development) default: nothing leaves the machine, and the firm's owners can
still read the invitation and invoice emails the portal "sent". A message is tied to the firm
named in its X-Portal-Firm header (set by the portal's own mail builders) and to the user it
was addressed to, which is what decides who may read it. Links that are credentials by
themselves (invitations, Pay Now) are masked when shown (`mask_links`): whoever reads the
outbox must not be able to join the firm or pay as the client.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache

from django.contrib.auth import get_user_model
from django.core.mail.backends.base import BaseEmailBackend
from django.core.mail.message import EmailMessage
from django.urls import reverse
from django.utils.translation import gettext as _

from portal.models import OutboxEmail

FIRM_HEADER = "X-Portal-Firm"


class OutboxBackend(BaseEmailBackend):
    def send_messages(self, email_messages: Sequence[EmailMessage]) -> int:
        sent = 0
        for message in email_messages:
            recipients = message.recipients()
            if not recipients:
                continue
            firm_id = message.extra_headers.get(FIRM_HEADER)
            outbox_keep(
                firm_id=int(firm_id) if firm_id and str(firm_id).isdigit() else None,
                subject=str(message.subject),
                from_email=str(message.from_email),
                recipients=recipients,
                raw=message.message().as_bytes(),
            )
            sent += 1
        return sent


def outbox_keep(
    *, firm_id: int | None, subject: str, from_email: str, recipients: Sequence[str], raw: bytes
) -> None:
    """Keep one email in the outbox, an entry per recipient, each readable by the firm's
    owners and by the recipient's own user, if they have one."""
    users = {u.email.lower(): u for u in get_user_model().objects.filter(email__in=recipients)}
    for recipient in recipients:
        OutboxEmail.objects.create(
            firm_id=firm_id,
            recipient_user=users.get(recipient.lower()),
            subject=subject[:998],
            from_email=from_email[:998],
            recipients=recipient,
            raw=raw,
        )


# URL names whose one argument is a token that works as a credential on its own.
_TOKEN_LINKS = {
    "accounts:invitation_accept": "invitation",
    "invoicing:pay": "pay",
}


@cache
def _token_link_patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    marker = "TOKENMARKER"
    patterns = []
    for name, kind in _TOKEN_LINKS.items():
        prefix = reverse(name, args=[marker]).partition(marker)[0]
        # The whole link: optional scheme and host, the route up to the token, the token and
        # whatever follows it (/checkout/, /new-link/), up to whitespace, a quote or a bracket.
        patterns.append(
            (
                re.compile(r"(?:https?://[^\s\"'<>/]+)?" + re.escape(prefix) + r"[^\s\"'<>]+"),
                kind,
            )
        )
    return tuple(patterns)


def mask_links(text: str) -> str:
    """`text` with every invitation and Pay Now link replaced by a note that one was there."""
    labels = {"invitation": _("[invitation link hidden]"), "pay": _("[Pay Now link hidden]")}
    for pattern, kind in _token_link_patterns():
        text = pattern.sub(labels[kind], text)
    return text

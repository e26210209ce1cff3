"""The one builder for the portal's own emails.

Each email has three templates, `emails/<name>-subject.txt`, `-body-text.txt` and
`-body-html.html`. Subjects lose their newlines here (also ones hidden in encoded words,
see portal.headers), so no template or value can inject a header.
"""

from __future__ import annotations

from email.utils import parseaddr

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from portal.headers import header_text
from portal.mail_outbox import FIRM_HEADER
from portal.models import Firm


def platform_address() -> str:
    """The platform's own sender address (DEFAULT_FROM_EMAIL without its name)."""
    return parseaddr(settings.DEFAULT_FROM_EMAIL)[1]


def platform_domain() -> str:
    """The platform's mail domain, for the Message-IDs it makes."""
    return platform_address().rpartition("@")[2] or "portal.localhost"


def send_templated(
    name: str, *, to: list[str], context: dict[str, object], firm: Firm | None = None
) -> None:
    subject = render_to_string(f"emails/{name}-subject.txt", context)
    subject = header_text(subject)
    text = render_to_string(f"emails/{name}-body-text.txt", context)
    html = render_to_string(f"emails/{name}-body-html.html", context)
    headers = {FIRM_HEADER: str(firm.pk)} if firm is not None else {}
    message = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=to,
        headers=headers,
    )
    message.attach_alternative(html, "text/html")
    message.send()

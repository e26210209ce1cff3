from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from portal.html_render import allow_frame, framed_html
from portal.mail_outbox import mask_links
from portal.models import OutboxEmail
from portal.tenancy import roles_required


def _visible_outbox(request: HttpRequest) -> QuerySet[OutboxEmail]:
    return OutboxEmail.objects.filter(Q(recipient_user=request.user) | Q(firm=request.firm))


# Owners only ("owner" is accounts.models.Role.OWNER; portal does not import accounts): the
# outbox holds every invitation and invoice email of the firm.
OWNER = "owner"


@roles_required(OWNER)
def outbox_list(request: HttpRequest) -> HttpResponse:
    emails = _visible_outbox(request).defer("raw")[:200]
    return render(request, "portal/outbox/list.html", {"emails": emails})


def _text_body(parsed: EmailMessage) -> str:
    part = parsed.get_body(preferencelist=("plain", "html"))
    return part.get_content() if part is not None else ""


@roles_required(OWNER)
def outbox_detail(request: HttpRequest, email_pk: int) -> HttpResponse:
    email = get_object_or_404(_visible_outbox(request), pk=email_pk)
    parsed = message_from_bytes(bytes(email.raw), policy=policy.default)
    headers = [(name, mask_links(str(value))) for name, value in parsed.items()]
    # The HTML part, as the recipient sees it, in the safe frame (plain text on request),
    # with the same links hidden as in the text.
    framed = framed_html(bytes(email.raw), rewrite=mask_links)
    shown = None if request.GET.get("format") == "text" else framed
    context = {"email": email, "headers": headers, "body": mask_links(_text_body(parsed))}
    context |= {"framed": shown, "has_html": framed is not None}
    return allow_frame(render(request, "portal/outbox/detail.html", context), shown)

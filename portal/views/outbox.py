from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage

from django.contrib.auth.decorators import login_required
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from portal.html_render import allow_frame, framed_html
from portal.models import OutboxEmail


def _visible_outbox(request: HttpRequest) -> QuerySet[OutboxEmail]:
    visible = Q(recipient_user=request.user)
    if getattr(request, "firm", None) is not None:
        visible |= Q(firm=request.firm)
    return OutboxEmail.objects.filter(visible)


@login_required
def outbox_list(request: HttpRequest) -> HttpResponse:
    emails = _visible_outbox(request).defer("raw")[:200]
    return render(request, "portal/outbox/list.html", {"emails": emails})


def _text_body(parsed: EmailMessage) -> str:
    part = parsed.get_body(preferencelist=("plain", "html"))
    return part.get_content() if part is not None else ""


@login_required
def outbox_detail(request: HttpRequest, email_pk: int) -> HttpResponse:
    email = get_object_or_404(_visible_outbox(request), pk=email_pk)
    parsed = message_from_bytes(bytes(email.raw), policy=policy.default)
    # The HTML part, as the recipient sees it, in the safe frame (plain text on request).
    framed = framed_html(bytes(email.raw))
    shown = None if request.GET.get("format") == "text" else framed
    context = {"email": email, "headers": list(parsed.items()), "body": _text_body(parsed)}
    context |= {"framed": shown, "has_html": framed is not None}
    return allow_frame(render(request, "portal/outbox/detail.html", context), shown)

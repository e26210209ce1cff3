"""One synced message on a client's Email tab: as its sender formatted it (in a sandboxed
frame, see portal.html_render), or as plain text; its inline images; "Show images from this
sender". The message is reached through the member's firm and the client: otherwise 404.
"""

from __future__ import annotations

from django.contrib import messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST

from mailsync import display
from mailsync.models import Message, MessageAttachment
from portal.html_render import allow_frame
from portal.models import Client
from portal.tenancy import get_client_for_member, member_required


def _client_message(
    request: HttpRequest, client_pk: int, message_pk: int, messages: QuerySet[Message]
) -> tuple[Client, Message]:
    """The member's client and one of its messages (from ``messages``), else 404."""
    client = get_client_for_member(request, client_pk)
    message = get_object_or_404(
        messages, pk=message_pk, firm=request.firm, client_links__client=client
    )
    return client, message


@member_required
@require_GET
def message(request: HttpRequest, client_pk: int, message_pk: int) -> HttpResponse:
    client, message = _client_message(
        request, client_pk, message_pk, Message.objects.defer("participants")
    )
    prefix = request.build_absolute_uri(
        reverse("mailsync:message_inline", args=[client.pk, message.pk, "-"])
    ).removesuffix("-/")
    framed = display.message_html(
        client=client,
        message=message,
        inline_url=lambda token: f"{prefix}{token}/",
        inline_prefix=prefix,
    )
    as_text = framed is None or request.GET.get("format") == "text"
    context = {
        "client": client,
        "tab": "email",
        "message": message,
        "framed": None if as_text else framed,
        "has_html": framed is not None,
        "attachments": MessageAttachment.objects.filter(
            message=message, client=client
        ).select_related("document"),
    }
    response = render(request, "mailsync/message.html", context)
    return allow_frame(response, context["framed"])


@member_required
@require_GET
def message_text(request: HttpRequest, client_pk: int, message_pk: int) -> HttpResponse:
    """The message's text alone: what the Email tab shows when a preview is opened (the tab
    does not carry the text of all its messages)."""
    _client, message = _client_message(
        request, client_pk, message_pk, Message.objects.only("pk", "text_body")
    )
    return render(request, "mailsync/_message_text.html", {"message": message})


@member_required
@require_POST
def message_images(request: HttpRequest, client_pk: int, message_pk: int) -> HttpResponse:
    """Show (``show=1``) or stop showing remote images from the message's sender, firm-wide."""
    client, message = _client_message(
        request, client_pk, message_pk, Message.objects.only("pk", "from_address")
    )
    if not message.from_address:
        raise Http404
    if request.POST.get("show") == "1":
        display.sender_images_show(
            firm=request.firm, address=message.from_address, member=request.user
        )
        messages.success(
            request,
            _("Images from %(address)s are shown from now on.") % {"address": message.from_address},
        )
    else:
        display.sender_images_block(firm=request.firm, address=message.from_address)
        messages.success(
            request,
            _("Images from %(address)s are blocked again.") % {"address": message.from_address},
        )
    return redirect("mailsync:message", client.pk, message.pk)


@require_GET
def message_inline(
    request: HttpRequest, client_pk: int, message_pk: int, token: str
) -> HttpResponse:
    """An inline (``cid:``) image of a message, for the frame that shows it.

    The frame's requests carry no session cookie (see mailsync.display), so the signed token
    is what proves a member of the firm opened the message; any other token is a 404.
    """
    found = display.inline_image_for_token(client_pk=client_pk, message_pk=message_pk, token=token)
    if found is None:
        raise Http404
    content, content_type = found
    response = HttpResponse(content, content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=3600"
    return response

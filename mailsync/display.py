"""One synced message as the member reads it: the sender's HTML in a safe frame, its inline
images, and the firm's choice of whose remote images to show.

Inline images are fetched by the sandboxed frame, whose opaque origin makes every request
cross-site: browsers send no SameSite session cookie with them. So the frame gets signed URLs,
minted here only for a member who may read the message (the view checked the firm), naming
the firm, client, message and Content-ID, and valid for `INLINE_IMAGE_MAX_AGE` seconds.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core import signing
from django.db import IntegrityError, transaction

from accounts.models import User
from mailsync.models import ImageSender, Message
from portal.addresses import normalize_address
from portal.html_render import FramedHtml, html_part, inline_image, sanitize
from portal.models import Client, Firm

INLINE_IMAGE_SALT = "mailsync.inline-image"
INLINE_IMAGE_MAX_AGE = 12 * 3600  # a page left open for a working day still shows its images


# --- whose remote images are shown ---------------------------------------------------------


def sender_images_shown(*, firm: Firm, address: str) -> bool:
    if not address:
        return False
    return ImageSender.objects.filter(firm=firm, normalized=normalize_address(address)).exists()


def sender_images_show(*, firm: Firm, address: str, member: User) -> None:
    """Remember to show remote images in mail from ``address`` (idempotent, race-safe)."""
    try:
        with transaction.atomic():
            ImageSender.objects.get_or_create(
                firm=firm, normalized=normalize_address(address), defaults={"allowed_by": member}
            )
    except IntegrityError:
        pass  # a colleague clicked at the same moment: the sender is allowed either way


def sender_images_block(*, firm: Firm, address: str) -> None:
    ImageSender.objects.filter(firm=firm, normalized=normalize_address(address)).delete()


# --- inline images ---------------------------------------------------------------------------


def inline_image_token(*, client: Client, message: Message, content_id: str) -> str:
    return signing.dumps(
        [client.firm_id, client.pk, message.pk, content_id], salt=INLINE_IMAGE_SALT, compress=True
    )


def inline_image_for_token(
    *, client_pk: int, message_pk: int, token: str
) -> tuple[bytes, str] | None:
    """The image a token names, if the token is genuine, fresh, and for this client's message
    in the same firm; None otherwise (the view answers 404)."""
    try:
        firm_pk, token_client, token_message, content_id = signing.loads(
            token, salt=INLINE_IMAGE_SALT, max_age=INLINE_IMAGE_MAX_AGE
        )
    except (signing.BadSignature, TypeError, ValueError):
        return None
    if (token_client, token_message) != (client_pk, message_pk) or not isinstance(content_id, str):
        return None
    message = (
        Message.objects.filter(
            pk=message_pk,
            firm_id=firm_pk,
            client_links__client_id=client_pk,
            client_links__client__firm_id=firm_pk,
        )
        .only("pk", "raw_sha256")
        .first()
    )
    # The raw mail lives in the blob store; the row only names it.
    return inline_image(bytes(message.raw), content_id) if message is not None else None


# --- the message page ------------------------------------------------------------------------


def message_html(
    *,
    client: Client,
    message: Message,
    inline_url: Callable[[str], str],
    inline_prefix: str,
) -> FramedHtml | None:
    """The message's HTML body ready for the frame, or None when it has none.

    ``inline_url`` turns a signed token into the absolute URL of the inline-image view;
    ``inline_prefix`` is that view's URL up to the token (the frame's CSP allows only it).
    """
    part = html_part(bytes(message.raw))
    if part is None:
        return None

    def cid_url(content_id: str) -> str | None:
        if content_id not in part.content_ids:
            return None  # names no image of this message
        return inline_url(inline_image_token(client=client, message=message, content_id=content_id))

    remote = sender_images_shown(firm=client.firm, address=message.from_address)
    safe = sanitize(part.html, inline_url=cid_url, remote_images=remote)
    return FramedHtml.build(safe, inline_prefix=inline_prefix)

"""Which clients a message belongs to, and its attachments as their documents."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from mailsync.models import Message, MessageAttachment, MessageClientLink
from mailsync.parsing import ParsedAttachment
from portal.models import Client, ContactAddress, Document
from portal.services import document_store


@dataclass
class LinkResult:
    links: int = 0
    documents: int = 0


def clients_by_address(*, firm_id: int, addresses: Iterable[str]) -> dict[str, set[int]]:
    """normalised address → ids of the firm's clients with a contact using it (one query)."""
    wanted = {address.lower() for address in addresses if address}
    found: dict[str, set[int]] = defaultdict(set)
    if not wanted:
        return found
    rows = ContactAddress.objects.filter(firm_id=firm_id, normalized__in=wanted).values_list(
        "normalized", "contact__client_id"
    )
    for normalized, client_id in rows:
        found[normalized.lower()].add(client_id)
    return found


def message_client_ids(*, participants: Iterable[str], index: dict[str, set[int]]) -> set[int]:
    ids: set[int] = set()
    for address in participants:
        ids |= index.get(address.lower(), set())
    return ids


def _store_attachment(*, message: Message, client_id: int, attachment: ParsedAttachment) -> bool:
    """Store one attachment for one client; True if a new Document was written."""
    content = attachment.content
    digest = hashlib.sha256(content).hexdigest()
    size = len(content)
    if size > settings.MAILSYNC_MAX_ATTACHMENT_BYTES:
        MessageAttachment.objects.get_or_create(
            message=message,
            client_id=client_id,
            sha256=digest,
            filename=attachment.filename,
            defaults={
                "content_type": attachment.content_type,
                "size": size,
                "skipped_reason": "too_large",
            },
        )
        return False
    # Stored once per client by content, however often it was mailed.
    document = Document.objects.filter(client_id=client_id, sha256=digest).order_by("pk").first()
    created_document = False
    if document is None:
        upload = SimpleUploadedFile(attachment.filename, content, attachment.content_type)
        document = document_store(
            client=Client.objects.only("pk", "firm_id").get(pk=client_id),
            upload=upload,
            source=Document.Source.EMAIL,
        )
        created_document = True
    MessageAttachment.objects.get_or_create(
        message=message,
        client_id=client_id,
        sha256=digest,
        filename=attachment.filename,
        defaults={
            "content_type": attachment.content_type,
            "size": size,
            "document": document,
        },
    )
    return created_document


def message_link(
    *,
    message: Message,
    client_ids: set[int],
    attachments: list[ParsedAttachment],
) -> LinkResult:
    """Link ``message`` to exactly these clients (adding missing links, dropping stale
    ones) and store its attachments for every newly linked client."""
    result = LinkResult()
    existing = set(
        MessageClientLink.objects.filter(message=message).values_list("client_id", flat=True)
    )
    stale = existing - client_ids
    if stale:
        # The client's documents stay: nothing synced is ever lost.
        MessageClientLink.objects.filter(message=message, client_id__in=stale).delete()
    for client_id in sorted(client_ids - existing):
        MessageClientLink.objects.create(message=message, client_id=client_id)
        result.links += 1
        for attachment in attachments:
            if attachment.inline_image:
                continue  # signatures and logos are not client documents
            if _store_attachment(message=message, client_id=client_id, attachment=attachment):
                result.documents += 1
    return result

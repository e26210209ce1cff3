"""Which clients a message belongs to, and its attachments as their documents."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile

from mailsync.models import Message, MessageAttachment, MessageClientLink
from mailsync.parsing import ParsedAttachment
from portal.bulk_insert import rows_insert
from portal.models import Client, ContactAddress, Document
from portal.services import DocumentFile, document_get_or_store, documents_store_bulk


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
    digest = attachment.sha256
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
    # Stored once per client by content, however often (and from however many mailboxes at
    # once) it was mailed.
    document = Document.objects.filter(client_id=client_id, sha256=digest).first()
    created_document = False
    if document is None:
        upload = SimpleUploadedFile(attachment.filename, content, attachment.content_type)
        document, created_document = document_get_or_store(
            client=Client.objects.only("pk", "firm_id").get(pk=client_id),
            upload=upload,
            source=Document.Source.EMAIL,
        )
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
    if message.linked != bool(client_ids):
        message.linked = bool(client_ids)
        Message.objects.filter(pk=message.pk).update(linked=message.linked)
    for client_id in sorted(client_ids - existing):
        MessageClientLink.objects.create(
            message=message, client_id=client_id, message_date=message.date
        )
        result.links += 1
        for attachment in attachments:
            if attachment.inline_image:
                continue  # signatures and logos are not client documents
            if _store_attachment(message=message, client_id=client_id, attachment=attachment):
                result.documents += 1
    return result


@dataclass
class _PendingAttachment:
    message: Message
    client_id: int
    attachment: ParsedAttachment
    digest: str
    size: int


def messages_link_new(
    *,
    firm_id: int,
    items: list[tuple[Message, set[int], list[ParsedAttachment]]],
) -> LinkResult:
    """Link just-created messages to their clients and store their attachments, for a whole
    batch at once (inside the caller's transaction).

    Same outcome as ``message_link`` for each message in turn: a new message has no links
    yet, so there is nothing to look up or drop. Each attachment is hashed once; existing
    documents for the batch's (client, sha256) pairs are read in one query, and a document
    written for one message of the batch is reused by the later ones.

    Messages created with ``linked`` already set (the sync engine knows their clients
    before it stores them) cost nothing more; others are flagged in one UPDATE.
    """
    result = LinkResult()
    links: list[tuple[int, int, datetime | None]] = []  # message, client, message date
    pending: list[_PendingAttachment] = []
    unflagged: list[int] = []
    for message, client_ids, attachments in items:
        if not client_ids:
            continue
        if not message.linked:
            message.linked = True
            unflagged.append(message.pk)
        files = [
            (attachment, attachment.sha256)
            for attachment in attachments
            if not attachment.inline_image  # signatures and logos are not client documents
        ]
        for client_id in sorted(client_ids):
            links.append((message.pk, client_id, message.date))
            for attachment, digest in files:
                pending.append(
                    _PendingAttachment(
                        message, client_id, attachment, digest, len(attachment.content)
                    )
                )
    if unflagged:
        Message.objects.filter(pk__in=unflagged).update(linked=True)
    if links:
        rows_insert(
            MessageClientLink,
            ("message_id", "client_id", "message_date"),
            links,
            ignore_conflicts=True,
        )
        result.links += len(links)
    if not pending:
        return result
    limit = settings.MAILSYNC_MAX_ATTACHMENT_BYTES
    # The batch's documents in one go: existing ones found in one query, new ones written
    # and inserted together (stored once per client by content, the oldest one wins).
    documents, result.documents = documents_store_bulk(
        files=[
            DocumentFile(
                client_id=item.client_id,
                name=item.attachment.filename,
                content=item.attachment.content,
                content_type=item.attachment.content_type,
                sha256=item.digest,
            )
            for item in pending
            if item.size <= limit
        ],
        source=Document.Source.EMAIL,
    )
    rows_to_add: dict[tuple[int, int, str, str], MessageAttachment] = {}
    for item in pending:
        unique = (item.message.pk, item.client_id, item.digest, item.attachment.filename)
        if unique in rows_to_add:
            continue  # the same file twice in one message: the first one stands
        too_large = item.size > limit
        rows_to_add[unique] = MessageAttachment(
            message=item.message,
            client_id=item.client_id,
            sha256=item.digest,
            filename=item.attachment.filename,
            content_type=item.attachment.content_type,
            size=item.size,
            skipped_reason="too_large" if too_large else "",
            document_id=None if too_large else documents[(item.client_id, item.digest)],
        )
    if rows_to_add:
        MessageAttachment.objects.bulk_create(list(rows_to_add.values()), ignore_conflicts=True)
    return result

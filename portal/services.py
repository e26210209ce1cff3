"""Changes to the practice's data. Views, tasks and commands all go through these."""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Iterable
from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db import connection as db
from django.utils import timezone

from portal.addresses import ValidAddress
from portal.blobs import file_durable, files_durable, io_threads
from portal.models import Client, Contact, ContactAddress, Document, Firm, Heartbeat


def client_create(
    *,
    firm: Firm,
    display_name: str,
    kind: str,
    status: str = "active",
    language: str = "",
    billing_address: str = "",
    tax_id: str = "",
) -> Client:
    return Client.objects.create(
        firm=firm,
        display_name=display_name,
        kind=kind,
        status=status,
        language=language,
        billing_address=billing_address,
        tax_id=tax_id,
    )


@transaction.atomic
def contact_create(*, client: Client, name: str, addresses: Iterable[ValidAddress]) -> Contact:
    contact = Contact.objects.create(client=client, name=name)
    contact_addresses_add(contact=contact, addresses=addresses)
    return contact


@transaction.atomic
def contact_addresses_add(*, contact: Contact, addresses: Iterable[ValidAddress]) -> int:
    """Add addresses the contact does not have yet; the first one ever becomes primary."""
    existing = set(contact.addresses.values_list("normalized", flat=True))
    has_primary = contact.addresses.filter(is_primary=True).exists()
    added = 0
    for valid in addresses:
        if valid.normalized in existing:
            continue
        ContactAddress.objects.create(
            firm_id=contact.client.firm_id,
            contact=contact,
            address=valid.address,
            normalized=valid.normalized,
            is_primary=not has_primary,
        )
        existing.add(valid.normalized)
        has_primary = True
        added += 1
    return added


@transaction.atomic
def contact_address_update(
    *, address: ContactAddress, new: ValidAddress, is_primary: bool, receives_invoices: bool
) -> ContactAddress:
    address.address = new.address
    address.normalized = new.normalized
    address.receives_invoices = receives_invoices
    if is_primary and not address.is_primary:
        address.contact.addresses.exclude(pk=address.pk).update(is_primary=False)
    address.is_primary = is_primary or address.is_primary
    address.save()
    return address


@transaction.atomic
def contact_address_remove(*, address: ContactAddress) -> None:
    contact = address.contact
    was_primary = address.is_primary
    address.delete()
    if was_primary:
        successor = contact.addresses.order_by("pk").first()
        if successor:
            successor.is_primary = True
            successor.save(update_fields=["is_primary"])


def document_store(
    *,
    client: Client,
    upload: UploadedFile,
    source: str = Document.Source.UPLOAD,
    uploaded_by: object | None = None,
) -> Document:
    """The client's document with this content: the one it already has, or a new one."""
    document, _created = document_get_or_store(
        client=client, upload=upload, source=source, uploaded_by=uploaded_by
    )
    return document


def document_get_or_store(
    *,
    client: Client,
    upload: UploadedFile,
    source: str = Document.Source.UPLOAD,
    uploaded_by: object | None = None,
) -> tuple[Document, bool]:
    """The client's document with ``upload``'s content, and whether it was stored now.

    A client has each content once (a unique constraint). Two requests or syncs storing the
    same file at once both find none; the second INSERT waits for the first to commit, fails,
    and returns the first one's document (its own file is deleted again).
    """
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    sha256 = digest.hexdigest()
    existing = Document.objects.filter(client=client, sha256=sha256).first()
    if existing is not None:
        return existing, False
    document = _document_new(
        client=client,
        name=upload.name,
        content_type=upload.content_type,
        size=upload.size or 0,
        sha256=sha256,
        source=source,
        uploaded_by=uploaded_by,
    )
    document.file.save(upload.name or "document", upload, save=False)
    # On the disk before its row is committed: a power cut must not leave an empty file.
    file_durable(document.file.storage, document.file.name)
    try:
        with transaction.atomic():
            document.save()
    except IntegrityError:
        document.file.delete(save=False)
        existing = Document.objects.filter(client=client, sha256=sha256).first()
        if existing is None:
            raise  # not the content race (the client is gone, say)
        return existing, False
    return document, True


def _document_new(
    *,
    client: Client,
    name: str | None,
    content_type: str | None,
    size: int,
    sha256: str,
    source: str,
    uploaded_by: object | None = None,
) -> Document:
    """An unsaved Document, its name and content type defaulted and cut to their fields."""
    name = name or "document"
    content_type = content_type or mimetypes.guess_type(name)[0] or ""
    return Document(
        client=client,
        original_name=name[:255],
        content_type=content_type[:127],
        size=size,
        sha256=sha256,
        source=source,
        uploaded_by=uploaded_by,
    )


@dataclass(frozen=True)
class DocumentFile:
    """One file for ``documents_store_bulk``: its content and the sha256 already computed
    by the caller (the mail parser hashes every attachment)."""

    client_id: int
    name: str
    content: bytes
    content_type: str
    sha256: str


def documents_store_bulk(
    *, files: Iterable[DocumentFile], source: str = Document.Source.EMAIL
) -> tuple[dict[tuple[int, str], int], int]:
    """Store each client's files once by content, for many files at once.

    Returns ({(client_id, sha256): document id}, how many documents were created). A file
    whose (client, sha256) already has a document reuses it, as does a repeat within
    ``files`` (the first one's name is kept). Same rows and file naming as
    ``document_store``, with one SELECT for the existing documents, one for the clients and
    one INSERT for all new rows; the files are written first (inside the caller's
    transaction, as ``document_store`` does, a rolled-back batch leaves unreferenced files,
    never rows without files). The caller vouches for ``sha256``.

    Insert-or-get: the INSERT skips rows whose (client, sha256) another transaction stored
    meanwhile (ON CONFLICT DO NOTHING: it waits for that transaction, then skips), and their
    documents are read back (one more SELECT, only then). Rows go in in (client, sha256)
    order, so two batches storing the same files wait for each other in one order and
    cannot deadlock.
    """
    files = list(files)
    if not files:
        return {}, 0
    documents: dict[tuple[int, str], int] = {}
    rows = (
        Document.objects.filter(
            client_id__in={file.client_id for file in files},
            sha256__in={file.sha256 for file in files},
        )
        .order_by("pk")
        .values_list("client_id", "sha256", "pk")
    )
    for client_id, digest, pk in rows:
        documents.setdefault((client_id, digest), pk)  # the oldest document wins
    to_write: dict[tuple[int, str], DocumentFile] = {}
    for file in files:
        key = (file.client_id, file.sha256)
        if key not in documents and key not in to_write:
            to_write[key] = file
    if not to_write:
        return documents, 0
    to_write = dict(sorted(to_write.items()))
    clients = Client.objects.only("pk", "firm_id").in_bulk({key[0] for key in to_write})
    missing = {key[0] for key in to_write} - clients.keys()
    if missing:  # deleted meanwhile: fail before writing any file
        raise Client.DoesNotExist(f"clients {sorted(missing)} do not exist")
    new = [
        _document_new(
            client=clients[client_id],
            name=file.name,
            content_type=file.content_type,
            size=len(file.content),
            sha256=digest,
            source=source,
        )
        for (client_id, digest), file in to_write.items()
    ]

    def write(document: Document, file: DocumentFile) -> None:
        # The model's upload_to names the file (a random name under the firm's folder).
        document.file.save(file.name or "document", ContentFile(file.content), save=False)

    # Each write mostly waits on the file system (a new file, its folder, a lock): a sync's
    # batch writes its files side by side (724 files of a 10k sync: 1.3 s one at a time).
    # Synced before the caller commits the rows naming them: a power cut must not leave a
    # client's document as an empty file.
    with files_durable(Document._meta.get_field("file").storage):
        list(io_threads().map(write, new, to_write.values()))
    inserted = _documents_insert_new(new)
    documents.update(inserted)
    lost = [document for key, document in zip(to_write, new, strict=True) if key not in inserted]
    if lost:
        # Stored by a concurrent transaction first: use its documents, drop our files.
        for document in lost:
            document.file.delete(save=False)
        rows = Document.objects.filter(
            client_id__in={d.client_id for d in lost}, sha256__in={d.sha256 for d in lost}
        ).values_list("client_id", "sha256", "pk")
        for client_id, digest, pk in rows:
            documents.setdefault((client_id, digest), pk)
    return documents, len(inserted)


def _documents_insert_new(new: list[Document]) -> dict[tuple[int, str], int]:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING: {(client_id, sha256): id} of the rows
    that went in. (Django's bulk_create(ignore_conflicts=True) returns no ids.)"""
    fields = [field for field in Document._meta.concrete_fields if not field.primary_key]
    columns = ", ".join(db.ops.quote_name(field.column) for field in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    params = [
        field.get_db_prep_save(field.pre_save(document, add=True), connection=db)
        for document in new
        for field in fields
    ]
    # Only identifiers from the model's meta in the text; every value is a parameter.
    sql = (
        f"INSERT INTO {db.ops.quote_name(Document._meta.db_table)} ({columns}) "  # noqa: S608
        f"VALUES {', '.join([row] * len(new))} ON CONFLICT DO NOTHING "
        "RETURNING id, client_id, sha256"
    )
    with db.cursor() as cursor:
        cursor.execute(sql, params)
        return {(client_id, digest): pk for pk, client_id, digest in cursor.fetchall()}


def heartbeat_record(*, name: str) -> None:
    Heartbeat.objects.update_or_create(name=name, defaults={"last_seen": timezone.now()})

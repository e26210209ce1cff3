"""Changes to the practice's data. Views, tasks and commands all go through these."""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Iterable

from django.core.files.uploadedfile import UploadedFile
from django.db import transaction
from django.utils import timezone

from portal.addresses import ValidAddress
from portal.models import Client, Contact, ContactAddress, Document, Firm, Heartbeat


def client_create(
    *, firm: Firm, display_name: str, kind: str, status: str = "active", language: str = ""
) -> Client:
    return Client.objects.create(
        firm=firm, display_name=display_name, kind=kind, status=status, language=language
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
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    name = upload.name or "document"
    content_type = upload.content_type or mimetypes.guess_type(name)[0] or ""
    document = Document(
        client=client,
        original_name=name[:255],
        content_type=content_type[:127],
        size=upload.size or 0,
        sha256=digest.hexdigest(),
        source=source,
        uploaded_by=uploaded_by,
    )
    document.file.save(name, upload, save=False)
    document.save()
    return document


def heartbeat_record(*, name: str) -> None:
    Heartbeat.objects.update_or_create(name=name, defaults={"last_seen": timezone.now()})

"""Documents stored in bulk (mail attachments): one document per client and content."""

from __future__ import annotations

import hashlib
import os

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db.models import Model

from portal import blobs
from portal.models import Client, Document
from portal.services import DocumentFile, document_store, documents_store_bulk
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db


def _file(client: Client, content: bytes, name: str = "invoice.pdf", content_type: str = ""):
    return DocumentFile(
        client_id=client.pk,
        name=name,
        content=content,
        content_type=content_type,
        sha256=hashlib.sha256(content).hexdigest(),
    )


def test_a_new_file_is_stored_like_an_uploaded_one(firm):
    client = ClientFactory(firm=firm)
    pdf = b"%PDF-1.4 invoice"
    uploaded = document_store(
        client=client,
        upload=SimpleUploadedFile("invoice.pdf", b"%PDF-1.4 other", "application/pdf"),
        source=Document.Source.EMAIL,
    )

    ids, created = documents_store_bulk(files=[_file(client, pdf, content_type="application/pdf")])

    document = Document.objects.get(pk=ids[(client.pk, hashlib.sha256(pdf).hexdigest())])
    assert created == 1
    assert (document.original_name, document.content_type, document.size) == (
        "invoice.pdf",
        "application/pdf",
        len(pdf),
    )
    assert document.source == "email"
    with document.file.open("rb") as stored:
        assert stored.read() == pdf
    # Named as document_store names files: a random name in the firm's folder.
    folder = uploaded.file.name.rsplit("/", 1)[0]
    assert document.file.name.rsplit("/", 1)[0] == folder
    assert "invoice" not in document.file.name


def test_a_missing_content_type_is_guessed_and_long_names_are_cut(firm):
    client = ClientFactory(firm=firm)
    name = "x" * 300 + ".csv"

    ids, _created = documents_store_bulk(files=[_file(client, b"a,b\n", name=name)])

    document = Document.objects.get(pk=next(iter(ids.values())))
    assert document.content_type == "text/csv"
    assert len(document.original_name) == 255


def test_the_same_content_twice_in_one_call_is_stored_once_per_client(firm):
    first, second = ClientFactory(firm=firm), ClientFactory(firm=firm)
    pdf = b"%PDF-1.4 same"

    ids, created = documents_store_bulk(
        files=[
            _file(first, pdf, name="a.pdf"),
            _file(first, pdf, name="b.pdf"),
            _file(second, pdf, name="c.pdf"),
        ]
    )

    assert created == 2
    assert Document.objects.get(client=first).original_name == "a.pdf"
    assert Document.objects.get(client=second).original_name == "c.pdf"
    assert len(set(ids.values())) == 2


def test_content_the_client_already_has_reuses_its_document(firm):
    client = ClientFactory(firm=firm)
    pdf = b"%PDF-1.4 known"
    uploaded = document_store(client=client, upload=SimpleUploadedFile("old.pdf", pdf))
    # Uploading the same content again gives the document the client already has.
    assert document_store(client=client, upload=SimpleUploadedFile("newer.pdf", pdf)) == uploaded

    ids, created = documents_store_bulk(files=[_file(client, pdf, name="new.pdf")])

    assert created == 0
    assert ids == {(client.pk, uploaded.sha256): uploaded.pk}
    assert Document.objects.filter(client=client).count() == 1


def test_a_batch_of_new_documents_takes_a_fixed_number_of_queries(firm, django_assert_num_queries):
    clients = [ClientFactory(firm=firm) for _ in range(3)]
    files = [_file(client, f"doc {n}".encode()) for n in range(4) for client in clients]

    # Existing documents, the clients, one INSERT of all twelve rows.
    with django_assert_num_queries(3):
        _ids, created = documents_store_bulk(files=files)

    assert created == 12


def test_a_deleted_client_fails_the_call(firm):
    client = ClientFactory(firm=firm)
    gone = DocumentFile(
        client_id=client.pk + 1000, name="a", content=b"x", content_type="", sha256="0"
    )

    with pytest.raises(Client.DoesNotExist):
        documents_store_bulk(files=[_file(client, b"y"), gone])


@pytest.mark.skipif(blobs._SYNCFS is None, reason="syncfs(2) is Linux's")
def test_a_disk_that_cannot_sync_the_files_stores_no_document_rows(firm, monkeypatch):
    client = ClientFactory(firm=firm)
    synced: list[int] = []

    def failing(fd: int) -> None:
        synced.append(fd)
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(blobs, "_syncfs", failing)

    with pytest.raises(OSError, match="Input/output error"):
        documents_store_bulk(files=[_file(client, b"%PDF one"), _file(client, b"%PDF two")])

    assert len(synced) == 1  # one sync for the batch's files, before any row
    assert not Document.objects.filter(client=client).exists()


def test_an_uploaded_file_is_on_the_disk_before_its_row_is_saved(firm, monkeypatch):
    client = ClientFactory(firm=firm)
    order: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        order.append("fsync")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(
        Document, "save", lambda self, *a, **k: order.append("row") or Model.save(self, *a, **k)
    )

    document = document_store(client=client, upload=SimpleUploadedFile("a.pdf", b"%PDF a"))

    assert order == ["fsync", "fsync", "row"]  # the file, its folder, then the row
    assert Document.objects.get(pk=document.pk).size == 6

"""One file, one client document, even when two syncs (two mailboxes of a firm, in two
workers) store it at the same moment: threads with their own PostgreSQL connections.

Both transactions look for the client's document before either has committed one, so only
the database can keep them from storing it twice: the unique (client, sha256) constraint,
with the second insert waiting for the first transaction and then taking its document.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection as db_connection
from django.db import transaction
from django.db.migrations.executor import MigrationExecutor

from mailsync.models import MessageAttachment
from portal.models import Client, Document
from portal.services import DocumentFile, document_get_or_store, documents_store_bulk
from tests.db_locks import second_meets_first
from tests.factories import ClientFactory, DocumentFactory
from tests.mailsync.factories import MessageFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(db_connection.vendor != "postgresql", reason="real concurrent writers"),
]

PDF = b"%PDF-1.4 the same statement, mailed twice"


def _file(client: Client, name: str) -> DocumentFile:
    return DocumentFile(
        client_id=client.pk,
        name=name,
        content=PDF,
        content_type="application/pdf",
        sha256=hashlib.sha256(PDF).hexdigest(),
    )


def _store_bulk(client: Client, name: str) -> int:
    ids, _created = documents_store_bulk(files=[_file(client, name)])
    return ids[(client.pk, hashlib.sha256(PDF).hexdigest())]


def _store_one(client: Client, name: str) -> int:
    document, _created = document_get_or_store(
        client=client, upload=SimpleUploadedFile(name, PDF, "application/pdf")
    )
    return document.pk


def _race(store: Callable[[Client, str], int], client: Client) -> list[int]:
    """The first sync stores the file and holds its transaction open until the second one,
    which found no document either, is blocked on the insert; then both commit."""

    def second() -> int:
        with transaction.atomic():
            return store(client, "from-mailbox-b.pdf")

    return list(second_meets_first(lambda: store(client, "from-mailbox-a.pdf"), second))


@pytest.mark.parametrize("store", [_store_bulk, _store_one], ids=["batch", "one by one"])
def test_two_syncs_storing_one_attachment_at_once_make_one_document(firm, store):
    client = ClientFactory(firm=firm)
    storage = Document._meta.get_field("file").storage
    folder = f"documents/{firm.pk}"

    def files_on_disk() -> set[str]:
        return set(storage.listdir(folder)[1]) if storage.exists(folder) else set()

    before = files_on_disk()

    first, second = _race(store, client)

    assert first == second
    document = Document.objects.get(client=client)
    assert document.original_name == "from-mailbox-a.pdf"
    # The second sync's copy of the file was removed again: one file for one document.
    assert files_on_disk() - before == {document.file.name.rsplit("/", 1)[1]}


def test_many_workers_storing_one_attachment_together_make_one_document(firm):
    clients = [ClientFactory(firm=firm) for _ in range(5)]
    for client in clients:
        barrier = threading.Barrier(4)
        ids: list[int] = []

        def store(
            n: int,
            client: Client = client,
            barrier: threading.Barrier = barrier,
            ids: list[int] = ids,
        ) -> None:
            try:
                barrier.wait(timeout=30)
                with transaction.atomic():
                    ids.append(_store_bulk(client, f"copy-{n}.pdf"))
            finally:
                db_connection.close()

        workers = [threading.Thread(target=store, args=(n,)) for n in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)

        assert len(ids) == 4 and len(set(ids)) == 1
        assert Document.objects.filter(client=client).count() == 1


def test_the_migration_merges_existing_duplicates_into_the_oldest(firm):
    executor = MigrationExecutor(db_connection)
    target = ("portal", "0004_firm_sending_domain_verified")
    executor.migrate([target])
    try:
        # Clients as that schema has them (later migrations add columns to the table).
        old_client = executor.loader.project_state(target).apps.get_model("portal", "Client")
        client, other = (
            Client.objects.only("pk", "firm_id").get(
                pk=old_client.objects.create(firm_id=firm.pk, display_name=name).pk
            )
            for name in ("Birch", "Cedar")
        )
        same = "a" * 64
        oldest = DocumentFactory(client=client, sha256=same, original_name="first.pdf")
        newer = DocumentFactory(client=client, sha256=same, original_name="second.pdf")
        elsewhere = DocumentFactory(client=other, sha256=same)
        message = MessageFactory(firm=firm)
        attachment = MessageAttachment.objects.create(
            message=message, client=client, document=newer, filename="second.pdf", sha256=same
        )
    finally:
        executor = MigrationExecutor(db_connection)
        executor.migrate(executor.loader.graph.leaf_nodes())

    assert set(Document.objects.values_list("pk", flat=True)) == {oldest.pk, elsewhere.pk}
    attachment.refresh_from_db()
    assert attachment.document_id == oldest.pk

"""Raw mail (BLOB_STORAGE=s3) and client documents (MEDIA_STORAGE=s3) in S3-compatible
buckets, as several machines share them: the blob store's rules hold there as on the file
system, and documents arrive, download and go as on the disk. Against a loopback S3 server
(tests/servers/s3.py, through tests/mailsync/conftest.py)."""

from __future__ import annotations

import datetime
import html
from collections import Counter

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from mailsync.engine import mailbox_sync
from mailsync.models import Message
from portal.blobs import (
    BlobMissing,
    blob_name,
    blob_put,
    blob_read,
    blob_storage,
    blobs_confirm,
    blobs_put_many,
    blobs_sweep,
    io_threads,
)
from portal.models import Document
from tests.factories import ClientFactory, ContactAddressFactory, ContactFactory
from tests.hostile_html import mime_message
from tests.mailsync.factories import (  # noqa: F401
    MessageClientLinkFactory,
    MessageFactory,
    fernet_key,
)
from tests.mailsync.test_engine import _connect, _mail, _with_attachment
from tests.servers.s3 import requests_during

LATER = datetime.timedelta(days=3)  # past the sweep's grace period


def _sweep_later() -> int:
    """The sweep as it runs days after the blobs were written (S3 keeps its own times)."""
    return blobs_sweep(now=timezone.now() + LATER)


@pytest.mark.django_db
def test_a_synced_message_keeps_its_raw_mail_in_the_bucket(firm, mailbox_user, s3_blob_store):
    raw = _mail("Kept in S3", message_id="s3-kept@c.test")
    mailbox_user.server.append(mailbox_user.name, raw)

    mailbox_sync(_connect(firm, mailbox_user))

    message = Message.objects.get()
    assert s3_blob_store.keys() == [blob_name(message.raw_sha256)]
    assert message.raw.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")


@pytest.mark.django_db
def test_a_message_page_shows_the_html_it_reads_from_the_bucket(owner_client, firm, s3_blob_store):
    client = ClientFactory(firm=firm)
    message = MessageFactory(
        firm=firm, raw=mime_message("<p>Figures <b>attached</b> for Q3</p>"), text_body="Figures"
    )
    MessageClientLinkFactory(message=message, client=client)

    page = owner_client.get(reverse("mailsync:message", args=[client.pk, message.pk]))

    assert page.status_code == 200
    assert "<b>attached</b>" in html.unescape(page.content.decode())
    assert s3_blob_store.keys() == [blob_name(message.raw_sha256)]


@pytest.mark.django_db
def test_the_same_mail_twice_is_one_object_in_the_bucket(firm, s3_blob_store):
    raw = b"Subject: twice\r\n\r\nThe same bytes.\r\n"

    first, second = blob_put(raw), blob_put(raw)

    assert first.sha256 == second.sha256
    assert not first.existed and second.existed
    assert s3_blob_store.keys() == [blob_name(first.sha256)]


@pytest.mark.django_db
def test_a_blob_missing_from_the_bucket_is_reported_as_missing(s3_blob_store):
    with pytest.raises(BlobMissing):
        blob_read("0" * 64)


@pytest.mark.django_db
def test_the_sweep_keeps_a_blob_a_message_names_and_deletes_the_orphan(firm, s3_blob_store):
    named = MessageFactory(firm=firm, raw=b"Subject: named\r\n\r\nStill used.\r\n")
    orphan = blob_put(b"Subject: orphan\r\n\r\nLeft by a crash.\r\n")

    assert blobs_sweep() == 0  # both younger than the grace period
    assert _sweep_later() == 1

    assert s3_blob_store.keys() == [blob_name(named.raw_sha256)]
    assert blob_read(named.raw_sha256).endswith(b"Still used.\r\n")
    with pytest.raises(BlobMissing):
        blob_read(orphan.sha256)


@pytest.mark.django_db
def test_deleting_one_of_two_messages_sharing_a_blob_keeps_it_in_the_bucket(firm, s3_blob_store):
    raw = b"Subject: shared\r\n\r\nThe same bytes twice.\r\n"
    first = MessageFactory(firm=firm, raw=raw)
    second = MessageFactory(firm=firm, raw=raw)

    first.delete()
    _sweep_later()

    assert Message.objects.get(pk=second.pk).raw == raw


@pytest.mark.django_db
def test_a_writer_reusing_an_orphan_the_sweep_deleted_puts_it_back_in_the_bucket(
    firm, s3_blob_store
):
    raw = b"Subject: orphan\r\n\r\nReused after a crash.\r\n"
    blob_put(raw)
    reused = blob_put(raw)  # the writer finds the orphan...
    assert reused.existed
    assert _sweep_later() == 1  # ...which the sweep deletes before the writer commits

    with transaction.atomic():
        blobs_confirm([(reused, raw)])
        message = Message.objects.create(
            firm=firm, key=reused.sha256, thread_key="t", raw_sha256=reused.sha256, size=reused.size
        )

    assert Message.objects.get(pk=message.pk).raw == raw
    assert s3_blob_store.keys() == [blob_name(reused.sha256)]


@pytest.mark.django_db
def test_the_sweep_asks_the_bucket_nothing_about_each_blob_a_message_names(firm, s3_blob_store):
    for n in range(30):
        MessageFactory(firm=firm, raw=f"Subject: kept {n}\r\n\r\nNamed.\r\n".encode())
    orphans = [blob_put(f"Subject: orphan {n}\r\n\r\nLeft.\r\n".encode()) for n in range(2)]

    deleted, sent = requests_during(blob_storage(), _sweep_later)

    assert deleted == 2
    # One page of the listing, then only the orphans: their age again under the lock, and
    # their deletion. Thirty named blobs cost no request each.
    assert sent == Counter(ListObjects=1, HeadObject=2, DeleteObject=2)
    assert len(s3_blob_store.keys()) == 30
    assert not {blob_name(o.sha256) for o in orphans} & set(s3_blob_store.keys())


@pytest.mark.django_db
def test_the_sweep_touches_only_its_own_prefix_of_a_shared_bucket(firm, s3_blob_store, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            **settings.STORAGES["blobs"],
            "OPTIONS": {**settings.STORAGES["blobs"]["OPTIONS"], "location": "portal"},
        },
    }
    orphan = blob_put(b"Subject: orphan\r\n\r\nOurs, unnamed.\r\n")
    foreign = f"other-app/{blob_name('f' * 64)}"
    s3_blob_store.server.client().put_object(Bucket=s3_blob_store.name, Key=foreign, Body=b"x")

    assert _sweep_later() == 1

    assert s3_blob_store.keys() == [foreign]
    with pytest.raises(BlobMissing):
        blob_read(orphan.sha256)


@pytest.mark.django_db
def test_attachments_of_client_mail_become_documents_in_the_bucket(
    firm, mailbox_user, s3_blob_store, s3_document_store
):
    client = ClientFactory(firm=firm)
    ContactAddressFactory(contact=ContactFactory(client=client), address="client@client.test")
    pdf = b"%PDF-1.4 year-end accounts " * 200
    mailbox_user.server.append(
        mailbox_user.name, _with_attachment("Accounts", "s3-doc@c", pdf, "accounts.pdf")
    )

    report = mailbox_sync(_connect(firm, mailbox_user))

    document = Document.objects.get(client=client)
    assert report.documents == 1 and document.original_name == "accounts.pdf"
    assert s3_document_store.keys() == [document.file.name]
    with document.file.open("rb") as stored:
        assert stored.read() == pdf


@pytest.mark.django_db
def test_a_document_uploaded_to_the_bucket_downloads_with_its_name(
    staff_client, firm, s3_document_store
):
    client = ClientFactory(firm=firm)
    upload = SimpleUploadedFile("ledger.csv", b"a,b\n1,2\n", "text/csv")

    staff_client.post(reverse("portal:document_upload", args=[client.pk]), {"file": upload})

    document = Document.objects.get(client=client)
    assert s3_document_store.keys() == [document.file.name]
    response = staff_client.get(reverse("portal:document_download", args=[client.pk, document.pk]))
    assert b"".join(response.streaming_content) == b"a,b\n1,2\n"
    assert 'filename="ledger.csv"' in response["Content-Disposition"]


@pytest.mark.django_db
def test_threads_writing_blobs_share_one_connection_to_the_bucket(s3_blob_store):
    datas = [f"Subject: {n}\r\n\r\nIn parallel.\r\n".encode() for n in range(40)]

    refs = blobs_put_many(datas)  # from the I/O pool's threads
    seen = set()
    for _ in io_threads().map(lambda _n: seen.add(id(blob_storage().connection)), range(16)):
        pass

    assert len(s3_blob_store.keys()) == 40 and not any(ref.existed for ref in refs)
    assert seen == {id(blob_storage().connection)}


def _out_of_reach(settings) -> dict:  # type: ignore[no-untyped-def]
    """The blob store's settings as they were, after pointing it at a closed port."""
    working = settings.STORAGES
    blobs = working["blobs"]
    settings.STORAGES = {
        **working,
        "blobs": {**blobs, "OPTIONS": {**blobs["OPTIONS"], "endpoint_url": "http://127.0.0.1:9"}},
    }
    return working


@pytest.mark.django_db
def test_a_bucket_out_of_reach_delays_the_sync_without_blaming_the_mailbox(
    firm, mailbox_user, s3_blob_store, settings
):
    mailbox_user.server.append(mailbox_user.name, _mail("Later", message_id="later@c.test"))
    connection = _connect(firm, mailbox_user)
    working = _out_of_reach(settings)

    report = mailbox_sync(connection)

    connection.refresh_from_db()
    assert not Message.objects.exists()
    assert (connection.health, connection.problem_code) == ("ok", "")  # nothing for the member
    assert connection.next_attempt_at > timezone.now() + datetime.timedelta(minutes=3)
    assert "blob store" in report.problems[0]

    settings.STORAGES = working
    mailbox_sync(connection)

    assert Message.objects.get().subject == "Later"

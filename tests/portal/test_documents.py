"""Documents: upload to a client, download checked against the member's firm."""

from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from portal.models import Document
from tests.factories import ClientFactory, DocumentFactory


def test_an_uploaded_document_is_stored_with_its_name_and_hash(staff_client, staff, firm):
    client = ClientFactory(firm=firm)
    upload = SimpleUploadedFile("tax return 2025.pdf", b"%PDF-1.7 numbers", "application/pdf")
    staff_client.post(reverse("portal:document_upload", args=[client.pk]), {"file": upload})
    document = Document.objects.get(client=client)
    assert document.original_name == "tax return 2025.pdf"
    assert document.size == 16
    assert document.uploaded_by == staff.user
    assert len(document.sha256) == 64
    assert "tax return 2025.pdf" not in document.file.name


def test_uploading_a_file_the_client_already_has_keeps_one_document(staff_client, firm):
    client = ClientFactory(firm=firm)
    url = reverse("portal:document_upload", args=[client.pk])
    staff_client.post(url, {"file": SimpleUploadedFile("return.pdf", b"%PDF-1.7 same")})

    response = staff_client.post(
        url, {"file": SimpleUploadedFile("return (1).pdf", b"%PDF-1.7 same")}, follow=True
    )

    assert Document.objects.filter(client=client).count() == 1
    assert "This client already has this file, as “return.pdf”." in response.content.decode()


def test_a_document_downloads_with_its_original_name(staff_client, firm):
    client = ClientFactory(firm=firm)
    upload = SimpleUploadedFile("ledger.csv", b"a,b\n1,2\n", "text/csv")
    staff_client.post(reverse("portal:document_upload", args=[client.pk]), {"file": upload})
    document = Document.objects.get()
    response = staff_client.get(reverse("portal:document_download", args=[client.pk, document.pk]))
    assert b"".join(response.streaming_content) == b"a,b\n1,2\n"
    assert 'filename="ledger.csv"' in response["Content-Disposition"]


def test_a_too_large_file_is_refused_with_the_limit(staff_client, firm, settings):
    settings.DOCUMENT_MAX_UPLOAD_BYTES = 10
    client = ClientFactory(firm=firm)
    upload = SimpleUploadedFile("big.bin", b"x" * 11)
    response = staff_client.post(
        reverse("portal:document_upload", args=[client.pk]), {"file": upload}
    )
    assert response.status_code == 400
    assert "the largest file you can upload is 10" in response.content.decode()
    assert not Document.objects.exists()


def test_a_document_of_another_clients_url_is_not_found(staff_client, firm):
    mine = ClientFactory(firm=firm)
    document = DocumentFactory(client=ClientFactory(firm=firm))
    response = staff_client.get(reverse("portal:document_download", args=[mine.pk, document.pk]))
    assert response.status_code == 404


def test_another_firms_document_is_not_found(outsider_client, firm):
    document = DocumentFactory(client=ClientFactory(firm=firm))
    response = outsider_client.get(
        reverse("portal:document_download", args=[document.client.pk, document.pk])
    )
    assert response.status_code == 404

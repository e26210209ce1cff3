"""A synced message as its sender formatted it: the safe frame, inline images, remote images
on request, and plain text one click away."""

from __future__ import annotations

import html
import re
import threading

import pytest
from django.db import connection
from django.urls import reverse

from mailsync.models import ImageSender, MessageClientLink
from tests.factories import ClientFactory, FirmFactory
from tests.hostile_html import PNG, mime_message
from tests.mailsync.factories import MessageClientLinkFactory, MessageFactory

LETTER = (
    "<p>Dear accountant,</p><table><tr><td style='padding:4px'>Balance</td><td>1 234,00</td>"
    "</tr></table><img src='cid:logo@firm.example' alt='logo'>"
    "<img src='https://news.example/pixel.gif' width='1' height='1'>"
)


@pytest.fixture
def client_(firm):
    return ClientFactory(firm=firm, display_name="Birch Bakery")


def _message(firm, client, raw: bytes, *, sender: str = "client@client.test", **fields):
    message = MessageFactory(
        firm=firm, raw=raw, from_address=sender, text_body="Plain text version", **fields
    )
    MessageClientLinkFactory(message=message, client=client)
    return message


def _url(client, message, **query) -> str:
    url = reverse("mailsync:message", args=[client.pk, message.pk])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def _srcdoc(page: str) -> str:
    found = re.search(r'<iframe class="mail-frame"[^>]* srcdoc="([^"]*)"', page)
    assert found, "no mail frame on the page"
    return html.unescape(found.group(1))


def test_an_html_message_is_shown_formatted_in_a_sandboxed_frame(owner_client, firm, client_):
    message = _message(firm, client_, mime_message(LETTER))

    page = owner_client.get(_url(client_, message)).content.decode()

    frame = re.search(r"<iframe[^>]*>", page).group(0)
    assert 'sandbox="allow-popups allow-popups-to-escape-sandbox"' in frame
    assert "allow-scripts" not in frame and "allow-same-origin" not in frame
    srcdoc = _srcdoc(page)
    assert '<td style="padding:4px">Balance</td>' in srcdoc
    assert "default-src 'none'" in html.unescape(srcdoc)  # the meta CSP, escaped in it
    assert "Plain text version" not in page  # one click away, not on the page


def test_plain_text_is_one_click_away(owner_client, firm, client_):
    message = _message(firm, client_, mime_message(LETTER))
    page = owner_client.get(_url(client_, message)).content.decode()
    assert f'href="{_url(client_, message, format="text")}"' in page

    text_page = owner_client.get(_url(client_, message, format="text")).content.decode()

    assert "Plain text version" in text_page and "<iframe" not in text_page
    assert "Show as formatted" in text_page


def test_a_message_without_html_shows_its_text_as_before(owner_client, firm, client_):
    message = _message(firm, client_, b"Subject: x\r\n\r\nPlain text version\r\n")

    page = owner_client.get(_url(client_, message)).content.decode()

    assert "Plain text version" in page
    assert "<iframe" not in page and "Show as formatted" not in page


def test_the_page_allows_the_frames_inline_styles_and_nothing_remote(owner_client, firm, client_):
    message = _message(firm, client_, mime_message(LETTER))

    policy = owner_client.get(_url(client_, message))["Content-Security-Policy"]

    assert "style-src 'self' 'unsafe-inline'" in policy
    assert "script-src 'self'" in policy and "https:" not in policy
    # The Email tab itself carries no frame and keeps the strict policy.
    tab = owner_client.get(reverse("mailsync:client_email", args=[client_.pk]))
    assert "unsafe-inline" not in tab["Content-Security-Policy"]


def test_the_email_tab_links_each_message_to_its_page(owner_client, firm, client_):
    message = _message(firm, client_, mime_message(LETTER))

    tab = owner_client.get(reverse("mailsync:client_email", args=[client_.pk])).content.decode()

    assert f'href="{_url(client_, message)}"' in tab


def test_an_inline_image_is_served_from_the_message_through_its_signed_url(
    owner_client, firm, client_
):
    message = _message(firm, client_, mime_message(LETTER))
    srcdoc = _srcdoc(owner_client.get(_url(client_, message)).content.decode())
    image_url = re.search(r'<img src="(http://testserver[^"]+)" alt="logo">', srcdoc).group(1)

    # The frame's request carries no session (an opaque origin): the URL is the proof.
    from django.test import Client as HttpClient

    response = HttpClient().get(image_url)

    assert response.status_code == 200
    assert response.content == PNG and response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    prefix = reverse("mailsync:message_inline", args=[client_.pk, message.pk, "-"])[:-2]
    assert f"img-src http://testserver{prefix} data:" in html.unescape(srcdoc)


def test_an_inline_image_url_works_for_no_other_message_or_client(owner_client, firm, client_):
    message = _message(firm, client_, mime_message(LETTER))
    other = _message(firm, client_, mime_message(LETTER), key="b" * 64)
    srcdoc = _srcdoc(owner_client.get(_url(client_, message)).content.decode())
    token = re.search(r"/inline/([^/\"]+)/", srcdoc).group(1)
    other_client = ClientFactory(firm=firm)
    MessageClientLinkFactory(message=message, client=other_client)

    def status(client_pk, message_pk, token_):
        url = reverse("mailsync:message_inline", args=[client_pk, message_pk, token_])
        return owner_client.get(url).status_code

    assert status(client_.pk, message.pk, token) == 200
    assert status(client_.pk, other.pk, token) == 404
    assert status(other_client.pk, message.pk, token) == 404
    assert status(client_.pk, message.pk, token[:-2] + "xx") == 404
    MessageClientLink.objects.filter(message=message, client=client_).delete()
    assert status(client_.pk, message.pk, token) == 404  # unlinked since: gone


def test_remote_images_are_blocked_and_counted_by_default(owner_client, firm, client_):
    message = _message(firm, client_, mime_message(LETTER))

    page = owner_client.get(_url(client_, message)).content.decode()

    assert "1 remote image was blocked to protect your privacy." in page
    assert "Show images from this sender" in page
    assert "news.example" not in _srcdoc(page)


def test_show_images_from_this_sender_is_remembered_for_the_firm(
    owner_client, staff_client, firm, client_, owner
):
    message = _message(firm, client_, mime_message(LETTER), sender="Client@Client.test")
    later = _message(firm, client_, mime_message(LETTER), sender="client@client.test", key="c" * 64)

    response = owner_client.post(
        reverse("mailsync:message_images", args=[client_.pk, message.pk]), {"show": "1"}
    )

    assert response.status_code == 302
    assert ImageSender.objects.get().allowed_by == owner.user
    page = staff_client.get(_url(client_, later)).content.decode()  # a colleague, another mail
    assert 'src="https://news.example/pixel.gif"' in _srcdoc(page)
    assert "remote image was blocked" not in page
    assert "Images from client@client.test are shown." in page
    policy = staff_client.get(_url(client_, later))["Content-Security-Policy"]
    assert "img-src 'self' data: https: http:" in policy


def test_blocking_the_sender_again_hides_its_images(owner_client, firm, client_):
    message = _message(firm, client_, mime_message(LETTER))
    ImageSender.objects.create(firm=firm, normalized="client@client.test")

    owner_client.post(reverse("mailsync:message_images", args=[client_.pk, message.pk]))

    assert not ImageSender.objects.exists()
    assert "news.example" not in _srcdoc(owner_client.get(_url(client_, message)).content.decode())


def test_another_firms_allowance_does_not_show_images_here(owner_client, firm, client_):
    ImageSender.objects.create(firm=FirmFactory(), normalized="client@client.test")
    message = _message(firm, client_, mime_message(LETTER))

    page = owner_client.get(_url(client_, message)).content.decode()

    assert "1 remote image was blocked" in page


def test_another_firms_member_finds_neither_the_message_nor_its_images(
    outsider_client, owner_client, firm, client_
):
    message = _message(firm, client_, mime_message(LETTER))

    assert outsider_client.get(_url(client_, message)).status_code == 404
    images = reverse("mailsync:message_images", args=[client_.pk, message.pk])
    assert outsider_client.post(images, {"show": "1"}).status_code == 404
    assert not ImageSender.objects.exists()


QUERIES = 7  # session, user, membership (with firm), client, message, attachments, allowance


def test_the_message_page_query_count_is_pinned(
    owner_client, firm, client_, django_assert_num_queries
):
    message = _message(firm, client_, mime_message(LETTER))
    owner_client.get(_url(client_, message))

    with django_assert_num_queries(QUERIES):
        assert owner_client.get(_url(client_, message)).status_code == 200


def test_an_inline_image_url_expires(owner_client, firm, client_, monkeypatch):
    message = _message(firm, client_, mime_message(LETTER))
    srcdoc = _srcdoc(owner_client.get(_url(client_, message)).content.decode())
    image_url = re.search(r'<img src="http://testserver([^"]+)" alt="logo">', srcdoc).group(1)

    monkeypatch.setattr("mailsync.display.INLINE_IMAGE_MAX_AGE", -1)

    assert owner_client.get(image_url).status_code == 404


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="threads racing need a database server (CI runs PostgreSQL)",
)
@pytest.mark.django_db(transaction=True)
def test_colleagues_allowing_one_sender_at_the_same_moment_both_succeed(owner, staff):
    """get_or_create races on the unique (firm, address): the loser's IntegrityError is the
    outcome it wanted, so neither click fails."""
    from django.db import connection as db_connection

    from mailsync import display

    errors: list[BaseException] = []
    for round_number in range(10):
        address = f"sender{round_number}@client.test"
        barrier = threading.Barrier(4)

        def allow(member, address=address, barrier=barrier):
            try:
                barrier.wait()
                display.sender_images_show(firm=owner.firm, address=address, member=member)
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)
            finally:
                db_connection.close()

        members = [owner.user, staff.user, owner.user, staff.user]
        workers = [threading.Thread(target=allow, args=(m,)) for m in members]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    assert errors == []
    assert ImageSender.objects.filter(firm=owner.firm).count() == 10

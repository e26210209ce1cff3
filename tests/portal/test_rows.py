"""A list's rows are rendered once for what they show, and always show what they hold."""

from __future__ import annotations

import datetime

import pytest
from django.template.loader import render_to_string
from django.test.signals import template_rendered
from django.test.utils import override_settings
from django.urls import reverse
from django.utils import timezone, translation

from mailsync.models import MessageAttachment
from mailsync.selectors import MessageRow
from portal.rows import rendered_row_groups, rendered_rows
from portal.selectors import ClientRow
from tests.factories import ClientFactory, DocumentFactory
from tests.mailsync.factories import MessageClientLinkFactory, MessageFactory

CLIENT_ROW = "portal/clients/_row.html"
MESSAGE_ROW = "mailsync/_message_row.html"


def _client_row(**changes) -> ClientRow:
    fields = {
        "pk": 7,
        "display_name": "Birch & Daughters",
        "kind_label": "Company",
        "status_label": "Active",
        "contact_count": 3,
        "problem_count": 2,
    }
    return ClientRow(**{**fields, **changes})


def _message_row(moment: datetime.datetime) -> MessageRow:
    return MessageRow(
        client_pk=7,
        pk=11,
        sender="Anna Birch",
        date=moment,
        undated=False,
        unreadable=False,
        snippet="The statement you asked for",
        attachments=((None, "scan.tiff"),),
    )


@pytest.fixture
def renders():
    """The names of the templates rendered while the test runs."""
    names: list[str] = []

    def heard(sender, template, context, **kwargs):
        names.append(template.name)

    template_rendered.connect(heard)
    yield names
    template_rendered.disconnect(heard)


def test_a_row_is_rendered_once_for_what_it_shows(renders):
    row = _client_row(display_name="Rendered Once Ltd")

    first = rendered_rows(CLIENT_ROW, [row])
    again = rendered_rows(CLIENT_ROW, [row, row])

    assert again == first * 2
    assert renders.count(CLIENT_ROW) == 1


def test_a_row_that_changed_shows_its_new_text():
    before = rendered_rows(CLIENT_ROW, [_client_row(problem_count=2)])[0]
    after = rendered_rows(CLIENT_ROW, [_client_row(problem_count=0)])[0]

    assert "2 problems" in before
    assert "problem" not in after


@pytest.mark.parametrize("language", ["fi", "pl"])
def test_a_row_reads_in_the_language_it_is_shown_in(language):
    row = _client_row()
    english = rendered_rows(CLIENT_ROW, [row])[0]

    with translation.override(language):
        shown = rendered_rows(CLIENT_ROW, [row])[0]
        expected = render_to_string(CLIENT_ROW, {"row": row})

    assert shown == expected != english


def test_a_row_shows_its_time_in_the_viewers_time_zone():
    row = _message_row(datetime.datetime(2026, 3, 9, 23, 30, tzinfo=datetime.UTC))

    with timezone.override("UTC"):
        in_utc = rendered_rows(MESSAGE_ROW, [row])[0]
    with timezone.override("Europe/Helsinki"):
        in_helsinki = rendered_rows(MESSAGE_ROW, [row])[0]
        expected = render_to_string(MESSAGE_ROW, {"row": row})

    assert in_helsinki == expected != in_utc


def test_with_debug_on_rows_are_rendered_each_time_for_template_edits(renders):
    row = _client_row(display_name="Edited Template Ltd")

    with override_settings(DEBUG=True):
        rendered_rows(CLIENT_ROW, [row])
        rendered_rows(CLIENT_ROW, [row])

    assert renders.count(CLIENT_ROW) == 2


def test_the_email_tab_links_an_attachment_once_it_is_stored(owner_client, firm):
    client = ClientFactory(firm=firm)
    message = MessageFactory(firm=firm, subject="Year-end papers")
    MessageClientLinkFactory(message=message, client=client)
    attachment = MessageAttachment.objects.create(
        message=message, client=client, filename="ledger.pdf", sha256="1" * 64
    )
    tab = reverse("mailsync:client_email", args=[client.pk])
    assert "(too large to store)" in owner_client.get(tab).content.decode()

    attachment.document = DocumentFactory(client=client, original_name="ledger.pdf")
    attachment.save()
    page = owner_client.get(tab).content.decode()

    assert reverse("portal:document_download", args=[client.pk, attachment.document_id]) in page
    assert "(too large to store)" not in page


def test_a_row_holding_a_list_is_still_shown(caplog):
    row = _client_row(display_name=["Birch", "Daughters"])  # a bug in a row's builder

    html = rendered_rows(CLIENT_ROW, [row])[0]

    assert "Birch" in html
    assert "row not kept, unhashable: ClientRow" in caplog.text


def test_rows_rendered_in_groups_come_back_in_their_groups_as_each_alone():
    first, second = _client_row(display_name="Alpha"), _client_row(display_name="Beta")
    grouped = rendered_row_groups(CLIENT_ROW, [[first], [], [second, first]])
    alone = [rendered_rows(CLIENT_ROW, group) for group in ([first], [], [second, first])]
    assert grouped == alone
    assert "Beta" in grouped[2][0] and "Alpha" in grouped[2][1]

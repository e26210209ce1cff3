"""Links to rows by id give what reverse() gives, whatever the ids, prefix or language."""

from __future__ import annotations

import pytest
from django.template import engines
from django.urls import clear_script_prefix, reverse, set_script_prefix
from django.utils import translation

from portal.links import url_id, url_ids


@pytest.mark.parametrize("ids", [(1, 2), (5, 918273645), (123456, 0)])
def test_a_link_by_id_is_the_reversed_url(ids):
    assert url_id("mailsync:message", *ids) == reverse("mailsync:message", args=ids)


def test_a_link_by_id_follows_the_script_prefix():
    url_id("portal:client_detail", 7)  # cached without a prefix first
    set_script_prefix("/portal/")
    try:
        assert url_id("portal:client_detail", 7) == "/portal/clients/7/"
    finally:
        clear_script_prefix()


def test_a_link_by_id_is_the_same_in_every_language():
    with translation.override("fi"):
        expected = reverse("invoicing:invoice_detail", args=[3])
        assert url_id("invoicing:invoice_detail", 3) == expected


def test_links_to_many_ids_are_each_the_reversed_url():
    assert url_ids("portal:client_detail", [3, 41, 7]) == [
        reverse("portal:client_detail", args=[pk]) for pk in (3, 41, 7)
    ]


def test_links_to_many_ids_follow_the_script_prefix():
    url_ids("portal:client_detail", [7])
    set_script_prefix("/portal/")
    try:
        assert url_ids("portal:client_detail", [7]) == ["/portal/clients/7/"]
    finally:
        clear_script_prefix()


def test_a_link_without_ids_follows_the_script_prefix():
    assert url_id("troubleshooting:mark_handled") == reverse("troubleshooting:mark_handled")
    set_script_prefix("/portal/")
    try:
        assert url_id("troubleshooting:mark_handled") == "/portal/problems/handled/"
    finally:
        clear_script_prefix()


def _render(source: str, **context) -> str:
    return engines["django"].from_string("{% load links %}" + source).render(context)


def test_the_url_id_tag_writes_the_link():
    assert _render("{% url_id 'mailsync:reply' 4 9 %}") == reverse("mailsync:reply", args=[4, 9])


def test_clip_keeps_a_text_that_fits():
    assert _render("{{ text|clip:10 }}", text="short") == "short"


def test_clip_cuts_a_long_text_with_an_ellipsis():
    assert _render("{{ text|clip:10 }}", text="a sentence that goes on") == "a sentenc…"


def test_clip_escapes_what_it_keeps():
    assert _render("{{ text|clip:20 }}", text="<b>bold</b>") == "&lt;b&gt;bold&lt;/b&gt;"

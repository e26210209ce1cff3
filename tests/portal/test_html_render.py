"""The sanitiser (nh3) keeps an email's formatting and nothing that runs, loads or escapes.

The browser half (tests/browser/test_safe_html.py) shows the same corpus inert in Chromium,
with and without this sanitiser in front of the frame.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from portal.html_render import (
    ATTRIBUTES,
    TAGS,
    frame_document,
    frame_policy,
    framed_html,
    html_part,
    inline_image,
    sanitize,
)
from tests.hostile_html import CORPUS, PNG, hostile_html, mime_message

INLINE = "https://portal.test/inline/"


def _clean(html: str, *, remote_images: bool = False):
    return sanitize(
        html,
        inline_url=lambda cid: f"{INLINE}{cid}/" if cid == "logo@firm.example" else None,
        remote_images=remote_images,
    )


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {name: value or "" for name, value in attrs}))


def _elements(html: str) -> list[tuple[str, dict[str, str]]]:
    parser = _Elements()
    parser.feed(html)
    return parser.elements


ALLOWED_ATTRIBUTES = ATTRIBUTES["*"] | {"rel", "target"}
REFUSED_IN_STYLE = ("expression", "javascript", "behavior", "binding", "@import", "\\")
REFUSED_PROPERTIES = ("position", "z-index", "top:", "left:", "transform")


@pytest.mark.parametrize("name", list(CORPUS))
def test_a_hostile_case_keeps_no_tag_attribute_or_url_that_runs_or_loads(name):
    cleaned = _clean(CORPUS[name]).html

    for tag, attrs in _elements(cleaned):
        assert tag in TAGS, f"{name}: <{tag}> kept"
        for attribute, value in attrs.items():
            assert attribute in ALLOWED_ATTRIBUTES | ATTRIBUTES.get(tag, set()), (name, attribute)
            if attribute == "href":
                assert re.match(r"^(https?:|mailto:)", value), (name, value)
            if attribute == "src":
                assert value.startswith((INLINE, "data:image/png")), (name, value)
            if attribute == "style":
                lowered = value.lower()
                assert not any(word in lowered for word in REFUSED_IN_STYLE), (name, value)
                assert not any(word in lowered for word in REFUSED_PROPERTIES), (name, value)
    lowered = cleaned.lower()
    for needle in ("<script", "javascript:", "vbscript:", "data:text", "srcset", "formaction"):
        assert needle not in lowered, f"{name}: {needle} kept"


def test_the_whole_corpus_at_once_keeps_the_letter_and_its_table():
    cleaned = _clean(hostile_html()).html

    assert "<p>Dear client, see the statement below.</p>" in cleaned
    assert "<table" in cleaned and "<td" in cleaned and "1 234,00" in cleaned
    assert "padding:4px" in cleaned and "border-collapse:collapse" in cleaned
    assert "hostile" not in cleaned  # the <title> goes with its text


def test_a_cid_image_points_at_the_inline_image_route_and_an_unknown_cid_is_dropped():
    cleaned = _clean('<img src="cid:logo@firm.example"><img src="cid:other@x">').html

    assert cleaned == f'<img src="{INLINE}logo@firm.example/"><img>'


def test_remote_images_are_dropped_and_counted_unless_the_sender_is_allowed():
    html = (
        '<img src="https://news.example/a.png"><img src="HTTP://track.example/p.gif">'
        '<table><tr><td style="background:url(https://news.example/bg.png) #fff">x</td></tr>'
        "</table>"
    )

    blocked = _clean(html)
    shown = _clean(html, remote_images=True)

    assert blocked.blocked_images == 3
    assert "a.png" not in blocked.html and "p.gif" not in blocked.html
    assert shown.blocked_images == 0
    assert 'src="https://news.example/a.png"' in shown.html


def test_links_open_in_a_new_tab_without_referrer_or_opener():
    cleaned = _clean('<a href="https://bank.example/statement">statement</a>').html

    assert cleaned == (
        '<a href="https://bank.example/statement" target="_blank" '
        'rel="noopener noreferrer">statement</a>'
    )


def test_the_frame_document_carries_a_strict_csp_before_any_content():
    document = frame_document(_clean("<p>hi</p>"), inline_prefix=INLINE)

    head = document.split("<body>")[0]
    assert 'http-equiv="Content-Security-Policy"' in head
    assert frame_policy(inline_prefix=INLINE, remote_images=False) == (
        f"default-src 'none'; style-src 'unsafe-inline'; img-src {INLINE} data:; "
        "form-action 'none'; base-uri 'none'"
    )
    assert "https:" in frame_policy(inline_prefix=INLINE, remote_images=True)


def test_the_html_part_and_its_inline_images_are_found_in_the_raw_message():
    raw = mime_message("<p>Hello <b>there</b></p>")

    part = html_part(raw)

    assert part is not None and "<b>there</b>" in part.html
    assert part.content_ids == {"logo@firm.example"}
    assert inline_image(raw, "logo@firm.example") == (PNG, "image/png")
    assert inline_image(raw, "missing@x") is None


def test_a_plain_text_or_unreadable_message_has_no_html_part():
    plain = b"From: a@b.test\r\nSubject: x\r\n\r\nJust text\r\n"

    assert html_part(plain) is None
    assert html_part(b"\x00\xff garbage") is None
    assert framed_html(plain) is None


def test_an_html_part_with_an_unknown_charset_is_still_shown():
    raw = (
        b"From: a@b.test\r\nContent-Type: text/html; charset=x-unknown-charset\r\n\r\n"
        b"<p>Hello</p>\r\n"
    )

    part = html_part(raw)

    assert part is not None and "<p>Hello</p>" in part.html


def test_the_outbox_can_rewrite_the_html_before_it_is_sanitised():
    raw = mime_message('<p><a href="https://portal.test/pay/SECRET/">Pay now</a></p>')

    framed = framed_html(raw, rewrite=lambda html: html.replace("SECRET", "hidden"))

    assert "SECRET" not in framed.srcdoc and "/pay/hidden/" in framed.srcdoc

"""The parser matches multipart boundary lines without compiling a regex per boundary:
every line matches exactly as the stdlib's compiled pattern would."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from mailsync.parsing import _BoundaryLine, _FeedParserRe, message_parse

# RFC 2046 boundary characters, plus regex metacharacters and a backslash that real
# generators do not use but a hostile sender may.
BOUNDARY = st.text(
    alphabet=st.sampled_from("abcXYZ0189'()+_,-./:=? \\[]*^$|{}"), min_size=1, max_size=70
)
TAIL = st.sampled_from(["", "--", " ", "\t", "-", "--  ", "x", "\n", "\r\n", "\r", "--\r\n"])


def stdlib_pattern(boundary: str) -> str:
    # As email.feedparser.FeedParser._parsegen writes it.
    return (
        "(?P<sep>"
        + re.escape("--" + boundary)
        + r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
    )


def groups(match: re.Match[str] | None) -> tuple | None:
    if match is None:
        return None
    return match.group("end"), match.group("ws"), match.group("linesep"), match.end()


@given(BOUNDARY, st.lists(TAIL, min_size=1, max_size=3), st.sampled_from(["", "a", "-"]))
def test_a_boundary_line_matches_as_the_compiled_pattern_does(boundary, tails, prefix):
    pattern = stdlib_pattern(boundary)
    line = prefix + "--" + boundary + "".join(tails)

    fast = _FeedParserRe.compile(pattern)

    assert isinstance(fast, _BoundaryLine)
    assert groups(fast.match(line)) == groups(re.compile(pattern).match(line))


def test_other_patterns_are_compiled_by_re():
    assert _FeedParserRe.compile(r"\r\n|\r|\n").pattern == r"\r\n|\r|\n"


def test_a_multipart_with_metacharacters_in_its_boundary_is_parsed_into_its_parts():
    boundary = "=_(a+b)?*[x]$^|.\\"
    raw = (
        "From: anna@birch.test\r\nSubject: Files\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/mixed; boundary="{boundary.replace(chr(92), chr(92) * 2)}"\r\n'
        "\r\n"
        f"--{boundary}\r\nContent-Type: text/plain\r\n\r\nSee the file.\r\n"
        f"--{boundary}\r\nContent-Type: application/pdf\r\n"
        'Content-Disposition: attachment; filename="q3.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n"
        f"--{boundary}--\r\n"
    ).encode()

    parsed = message_parse(raw)

    assert parsed.text.strip() == "See the file."
    assert [(a.filename, a.content) for a in parsed.attachments] == [("q3.pdf", b"%PDF-1.4")]
    assert parsed.errors == []

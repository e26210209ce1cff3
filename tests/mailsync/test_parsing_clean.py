"""Text stored from mail (`parsing._clean`): raw bytes kept as surrogates are read as
UTF-8 or windows-1252, broken surrogates are replaced, NULs go; text without any of them
is kept as it is, without scanning it for surrogates first."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailsync.parsing import _SURROGATES, _clean, _raw_bytes_text


def _clean_by_scanning(text: str) -> str:
    """The rule as first written: every non-ASCII text scanned for raw-byte surrogates."""
    if not text.isascii():
        text = _SURROGATES.sub(_raw_bytes_text, text)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text.replace("\x00", "")


# Letters of several scripts, NULs, raw bytes as the email package keeps them
# (U+DC80-U+DCFF) and lone surrogates from broken encoded words.
_PIECES = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    st.sampled_from(["\x00", "\udcc3\udca9", "\udce9", "\udc80", "\ud800", "\udfff", "ø"]),
)


@given(st.lists(_PIECES, max_size=12).map("".join))
def test_cleaning_gives_what_scanning_every_text_gave(text):
    assert _clean(text) == _clean_by_scanning(text)


def test_raw_utf8_bytes_are_read_as_utf8():
    raw = "Grüße".encode().decode("ascii", "surrogateescape")
    assert _clean(raw) == "Grüße"


def test_raw_windows_1252_bytes_are_read_as_windows_1252():
    raw = "Café \u2013 5 €".encode("cp1252").decode("ascii", "surrogateescape")
    assert _clean(raw) == "Café \u2013 5 €"


def test_text_without_raw_bytes_is_kept_apart_from_its_nuls():
    assert _clean("Łódź\x00 Ærø") == "Łódź Ærø"

"""A message's snippet is its text's first 300 characters with whitespace runs collapsed,
read from as little of the text as that needs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailsync.parsing import text_snippet


def collapsed(text: str, size: int = 300) -> str:
    return " ".join(text.split())[:size]


def test_snippet_of_a_long_body_is_its_collapsed_start():
    body = "Dear Anna,\n\n   please find the   invoice attached.\n" * 5000

    assert text_snippet(body) == collapsed(body)
    assert len(text_snippet(body)) == 300


def test_snippet_skips_a_long_run_of_blank_lines():
    body = "Hello" + "\n" * 50_000 + "world " * 100

    assert text_snippet(body) == collapsed(body)


def test_snippet_keeps_a_word_that_straddles_the_first_read():
    body = "a" * 1199 + " " + "b" * 2000

    assert text_snippet(body) == collapsed(body)


@given(
    st.text(alphabet=st.sampled_from("ab \n\t\u00a0\u2003é"), max_size=5000),
    st.integers(min_value=1, max_value=400),
)
def test_snippet_equals_collapsing_the_whole_text(text, size):
    assert text_snippet(text, size) == collapsed(text, size)

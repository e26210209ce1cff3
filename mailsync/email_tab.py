"""A client's Email tab as HTML: its threads and its warnings, each part rendered once per
content (portal.rows) from the rows `mailsync.selectors` reads."""

from __future__ import annotations

from django.utils.safestring import SafeString, mark_safe

from mailsync import selectors
from mailsync.selectors import Thread
from portal.models import Client
from portal.rows import rendered_row_groups, rendered_rows


def threads_html(threads: list[Thread]) -> None:
    """Set each thread's ``html``: its heading, its messages, its Reply button."""
    ends = [thread.ends() for thread in threads]
    heads = rendered_rows("mailsync/_thread_head.html", ends)
    feet = rendered_rows("mailsync/_thread_foot.html", ends)
    rows = rendered_row_groups("mailsync/_message_row.html", [t.messages for t in threads])
    for thread, head, html, foot in zip(threads, heads, rows, feet, strict=True):
        thread.html = mark_safe(head + "".join(html) + foot)  # noqa: S308 (rendered by templates)


def failing_html(client: Client) -> list[SafeString]:
    """A warning for each failing mailbox that holds mail of ``client``."""
    return rendered_rows(
        "mailsync/_failing_banner.html",
        [
            selectors.FailingMailbox.of(connection)
            for connection in selectors.failing_mailboxes_of_client(client=client)
        ],
    )

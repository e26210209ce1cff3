"""How many web requests of one process may wait on a member's mail server at once.

"Test account", a sending server's login test and a new sending address's MAIL FROM test
hold their request until the member's server answers: 20-30 s when it does not. A web
worker has few threads (gunicorn.conf.py: 2), so two such waits in one worker would leave
it no thread for anyone's pages, and a few members testing a dead server at the same
moment could stall a whole host. These views take one of
settings.MAIL_SERVER_WAITS_PER_PROCESS slots (1 by default) before they connect, and a
request that finds none free answers at once that the member should try again in a moment.
What the member typed is shown again; nothing is saved. (Sending an email written on the
Email tab never waits in the web request at all: mailsync.written.)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.utils.translation import gettext as _

_lock = threading.Lock()
_slots: threading.BoundedSemaphore | None = None
_size = 0


class MailServerBusy(Exception):
    """Every slot of this process is taken by a request waiting on a mail server."""

    @property
    def message(self) -> str:
        return _(
            "Another check with a mail server is still running on this part of the portal. "
            "Nothing was saved: press the button again in a few seconds."
        )


def _semaphore() -> threading.BoundedSemaphore:
    # Sized from the settings when first used (tests change them), and again if they change.
    global _slots, _size
    size = max(1, int(settings.MAIL_SERVER_WAITS_PER_PROCESS))
    with _lock:
        if _slots is None or size != _size:
            _slots, _size = threading.BoundedSemaphore(size), size
        return _slots


@contextmanager
def mail_server_wait() -> Iterator[None]:
    """Hold one of this process's slots for a request that waits on a mail server; raises
    `MailServerBusy` at once when none is free."""
    slots = _semaphore()
    if not slots.acquire(blocking=False):
        raise MailServerBusy
    try:
        yield
    finally:
        slots.release()

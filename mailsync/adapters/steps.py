"""What the IMAP and POP3 sessions share: knowing which step they are at, and turning any
error raised during a step into a classified SyncError."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

from mailsync.adapters.base import Credentials
from mailsync.errors import SyncError, classify


class StepTracking:
    """Mixin: `self.step` names where the session is, for error messages and problems; as a
    context manager the session opens and logs in, and always closes (even half-opened)."""

    step: str
    _credentials: Credentials
    # Exceptions a step may raise that classify() knows how to read (protocol-specific).
    step_errors: tuple[type[BaseException], ...] = ()

    def _progress(self, step: str) -> None:
        self.step = step

    @contextmanager
    def _step(self, name: str) -> Iterator[None]:
        self.step = name
        try:
            yield
        except SyncError:
            raise
        except self.step_errors as exc:
            # Classify by the step really reached (the connect step moves on to "tls").
            raise classify(exc, step=self.step, secrets=self._credentials.secrets) from exc

    def open(self) -> None:
        raise NotImplementedError

    def login(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.open()
            self.login()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

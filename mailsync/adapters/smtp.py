"""smtplib clients that connect only through the network guard (see mailsync.netguard).

smtplib resolves the host itself inside ``_get_socket``; these classes open the socket from
the `ServerSettings` instead (one checked lookup), and keep TLS verifying the certificate
against the host name. Pure Python: no Django imports.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Callable

from mailsync.adapters.base import ServerSettings

__all__ = ["GuardedSMTP", "GuardedSMTPSSL"]


def _no_progress(step: str) -> None:
    return None


class GuardedSMTP(smtplib.SMTP):
    """``smtplib.SMTP`` for ``server``; call ``connect(server.host, server.port)``."""

    progress: Callable[[str], None] = staticmethod(_no_progress)

    def __init__(self, server: ServerSettings, **kwargs: object) -> None:
        self._server = server
        super().__init__(**kwargs)  # type: ignore[arg-type]
        # STARTTLS (and implicit TLS below) check the certificate against this name.
        self._host = server.host

    def _get_socket(self, host, port, timeout):  # type: ignore[no-untyped-def]
        if host != self._server.host or port != self._server.port:
            raise ValueError("GuardedSMTP connects only to the server it was made for")
        return self._server.open_socket(timeout)


class GuardedSMTPSSL(GuardedSMTP, smtplib.SMTP_SSL):
    """Implicit TLS (port 465) through the guard."""

    def _get_socket(self, host, port, timeout):  # type: ignore[no-untyped-def]
        sock: socket.socket = GuardedSMTP._get_socket(self, host, port, timeout)
        self.progress("smtp_tls")
        try:
            return self.context.wrap_socket(sock, server_hostname=self._server.host)
        except BaseException:
            sock.close()  # smtplib would leak the plain socket
            raise

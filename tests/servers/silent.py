"""A mail server that does not answer: a listener on loopback that accepts connections and
never says a word, as a firewalled or overloaded server does. A client waits for its
greeting until its own timeout, or until the server is closed (it then reads the end of the
stream at once)."""

from __future__ import annotations

import contextlib
import socket
import threading


class SilentServer:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.connected = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _address = self.listener.accept()
            except OSError:
                return  # closed
            self.accepted.append(conn)
            self.connected.set()

    def close(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would leave the
        # socket listening until then.
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self.accepted:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

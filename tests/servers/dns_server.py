"""A small authoritative DNS server on the loopback interface, for tests.

Built on dnslib's server framework; answers over UDP and TCP on 127.0.0.1 and one free
port. Zone data is a dict ``{name: [records]}`` in the shapes of the openspf test suite
(shared/conformance/spf)::

    {
        "example.com": [
            {"A": "192.0.2.1"},
            {"AAAA": "2001:db8::1"},
            {"MX": [10, "mx.example.com"]},
            {"TXT": "v=spf1 mx -all"},           # one character-string
            {"TXT": ["v=spf1 ip4:", "192.0.2.0/24 -all"]},  # several, one record
            {"SPF": "v=spf1 -all"},               # type 99, TXT-shaped
            {"PTR": "host.example.com"},
            {"CNAME": "other.example.com"},
        ],
        "slow.example.com": ["TIMEOUT"],
        "broken.example.com": ["SERVFAIL"],
    }

Unknown names get NXDOMAIN; known names without the asked type get NOERROR and no
records. ``TIMEOUT`` makes the server stay silent, so the client times out, for every
type that has no record listed before it (records listed after it are never served);
``SERVFAIL`` works the same way with a SERVFAIL answer instead of silence. Over TCP a
silent name closes the connection unanswered. Names are matched case-insensitively and
CNAMEs are followed within the zone.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from dnslib import AAAA, CNAME, MX, NS, PTR, QTYPE, RCODE, RR, TXT, A, DNSError, DNSLabel
from dnslib.server import DNSHandler, DNSLogger, DNSServer

__all__ = ["SERVFAIL", "TIMEOUT", "LoopbackDNSServer", "Zone"]

TIMEOUT = "TIMEOUT"
SERVFAIL = "SERVFAIL"

Zone = Mapping[str, Iterable[Any]]

_Key = tuple[bytes, ...]
_Entry = tuple[str, Any]  # (record type or TIMEOUT/SERVFAIL, dnslib rdata or None)
_TTL = 60
_MAX_CNAME_CHAIN = 8


class _NoReply(DNSError):
    """Raised by the resolver so that dnslib's handler sends nothing at all."""


def _labels(name: str) -> tuple[bytes, ...]:
    text = name[:-1] if name.endswith(".") else name
    return tuple(label.encode("utf-8") for label in text.split(".")) if text else ()


def _key(labels: Iterable[bytes]) -> _Key:
    return tuple(label.lower() for label in labels)


def _txt_strings(value: Any) -> list[bytes]:
    strings = [value] if isinstance(value, str | bytes) else list(value)
    chunks: list[bytes] = []
    for item in strings:
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        # A character-string holds at most 255 bytes; longer text becomes several strings.
        chunks.append(data[:255])
        chunks.extend(data[i : i + 255] for i in range(255, len(data), 255))
    # A TXT record with no strings at all is malformed on the wire (dnspython rejects the
    # whole response), so "[]" is served as one empty string: same meaning, parseable.
    return chunks or [b""]


def _rdata(rtype: str, value: Any) -> Any:
    if rtype == "A":
        return A(str(ipaddress.IPv4Address(value)))
    if rtype == "AAAA":
        return AAAA(tuple(ipaddress.IPv6Address(value).packed))
    if rtype == "MX":
        preference, exchange = value.split(None, 1) if isinstance(value, str) else value
        return MX(DNSLabel(_labels(str(exchange))), int(preference))
    if rtype in ("TXT", "SPF"):
        return TXT(_txt_strings(value))
    if rtype == "PTR":
        return PTR(DNSLabel(_labels(value)))
    if rtype == "CNAME":
        return CNAME(DNSLabel(_labels(value)))
    if rtype == "NS":
        return NS(DNSLabel(_labels(value)))
    raise ValueError(f"unsupported record type {rtype!r}")


def _compile(zone: Zone) -> dict[_Key, list[_Entry]]:
    compiled: dict[_Key, list[_Entry]] = {}
    for name, records in zone.items():
        entries = compiled.setdefault(_key(_labels(name)), [])
        for record in records:
            if record in (TIMEOUT, SERVFAIL):
                entries.append((record, None))
                continue
            if not isinstance(record, Mapping) or len(record) != 1:
                raise ValueError(f"{name}: a record is a one-key mapping, not {record!r}")
            ((rtype, value),) = record.items()
            entries.append((rtype.upper(), _rdata(rtype.upper(), value)))
    return compiled


class _ServerFailure(Exception):
    """The zone says this name answers SERVFAIL."""


class _ZoneResolver:
    """dnslib resolver over a compiled zone; the zone reference is swapped atomically."""

    def __init__(self) -> None:
        self.zone: dict[_Key, list[_Entry]] = {}
        self.queries: list[tuple[str, str, str]] = []
        self.errors: list[BaseException] = []
        self._lock = threading.Lock()

    def resolve(self, request: Any, handler: Any) -> Any:
        zone = self.zone
        qname, qtype = request.q.qname, QTYPE[request.q.qtype]
        with self._lock:
            self.queries.append((str(qname).rstrip(".").lower(), qtype, handler.protocol))
        reply = request.reply()
        try:
            self._answer(zone, reply, qname, qtype)
        except _ServerFailure:
            reply = request.reply()
            reply.header.rcode = RCODE.SERVFAIL
        except _NoReply:
            raise
        except Exception as exc:  # a bad zone must not kill the server thread; tests can look
            with self._lock:
                self.errors.append(exc)
            reply = request.reply()
            reply.header.rcode = RCODE.SERVFAIL
        return reply

    def _answer(self, zone: dict[_Key, list[_Entry]], reply: Any, qname: Any, qtype: str) -> None:
        if _key(qname.label) not in zone:
            reply.header.rcode = RCODE.NXDOMAIN
            return
        owner, seen = qname, set()
        for _ in range(_MAX_CNAME_CHAIN):
            key = _key(owner.label)
            if key not in zone or key in seen:
                return  # the alias leaves the zone or loops: the client sees the chain so far
            try:
                records = self._select(zone[key], qtype)
            except (_NoReply, _ServerFailure):
                if not seen:
                    raise
                return  # a misbehaving alias target: serve the chain so far
            seen.add(key)
            for rtype, rdata in records:
                reply.add_answer(RR(owner, getattr(QTYPE, rtype), rdata=rdata, ttl=_TTL))
            if qtype == "CNAME" or not records or records[0][0] != "CNAME":
                return
            owner = records[0][1].label

    @staticmethod
    def _select(entries: list[_Entry], qtype: str) -> list[_Entry]:
        """The records answering ``qtype``, else the name's CNAME.

        TIMEOUT and SERVFAIL apply unless a record of ``qtype`` came before them.
        """
        matching: list[_Entry] = []
        aliases: list[_Entry] = []
        for rtype, rdata in entries:
            if rtype in (TIMEOUT, SERVFAIL):
                if matching:
                    break
                if rtype == TIMEOUT:
                    raise _NoReply(TIMEOUT)
                raise _ServerFailure
            if rtype == qtype or qtype == "ANY":
                matching.append((rtype, rdata))
            elif rtype == "CNAME":
                aliases.append((rtype, rdata))
        return matching or aliases[:1]


class _Handler(DNSHandler):
    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            # The client gave up and closed its socket; there is nobody left to answer.
            return


class LoopbackDNSServer:
    """Authoritative DNS for a test zone on 127.0.0.1, UDP and TCP on the same free port.

    Use as a context manager, or call start()/stop(). ``set_zone`` swaps the zone while the
    server runs; ``queries`` lists (name, type, protocol) of every question received.
    """

    def __init__(self, zone: Zone | None = None, *, host: str = "127.0.0.1", port: int = 0):
        self.host = host
        self._requested_port = port
        self.port = port
        self._resolver = _ZoneResolver()
        self._servers: list[DNSServer] = []
        self._threads: list[threading.Thread] = []
        self.set_zone(zone or {})

    @property
    def queries(self) -> list[tuple[str, str, str]]:
        return self._resolver.queries

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised while answering (each was answered with SERVFAIL)."""
        return self._resolver.errors

    def set_zone(self, zone: Zone) -> None:
        """Serve ``zone`` from now on; raises ValueError for records it cannot serve."""
        self._resolver.zone = _compile(zone)

    def clear_queries(self) -> None:
        del self._resolver.queries[:]

    def start(self) -> LoopbackDNSServer:
        if self._servers:
            return self
        last_error: OSError | None = None
        # UDP picks a free port; TCP may find that port taken by someone else, so retry.
        for _ in range(1 if self._requested_port else 20):
            try:
                self._servers = self._bind()
                break
            except OSError as exc:
                last_error = exc
        else:
            raise OSError(f"no port free for both UDP and TCP on {self.host}") from last_error
        self.port = self._servers[0].server.server_address[1]
        for server in self._servers:
            thread = threading.Thread(
                target=server.server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"loopback-dns-{self.port}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        return self

    def _bind(self) -> list[DNSServer]:
        logger = DNSLogger("-request,-reply,-truncated,-error", prefix=False)
        udp = DNSServer(
            self._resolver,
            address=self.host,
            port=self._requested_port,
            logger=logger,
            handler=_Handler,
        )
        try:
            tcp = DNSServer(
                self._resolver,
                address=self.host,
                port=udp.server.server_address[1],
                tcp=True,
                logger=logger,
                handler=_Handler,
            )
        except OSError:
            udp.server.server_close()
            raise
        return [udp, tcp]

    def stop(self) -> None:
        for server in self._servers:
            server.server.shutdown()
            server.server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers = []
        self._threads = []

    def __enter__(self) -> LoopbackDNSServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

"""Hostile email in real Chromium: no script runs and nothing leaves the page for a remote
host, both with the sanitiser and with the frame alone (the sanitiser bypassed), while the
sender's formatting and inline image still show."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.conf import settings
from django.test import Client as HttpClient
from django.urls import reverse

from portal.html_render import SafeHtml
from tests.browser.conftest import ARGS, CHROMIUM
from tests.factories import ClientFactory
from tests.hostile_html import hostile_html, mime_message
from tests.mailsync.factories import MessageClientLinkFactory, MessageFactory

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


class RemoteSink:
    """Where Chromium's every connection for a host other than the portal ends up.

    The browser resolves every name but localhost to this loopback listener and accepts its
    self-signed certificate, so whatever tried to leave the page is seen here, whatever made
    it (no interception layer to slip past; Playwright's routing does not see requests from
    a sandboxed frame): `requests` holds each HTTP(S) request really sent (answered with a
    1x1 GIF), `connections` the host of every connection, with or without a request.
    """

    def __init__(self, tmp: Path) -> None:
        self.requests: list[str] = []
        self.connections: list[str] = []
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(*_self_signed(tmp))
        self._tls.sni_callback = self._server_name
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _server_name(self, _socket, name, _context) -> None:
        self.connections.append(name or "?")

    def _serve(self) -> None:
        while True:
            try:
                connection, _address = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        scheme = "http"
        try:
            connection.settimeout(3)
            if connection.recv(1, socket.MSG_PEEK) == b"\x16":  # a TLS handshake
                scheme = "https"
                connection = self._tls.wrap_socket(connection, server_side=True)
            head = connection.recv(8192).decode("latin-1")
        except (OSError, ssl.SSLError):
            head = ""
        with connection:
            lines = head.split("\r\n")
            if " HTTP/" not in lines[0]:
                if scheme == "http":
                    self.connections.append("(http, no request)")
                return
            host = next((ln[5:].strip() for ln in lines if ln.lower().startswith("host:")), "")
            if scheme == "http":
                self.connections.append(host)
            self.requests.append(f"{scheme}://{host}{lines[0].split()[1]}")
            connection.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: image/gif\r\nContent-Length: "
                + str(len(_GIF)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + _GIF
            )

    def page_traffic(self) -> tuple[list[str], list[str]]:
        """Requests and connections for hosts an email can name (every one here is
        *.example); the browser's own services (Google sign-in, autofill) are not the page's."""
        requests = [r for r in self.requests if ".example" in r]
        return requests, [c for c in self.connections if c.endswith(".example") or "(" in c]

    def clear(self) -> None:
        self.requests.clear()
        self.connections.clear()

    def close(self) -> None:
        self._server.close()


def _self_signed(tmp: Path) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sink.example")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "sink.pem", tmp / "sink.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


_GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    sink = RemoteSink(tmp_path_factory.mktemp("sink"))
    yield sink
    sink.close()


@pytest.fixture(scope="module")
def sink_browser(browser, sink):
    """Chromium as in conftest, every host but localhost resolved to the sink (whose
    certificate it accepts, so that an HTTPS request, if sent, is seen in full)."""
    rules = f"MAP * 127.0.0.1:{sink.port}, EXCLUDE localhost"
    other = browser.browser_type.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[*ARGS, f"--host-resolver-rules={rules}", "--ignore-certificate-errors"],
    )
    yield other
    other.close()


@pytest.fixture
def mail(owner, firm):
    client = ClientFactory(firm=firm, display_name="Birch Bakery")

    def make(html: str):
        message = MessageFactory(
            firm=firm, raw=mime_message(html), from_address="client@client.test"
        )
        MessageClientLinkFactory(message=message, client=client)
        return reverse("mailsync:message", args=[client.pk, message.pk])

    return make


@pytest.fixture
def open_page(sink_browser, sink, live_server, owner):
    contexts = []

    def open_(path: str):
        http = HttpClient()
        http.force_login(owner.user)
        context = sink_browser.new_context(locale="en-GB")
        contexts.append(context)
        context.add_cookies(
            [
                {
                    "name": settings.SESSION_COOKIE_NAME,
                    "value": http.cookies[settings.SESSION_COOKIE_NAME].value,
                    "url": live_server.url,
                }
            ]
        )
        dialogs: list[str] = []
        page = context.new_page()
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        sink.clear()
        page.goto(live_server.url + path)
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(1500)  # a meta refresh or a late script would have fired
        return page, dialogs

    yield open_
    for context in contexts:
        context.close()


def _mail_frame(page):
    frames = [frame for frame in page.frames if frame.url == "about:srcdoc"]
    assert frames, "the mail frame is missing"
    return frames[0]


def _assert_inert(page, dialogs, sink, path):
    assert dialogs == [], f"a script ran: {dialogs}"
    requests, _connections = sink.page_traffic()
    assert requests == [], f"requests left for a remote host: {requests}"
    assert page.url.endswith(path)  # neither refreshed nor navigated away
    frame = _mail_frame(page)
    assert frame.url == "about:srcdoc"
    assert frame.evaluate("document.title") in ("", "hostile")


def test_the_hostile_corpus_runs_nothing_and_loads_nothing_remote(mail, open_page, sink):
    path = mail(hostile_html())

    page, dialogs = open_page(path)

    _assert_inert(page, dialogs, sink, path)
    assert sink.page_traffic()[1] == []  # not even a connection
    frame = _mail_frame(page)
    assert frame.evaluate("document.querySelectorAll('script, iframe, object, embed').length") == 0
    # The sender's formatting survives the page's CSP, and the inline image loads through its
    # signed URL although the frame's request carries no session.
    assert (
        frame.evaluate("getComputedStyle(document.querySelector('td')).color") == "rgb(200, 0, 0)"
    )
    assert frame.evaluate("document.querySelector('img[alt=logo]').naturalWidth") == 1
    assert page.locator(".images-blocked").is_visible()


def test_the_frame_alone_stops_the_corpus_when_the_sanitiser_is_bypassed(
    mail, open_page, sink, monkeypatch
):
    monkeypatch.setattr(
        "mailsync.display.sanitize",
        lambda html, **_: SafeHtml(html=html, blocked_images=0, remote_images=False),
    )
    path = mail(hostile_html())

    page, dialogs = open_page(path)

    _assert_inert(page, dialogs, sink, path)
    frame = _mail_frame(page)
    assert frame.evaluate("document.querySelectorAll('script').length") > 0  # really unsanitised
    # What the frame alone cannot stop: Chromium opens a connection (DNS, TCP, TLS hello) to
    # a nested <iframe src>'s host before frame-src refuses the navigation, though it sends
    # no request. That host learns the mail was opened; only the sanitiser (which drops
    # every iframe, see the test above) prevents it.
    assert set(sink.page_traffic()[1]) <= {"evil.example"}


def test_show_images_from_this_sender_loads_them_and_still_runs_nothing(mail, open_page, sink):
    path = mail(
        '<p>Newsletter</p><img src="http://news.example/pixel.gif" width="1" height="1">'
        "<script>alert('x')</script>"
    )
    page, dialogs = open_page(path)
    assert sink.page_traffic() == ([], [])
    assert "1 remote image was blocked" in page.locator(".images-blocked").inner_text()

    page.click("text=Show images from this sender")
    page.wait_for_selector("text=Images from client@client.test are shown.")
    page.wait_for_load_state("networkidle")

    assert sink.page_traffic()[0] == ["http://news.example/pixel.gif"]
    assert dialogs == []
    assert _mail_frame(page).evaluate("document.querySelector('img').naturalWidth") == 1

"""A throwaway Dovecot (IMAP + POP3) on loopback for tests, configured as in SERVICES.md.

``DovecotServer(run_dir)`` writes its own config, users file and Maildirs under ``run_dir``
and needs no system users: mail belongs to uid/gid 65534 when running as root, otherwise to
the current user. Optional extras:

* ``tls=True``: a self-signed certificate for 127.0.0.1/localhost (``ca_file``), implicit
  TLS listeners (``imaps_port``, ``pop3s_port``) and STARTTLS on the plain ports.
* ``oauth2=True``: XOAUTH2/OAUTHBEARER through Dovecot's ``oauth2`` passdb, which
  introspects tokens against a tiny HTTP endpoint served by this object
  (``add_oauth_token``).
"""

from __future__ import annotations

import datetime
import imaplib
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

__all__ = ["DovecotServer", "ImapSetup", "free_port"]

HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _wait_for_port(port: int, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _running(pid: int) -> bool:
    """Alive and not a zombie (the daemon's parent is PID 1, which may reap it late)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    state = next((line for line in status.splitlines() if line.startswith("State:")), "")
    return "Z" not in state.split()[1:2]


def _imap_quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class _TokenEndpoint:
    """RFC 7662-style token introspection that Dovecot's oauth2 passdb asks (POST)."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        tokens = self.tokens

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                token = (form.get("token") or [""])[0]
                user = tokens.get(token)
                body = {"active": "true", "username": user} if user else {"active": "false"}
                payload = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{HOST}:{self.server.server_address[1]}/introspect"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class ImapSetup:
    """Setting up and inspecting a test server's mailboxes over plain IMAP, as a mail client
    would. Needs ``host``, ``imap_port`` and ``_passwords`` (user -> password)."""

    host: str
    imap_port: int
    _passwords: dict[str, str]

    def imap_login(self, user: str) -> imaplib.IMAP4:
        """A plain IMAP session as ``user`` for setting up and inspecting test data."""
        client = imaplib.IMAP4(self.host, self.imap_port, timeout=10)
        try:
            client.login(user, self._passwords[user])
        except BaseException:
            client.shutdown()
            raise
        return client

    def append(
        self,
        user: str,
        raw: bytes,
        folder: str = "INBOX",
        *,
        flags: str = "",
        date: datetime.datetime | None = None,
    ) -> int:
        """APPEND one message and return its UID (from the APPENDUID response)."""
        client = self.imap_login(user)
        try:
            when = imaplib.Time2Internaldate(date) if date is not None else None
            typ, data = client.append(
                _imap_quote(folder), f"({flags})" if flags else None, when, raw
            )
            if typ != "OK":
                raise RuntimeError(f"APPEND to {folder} failed: {data!r}")
            # e.g. b'[APPENDUID 1700000000 5] Append completed.'
            code = data[0].decode().split("]")[0]
            return int(code.split()[-1])
        finally:
            client.logout()

    def create_folder(self, user: str, name: str) -> None:
        """Create a folder; ``name`` is the IMAP (modified UTF-7) name, "." the separator."""
        client = self.imap_login(user)
        try:
            typ, data = client.create(_imap_quote(name))
            if typ != "OK":
                raise RuntimeError(f"CREATE {name} failed: {data!r}")
        finally:
            client.logout()


class DovecotServer(ImapSetup):
    """One Dovecot instance; see the module docstring. Use as a context manager or
    call ``start()``/``stop()``."""

    def __init__(self, run_dir: str | os.PathLike[str], *, tls: bool = False, oauth2: bool = False):
        self.run_dir = Path(run_dir)
        self.host = HOST
        self.tls = tls
        self.oauth2 = oauth2
        self.imap_port = free_port()
        self.pop3_port = free_port()
        self.imaps_port = free_port() if tls else 0
        self.pop3s_port = free_port() if tls else 0
        self.config_path = self.run_dir / "dovecot.conf"
        # One passwd-file per user: Dovecot re-reads a passwd-file at most once a second,
        # so users added to one shared file within the same second would not exist yet.
        self.users_dir = self.run_dir / "users.d"
        self.mail_root = self.run_dir / "mail"
        self.log_path = self.run_dir / "dovecot.log"
        # With tls=True: the self-signed certificate (also the CA to trust) and its key, which
        # other loopback test servers (e.g. SMTP) may reuse.
        self.ca_file: str | None = None
        self.key_file: str | None = None
        self._passwords: dict[str, str] = {}
        self._token_endpoint: _TokenEndpoint | None = None
        self._master_pid: int | None = None
        if os.geteuid() == 0:
            # Mail owned by "nobody" so Dovecot never runs mail processes as root.
            self.mail_uid = self.mail_gid = 65534
            self._internal_user = "dovecot"
            self._login_user = "dovenull"
        else:
            self.mail_uid, self.mail_gid = os.getuid(), os.getgid()
            self._internal_user = self._login_user = pwd.getpwuid(os.getuid()).pw_name

    # --- lifecycle -------------------------------------------------------------------------

    @staticmethod
    def _find(name: str) -> str | None:
        # /usr/sbin is often missing from PATH for non-root shells and cron-like runners.
        return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")

    @classmethod
    def available(cls) -> bool:
        return cls._find("dovecot") is not None and cls._find("doveadm") is not None

    def _binary(self, name: str) -> str:
        path = self._find(name)
        if path is None:
            raise FileNotFoundError(
                f"{name} is missing: apt-get install dovecot-imapd dovecot-pop3d"
            )
        return path

    def _write_config(self) -> None:
        run = self.run_dir
        ssl_lines = ["ssl = no"]
        if self.tls:
            cert, key = _self_signed_certificate(run)
            self.ca_file = str(cert)
            self.key_file = str(key)
            ssl_lines = ["ssl = yes", f"ssl_cert = <{cert}", f"ssl_key = <{key}"]
        mechanisms = "plain login"
        oauth_passdb = ""
        if self.oauth2:
            assert self._token_endpoint is not None
            mechanisms += " xoauth2 oauthbearer"
            oauth_conf = run / "oauth2.conf"
            oauth_conf.write_text(
                f"introspection_url = {self._token_endpoint.url}\n"
                "introspection_mode = post\n"
                "username_attribute = username\n"
                "active_attribute = active\n"
                "active_value = true\n"
                "tokeninfo_url = \n"
            )
            oauth_passdb = (
                "passdb {\n"
                "  driver = oauth2\n"
                "  mechanisms = xoauth2 oauthbearer\n"
                f"  args = {oauth_conf}\n"
                "}\n"
            )
        config = "\n".join(
            [
                "protocols = imap pop3",
                f"listen = {HOST}",
                f"base_dir = {run}/run",
                f"state_dir = {run}/state",
                f"log_path = {self.log_path}",
                f"default_internal_user = {self._internal_user}",
                f"default_login_user = {self._login_user}",
                *ssl_lines,
                "disable_plaintext_auth = no",
                f"auth_mechanisms = {mechanisms}",
                f"mail_location = maildir:{self.mail_root}/%u/Maildir",
                # The default namespace, plus one folder LIST marks \Sent (RFC 6154) when a
                # test creates it: a Sent folder known by its flag, not by its name.
                "namespace inbox {",
                "  inbox = yes",
                "  mailbox Gesendet {",
                "    special_use = \\Sent",
                "  }",
                "}",
                "pop3_uidl_format = %08Xu%08Xv",
                # Tests start many short sessions from one address; the default per-IP
                # limit (10) would refuse some of them.
                "mail_max_userip_connections = 200",
                # A refused login answers at once: no fixed delay, and no growing per-IP
                # penalty (anvil) that would make each later failing test slower.
                "auth_failure_delay = 0",
                # No stats process connections: here they only time out (5 s) and hold up
                # the shutdown of every login process.
                "stats_writer_socket_path =",
                "service anvil {",
                "  unix_listener anvil-auth-penalty {",
                "    mode = 0",
                "  }",
                "}",
                "passdb {",
                "  driver = passwd-file",
                "  mechanisms = plain login",
                f"  args = scheme=PLAIN username_format=%u {self.users_dir}/%u",
                "}",
                oauth_passdb,
                "userdb {",
                "  driver = passwd-file",
                f"  args = username_format=%u {self.users_dir}/%u",
                "}",
                "service imap-login {",
                "  inet_listener imap {",
                f"    address = {HOST}",
                f"    port = {self.imap_port}",
                "  }",
                "  inet_listener imaps {",
                f"    address = {HOST}",
                f"    port = {self.imaps_port}",
                "  }",
                "}",
                "service pop3-login {",
                "  inet_listener pop3 {",
                f"    address = {HOST}",
                f"    port = {self.pop3_port}",
                "  }",
                "  inet_listener pop3s {",
                f"    address = {HOST}",
                f"    port = {self.pop3s_port}",
                "  }",
                "}",
                "",
            ]
        )
        self.config_path.write_text(config)

    def start(self, timeout: float = 10.0) -> DovecotServer:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # The mail processes run as mail_uid and must be able to reach their Maildirs.
        self.run_dir.chmod(0o755)
        self.mail_root.mkdir(exist_ok=True)
        os.chown(self.mail_root, self.mail_uid, self.mail_gid)
        self.users_dir.mkdir(exist_ok=True)
        if self.oauth2:
            self._token_endpoint = _TokenEndpoint()
            self._token_endpoint.start()
        self._write_config()
        # The daemon inherits our stdout/stderr: pipes would never reach EOF, so send its
        # startup errors to a file instead of capturing them.
        startup_log = self.run_dir / "startup.log"
        with startup_log.open("wb") as err:
            result = subprocess.run(
                [self._binary("dovecot"), "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                check=False,
                timeout=timeout,
            )
        if result.returncode != 0:
            raise RuntimeError(f"dovecot did not start: {startup_log.read_text().strip()}")
        deadline = time.monotonic() + timeout
        ports = [self.imap_port, self.pop3_port, self.imaps_port, self.pop3s_port]
        for port in ports:
            if port:
                _wait_for_port(port, deadline)
        pid_file = self.run_dir / "run" / "master.pid"
        while not pid_file.exists() or not pid_file.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot wrote no {pid_file}")
            time.sleep(0.01)
        self._master_pid = int(pid_file.read_text().split()[0])
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._master_pid is not None and _running(self._master_pid):
            # SIGTERM to the master we started (what `dovecot stop` sends, but that command
            # also waits for the zombie to be reaped, which PID 1 here does seconds later).
            os.kill(self._master_pid, signal.SIGTERM)
        elif self._master_pid is None and self.config_path.exists():
            subprocess.run(
                [self._binary("dovecot"), "-c", str(self.config_path), "stop"],
                check=False,
                capture_output=True,
                timeout=timeout,
            )
        # Wait until the master has really exited, so the ports are free for what runs next.
        deadline = time.monotonic() + timeout
        while self._master_pid is not None and time.monotonic() < deadline:
            if not _running(self._master_pid):
                self._master_pid = None
                break
            time.sleep(0.02)
        if self._token_endpoint is not None:
            self._token_endpoint.stop()
            self._token_endpoint = None

    def __enter__(self) -> DovecotServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- users -----------------------------------------------------------------------------

    def _write_user(self, name: str) -> None:
        path = self.users_dir / name
        line = (
            f"{name}:{{PLAIN}}{self._passwords[name]}:{self.mail_uid}:{self.mail_gid}::"
            f"{self.mail_root / name}::\n"
        )
        # Replace atomically: Dovecot must never read a half-written file.
        tmp = path.with_suffix(".tmp")
        tmp.write_text(line)
        os.replace(tmp, path)

    def refuse_logins(self, name: str, reason: str) -> None:
        """Refuse this user's logins with `reason` as the server's reply, as providers do
        when they want an app password or another sign-in step (Dovecot's nologin/reason
        extra fields). The reason must be one word: passwd-file splits extra fields on spaces.
        """
        if any(char in reason for char in " :\n"):
            raise ValueError("the reason must be a single word")
        path = self.users_dir / name
        line = path.read_text().rstrip("\n")
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{line}nologin=y reason={reason}\n")
        time.sleep(1.1)  # Dovecot notices a changed passwd-file once a second, by mtime
        os.replace(tmp, path)

    def add_user(self, name: str, password: str) -> None:
        if not name or any(char in name for char in ":/\n") or name.startswith("."):
            raise ValueError(f"unusable user name {name!r}")
        if ":" in password or "\n" in password:
            raise ValueError("passwd-file passwords cannot contain ':' or newlines")
        if name in self._passwords:
            raise ValueError(f"user {name!r} exists already")
        home = self.mail_root / name
        home.mkdir(exist_ok=True)
        os.chown(home, self.mail_uid, self.mail_gid)
        self._passwords[name] = password
        self._write_user(name)

    def set_password(self, name: str, password: str) -> None:
        """Change a password as a mail admin would: the next login with the old one fails.

        Takes up to a second: Dovecot checks a passwd-file for changes (by mtime and size)
        at most once per second, so wait for the next second and make the mtime differ.
        """
        if name not in self._passwords:
            raise KeyError(name)
        path = self.users_dir / name
        old_mtime = int(path.stat().st_mtime)
        self._passwords[name] = password
        self._write_user(name)
        new_mtime = max(old_mtime + 1, int(time.time()))
        os.utime(path, (new_mtime, new_mtime))
        time.sleep(1.02 - time.time() % 1)

    def add_oauth_token(self, user: str, token: str) -> None:
        """Make ``token`` a valid OAuth2 access token for ``user`` (needs ``oauth2=True``)."""
        if self._token_endpoint is None:
            raise RuntimeError("start the server with oauth2=True first")
        self._token_endpoint.tokens[token] = user

    # --- mailbox content -------------------------------------------------------------------

    def flags(self, user: str, uid: int, folder: str = "INBOX") -> set[str]:
        """The flags of one message as a second, independent session sees them."""
        client = self.imap_login(user)
        try:
            client.select(_imap_quote(folder), readonly=True)
            typ, data = client.uid("FETCH", str(uid), "(FLAGS)")
            if typ != "OK" or not data or data[0] is None:
                raise RuntimeError(f"no message with UID {uid} in {folder}")
            flags = imaplib.ParseFlags(data[0])
            return {flag.decode() for flag in flags}
        finally:
            client.logout()

    def set_uidvalidity(self, user: str, folder: str, value: int) -> None:
        """Force a new UIDVALIDITY, as a server does after its index was rebuilt."""
        self.doveadm("mailbox", "update", "--uid-validity", str(value), "-u", user, folder)

    def doveadm(self, *args: str) -> str:
        result = subprocess.run(
            [self._binary("doveadm"), "-c", str(self.config_path), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return result.stdout

    def message_count(self, user: str, folder: str = "INBOX") -> int:
        out = self.doveadm("mailbox", "status", "-u", user, "messages", folder)
        return int(out.strip().split("=")[-1])

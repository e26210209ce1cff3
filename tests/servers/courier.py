"""A throwaway Courier-IMAP 5 and Courier POP3 on loopback, from Debian's own packages.

Debian installs one IMAP server at a time (courier-imap and dovecot-imapd both provide
``imap-server``), so the suite does not install Courier: ``scripts/courier_packages.sh``
downloads its packages and unpacks them into a folder (``PORTAL_COURIER_ROOT``, by default
``/var/cache/portal-tests/courier``). Courier's binaries look for their modules, configuration
and sockets at compiled-in paths (``/usr/lib/courier-authlib``, ``/etc/courier``,
``/run/courier``), so the server runs in a mount namespace of its own (``unshare -m``, root
only) in which the unpacked ``usr`` and ``etc`` are laid over the machine's with overlayfs and
``/run`` is a private tmpfs. Nothing outside the run folder is written.

Users live in Courier's userdb (authdaemond with the ``authuserdb`` module); mail in Maildirs
under ``run_dir/mail``, owned by uid/gid 65534. ``deliver()`` writes a message straight into
``Maildir/new`` as a local delivery agent does, which is what makes Courier's UIDVALIDITY
unstable for clients that only EXAMINE a folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

from tests.servers.dovecot import (
    HOST,
    ImapSetup,
    _imap_quote,
    _self_signed_certificate,
    _wait_for_port,
)
from tests.servers.dovecot import free_port as free_port

__all__ = ["CourierServer", "courier_root"]

MAIL_UID = MAIL_GID = 65534
COURIER_UID = 65533  # the "courier" user the launcher adds inside its namespace
# Courier's own default, plus UTF8=ACCEPT (RFC 6855), which it supports but does not list.
IMAP_CAPABILITY = (
    "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE"
)

_LAUNCHER = r"""#!/bin/sh
# Runs inside `unshare -m`: Courier sees the unpacked packages at its compiled-in paths.
set -e
run=$1; root=$2
mount -t overlay overlay -o "lowerdir=$root/usr:/usr" /usr
mount -t overlay overlay \
  -o "lowerdir=$root/etc:/etc,upperdir=$run/etc-up,workdir=$run/etc-work" /etc
mount -t tmpfs tmpfs /run
mkdir -p /run/courier/authdaemon
# couriertls and the daemons run as the "courier" user, which only this namespace has.
echo "courier:x:65533:65533:Courier:/nonexistent:/usr/sbin/nologin" >>/etc/passwd
echo "courier:x:65533:" >>/etc/group
cp "$run/authdaemonrc" /etc/courier/authdaemonrc
cp "$run/userdb" /etc/courier/userdb
chmod 600 /etc/courier/userdb
/usr/sbin/makeuserdb
/usr/lib/courier/courier-authlib/authdaemond >"$run/authdaemond.log" 2>&1 &
for _ in $(seq 1 200); do [ -S /run/courier/authdaemon/socket ] && break; sleep 0.01; done
set -a
. /etc/courier/imapd
. /etc/courier/imapd-ssl
. "$run/imapd.env"
/usr/sbin/couriertcpd -address=127.0.0.1 -nodnslookup -noidentlookup -maxperip=200 \
  "$IMAP_PORT" /usr/lib/courier/courier/imaplogin /usr/bin/imapd Maildir >"$run/imapd.log" 2>&1 &
. /etc/courier/pop3d
. /etc/courier/pop3d-ssl
. "$run/pop3d.env"
/usr/sbin/couriertcpd -address=127.0.0.1 -nodnslookup -noidentlookup -maxperip=200 \
  "$POP3_PORT" /usr/lib/courier/courier/courierpop3login /usr/lib/courier/courier/courierpop3d \
  Maildir >"$run/pop3d.log" 2>&1 &
echo ready >"$run/ready"
wait
"""


def _session_members(session: int) -> list[int]:
    """Live processes of a session (from /proc), zombies left out."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the command's closing parenthesis: state, ppid, pgrp, session, ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 3 and fields[3] == str(session) and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def courier_root() -> Path:
    """Where ``scripts/courier_packages.sh`` unpacked Courier's packages."""
    return Path(os.environ.get("PORTAL_COURIER_ROOT", "/var/cache/portal-tests/courier"))


class CourierServer(ImapSetup):
    """One Courier IMAP + POP3 pair; STARTTLS on both with a self-signed certificate."""

    def __init__(self, run_dir: str | os.PathLike[str], root: Path | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.root = root or courier_root()
        self.host = HOST
        self.imap_port = free_port()
        self.pop3_port = free_port()
        self.mail_root = self.run_dir / "mail"
        self.ca_file: str | None = None
        self._passwords: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @classmethod
    def missing(cls, root: Path | None = None) -> str | None:
        """Why Courier cannot run here, or None."""
        root = root or courier_root()
        if os.geteuid() != 0:
            return "Courier runs in a mount namespace of its own, which needs root"
        if not (root / "usr/bin/imapd").exists():
            return f"Courier's packages are not unpacked in {root}: run scripts/courier_packages.sh"
        if shutil.which("unshare") is None or shutil.which("nsenter") is None:
            return "unshare/nsenter (util-linux) are missing"
        return None

    def start(self, timeout: float = 15.0) -> CourierServer:
        run = self.run_dir
        run.mkdir(parents=True, exist_ok=True)
        run.chmod(0o755)
        for name in ("etc-up", "etc-work"):
            (run / name).mkdir(exist_ok=True)
        self.mail_root.mkdir(exist_ok=True)
        os.chown(self.mail_root, MAIL_UID, MAIL_GID)
        cert, key = _self_signed_certificate(run)
        self.ca_file = str(cert)
        pem = run / "courier.pem"
        pem.write_bytes(key.read_bytes() + cert.read_bytes())
        pem.chmod(0o600)
        os.chown(pem, COURIER_UID, COURIER_UID)
        (run / "authdaemonrc").write_text(
            'authmodulelist="authuserdb"\ndaemons=2\n'
            "authdaemonvar=/run/courier/authdaemon\nDEBUG_LOGIN=0\n"
            'DEFAULTOPTIONS=""\nLOGGEROPTS=""\n'
        )
        tls = f"TLS_CERTFILE={pem}\nTLS_DHPARAMS=\nTLS_CACHEFILE=\nTLS_VERIFYPEER=NONE\n"
        (run / "imapd.env").write_text(
            f"IMAP_PORT={self.imap_port}\n{tls}IMAPDSTARTTLS=YES\nIMAP_STARTTLS=YES\nIMAP_TLS_REQUIRED=0\n"
            f'IMAP_CAPABILITY="{IMAP_CAPABILITY}"\n'
            f'IMAP_CAPABILITY_TLS="{IMAP_CAPABILITY} AUTH=PLAIN"\n'
            # Tests open many short sessions; Courier's default slows repeated logins.
            "IMAP_IDLE_TIMEOUT=60\nIMAP_ULIMITD=\n"
        )
        (run / "pop3d.env").write_text(
            f"POP3_PORT={self.pop3_port}\n{tls}POP3_STARTTLS=YES\nPOP3_TLS_REQUIRED=0\n"
        )
        self._write_userdb()
        launcher = run / "launch.sh"
        launcher.write_text(_LAUNCHER)
        launcher.chmod(0o755)
        with (run / "launch.log").open("wb") as log:
            self._process = subprocess.Popen(
                [
                    "unshare",
                    "-m",
                    "--propagation",
                    "private",
                    str(launcher),
                    str(run),
                    str(self.root),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not (run / "ready").exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Courier did not start: {(run / 'launch.log').read_text()}")
            time.sleep(0.02)
        _wait_for_port(self.imap_port, deadline)
        _wait_for_port(self.pop3_port, deadline)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._process is None:
            return
        # couriertcpd moves into a process group of its own, so a signal to the launcher's
        # group misses it; everything it started stays in the launcher's session, though.
        session = self._process.pid
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _session_members(session):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout / 2
            while _session_members(session) and time.monotonic() < deadline:
                time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout=timeout)
        self._process = None

    def __enter__(self) -> CourierServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- users -----------------------------------------------------------------------------

    def _write_userdb(self) -> None:
        lines = []
        for name, password in sorted(self._passwords.items()):
            hashed = subprocess.run(
                ["openssl", "passwd", "-6", "-stdin"],
                input=password.encode(),
                capture_output=True,
                check=True,
            ).stdout.decode()
            home = self.mail_root / name
            lines.append(
                f"{name}\tuid={MAIL_UID}|gid={MAIL_GID}|home={home}|mail={home}/Maildir"
                f"|systempw={hashed.strip()}\n"
            )
        (self.run_dir / "userdb").write_text("".join(lines))

    def _reload_users(self) -> None:
        self._write_userdb()
        if self._process is None:
            return
        # The launcher's namespace holds the overlay /etc the daemons read: enter it.
        subprocess.run(
            [
                "nsenter",
                "-t",
                str(self._process.pid),
                "-m",
                "sh",
                "-c",
                f"cp {self.run_dir}/userdb /etc/courier/userdb && /usr/sbin/makeuserdb",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def add_user(self, name: str, password: str) -> None:
        if name in self._passwords:
            raise ValueError(f"user {name!r} exists already")
        maildir = self.mail_root / name / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        for path in (self.mail_root / name, maildir, *(maildir / s for s in ("cur", "new", "tmp"))):
            os.chown(path, MAIL_UID, MAIL_GID)
        self._passwords[name] = password
        self._reload_users()

    def set_password(self, name: str, password: str) -> None:
        """Change a password as a mail admin would: the next login with the old one fails."""
        if name not in self._passwords:
            raise KeyError(name)
        self._passwords[name] = password
        self._reload_users()

    # --- mailbox content -------------------------------------------------------------------

    def deliver(self, user: str, raw: bytes, folder: str = "INBOX") -> Path:
        """Drop a message into the Maildir's ``new/``, as a local delivery agent does."""
        maildir = self.mail_root / user / "Maildir"
        if folder != "INBOX":
            maildir = maildir / ("." + folder.removeprefix("INBOX."))
        name = f"{time.time():.6f}.{uuid.uuid4().hex}.portal-tests"
        tmp = maildir / "tmp" / name
        # Maildir files hold LF line ends; the server adds CR when it sends them.
        tmp.write_bytes(raw.replace(b"\r\n", b"\n"))
        os.chown(tmp, MAIL_UID, MAIL_GID)
        final = maildir / "new" / name
        os.replace(tmp, final)
        return final

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        """UIDVALIDITY as a read-only session sees it now."""
        client = self.imap_login(user)
        try:
            client.select(_imap_quote(folder), readonly=True)
            _, values = client.response("UIDVALIDITY")
            return int(values[0])
        finally:
            client.logout()

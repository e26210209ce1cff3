"""Sending email to clients through a member's own mailbox (or the firm's shared one).

The message goes over the mailbox's SMTP server with the mailbox's own login (password, or
an OAuth2 access token with XOAUTH2 for Gmail and Microsoft 365, refreshed by
`mailsync.oauth`). What was sent is stored at once as the firm's canonical `Message`, linked
to the clients it was addressed to, so it shows on their Email tab without waiting for a
sync; when the provider files a copy in the Sent folder, the next sync of that folder finds
the same Message-ID and only records where it saw it.

Failures are classified by `mailsync.errors.classify` and recorded on the connection the
way the account check records them: a sending-only refusal (send.smtp_auth_disabled) as a
send problem that leaves syncing alone, a refused login as "needs re-authentication".
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import smtplib
import socket
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from mailsync import services
from mailsync.adapters import Credentials, ImapMailbox, ServerSettings
from mailsync.adapters.smtp import GuardedSMTP, GuardedSMTPSSL
from mailsync.crypto import CredentialsUnavailable
from mailsync.engine import message_store
from mailsync.errors import (
    AUTH_FAILED,
    INSUFFICIENT_SCOPE,
    SEND_CODES,
    TWO_FACTOR,
    MissingCapability,
    SyncError,
    classify,
    clean_reply,
)
from mailsync.models import MailboxConnection, Message, OutgoingAddress, OutgoingServer
from mailsync.netguard import guard_from_settings
from mailsync.parsing import message_parse
from mailsync.presets import preset_for_host
from portal.blobs import BlobStoreUnavailable, blob_put
from portal.headers import check_header_text
from portal.models import Client

logger = logging.getLogger(__name__)

__all__ = [
    "SendResult",
    "SmtpSession",
    "email_build",
    "email_send",
    "send_failure_record",
    "sender_check",
    "server_check",
    "smtp_settings_for",
]

Kind = MailboxConnection.Kind

# The submission servers of the OAuth providers (their IMAP host is fixed too, see oauth.py).
OAUTH_SMTP: dict[str, tuple[str, int, str]] = {
    Kind.GMAIL: ("smtp.gmail.com", 465, "ssl"),
    Kind.MICROSOFT: ("smtp.office365.com", 587, "starttls"),
}
# A person waits for the page: never as long as a sync's MAILSYNC_TIMEOUT.
SEND_TIMEOUT = 30.0
# References keeps the thread's root and its latest messages; long threads would otherwise
# grow the header without bound.
MAX_REFERENCES = 20


# --- where a mailbox sends through --------------------------------------------------------


def _server_settings(host: str, port: int, security: str, username: str) -> ServerSettings:
    timeout = min(float(settings.MAILSYNC_TIMEOUT), SEND_TIMEOUT)
    return ServerSettings(
        host,
        port,
        security,  # type: ignore[arg-type]
        username,
        timeout=timeout,
        guard=guard_from_settings(),
    )


def smtp_settings_for(connection: MailboxConnection) -> ServerSettings | None:
    """The SMTP server of ``connection``: the one a member tested and saved, else the
    provider's known one (Gmail, Microsoft, presets), else None (the member must enter it)."""
    try:
        saved: OutgoingServer | None = connection.outgoing_server
    except OutgoingServer.DoesNotExist:
        saved = None
    if saved is not None:
        return _server_settings(saved.host, saved.port, saved.security, connection.username)
    if connection.kind in OAUTH_SMTP:
        host, port, security = OAUTH_SMTP[connection.kind]
        return _server_settings(host, port, security, connection.username)
    preset = preset_for_host(connection.host)
    if preset is not None and preset.smtp_host and preset.smtp_port:
        return _server_settings(
            preset.smtp_host, preset.smtp_port, preset.smtp_security, connection.username
        )
    return None


# --- one SMTP session ---------------------------------------------------------------------


class SmtpSession:
    """Connect, secure and log in to a mailbox's SMTP server; every failure leaves as a
    classified `SyncError` naming the step (smtp_connect, smtp_tls, smtp_login,
    smtp_mail_from, smtp_data).

    Use as a context manager; `send` returns the recipients the server refused, with its
    reply, when it accepted the others.
    """

    def __init__(self, server: ServerSettings, credentials: Credentials) -> None:
        self.server = server
        self.credentials = credentials
        self.step = "smtp_connect"
        self.smtp: smtplib.SMTP | None = None

    def __enter__(self) -> SmtpSession:
        with self._classified():
            self._open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _classified(self) -> _Classifier:
        return _Classifier(self)

    def _open(self) -> None:
        server = self.server
        # Not smtplib's default getfqdn(): a reverse DNS lookup that can stall for seconds.
        local_name = socket.gethostname() or "localhost"
        context = server.ssl_context() if server.security != "none" else None
        if server.security == "ssl":
            self.smtp = GuardedSMTPSSL(
                server, local_hostname=local_name, timeout=server.timeout, context=context
            )
        else:
            self.smtp = GuardedSMTP(server, local_hostname=local_name, timeout=server.timeout)
        code, message = self.smtp.connect(server.host, server.port)
        if code != 220:
            raise smtplib.SMTPConnectError(code, message)
        self.smtp.ehlo_or_helo_if_needed()
        if server.security == "starttls":
            self.step = "smtp_tls"
            if not self.smtp.has_extn("starttls"):
                raise MissingCapability("STARTTLS", "the SMTP server does not offer STARTTLS")
            self.smtp.starttls(context=context)
            self.smtp.ehlo()
        self.step = "smtp_login"
        if self.credentials.access_token is not None:
            initial = self.credentials.xoauth2(server.username).decode()
            # On refusal the server sends a JSON challenge; an empty reply ends the exchange.
            self.smtp.auth(
                "XOAUTH2",
                lambda challenge=None: initial if challenge is None else "",
                initial_response_ok=True,
            )
        else:
            assert self.credentials.password is not None
            self.smtp.login(server.username, self.credentials.password)

    def check_sender(self, address: str) -> None:
        """MAIL FROM ``address``, then RSET: the server says whether this login may send
        as it, and nothing is sent."""
        assert self.smtp is not None
        with self._classified():
            self.step = "smtp_mail_from"
            code, reply = self.smtp.mail(address)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, address)
            self.smtp.rset()

    def send(self, from_address: str, recipients: list[str], raw: bytes) -> dict[str, str]:
        """Send ``raw``; the refused recipients (address → server reply) if some were
        accepted. Raises `SyncError`, or `RecipientsRefused` when every one was refused."""
        assert self.smtp is not None
        with self._classified():
            self.step = "smtp_data"
            try:
                refused = self.smtp.sendmail(from_address, recipients, raw)
            except smtplib.SMTPSenderRefused:
                self.step = "smtp_mail_from"
                raise
            except smtplib.SMTPRecipientsRefused as exc:
                raise RecipientsRefused(_replies(exc.recipients, self.credentials)) from exc
        return _replies(refused, self.credentials)

    def close(self) -> None:
        if self.smtp is None:
            return
        with suppress(smtplib.SMTPException, OSError):
            self.smtp.quit()
        self.smtp.close()
        self.smtp = None


class _Classifier:
    """Turn whatever smtplib/ssl/socket raise inside a session step into a `SyncError`."""

    def __init__(self, session: SmtpSession) -> None:
        self.session = session

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> bool:
        if exc is None or isinstance(exc, SyncError | RecipientsRefused):
            return False
        if isinstance(
            exc, smtplib.SMTPException | OSError | EOFError | ValueError | MissingCapability
        ):
            self.session.close()
            raise classify(
                exc, step=self.session.step, secrets=self.session.credentials.secrets
            ) from exc
        return False


class RecipientsRefused(Exception):
    """The server refused every recipient (address → its reply); nothing was sent."""

    def __init__(self, refused: dict[str, str]) -> None:
        self.refused = refused
        super().__init__("; ".join(f"{k}: {v}" for k, v in refused.items()))


def _replies(refused: dict, credentials: Credentials) -> dict[str, str]:
    return {
        address: clean_reply(f"{code} {clean_reply(reply)}", credentials.secrets)
        for address, (code, reply) in refused.items()
    }


def _credentials(connection: MailboxConnection) -> Credentials:
    """The mailbox's login (refreshing an OAuth access token that is about to expire).
    Raises `SyncError` (e.g. a revoked grant) or `CredentialsUnavailable`."""
    if not connection.secret:
        raise SyncError(AUTH_FAILED, transient=False, detail="no stored credentials", step="")
    return services.connection_credentials(connection)


def _with_secret(connection: MailboxConnection) -> MailboxConnection:
    # Pages load connections without their (large, encrypted) secret.
    return MailboxConnection.objects.select_related("outgoing_server").get(pk=connection.pk)


# --- checks run from the settings page ----------------------------------------------------


class ServerNotAllowed(Exception):
    """The sending server cannot be set this way; ``message`` says why, for the member."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def server_check(
    *, connection: MailboxConnection, host: str, port: int, security: str, password: str = ""
) -> None:
    """Log in to this SMTP server with the mailbox's login and save it as the mailbox's
    sending server. Raises `SyncError` (nothing saved) if the login does not succeed, and
    `ServerNotAllowed` before anything is sent anywhere when the stored login may not go there.

    The stored login must never be handed to a host nobody vouched for: anyone who can open
    this page (a hijacked session, another owner of the shared mailbox) could otherwise point
    it at their own server and collect the password or an OAuth access token. OAuth mailboxes
    send only through their provider's server; password mailboxes need the password typed.
    """
    if connection.kind in OAUTH_SMTP:
        raise ServerNotAllowed(
            _("This mailbox sends through its provider's own server, which cannot be changed.")
        )
    connection = _with_secret(connection)
    credentials = _credentials(connection)
    if credentials.password is None or not hmac.compare_digest(
        password.encode(), credentials.password.encode()
    ):
        raise ServerNotAllowed(
            _(
                "Type the mailbox's password to confirm this server: the portal sends the "
                "mailbox's login only to a server its owner confirmed."
            )
        )
    server = _server_settings(host, port, security, connection.username)
    with SmtpSession(server, credentials):
        pass
    OutgoingServer.objects.update_or_create(
        connection=connection,
        defaults={"host": host, "port": port, "security": security, "checked_at": timezone.now()},
    )
    # The login worked: a recorded "sending is switched off" is over.
    services.connection_send_problem_clear(connection=connection)


def sender_check(*, connection: MailboxConnection, address: str) -> None:
    """Ask the mailbox's SMTP server whether its login may send as ``address`` (MAIL FROM,
    then RSET: no message is sent). Raises `SyncError` with the server's refusal."""
    connection = _with_secret(connection)
    server = smtp_settings_for(connection)
    if server is None:
        raise NoSendingServer(connection)
    with SmtpSession(server, _credentials(connection)) as session:
        session.check_sender(address)


class NoSendingServer(Exception):
    """The mailbox's SMTP server is not known (a custom server nobody entered yet)."""

    def __init__(self, connection: MailboxConnection) -> None:
        self.connection = connection
        super().__init__(f"no SMTP server known for mailbox {connection.pk}")


# --- building and sending a message -------------------------------------------------------


def _reply_headers(reply_to: Message | None) -> tuple[str, str]:
    """In-Reply-To and References for a reply to ``reply_to`` (RFC 5322 §3.6.4)."""
    if reply_to is None or not reply_to.message_id:
        return "", ""
    earlier = reply_to.references.split()
    if len(earlier) >= MAX_REFERENCES:
        earlier = earlier[:1] + earlier[-(MAX_REFERENCES - 2) :]
    references = " ".join(f"<{ref}>" for ref in [*earlier, reply_to.message_id])
    return f"<{reply_to.message_id}>", references


def email_build(
    *,
    sender: OutgoingAddress,
    recipients: list[str],
    subject: str,
    body: str,
    reply_to: Message | None = None,
) -> EmailMessage:
    """The message as it will be sent. Raises `HeaderTextError` for a subject or name with
    a line break, typed or hidden in an encoded word (policy.default decodes those when a
    header is set, and some Python releases then write the break out: header injection)."""
    check_header_text(subject)
    check_header_text(sender.display_name)
    message = EmailMessage(policy=policy.default)
    local, _, domain = sender.address.rpartition("@")
    message["From"] = Address(sender.display_name, local, domain)
    message["To"] = [Address(addr_spec=address) for address in recipients]
    message["Subject"] = subject
    message["Date"] = format_datetime(timezone.now())
    message["Message-ID"] = make_msgid(domain=domain)
    in_reply_to, references = _reply_headers(reply_to)
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = references
    message.set_content(body)
    return message


@dataclass
class SendResult:
    message: Message | None = None
    error: SyncError | None = None
    # Recipients the server refused: address → its reply.
    refused: dict[str, str] = field(default_factory=dict)
    no_server: bool = False
    credentials_unavailable: bool = False
    # The member's Sent folder the portal filed a copy in ("" when the provider files its
    # own copy, or filing failed: the email was sent all the same).
    sent_folder: str = ""
    # Sent, but the portal's own copy could not be stored (the blob store failed).
    not_kept: bool = False

    @property
    def ok(self) -> bool:
        """The email went out (whether or not the portal could keep its copy)."""
        return self.message is not None or self.not_kept


def send_failure_record(*, connection: MailboxConnection, error: SyncError) -> None:
    """Keep a failed send's cause on the connection so the member and troubleshooting see it.

    A sending-only refusal (send.smtp_auth_disabled) is stored as the account check stores
    it (``services._send_problem``): the mailbox keeps syncing. A refused login or grant
    means the stored credentials are no good: the connection needs re-authentication.
    Anything else (a network hiccup, a refused alias) is only shown to the sender.
    """
    if error.code in SEND_CODES:
        current = (
            MailboxConnection.objects.filter(pk=connection.pk)
            .values("problem_code", "problem_first_seen")
            .get()
        )
        if current["problem_code"] and current["problem_code"] not in SEND_CODES:
            return  # a sync problem is already shown for this mailbox; do not hide it
        since = current["problem_first_seen"] if current["problem_code"] == error.code else None
        MailboxConnection.objects.filter(pk=connection.pk).update(
            **services._send_problem(error, since=since)
        )
    elif error.code in (AUTH_FAILED, TWO_FACTOR, INSUFFICIENT_SCOPE):
        services.connection_record_failure(connection=connection, error=error)


def _store_sent(*, firm_id: int, raw: bytes) -> Message:
    """The sent message as the firm's canonical Message, linked to every client it was
    addressed to. Keyed like synced mail (by Message-ID), so a later sync of the Sent
    folder finds it and stores no second copy."""
    blob = blob_put(raw)  # before the row names it: a crash leaves an orphan, not a hole
    with transaction.atomic():
        message, _linked = message_store(
            firm_id=firm_id, parsed=message_parse(raw), raw=raw, blob=blob
        )
    return message


def email_send(
    *,
    member: User,
    client: Client,
    sender: OutgoingAddress,
    recipients: Iterable[str],
    subject: str,
    body: str,
    reply_to: Message | None = None,
) -> SendResult:
    """Send one email from ``sender`` to ``recipients`` (already validated addresses of the
    client's contacts) and store it on the client. Never raises for mail problems: they
    come back in the result (and are recorded on the connection, see
    `send_failure_record`), so the form can be shown again with nothing lost."""
    recipients = list(dict.fromkeys(recipients))
    connection = _with_secret(sender.connection)
    server = smtp_settings_for(connection)
    if server is None:
        return SendResult(no_server=True)
    email = email_build(
        sender=sender, recipients=recipients, subject=subject, body=body, reply_to=reply_to
    )
    raw = email.as_bytes(policy=policy.SMTP)
    try:
        credentials = _credentials(connection)
        with SmtpSession(server, credentials) as session:
            # Logged in: sending is allowed again, whatever was recorded before.
            services.connection_send_problem_clear(connection=connection)
            refused = session.send(sender.address, recipients, raw)
    except SyncError as error:
        send_failure_record(connection=connection, error=error)
        logger.info(
            "send from mailbox %s by user %s failed: %s at %s",
            connection.pk,
            member.pk,
            error.code,
            error.step,
        )
        return SendResult(error=error)
    except RecipientsRefused as exc:
        return SendResult(refused=exc.refused)
    except CredentialsUnavailable:
        logger.error("mailbox %s: stored credentials cannot be decrypted", connection.pk)
        return SendResult(credentials_unavailable=True)
    logger.info(
        "user %s sent a message to client %s from mailbox %s", member.pk, client.pk, connection.pk
    )
    try:
        message = _store_sent(firm_id=client.firm_id, raw=raw)
    except BlobStoreUnavailable as exc:
        # The email is out: failing now would only invite the member to send it again.
        logger.error("message sent by user %s to client %s not kept: %s", member.pk, client.pk, exc)
        message = None
    return SendResult(
        message=message,
        refused=refused,
        sent_folder=sent_copy_file(connection=connection, raw=raw),
        not_kept=message is None,
    )


def sent_copy_file(*, connection: MailboxConnection, raw: bytes) -> str:
    """File ``raw`` (the bytes just handed to SMTP) in the mailbox's Sent folder, marked
    read, so the member's own mail client shows what they wrote in the portal. Returns the
    folder's name, or "" when nothing was filed.

    Only plain IMAP servers: Gmail and Microsoft 365 file their own copy of what goes through
    their SMTP (a second one would show twice), and POP3 has no folders. Never fails the
    send: the email is out; a mailbox without a Sent folder, or one that refuses the APPEND,
    only means the member's client will not show it (logged). The next sync of the Sent
    folder, if it is synced, finds the Message-ID already stored and adds only its source.
    """
    if connection.kind != Kind.IMAP:
        return ""
    # A person waits for the page: no sync's MAILSYNC_TIMEOUT here either.
    server = dataclasses.replace(services.connection_settings(connection), timeout=SEND_TIMEOUT)
    try:
        with ImapMailbox(server, services.connection_credentials(connection)) as box:
            folder = box.sent_folder()
            if folder is None:
                logger.info("mailbox %s: no Sent folder; sent copy not filed", connection.pk)
                return ""
            box.append(folder, raw, seen=True, date=timezone.now())
    except (SyncError, CredentialsUnavailable) as exc:
        logger.warning("mailbox %s: sent copy not filed: %s", connection.pk, exc)
        return ""
    return folder

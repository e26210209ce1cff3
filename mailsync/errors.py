"""Sync failures as stable problem codes.

Every failure an adapter meets (socket, TLS, IMAP/POP3/SMTP reply) becomes one `SyncError`
with a code from PROBLEMS.md, whether retrying can help, the server's own words and the step
it happened at. `classify` is the only place that knows what real exceptions and replies
mean, so the sync engine and troubleshooting never parse server text themselves.

Pure Python: no Django imports (the adapters run in Celery workers and in tests alike).
"""

from __future__ import annotations

import base64
import html
import imaplib
import json
import poplib
import re
import smtplib
import socket
import ssl
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from mailsync.netguard import HostRefused

AUTH_FAILED = "sync.auth_failed"
TWO_FACTOR = "sync.two_factor"
SERVER_SETTINGS = "sync.server_settings"
PROTOCOL_UNSUPPORTED = "sync.protocol_unsupported"
CONNECTION = "sync.connection"
INSUFFICIENT_SCOPE = "sync.insufficient_scope"
# Sending (SMTP) through the member's own mailbox is refused by the provider's policy, not
# by a wrong password: authenticated SMTP is switched off for the Microsoft 365 tenant or
# mailbox, or the tenant quarantined the connection. Reading mail is not affected.
SMTP_AUTH_DISABLED = "send.smtp_auth_disabled"
# The mail server will not let this login send as the address given in MAIL FROM / From
# (an alias the mailbox does not own). Shown where the address is added or used; it is
# about one address, not the mailbox, so it is never stored on the connection.
SENDER_REFUSED = "send.sender_refused"

CODES = frozenset(
    {
        AUTH_FAILED,
        TWO_FACTOR,
        SERVER_SETTINGS,
        PROTOCOL_UNSUPPORTED,
        CONNECTION,
        INSUFFICIENT_SCOPE,
        SMTP_AUTH_DISABLED,
        SENDER_REFUSED,
    }
)
# Codes about sending only: a mailbox with one of these still syncs (its health stays ok).
SEND_CODES = frozenset({SMTP_AUTH_DISABLED})

# Steps that happen before the server has proven to speak the protocol we expect; a reply
# we cannot understand there means "wrong host/port/security", not a flaky network.
CONNECT_STEPS = frozenset({"connect", "tls"})

MAX_DETAIL = 500


class SyncError(Exception):
    """A classified sync failure.

    ``detail`` is the server's reply (or the local error text), cleaned and never holding a
    password or token; ``transient`` says whether an automatic retry may succeed.
    """

    def __init__(self, code: str, *, transient: bool, detail: str = "", step: str = "") -> None:
        if code not in CODES:
            raise ValueError(f"unknown sync problem code {code!r}")
        self.code = code
        self.transient = transient
        self.detail = detail
        self.step = step
        super().__init__(f"{code} at {step or '?'}: {detail}")

    def __reduce__(self):  # keep it picklable for Celery results
        return (_rebuild, (self.code, self.transient, self.detail, self.step))


def _rebuild(code: str, transient: bool, detail: str, step: str) -> SyncError:
    return SyncError(code, transient=transient, detail=detail, step=step)


class FolderNotFound(SyncError):
    """A folder chosen for sync no longer exists (renamed or deleted by the member).

    A `SyncError` so generic handling still works, but the engine should catch it first:
    the fix is updating the folder selection, not the server settings.
    """

    def __init__(self, folder: str, *, detail: str = "", step: str = "") -> None:
        self.folder = folder
        super().__init__(SERVER_SETTINGS, transient=False, detail=detail, step=step)

    def __reduce__(self):
        return (_rebuild_folder, (self.folder, self.detail, self.step))


def _rebuild_folder(folder: str, detail: str, step: str) -> FolderNotFound:
    return FolderNotFound(folder, detail=detail, step=step)


def folder_not_found(folder: str, reply: object, *, step: str) -> FolderNotFound:
    return FolderNotFound(folder, detail=clean_reply(reply), step=step)


class UidValidityChanged(Exception):
    """The folder's UIDVALIDITY is not the one the sync cursor was built on.

    Not a failure: every stored UID of this folder is meaningless now, so the engine must
    re-list the folder (deduplicating by Message-ID) and start a new cursor.
    """

    def __init__(self, folder: str, expected: int, actual: int | None) -> None:
        self.folder = folder
        self.expected = expected
        self.actual = actual
        super().__init__(f"UIDVALIDITY of {folder!r} changed from {expected} to {actual}")


class MissingCapability(Exception):
    """The server does not offer something the adapter needs (e.g. UIDL, AUTH=XOAUTH2)."""

    def __init__(self, capability: str, detail: str = "") -> None:
        self.capability = capability
        super().__init__(detail or f"server does not offer {capability}")


def _article(word: str) -> str:
    return "an" if word[:1].upper() in "AEIOU" else "a"


class UnexpectedGreeting(Exception):
    """The server answered, but not in the protocol we speak (e.g. POP3 on an IMAP port)."""

    def __init__(self, expected: str, greeting: str) -> None:
        self.expected = expected
        # Kept for classification only: whatever answered is not proven to be a mail
        # server, so its words (a foreign service's banner) are never shown to a member.
        self.greeting = greeting
        if greeting:
            message = (
                f"the server answered, but not as {_article(expected)} {expected} server "
                "(a different service, or the wrong port or security setting)"
            )
        else:
            message = (
                f"connected, but no {expected} greeting came (is this a TLS-only port, "
                "or a different service?)"
            )
        super().__init__(message)


class ProtocolError(Exception):
    """A reply the adapter could not parse."""


class OAuthLoginRefused(imaplib.IMAP4.error):
    """The server said NO to an XOAUTH2 login.

    ``token_refused`` is True when the server first sent its JSON error challenge (Google and
    Microsoft do for an expired, revoked or wrong token). Without that challenge the token was
    accepted and the mailbox itself refused: Microsoft 365 answers a bare "AUTHENTICATE
    failed." to a valid token when IMAP is switched off for the mailbox.
    """

    def __init__(self, reply: str, *, token_refused: bool) -> None:
        super().__init__(reply)
        self.token_refused = token_refused


@dataclass(frozen=True)
class _Rule:
    pattern: re.Pattern[str]
    code: str
    transient: bool


def _rule(pattern: str, code: str, transient: bool = False) -> _Rule:
    return _Rule(re.compile(pattern, re.IGNORECASE), code, transient)


# Checked in order against the server's reply; the first match wins. Provider-specific
# replies come before the generic ones they would otherwise also match (Gmail's app-password
# reply also says "Invalid credentials").
REPLY_RULES: tuple[_Rule, ...] = (
    # IMAP or POP switched off for the account, whatever the password: Gmail's "[ALERT] Your
    # account is not enabled for IMAP use." and "IMAP access is disabled for your domain";
    # Microsoft 365's "User is authenticated but not connected." (the login worked, the
    # mailbox refuses the protocol). Before the generic rules that would read them as a
    # refused password.
    _rule(
        r"not enabled for (IMAP|POP3?)\b|\b(IMAP|POP3?) access is (disabled|not enabled)",
        PROTOCOL_UNSUPPORTED,
    ),
    _rule(r"\bauthenticated but not connected\b", PROTOCOL_UNSUPPORTED),
    # Two-factor / app passwords / extra interactive steps.
    _rule(r"application-specific password required", TWO_FACTOR),
    _rule(r"\bapp(lication)?[- ]passwords?\b", TWO_FACTOR),
    _rule(r"AADSTS(50076|50079|50074|50158|50072|50125)\b", TWO_FACTOR),
    _rule(r"multi-?factor authentication", TWO_FACTOR),
    _rule(r"\[WEBALERT|please log ?in via your web browser", TWO_FACTOR),
    # OAuth tokens without the mail scope.
    _rule(r"insufficient[_ ]scope|\binvalid_scope\b|AADSTS65001\b", INSUFFICIENT_SCOPE),
    # The server wants TLS before it accepts a password: wrong "security" setting.
    _rule(r"plaintext authentication (is )?disallowed|\[PRIVACYREQUIRED\]", SERVER_SETTINGS),
    _rule(r"\bLOGINDISABLED\b|must issue a STARTTLS command first", SERVER_SETTINGS),
    _rule(r"5\.7\.0 .*STARTTLS|STARTTLS is required", SERVER_SETTINGS),
    # Tenant/mailbox switched the protocol or basic auth off.
    _rule(r"SmtpClientAuthentication is disabled|5\.7\.139", SERVER_SETTINGS),
    _rule(
        r"\bIMAP (access )?(is )?disabled\b|\bPOP3? (access )?(is )?disabled\b",
        PROTOCOL_UNSUPPORTED,
    ),
    # Temporary server-side trouble: try again later.
    _rule(r"\[UNAVAILABLE\]|\[SERVERBUG\]|\[LIMIT\]|\[INUSE\]", CONNECTION, True),
    _rule(r"\[SYS/TEMP\]|\[IN-USE\]", CONNECTION, True),
    _rule(
        r"temporar(y|ily)|try again later|too many (simultaneous )?connections", CONNECTION, True
    ),
    # Wrong user or password (or an expired/revoked token).
    _rule(r"\[AUTHENTICATIONFAILED\]|\[AUTH\]|\[AUTHORIZATIONFAILED\]|\[EXPIRED\]", AUTH_FAILED),
    _rule(
        r"invalid credentials|login failed|authenticat(e|ion) (failed|unsuccessful)", AUTH_FAILED
    ),
    _rule(
        r"incorrect (username|password)|bad (username|password)|"
        r"invalid (user(name)?|password)|password (is )?incorrect",
        AUTH_FAILED,
    ),
    # Capabilities.
    _rule(
        r"extension not supported|not supported by server|unknown command|"
        r"unrecognized command|command not (recognized|implemented)",
        PROTOCOL_UNSUPPORTED,
    ),
)

# Replies to SMTP AUTH meaning "the provider switched authenticated SMTP off", checked before
# REPLY_RULES at the smtp_login step only (the same words elsewhere keep their old meaning).
# Microsoft 365 answers 535 5.7.139 for SMTP AUTH disabled for the tenant or the mailbox,
# for security defaults / conditional access blocking basic authentication, and
# 5.7.3 "Authentication unsuccessful" when SMTP AUTH is off for the mailbox. Note that 5.7.3
# is also what older Exchange Online front ends say for a wrong password; in the account
# check the same password has just opened the mailbox, so "switched off" is the likely cause.
# A 5.7.139 that says the credentials were wrong stays a wrong password.
SMTP_LOGIN_RULES: tuple[_Rule, ...] = (
    _rule(r"5\.7\.139\b.*credentials (were |are )?(incorrect|invalid)", AUTH_FAILED),
    _rule(r"SmtpClientAuthentication", SMTP_AUTH_DISABLED),
    _rule(r"\b5\.7\.139\b", SMTP_AUTH_DISABLED),
    _rule(r"\b5\.7\.3\b.*authentication unsuccessful", SMTP_AUTH_DISABLED),
    _rule(r"\bSMTP ?(client )?auth(entication)?\b.*\bdisabled\b", SMTP_AUTH_DISABLED),
    _rule(r"\bis disabled for the (tenant|mailbox|organi[sz]ation)\b", SMTP_AUTH_DISABLED),
    _rule(r"\bquarantin(ed|e)\b", SMTP_AUTH_DISABLED),
)

# Replies refusing the sender address (checked at the smtp_mail_from and smtp_data steps of
# sending). Postfix with reject_sender_login_mismatch answers at MAIL FROM ("553 5.7.1 ...
# Sender address rejected: not owned by user ..."); Microsoft 365 accepts MAIL FROM and
# refuses after DATA ("554 5.2.252 SendAsDenied; ... not allowed to send as ...", or 5.7.60).
SENDER_RULES: tuple[_Rule, ...] = (
    _rule(r"SendAsDenied|\b5\.2\.252\b|\b5\.7\.60\b", SENDER_REFUSED),
    _rule(r"not owned by user|sender address rejected", SENDER_REFUSED),
    _rule(r"not (allowed|permitted|authori[sz]ed) to send as", SENDER_REFUSED),
    _rule(r"sender (address )?(is )?not (allowed|permitted|authori[sz]ed)", SENDER_REFUSED),
)
SENDER_STEPS = frozenset({"smtp_mail_from", "smtp_data"})

# Local TLS failures that mean "this port does not speak TLS the way we were told"
# (plain server on a TLS port, TLS server on a plain port, name/certificate mismatch).
_TLS_SETTINGS_REASONS = re.compile(
    r"WRONG_VERSION_NUMBER|wrong version number|UNKNOWN_PROTOCOL|unknown protocol|"
    r"HTTP_REQUEST|record layer failure|UNSUPPORTED_PROTOCOL|NO_PROTOCOLS_AVAILABLE|"
    r"TLSV1_ALERT_PROTOCOL_VERSION|packet length too long|CERTIFICATE_VERIFY_FAILED",
    re.IGNORECASE,
)

# A valid OAuth token refused without the provider's JSON error: the mailbox does not allow
# the protocol (Microsoft 365 with IMAP switched off says only "AUTHENTICATE failed.").
_OAUTH_ACCEPTED_BUT_REFUSED = re.compile(r"^(NO )?AUTHENTICATE failed\.?$", re.IGNORECASE)

_GREETING_LIKE = re.compile(r"^\s*(\+OK|-ERR|\* (OK|BYE|PREAUTH)|220[ -]|HTTP/)", re.IGNORECASE)


def _redact(text: str, forms: Iterable[str]) -> str:
    found = False
    for form in forms:
        if form in text:
            text = text.replace(form, "[redacted]")
            found = True
    if found:
        # A base64 form matches only the characters that depend on the secret alone; the
        # one to three beside it still carry a few of its bits.
        text = re.sub(r"[A-Za-z0-9+/]{1,3}\[redacted\]", "[redacted]", text)
        text = re.sub(r"\[redacted\][A-Za-z0-9+/]{1,3}={0,2}", "[redacted]", text)
    return text


def _imap_quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _base64_cores(data: bytes) -> set[str]:
    """Runs of base64 text that encode ``data`` wherever it sits in a longer blob (such as
    AUTH PLAIN's ``\\0user\\0password``): for each of the three alignments, the characters
    that depend on ``data`` alone."""
    cores = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        first_group = -(-offset // 3)  # groups touching the padding prefix are skipped
        whole_groups = (offset + len(data)) // 3
        core = encoded[first_group * 4 : whole_groups * 4]
        if len(core) >= 8:
            cores.add(core)
    return cores


def secret_variants(secret: str) -> set[str]:
    """Every form a submitted secret may take in a server's echo or a library's message:
    as typed, as an IMAP quoted string (``"`` and ``\\`` escaped), as Python's repr of the
    str or of its bytes, as JSON, HTML-escaped, URL-encoded, and in base64 (AUTH LOGIN
    sends it alone, AUTH PLAIN after the user name). Forms shorter than 3 characters are
    left out: they would blank ordinary words."""
    if not secret:
        return set()
    bases = {secret, _imap_quoted(secret)}
    forms: set[str] = set()
    for base in bases:
        forms.add(base)
        forms.add(repr(base)[1:-1])
        forms.add(repr(base.encode())[2:-1])
        forms.add(json.dumps(base)[1:-1])
        forms.add(json.dumps(base, ensure_ascii=False)[1:-1])
        forms.add(html.escape(base))
        forms.add(urllib.parse.quote(base, safe=""))
        forms.add(urllib.parse.quote_plus(base))
    raw = secret.encode()
    forms.add(base64.b64encode(raw).decode())
    forms.add(base64.b64encode(raw).decode().rstrip("="))
    forms |= _base64_cores(raw)
    return {form for form in forms if len(form) >= 3}


def clean_reply(value: object, secrets: Iterable[str] = ()) -> str:
    """Server reply text as a short single-line str without secrets.

    imaplib hands replies over as bytes or as ``str(bytes)``; both become plain text.
    """
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", "replace")
    elif isinstance(value, list | tuple):
        text = " ".join(clean_reply(part) for part in value if part is not None)
    else:
        text = str(value)
    forms = sorted(
        {form for secret in secrets for form in secret_variants(secret)}, key=len, reverse=True
    )
    text = _redact(text, forms)  # before the clean-up below changes quoting or spacing
    match = re.fullmatch(r"""b(['"])(.*)\1""", text, re.DOTALL)
    if match:
        text = match.group(2).replace("\\r", "").replace("\\n", " ")
    text = " ".join(text.split())
    text = _redact(text, forms)
    # Long bearer tokens or SASL blobs that slipped into a reply never reach the detail.
    text = re.sub(r"(?i)(bearer\s+)\S+", r"\1[redacted]", text)
    text = re.sub(r"(?i)(auth=bearer\s+)\S+", r"\1[redacted]", text)
    return text[:MAX_DETAIL]


def _decode_xoauth2_challenge(text: str) -> dict[str, str] | None:
    """The JSON Gmail/Dovecot send when an XOAUTH2 token is refused, if ``text`` holds one."""
    match = re.search(r"\{.*\}", text)
    if not match:
        return None
    try:
        value = json.loads(match.group(0))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _from_reply(text: str, step: str) -> tuple[str, bool] | None:
    challenge = _decode_xoauth2_challenge(text)
    if challenge is not None and "status" in challenge:
        status = str(challenge.get("status"))
        if status in {"403"} or "scope" in str(challenge.get("error", "")):
            return INSUFFICIENT_SCOPE, False
        if status in {"400", "401"}:
            return AUTH_FAILED, False
    for rule in REPLY_RULES:
        if rule.pattern.search(text):
            return rule.code, rule.transient
    if step in CONNECT_STEPS and _GREETING_LIKE.search(text):
        return SERVER_SETTINGS, False
    return None


def _smtp(exc: smtplib.SMTPException, step: str, detail: str) -> tuple[str, bool]:
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return CONNECTION, True
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return PROTOCOL_UNSUPPORTED, False
    if isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        if step == "smtp_login" and code >= 500:
            for rule in SMTP_LOGIN_RULES:
                if rule.pattern.search(detail):
                    return rule.code, rule.transient
        if step in SENDER_STEPS and code >= 500:
            for rule in SENDER_RULES:
                if rule.pattern.search(detail):
                    return rule.code, rule.transient
            if isinstance(exc, smtplib.SMTPSenderRefused) and 550 <= code <= 553:
                # A permanent refusal of the MAIL FROM address itself (RFC 5321: 550
                # mailbox unavailable, 553 mailbox name not allowed).
                return SENDER_REFUSED, False
        matched = _from_reply(detail, step)
        if isinstance(exc, smtplib.SMTPConnectError) and (code < 200 or code >= 600):
            return SERVER_SETTINGS, False  # not an SMTP greeting at all
        if matched is not None and not (matched[0] == CONNECTION and code >= 500):
            return matched
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            return AUTH_FAILED, False
        if 400 <= code < 500:
            return CONNECTION, True
        return SERVER_SETTINGS, False
    matched = _from_reply(detail, step)
    if matched is not None:
        return matched
    return SERVER_SETTINGS, False


NOT_SMTP = (
    "the server answered, but not as an SMTP server (a different service, or the wrong port "
    "or security setting)"
)


NOT_MAIL_SERVER = (
    "the server did not answer as the mail server expected on this port (a different "
    "service, or the wrong port or security setting)"
)


def _unproven_reply(exc: BaseException, step: str) -> str | None:
    """Plain words replacing a reply that came before the server proved its protocol."""
    if (
        step == "smtp_connect"
        and isinstance(exc, smtplib.SMTPResponseException)
        and not 200 <= exc.smtp_code < 600
    ):
        return NOT_SMTP
    if step in CONNECT_STEPS and isinstance(
        exc, imaplib.IMAP4.error | poplib.error_proto | ProtocolError | UnicodeError
    ):
        return NOT_MAIL_SERVER
    return None


def _reply_of(exc: BaseException) -> object:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {clean_reply(exc.smtp_error)}"
    if isinstance(exc, UnexpectedGreeting):
        return str(exc)
    if isinstance(exc, imaplib.IMAP4.error | poplib.error_proto) and exc.args:
        return exc.args[0] if len(exc.args) == 1 else exc.args
    return str(exc) or type(exc).__name__


def classify(exc: BaseException, *, step: str, secrets: Iterable[str] = ()) -> SyncError:
    """Map any failure met while talking to a mail server to a `SyncError`.

    ``step`` is where it happened (connect, tls, login, list_folders, status, search, fetch,
    stat, uidl, retrieve, smtp_connect, smtp_login, ...). ``secrets`` are removed from the
    detail in case a library echoed them.
    """
    if isinstance(exc, SyncError):
        return exc
    secrets = tuple(secrets)
    detail = clean_reply(_reply_of(exc), secrets)
    # Before the server has proven to speak the protocol, whatever answered may be another
    # service (the portal must not become a banner grabber): its words classify the error
    # but are never shown.
    shown = _unproven_reply(exc, step) or detail

    def made(code: str, transient: bool) -> SyncError:
        return SyncError(code, transient=transient, detail=shown, step=step)

    if isinstance(exc, HostRefused):
        return made(SERVER_SETTINGS, False)
    if isinstance(exc, MissingCapability):
        return made(PROTOCOL_UNSUPPORTED, False)
    if isinstance(exc, UnexpectedGreeting):
        # Silence may also be a server too busy to greet in time: worth a few retries.
        return made(SERVER_SETTINGS, not exc.greeting)
    if isinstance(exc, smtplib.SMTPException):
        return made(*_smtp(exc, step, detail))

    if isinstance(exc, ssl.SSLCertVerificationError):
        return made(SERVER_SETTINGS, False)
    if isinstance(exc, ssl.SSLError):
        if _TLS_SETTINGS_REASONS.search(f"{getattr(exc, 'reason', '')} {exc}"):
            return made(SERVER_SETTINGS, False)
        # EOF/reset in the middle of a handshake: the network, not the settings.
        return made(CONNECTION, True)
    if isinstance(exc, socket.gaierror):
        # The host name does not resolve: almost always a typo in the settings, but DNS
        # can also be briefly down, so let the engine retry a few times.
        return (
            made(SERVER_SETTINGS, True)
            if exc.errno == socket.EAI_NONAME
            else made(CONNECTION, True)
        )
    if isinstance(exc, FileNotFoundError | IsADirectoryError):
        return made(SERVER_SETTINGS, False)  # e.g. the configured CA file is missing
    if isinstance(exc, TimeoutError | ConnectionError | EOFError):
        return made(CONNECTION, True)
    if isinstance(exc, OSError):
        return made(CONNECTION, True)

    if (
        isinstance(exc, OAuthLoginRefused)
        and not exc.token_refused
        and _OAUTH_ACCEPTED_BUT_REFUSED.search(detail)
    ):
        return made(PROTOCOL_UNSUPPORTED, False)
    if isinstance(exc, imaplib.IMAP4.error | poplib.error_proto):
        matched = _from_reply(detail, step)
        if matched is not None:
            return made(*matched)
        if isinstance(exc, imaplib.IMAP4.abort):
            # The server dropped us or sent garbage: before login that is the wrong
            # service; afterwards a broken connection worth retrying.
            if step in CONNECT_STEPS:
                return made(SERVER_SETTINGS, False)
            return made(CONNECTION, True)
        if step in CONNECT_STEPS:
            return made(SERVER_SETTINGS, False)
        if step == "login":
            return made(AUTH_FAILED, False)
        return made(CONNECTION, True)

    if isinstance(exc, ProtocolError | UnicodeError | ValueError):
        if step in CONNECT_STEPS:
            return made(SERVER_SETTINGS, False)
        return made(CONNECTION, True)
    return made(CONNECTION, True)

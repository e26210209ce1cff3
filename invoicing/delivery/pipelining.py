"""`smtplib.SMTP.sendmail` with SMTP PIPELINING (RFC 2920) when the server offers it.

smtplib waits for the server's reply to each command: MAIL FROM, every RCPT TO, DATA, and
the message's final dot, four round trips for one recipient. When the server advertises
PIPELINING (Postfix, Exim and most ESPs' submission servers do), `sendmail` here writes
MAIL FROM, the RCPT TOs and DATA in one go and then reads their replies in order, and the
message with its final dot in a second write: two round trips.

Each reply is judged as smtplib judges it, and raises the same exception with the same
code and text (`SMTPSenderRefused`, `SMTPRecipientsRefused` with every refused recipient,
`SMTPDataError`, `SMTPServerDisconnected`; a 421 closes the connection), so a caller
handles a pipelined send exactly as a plain one. Where smtplib would have stopped before
sending the next command, the server still gets it and refuses it (RFC 2920 requires a
server to refuse DATA without a valid recipient), so those replies are read and ignored
before the transaction is reset. Without PIPELINING this is smtplib's own `sendmail`.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
from collections.abc import Callable, Sequence

__all__ = ["offered", "sendmail"]

_CRLF = b"\r\n"
_LEADING_DOT = re.compile(rb"(?m)^\.")


def offered(smtp: smtplib.SMTP) -> bool:
    """Whether the server advertises PIPELINING (greets it with EHLO first if needed)."""
    smtp.ehlo_or_helo_if_needed()
    return bool(smtp.does_esmtp and smtp.has_extn("pipelining"))


def sendmail(
    smtp: smtplib.SMTP,
    from_addr: str,
    to_addrs: str | Sequence[str],
    msg: bytes,
    while_waiting: Callable[[], None] | None = None,
) -> dict[str, tuple[int, bytes]]:
    """Send ``msg`` (wire bytes, CRLF line ends) as `smtp.sendmail` would; the recipients
    refused while others were accepted, as smtplib returns them.

    ``while_waiting`` (pipelined sends only) is called once the message has been written,
    before its reply is read: work done there overlaps the server's handling of the message
    instead of following it. It must not raise or touch this connection.
    """
    if not offered(smtp):
        return smtp.sendmail(from_addr, to_addrs, msg)
    recipients = [to_addrs] if isinstance(to_addrs, str) else list(to_addrs)
    # The same commands smtplib's `mail`, `rcpt` and `data` write, in one buffer.
    size = f" size={len(msg)}" if smtp.has_extn("size") else ""
    commands = [f"mail from:{smtplib.quoteaddr(from_addr)}{size}"]
    commands += [f"rcpt to:{smtplib.quoteaddr(r)}" for r in recipients]
    commands.append("data")
    for command in commands:
        if "\r" in command or "\n" in command:  # as smtplib's `putcmd`
            raise ValueError(
                f"command and arguments contain prohibited newline characters: {command!r}"
            )
    smtp.send("".join(f"{c}\r\n" for c in commands).encode(smtp.command_encoding))

    code, reply = smtp.getreply()
    if code != 250:
        if code == 421:
            smtp.close()
        else:
            _abandon(smtp, replies=len(recipients) + 1)
        raise smtplib.SMTPSenderRefused(code, reply, from_addr)
    refused: dict[str, tuple[int, bytes]] = {}
    for recipient in recipients:
        code, reply = smtp.getreply()
        if code not in (250, 251):
            refused[recipient] = (code, reply)
        if code == 421:
            smtp.close()
            raise smtplib.SMTPRecipientsRefused(refused)
    if len(refused) == len(recipients):
        _abandon(smtp, replies=1)  # DATA's reply: a refusal, unless the server is lax
        raise smtplib.SMTPRecipientsRefused(refused)
    code, reply = smtp.getreply()
    if code != 354:
        # smtplib's `data` raises here too. It leaves the transaction open; a reset lets
        # the next email on this connection start cleanly.
        if code == 421:
            smtp.close()
        else:
            _reset(smtp)
        raise smtplib.SMTPDataError(code, reply)
    body = _LEADING_DOT.sub(b"..", msg)
    if not body.endswith(_CRLF):
        body += _CRLF
    smtp.send(body + b"." + _CRLF)
    if while_waiting is not None:
        while_waiting()
    code, reply = smtp.getreply()
    if code != 250:
        if code == 421:
            smtp.close()
        else:
            _reset(smtp)
        raise smtplib.SMTPDataError(code, reply)
    return refused


def _abandon(smtp: smtplib.SMTP, *, replies: int) -> None:
    """Read the replies to commands already sent after a refusal smtplib would have stopped
    at, end the transaction, and leave the connection ready for the next email (or closed
    on a 421 or a lost connection, as smtplib leaves it)."""
    try:
        for _ in range(replies):
            code, _reply = smtp.getreply()
            if code == 354:
                # DATA accepted though nothing can be delivered (RFC 2920 forbids it, a lax
                # server might): an empty message ends it, then the reset discards it.
                smtp.send(b"." + _CRLF)
                smtp.getreply()
            if code == 421:
                smtp.close()
                return
    except smtplib.SMTPServerDisconnected:
        return  # getreply closed our side; the refusal is still what the caller learns
    _reset(smtp)


def _reset(smtp: smtplib.SMTP) -> None:
    """smtplib's `_rset`: RSET, ignoring a connection already gone."""
    with contextlib.suppress(smtplib.SMTPServerDisconnected):
        smtp.rset()

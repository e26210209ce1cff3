"""Emails members write to clients on the Email tab: kept when they press Send, sent by a
worker on the send queue, exactly once per press of the button.

The web request only stores what was written (`written_email_queue`) and answers at once;
the page then asks for the outcome every second. Sending over the member's own SMTP server
can take the whole send timeout when that server does not answer, and a web worker held
that long is a host's request slot lost for every member of every firm.

Once: the form carries a submission key, unique per member, so a double click or a browser
resending the POST finds the row the first press made. A worker sends a row only after
moving it from "queued" to "sending" in one conditional UPDATE, so a task redelivered
after a worker's restart, or queued twice, finds nothing to send. A worker that dies
mid-send leaves its row "sending"; the watchdog (`written_emails_watch`) calls it
"unknown" once SENDING_LEASE has passed, and the member is told to look before writing
again: an email to a client is better reported lost than sent twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User
from mailsync import sending
from mailsync.errors import SyncError
from mailsync.models import Message, OutgoingAddress, WrittenEmail
from portal import joined_rows
from portal.headers import HeaderTextError
from portal.models import Client

logger = logging.getLogger(__name__)

Status = WrittenEmail.Status

# Longer than one send can take (connect, log in and send under SEND_TIMEOUT each, then the
# Sent folder's copy under another): a row "sending" for longer has lost its worker.
SENDING_LEASE = timedelta(minutes=10)
# A row still queued this long after its task was queued lost it (a broker restarted
# without it): queue it again, at most this often, and at most REQUEUE_MOST rows a run, so
# that a send queue with no worker for an hour is not flooded with copies. Queueing twice is
# harmless: the claim sends once.
REQUEUE_AFTER = timedelta(minutes=2)
REQUEUE_MOST = 500
# Emails not sent listed on a client's Email tab, at most.
UNSENT_SHOWN = 10


def _send_soon(written_id: int) -> None:
    from mailsync.tasks import send_written_email

    transaction.on_commit(lambda: send_written_email.delay(written_id))


def written_email_queue(
    *,
    member: User,
    client: Client,
    sender: OutgoingAddress,
    recipients: Sequence[str],
    subject: str,
    body: str,
    reply_to: Message | None,
    submission_key: str,
    retry_of: int | None = None,
) -> WrittenEmail:
    """Keep the email and queue its sending after commit. The same ``submission_key`` again
    (a second press of Send on the same form) returns the first press's email, queued once.
    ``retry_of``: the member's earlier email this one sends again (from the form its failure
    gave back): it leaves the client's list of emails not sent."""
    try:
        with transaction.atomic():
            written = WrittenEmail.objects.create(
                member=member,
                submission_key=submission_key,
                firm_id=client.firm_id,
                client=client,
                sender=sender,
                reply_to=reply_to,
                recipients=list(dict.fromkeys(recipients)),
                subject=subject,
                body=body,
            )
            _send_soon(written.pk)
            if retry_of is not None:
                _not_sent(member=member, client=client).filter(pk=retry_of).update(dismissed=True)
    except IntegrityError:
        # The same form posted twice at once: the other request's row stands.
        return WrittenEmail.objects.get(member=member, submission_key=submission_key)
    return written


def written_email_send(written_id: int) -> WrittenEmail | None:
    """Send one queued email and record its outcome; None when it was not queued any more
    (another worker claimed it, or it was sent already): nothing is sent then."""
    claimed = WrittenEmail.objects.filter(pk=written_id, status=Status.QUEUED).update(
        status=Status.SENDING, claimed_at=timezone.now()
    )
    if not claimed:
        return None
    written = WrittenEmail.objects.select_related(
        "client", "member", "sender__connection", "reply_to"
    ).get(pk=written_id)
    outcome: dict[str, object]
    if written.sender is None:
        # The address was removed between Send and the worker: nothing to send from.
        outcome = {"status": Status.FAILED, "failure_code": WrittenEmail.SENDER_GONE}
    else:
        try:
            result = sending.email_send(
                member=written.member,
                client=written.client,
                sender=written.sender,
                recipients=written.recipients,
                subject=written.subject,
                body=written.body,
                reply_to=written.reply_to,
            )
        except HeaderTextError as exc:  # the sender's stored name, changed since Send
            outcome = {
                "status": Status.FAILED,
                "failure_code": WrittenEmail.BAD_HEADER,
                "failure_detail": str(exc),
            }
        else:
            outcome = _outcome(result)
    # Recorded over "unknown" too: a worker slower than the lease still knows best.
    WrittenEmail.objects.filter(pk=written_id, status__in=[Status.SENDING, Status.UNKNOWN]).update(
        finished_at=timezone.now(), **outcome
    )
    written.refresh_from_db()
    return written


def _outcome(result: sending.SendResult) -> dict[str, object]:
    if result.ok:
        return {
            "status": Status.SENT,
            "message": result.message,
            "refused": result.refused,
            "not_kept": result.not_kept,
        }
    failed: dict[str, object] = {"status": Status.FAILED, "refused": result.refused}
    if result.error is not None:
        failed.update(
            failure_code=result.error.code,
            failure_step=result.error.step,
            failure_detail=result.error.detail,
        )
    elif result.no_server:
        failed["failure_code"] = WrittenEmail.NO_SERVER
    elif result.credentials_unavailable:
        failed["failure_code"] = WrittenEmail.CREDENTIALS_UNAVAILABLE
    return failed


def written_email_result(written: WrittenEmail) -> sending.SendResult:
    """The outcome as the compose page shows a send's result."""
    code = written.failure_code
    error = None
    if code and code not in (
        WrittenEmail.NO_SERVER,
        WrittenEmail.CREDENTIALS_UNAVAILABLE,
        WrittenEmail.SENDER_GONE,
        WrittenEmail.BAD_HEADER,
    ):
        error = SyncError(
            code, transient=False, detail=written.failure_detail, step=written.failure_step
        )
    return sending.SendResult(
        message=written.message,
        error=error,
        refused=written.refused,
        no_server=code == WrittenEmail.NO_SERVER,
        credentials_unavailable=code == WrittenEmail.CREDENTIALS_UNAVAILABLE,
        not_kept=written.not_kept,
    )


def _not_sent(*, member: User, client: Client):
    return WrittenEmail.objects.filter(
        member=member, client=client, status__in=[Status.FAILED, Status.UNKNOWN]
    )


# What the Email tab shows of each email still to tell its writer about.
_UNSENT_PARTS = (
    joined_rows.Part(WrittenEmail, "w", ("client", "subject", "status", "failure_code", "created")),
)


def written_emails_unsent(*, member: User, client: Client) -> list[WrittenEmail]:
    """What the client's Email tab lists for ``member``: their emails to the client still
    waiting or sending, or not (known to be) sent and not dismissed; newest first. A member
    who left the page after Send learns there that an email did not go. Our own SQL
    (portal.joined_rows): every view of the tab asks, and the queryset cost more Python to
    build than the (partial-index) query took to run."""
    rows = joined_rows.select_from(
        _UNSENT_PARTS,
        f"FROM {WrittenEmail._meta.db_table} w WHERE w.member_id = %s AND w.client_id = %s"
        " AND NOT w.dismissed AND w.status <> %s ORDER BY w.created DESC LIMIT %s",
        [member.pk, client.pk, Status.SENT, UNSENT_SHOWN],
    )
    return [written for (written,) in rows]


def written_email_dismiss(*, member: User, client: Client, written_id: int) -> bool:
    """Take a failed or unknown email of ``member`` off the client's list; whether it was."""
    return bool(
        _not_sent(member=member, client=client).filter(pk=written_id).update(dismissed=True)
    )


def written_emails_watch(now=None) -> tuple[int, int]:
    """The watchdog, every minute: queue again the emails whose task was lost, and call
    "unknown" those whose worker stopped while sending. Returns (requeued, unknown)."""
    now = now or timezone.now()
    lost = list(
        WrittenEmail.objects.filter(status=Status.QUEUED, queued_at__lt=now - REQUEUE_AFTER)
        .order_by("queued_at")
        .values_list("pk", flat=True)[:REQUEUE_MOST]
    )
    if lost:
        WrittenEmail.objects.filter(pk__in=lost).update(queued_at=now)
    for pk in lost:
        _send_soon(pk)
    unknown = WrittenEmail.objects.filter(
        status=Status.SENDING, claimed_at__lt=now - SENDING_LEASE
    ).update(status=Status.UNKNOWN, finished_at=now)
    if lost or unknown:
        logger.warning("written emails: %s queued again, %s lost mid-send", len(lost), unknown)
    return len(lost), unknown

"""The group sender: claim a group of queued deliveries, send it over one connection, record it.

One piece on purpose (about 600 lines): the three steps share the claim (`_Group`, its
lease), the in-memory outcomes (`_Outcome`) and one argument about what a crash between
them leaves, written once below; split apart, each step would need the others' invariants
restated. What it calls out to lives beside it: `pipelining` (SMTP PIPELINING),
`refusals` (what a server refused), `outbox` (the rows it claims), `invoicing.paylinks`
(the links it issues in the claim), `invoicing.emails` (the email it builds).
"""

from __future__ import annotations

import logging
import secrets
import smtplib
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from itertools import islice
from typing import Any

import requests
from anymail.exceptions import AnymailError, AnymailRecipientsRefused
from django.conf import settings
from django.core.mail import get_connection
from django.core.mail.backends.smtp import EmailBackend as SMTPBackend
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from invoicing.delivery import pipelining as smtp_pipelining
from invoicing.delivery.bounces.dsn import address_domain
from invoicing.delivery.events import delivery_event_record
from invoicing.delivery.models import Delivery, DeliveryEvent
from invoicing.delivery.outbox import delivery_record_not_sent, delivery_record_suppressed
from invoicing.delivery.refusals import as_text, esp_refusal_record, smtp_refusal_record
from invoicing.delivery.suppression import active_suppressions
from invoicing.delivery.webhook_events import webhook_events_waiting_exist
from invoicing.emails import Envelope, InvoiceEmailBuilder, PreparedEmail
from invoicing.enqueue import webhook_events_match_soon
from invoicing.models import Invoice, InvoiceLine, PayLink
from invoicing.paylinks import pay_links_issue
from portal.emails import platform_domain
from portal.models import Firm

logger = logging.getLogger(__name__)

S = Delivery.Status


# --- the sender: claim a group, send it, record it --------------------------------------
#
# Each group of a send task goes through three steps (a transactional outbox):
#
# 1. Claim, in one transaction: lock the group's queued deliveries (`SKIP LOCKED`, so two
#    workers never take the same one), store every Pay Now link (its hash exists before
#    the email leaves, so a link in a client's inbox always works), and move them to
#    "sending" with the claim's time. Commit.
# 2. Send over the task's one SMTP connection, outside any transaction, keeping each
#    recipient's outcome in memory. The next email is built while the server handles the
#    current one: in this thread between writing a pipelined message and reading its reply
#    (`invoicing.delivery.pipelining`), or else in a thread while this one waits on replies.
# 3. Record, in one transaction: the events in one INSERT, the accepted deliveries in one
#    UPDATE, the invoices they made "sent" in another; refusals (few) one by one, because
#    the suppression rules and retries read each of them.
#
# The trade-off: a worker that dies between 1 and 3 leaves its group in "sending", and
# nobody knows which of those emails left. Sending them again could give a client the same
# invoice twice; forgetting them could mean it never arrived. Neither is done on a guess:
# once a claim is older than SENDING_LEASE, `deliveries_sending_expire` (a periodic task)
# marks those deliveries "outcome unknown", an event and a problem on the timeline that
# says the email went at most once and offers Resend. A crash used to cost at most the one
# email in flight; now it can cost a group (SEND_GROUP emails) of "please check", in
# exchange for a handful of statements per group instead of about seven per email.
# Failures the sender sees itself (a refusal, a lost connection, a bug raising in the
# middle) are recorded exactly, never as unknown, except the one email in flight when an
# unexpected error hit.
# Through an ESP, a delivery learns the ESP's message id only at step 3, so the ESP's
# webhooks about a group's emails can come before it: they wait for their delivery (see
# `invoicing.delivery.webhook_events`), and step 3 has them matched once it stored the ids.

# Big enough that the two transactions cost little per email (0.1 statements each), small
# enough that a crash leaves few emails to check.
SEND_GROUP = 200
# The default of settings.DELIVERY_SENDING_LEASE_SECONDS, read through `sending_lease()`.
SENDING_LEASE = timedelta(minutes=30)


def sending_lease() -> timedelta:
    """How long a claim lives without renewal (settings.DELIVERY_SENDING_LEASE_SECONDS, 30
    minutes by default). The sender renews it every DELIVERY_SENDING_LEASE_RENEW_SECONDS
    while it works, so only a sender that stopped (or hangs longer than the lease on one
    email) is declared dead; it then records nothing over what replaced its claim."""
    return timedelta(seconds=settings.DELIVERY_SENDING_LEASE_SECONDS)


# Emails built ahead of the one being sent.
BUILD_AHEAD = 2
OUTCOME_UNKNOWN = "delivery.outcome_unknown"
_UNKNOWN_DIAGNOSTIC = gettext_noop(
    "Sending was interrupted before the server's answer was recorded. The email was sent at "
    "most once: check with the client whether it arrived, or resend it."
)


class _Result(Enum):
    ACCEPTED = "accepted"  # a server took it for this recipient
    REFUSED = "refused"  # an SMTP refusal: code, text and the command refused
    ESP_REFUSED = "esp_refused"  # anymail's per-recipient status said rejected or invalid
    BUILD_FAILED = "build_failed"  # the email could not be built: nothing left
    IN_FLIGHT = "in_flight"  # handed to the connection, no answer yet
    NOT_SENT = "not_sent"  # not taken by the server, for a reason worth a later retry
    CONNECTION_LOST = "connection_lost"  # as NOT_SENT, and the rest of the task waits too
    # The ESP's API gave no clear answer (a read timeout, a gateway timeout): it may have
    # taken the email. Recorded as "outcome unknown", never retried on a guess.
    AMBIGUOUS = "ambiguous"


@dataclass
class _Outcome:
    result: _Result
    at: datetime
    esp_message_id: str = ""
    code: int = 0
    text: str = ""
    command: str = ""


@dataclass
class _Group:
    """Deliveries claimed together, with what building their emails needs."""

    deliveries: list[Delivery]  # claimed: now "sending", in the task's order
    tokens: dict[int, str]  # delivery id -> Pay Now token (stored only hashed)
    lines: dict[int, list[InvoiceLine]]  # invoice id -> its lines
    lease: str = ""  # the claim's token, on every claimed row while the claim is held
    renewed: float = 0.0  # time.monotonic() of the last renewal
    lost: set[int] = field(default_factory=set)  # deliveries whose lease ran out meanwhile

    def renew(self, *, force: bool = False) -> None:
        """Extend the claim of the deliveries not sent yet, at most every
        DELIVERY_SENDING_LEASE_RENEW_SECONDS; those the watchdog took meanwhile are lost:
        not sent, and not recorded over what replaced them."""
        if not self.deliveries or not self.lease:
            return
        now = time.monotonic()
        if not force and now - self.renewed < settings.DELIVERY_SENDING_LEASE_RENEW_SECONDS:
            return
        self.renewed = now
        ids = [d.pk for d in self.deliveries if d.pk not in self.lost]
        # Autocommit, one statement: visible to the watchdog at once.
        held = set(
            Delivery.objects.filter(pk__in=ids, status=S.SENDING, lease_token=self.lease)
            .order_by()
            .values_list("pk", flat=True)
        )
        Delivery.objects.filter(pk__in=held, lease_token=self.lease).update(
            claimed_at=timezone.now()
        )
        gone = set(ids) - held
        if gone:
            logger.warning("Sending lease lost for deliveries %s: not sent by this worker", gone)
            self.lost |= gone


def deliveries_send(*, delivery_ids: Sequence[int]) -> list[int]:
    """Send queued deliveries over one connection; return the ids to retry later.

    Only deliveries still queued are claimed, so a retried or duplicated task never sends
    again what was claimed before. Deliveries not sent (the server unreachable, the
    connection lost) are queued again and returned.
    """
    ids = list(dict.fromkeys(delivery_ids))
    connection = get_connection()
    # Django's own SMTP backend only re-parses the addresses and re-serialises the email
    # before calling smtplib: the builder writes the same envelope and bytes itself, and
    # they go straight to the connection the backend opened. Any other backend (an ESP's
    # through anymail, a subclass) gets the EmailMessage through `send_messages`.
    direct = type(connection) is SMTPBackend
    try:
        connection.open()
        pipelined = direct and smtp_pipelining.offered(connection.connection)
    except (smtplib.SMTPException, OSError):
        connection.close()
        return ids  # the server is unreachable: nothing was claimed, sent or recorded
    builder = InvoiceEmailBuilder(verp=isinstance(connection, SMTPBackend))
    # To a server that pipelines, each email is built in this thread while the server
    # reads the previous one (`smtp_pipelining.sendmail` calls `_Later.run` between writing
    # a message and reading its reply): the build overlaps the server's work with no
    # second thread to hand the GIL to and from. Otherwise a thread builds ahead while this
    # one waits on each reply (four per email without pipelining; an ESP's HTTP request).
    # One email (the Send button on a one-address client) has nothing to overlap with.
    pool: ThreadPoolExecutor | None = None
    submit: Callable[..., Any] = _Later
    if not pipelined and len(ids) > 1:
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="invoice-email")
        submit = pool.submit
    retry: list[int] = []
    try:
        for first in range(0, len(ids), SEND_GROUP):
            group = _group_claim(ids[first : first + SEND_GROUP])
            outcomes: dict[int, _Outcome] = {}
            try:
                broken = _group_send(group, connection, builder, submit, outcomes, direct)
            except Exception:
                # A bug or an unforeseen failure: record what is known (the email in flight
                # becomes "outcome unknown"), and hand back the rest, never claimed or
                # queued again, so that the task's retries send them or finally fail them:
                # nothing is left "queued" with no task to send it.
                logger.exception("Sending stopped on an unexpected error")
                retry.extend(_group_record(group, outcomes, interrupted=True))
                retry.extend(ids[first + SEND_GROUP :])
                break
            except BaseException:
                # The worker is being stopped: record what is known, the rest stays queued.
                _group_record(group, outcomes, interrupted=True)
                raise
            retry.extend(_group_record(group, outcomes))
            if broken:
                retry.extend(ids[first + SEND_GROUP :])  # still queued, never claimed
                break
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        connection.close()
    return retry


class _Later:
    """A build done in the sending thread: when ``run`` is called (while the server handles
    the previous email), or else when its result is asked for. Like a `Future`, ``result``
    raises what the build raised."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._call: Callable[[], Any] | None = lambda: fn(*args)
        self._value: Any = None
        self._error: Exception | None = None

    def run(self) -> None:
        call, self._call = self._call, None
        if call is not None:
            try:
                self._value = call()
            except Exception as exc:  # kept for `result`, as a Future keeps it
                self._error = exc

    def result(self) -> Any:
        self.run()
        if self._error is not None:
            raise self._error
        return self._value


def _from_domain(firm: Firm) -> str:
    """The domain the email's From will have (invoicing.emails._sender decides it the same
    way, from the same firm row)."""
    own = firm.own_sender_address()
    return address_domain(own) or platform_domain()


def _group_claim(ids: Sequence[int]) -> _Group:
    """Step 1: claim the queued ones among ``ids``, store their links, mark them sending."""
    order = {pk: position for position, pk in enumerate(ids)}
    with transaction.atomic():
        claimed = sorted(
            Delivery.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(pk__in=list(ids), status=S.QUEUED)
            # The firm's billing details too: the email's frame shows them, and it is built
            # in a thread that must not query.
            .select_related("invoice__firm__billing_settings", "invoice__client"),
            key=lambda d: order[d.pk],
        )
        # The invoices as they are now, locked against a void or a payment until this claim
        # commits: an email queued before the invoice was voided or paid is not sent.
        statuses = dict(
            Invoice.objects.select_for_update(no_key=True)
            .filter(pk__in={d.invoice_id for d in claimed})
            .order_by("pk")
            .values_list("pk", "status")
        )
        kept = []
        for delivery in claimed:
            status = statuses.get(delivery.invoice_id, delivery.invoice.status)
            delivery.invoice.status = status
            if status == Invoice.Status.VOID or (
                status == Invoice.Status.PAID and not delivery.is_test
            ):
                _record_cancelled(delivery, status)
            else:
                kept.append(delivery)
        claimed = kept
        # Checked again at send time: the address may have been blocked since it was queued.
        suppressions = active_suppressions(
            pairs=((d.firm_id, d.normalized) for d in claimed if not d.is_test)
        )
        deliveries = []
        for delivery in claimed:
            suppression = None
            if not delivery.is_test:
                suppression = suppressions.get((delivery.firm_id, delivery.normalized))
            if suppression is not None:
                delivery_record_suppressed(delivery, suppression, locked=True)
            else:
                deliveries.append(delivery)
        if not deliveries:
            return _Group([], {}, {})
        lines: dict[int, list[InvoiceLine]] = {}
        for line in InvoiceLine.objects.filter(invoice_id__in={d.invoice_id for d in deliveries}):
            lines.setdefault(line.invoice_id, []).append(line)
        now = timezone.now()
        tokens = pay_links_issue(deliveries=deliveries, now=now)
        lease = secrets.token_hex(16)
        by_domain: dict[str, list[Delivery]] = {}
        for delivery in deliveries:
            by_domain.setdefault(_from_domain(delivery.invoice.firm), []).append(delivery)
        for from_domain, claimed_here in by_domain.items():
            Delivery.objects.filter(pk__in=[d.pk for d in claimed_here]).update(
                status=S.SENDING,
                claimed_at=now,
                updated=now,
                lease_token=lease,
                from_domain=from_domain,
            )
            for delivery in claimed_here:
                delivery.status, delivery.claimed_at, delivery.lease_token = S.SENDING, now, lease
                delivery.from_domain = from_domain
    return _Group(deliveries, tokens, lines, lease=lease, renewed=time.monotonic())


def _record_cancelled(delivery: Delivery, invoice_status: str) -> None:
    """A queued email of an invoice voided or paid since: not sent, and said so."""
    void = invoice_status == Invoice.Status.VOID
    delivery_event_record(
        delivery=delivery,
        locked=True,
        kind=S.CANCELLED,
        source="portal",
        reason="invoice_void" if void else "invoice_paid",
        diagnostic=(
            _("Not sent: the invoice was voided after this email was queued.")
            if void
            else _("Not sent: the invoice was paid after this email was queued.")
        ),
        problem_code="",
    )


def _group_send(
    group: _Group,
    connection: Any,
    builder: InvoiceEmailBuilder,
    submit: Callable[..., Future[Any] | _Later],
    outcomes: dict[int, _Outcome],
    direct: bool = False,
) -> bool:
    """Step 2: send each claimed delivery's email; True when the connection was lost.

    ``outcomes`` is filled as it goes, so a caller that catches an exception still knows
    what happened to each delivery so far. The only database access here is the lease
    renewal, in this thread, between emails; none in the building thread.
    """

    def build(delivery: Delivery) -> PreparedEmail | Envelope:
        invoice = delivery.invoice
        message = builder.build(
            delivery=delivery,
            invoice=invoice,
            pay_token=group.tokens[delivery.pk],
            lines=group.lines.get(invoice.pk, []),
        )
        return builder.envelope(message) if direct else message.prepare()

    def build_next() -> None:  # while the server handles the email just written
        if building and isinstance(building[0][1], _Later):
            building[0][1].run()

    waiting = iter(group.deliveries)
    building: deque[tuple[Delivery, Future[PreparedEmail | Envelope] | _Later]] = deque(
        (d, submit(build, d)) for d in islice(waiting, BUILD_AHEAD + 1)
    )
    while building:
        group.renew()  # every few seconds at most: one UPDATE for the whole group
        delivery, built = building.popleft()
        if delivery.pk in group.lost:
            # The watchdog gave up on this claim (and the owner may have resent): not ours
            # to send any more. Its prebuilt email is dropped.
            following = next(waiting, None)
            if following is not None:
                building.append((following, submit(build, following)))
            continue
        following = next(waiting, None)
        if following is not None:
            building.append((following, submit(build, following)))
        try:
            message = built.result()
        except Exception as exc:  # a bug or bad data in one invoice: that email only
            logger.exception("invoice email for delivery %s could not be built", delivery.pk)
            outcomes[delivery.pk] = _Outcome(_Result.BUILD_FAILED, timezone.now(), text=str(exc))
            continue
        outcomes[delivery.pk] = _Outcome(_Result.IN_FLIGHT, timezone.now())
        outcomes[delivery.pk] = outcome = _send_one(connection, delivery, message, build_next)
        if outcome.result == _Result.CONNECTION_LOST:
            return True  # this one and the rest are queued again for a retry
    return False


def _send_one(
    connection: Any,
    delivery: Delivery,
    message: PreparedEmail | Envelope,
    while_waiting: Callable[[], None] | None = None,
) -> _Outcome:
    """Hand one email to the connection and say what became of it. An `Envelope` goes to
    the smtplib connection of Django's SMTP backend as the backend would send it."""
    try:
        if isinstance(message, Envelope):
            # Pipelined when the server offers it: two round trips per email, not four.
            smtp_pipelining.sendmail(
                connection.connection,
                message.sender,
                message.recipients,
                message.data,
                while_waiting,
            )
        else:
            connection.send_messages([message])
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return _Outcome(
            _Result.REFUSED, timezone.now(), code=code, text=as_text(text), command="RCPT"
        )
    except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
        return _Outcome(
            _Result.REFUSED,
            timezone.now(),
            code=exc.smtp_code,
            text=as_text(exc.smtp_error),
            command="MAIL" if isinstance(exc, smtplib.SMTPSenderRefused) else "DATA",
        )
    except AnymailRecipientsRefused:
        pass  # anymail_status on the message says which and why; read below
    except AnymailError as exc:
        # Before OSError: anymail's errors from `requests` are OSErrors too.
        if _esp_may_have_accepted(exc):
            return _Outcome(_Result.AMBIGUOUS, timezone.now(), text=str(exc)[:500])
        return _Outcome(_Result.NOT_SENT, timezone.now())  # this one is retried later
    except (smtplib.SMTPServerDisconnected, smtplib.SMTPConnectError, OSError) as exc:
        # No reply to our message, so the server took no responsibility for it (RFC 5321
        # 6.1): an MTA sends again in this case, and so do we.
        return _Outcome(_Result.CONNECTION_LOST, timezone.now(), text=str(exc))
    except smtplib.SMTPException:
        return _Outcome(_Result.NOT_SENT, timezone.now())  # this one is retried later
    return _esp_outcome(delivery, message)


def _esp_may_have_accepted(exc: AnymailError) -> bool:
    """Whether the ESP may have taken the email although the call failed: the request went
    out and no verdict came back (the read timed out, a gateway timed out, or a success
    status came with a body we could not read). A refused connection or a 4xx/5xx verdict
    means it was not taken."""
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return True
    status = getattr(exc, "status_code", None)
    return status == 504 or (status is not None and 200 <= status < 300)


def _esp_outcome(delivery: Delivery, message: object) -> _Outcome:
    """Read anymail's per-recipient answer (none with plain SMTP: accepted)."""
    now = timezone.now()
    status = getattr(message, "anymail_status", None)
    recipient = None
    if status is not None and status.recipients:
        recipient = status.recipients.get(delivery.address) or next(
            iter(status.recipients.values())
        )
    raw_id = recipient.message_id if recipient is not None else None
    message_id = "" if raw_id is None else str(raw_id)[:255]
    if recipient is not None and recipient.status in ("rejected", "invalid"):
        return _Outcome(_Result.ESP_REFUSED, now, esp_message_id=message_id, text=recipient.status)
    return _Outcome(_Result.ACCEPTED, now, esp_message_id=message_id)


def _group_record(
    group: _Group, outcomes: dict[int, _Outcome], *, interrupted: bool = False
) -> list[int]:
    """Step 3: record every claimed delivery's outcome in one transaction; the ids to retry.

    A delivery with no outcome was never handed to the connection: queued again. One in
    flight when an unexpected error hit (``interrupted``) may or may not have left: unknown.
    Statuses move only from "sending" (or "unknown", when a slow sender records after the
    watchdog gave up on it): a webhook that already said "delivered" is not undone. A
    delivery whose lease this sender lost is never queued again nor marked unknown again:
    only what a server answered about it (accepted, refused) is recorded, as the facts they
    are.
    """
    by_result: dict[_Result, list[tuple[Delivery, _Outcome]]] = {}
    for delivery in group.deliveries:
        outcome = outcomes.get(delivery.pk)
        if (
            outcome is None
            or outcome.result == _Result.CONNECTION_LOST
            or (outcome.result == _Result.IN_FLIGHT and not interrupted)
        ):
            outcome = _Outcome(_Result.NOT_SENT, timezone.now())
        by_result.setdefault(outcome.result, []).append((delivery, outcome))
    if not by_result:
        return []
    pending = (S.SENDING, S.UNKNOWN)
    now = timezone.now()
    with transaction.atomic():
        accepted = by_result.get(_Result.ACCEPTED, [])
        if accepted:
            DeliveryEvent.objects.bulk_create(
                DeliveryEvent(delivery=d, kind=S.SENT, source="smtp", occurred_at=o.at)
                for d, o in accepted
            )
            Delivery.objects.filter(pk__in=[d.pk for d, _o in accepted], status__in=pending).update(
                status=S.SENT, problem_code="", updated=now, lease_token=""
            )
            with_ids = [d for d, o in accepted if o.esp_message_id]
            for delivery, outcome in accepted:
                delivery.esp_message_id = outcome.esp_message_id or delivery.esp_message_id
            if with_ids:
                Delivery.objects.bulk_update(with_ids, ["esp_message_id"], batch_size=500)
            # Sent only once a server accepted it for at least one recipient.
            sent_invoices = {d.invoice_id for d, _o in accepted if not d.is_test}
            if sent_invoices:
                Invoice.objects.filter(pk__in=sent_invoices, status=Invoice.Status.DRAFT).update(
                    status=Invoice.Status.SENT, sent_at=now
                )
        # Refusals are few, and each one feeds the suppression rules and the soft retries:
        # recorded one by one, against the rows locked here.
        one_by_one = [
            pair
            for result in (_Result.REFUSED, _Result.ESP_REFUSED, _Result.BUILD_FAILED)
            for pair in by_result.get(result, [])
        ]
        if one_by_one:
            current = dict(
                Delivery.objects.select_for_update()
                .filter(pk__in=[d.pk for d, _o in one_by_one])
                .values_list("pk", "status")
            )
            for delivery, outcome in one_by_one:
                delivery.status = current.get(delivery.pk, delivery.status)
                _record_refused(delivery, outcome)
        unknown = [
            d
            for result in (_Result.IN_FLIGHT, _Result.AMBIGUOUS)
            for d, _o in by_result.get(result, [])
        ]
        if unknown:
            _record_unknown(unknown, now=now, lease=group.lease)
        not_sent = [d.pk for d, _o in by_result.get(_Result.NOT_SENT, [])]
        if not_sent:
            # Only rows this claim still holds: one the watchdog marked "outcome unknown"
            # (and the owner maybe resent) must never go back to the queue.
            not_sent = list(
                Delivery.objects.select_for_update()
                .filter(pk__in=not_sent, status=S.SENDING, lease_token=group.lease)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
        if not_sent:
            # Their links never left: drop them; the next claim stores new ones.
            PayLink.objects.filter(delivery_id__in=not_sent).delete()
            Delivery.objects.filter(pk__in=not_sent).update(
                status=S.QUEUED, problem_code="", updated=now, lease_token=""
            )
    esp_results = by_result.get(_Result.ACCEPTED, []) + by_result.get(_Result.ESP_REFUSED, [])
    if any(o.esp_message_id for _d, o in esp_results):
        _waiting_webhook_events_match()
    return not_sent


def _waiting_webhook_events_match() -> None:
    """An ESP can report "delivered" within a second, before this group was recorded: such
    events wait for their delivery (`invoicing.delivery.webhook_events`). Now that the message ids
    are stored, match them at once instead of at the next sweep."""
    if webhook_events_waiting_exist():
        webhook_events_match_soon()


def _record_refused(delivery: Delivery, outcome: _Outcome) -> None:
    if outcome.result == _Result.REFUSED:
        smtp_refusal_record(delivery, outcome.code, outcome.text, outcome.command, locked=True)
    elif outcome.result == _Result.ESP_REFUSED:
        esp_refusal_record(
            delivery, status=outcome.text, esp_message_id=outcome.esp_message_id, at=outcome.at
        )
    else:  # BUILD_FAILED: nothing left; say so, as for an address refused before sending
        delivery_record_not_sent(
            delivery, outcome.text, reason="build_failed", occurred_at=outcome.at
        )


def _record_unknown(
    deliveries: Sequence[Delivery], *, now: datetime, lease: str | None = None
) -> None:
    """The sender lost track of these after claiming them: say so, never guess. With
    ``lease``, only those that claim still holds (the watchdog may have said so already)."""
    held = Delivery.objects.filter(pk__in=[d.pk for d in deliveries], status=S.SENDING)
    if lease is not None:
        held = held.filter(lease_token=lease)
    ids = set(held.order_by().values_list("pk", flat=True))
    deliveries = [d for d in deliveries if d.pk in ids]
    if not deliveries:
        return
    DeliveryEvent.objects.bulk_create(
        DeliveryEvent(
            delivery=d,
            kind=S.UNKNOWN,
            source="portal",
            occurred_at=now,
            reason="sender_interrupted",
            diagnostic=_(_UNKNOWN_DIAGNOSTIC),
        )
        for d in deliveries
    )
    Delivery.objects.filter(pk__in=[d.pk for d in deliveries], status=S.SENDING).update(
        status=S.UNKNOWN, problem_code=OUTCOME_UNKNOWN, updated=now, lease_token=""
    )


def deliveries_sending_expire(*, now: datetime | None = None) -> int:
    """Deliveries whose sender died between claim and record: outcome unknown, shown as a
    problem to act on, neither sent again nor left "sending" forever. Returns how many."""
    now = now or timezone.now()
    with transaction.atomic():
        stuck = list(
            Delivery.objects.select_for_update(skip_locked=True)
            .filter(status=S.SENDING, claimed_at__lt=now - sending_lease())
            .order_by("claimed_at")[:1000]
        )
        if stuck:
            _record_unknown(stuck, now=now)
    return len(stuck)

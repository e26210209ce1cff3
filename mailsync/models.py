"""Mailbox connections, their sync state, and the messages synced from them.

A connection keeps three states apart on purpose: what the member wants (`intent`), whether
the server lets us in (`health`, with the problem code and the server's reply) and how far
each folder got (`MailboxFolder.state` + cursor). Collapsing them would make "stopped by the
member" and "refused by the server" look alike, and they need different people to act.
"""

from __future__ import annotations

import datetime

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from portal.models import Client, Document, Firm


class MailboxConnection(models.Model):
    class Kind(models.TextChoices):
        IMAP = "imap", _("IMAP server")
        POP3 = "pop3", _("POP3 server")
        GMAIL = "gmail", _("Gmail")
        MICROSOFT = "microsoft", _("Microsoft 365 / Exchange")

    class Security(models.TextChoices):
        SSL = "ssl", _("SSL/TLS")
        STARTTLS = "starttls", _("STARTTLS")
        NONE = "none", _("None (unencrypted)")

    class Intent(models.TextChoices):
        ACTIVE = "active", _("Syncing")
        STOPPED = "stopped", _("Stopped")
        REMOVED = "removed", _("Removed")

    class Health(models.TextChoices):
        OK = "ok", _("Working")
        DEGRADED = "degraded", _("Having trouble, retrying")
        NEEDS_REAUTH = "needs_reauth", _("Needs re-authentication")
        NEEDS_PERMISSIONS = "needs_permissions", _("Needs permissions")
        NEEDS_SETTINGS = "needs_settings", _("Needs correct server settings")

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+")
    # NULL owner: the firm's shared mailbox (owners manage it).
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="mailbox_connections",
    )
    kind = models.CharField(_("provider"), max_length=20, choices=Kind.choices)
    email_address = models.CharField(_("email address"), max_length=320)
    host = models.CharField(_("server"), max_length=253)
    port = models.PositiveIntegerField(_("port"))
    security = models.CharField(_("security"), max_length=10, choices=Security.choices)
    username = models.CharField(_("user name"), max_length=320)
    # Fernet token of the password or OAuth token (see mailsync.crypto); empty once stopped.
    secret = models.TextField(blank=True, editable=False)

    intent = models.CharField(max_length=10, choices=Intent.choices, default=Intent.ACTIVE)

    health = models.CharField(max_length=20, choices=Health.choices, default=Health.OK)
    problem_code = models.CharField(max_length=50, blank=True)
    problem_step = models.CharField(max_length=30, blank=True)
    problem_detail = models.TextField(blank=True)  # the server's reply, cleaned of secrets
    problem_first_seen = models.DateTimeField(null=True, blank=True)
    problem_last_seen = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    # When the member was last told the mailbox needs re-authentication (NULL: not told
    # while the current problem lasts). A conditional UPDATE on it sends one email at once
    # and then at most one a day, however many workers see the failure together.
    reauth_notified_at = models.DateTimeField(null=True, blank=True, editable=False)
    # NULL while active means "due now"; auth problems clear it so nothing retries.
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    messages_imported = models.PositiveIntegerField(default=0)
    progress_done = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)

    # One sync per mailbox: a worker owns the run until lease_until (the watchdog frees it).
    lease_token = models.CharField(max_length=32, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)

    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("mailbox connection")
        verbose_name_plural = _("mailbox connections")
        ordering = ["email_address", "pk"]
        indexes = [
            # Serves the dispatcher: active connections whose next attempt is due.
            models.Index(
                fields=["next_attempt_at"],
                name="mailbox_due_idx",
                condition=Q(intent="active"),
            ),
        ]

    def __str__(self) -> str:
        return self.email_address

    @property
    def is_shared(self) -> bool:
        return self.owner_id is None

    @property
    def has_credentials(self) -> bool:
        return bool(self.secret)

    @property
    def is_failing(self) -> bool:
        return self.health != self.Health.OK

    # A server that cannot be reached is a problem only once it lasts: this many failures in
    # a row, the first at least this long ago. Before that the mailbox is "retrying" and the
    # backoff usually gets through (a restart, a network blip).
    CONNECTION_PROBLEM_FAILURES = 3
    CONNECTION_PROBLEM_AFTER = datetime.timedelta(minutes=30)

    @classmethod
    def blip(cls, now: datetime.datetime) -> Q:
        """Mailboxes whose only trouble is a short-lived sync.connection failure."""
        return Q(problem_code="sync.connection") & (
            Q(consecutive_failures__lt=cls.CONNECTION_PROBLEM_FAILURES)
            | Q(problem_first_seen__gt=now - cls.CONNECTION_PROBLEM_AFTER)
        )

    @property
    def problem_shown(self) -> bool:
        """Whether the recorded problem is worth showing (not a connection blip)."""
        if not self.problem_code:
            return False
        if self.problem_code != "sync.connection":
            return True
        first = self.problem_first_seen
        return (
            self.consecutive_failures >= self.CONNECTION_PROBLEM_FAILURES
            and first is not None
            and first <= timezone.now() - self.CONNECTION_PROBLEM_AFTER
        )


class MailboxFolder(models.Model):
    class State(models.TextChoices):
        INITIAL = "initial", _("Waiting for the first sync")
        BACKFILLING = "backfilling", _("Catching up")
        IDLE = "idle", _("Up to date")
        RESYNCING = "resyncing", _("Re-reading the folder")

    connection = models.ForeignKey(
        MailboxConnection, on_delete=models.CASCADE, related_name="folders"
    )
    name = models.CharField(max_length=500)
    enabled = models.BooleanField(default=False)
    state = models.CharField(max_length=20, choices=State.choices, default=State.INITIAL)
    uidvalidity = models.BigIntegerField(null=True, blank=True)
    last_uid = models.BigIntegerField(default=0)
    highestmodseq = models.BigIntegerField(null=True, blank=True)
    # UIDVALIDITY changes since reset_window_started_at; changes older than the engine's
    # RESET_WINDOW no longer count, so a server that was fixed is trusted again.
    reset_count = models.PositiveIntegerField(default=0)
    reset_window_started_at = models.DateTimeField(null=True, blank=True)
    # Set when the server renumbered the folder more than MAX_RESETS times within the window
    # (Courier does at every read-only visit when mail is delivered straight into the
    # Maildir): the folder is then read by date window with dedupe instead of by UID, and
    # the member is told (sync.uidvalidity_unstable). Cleared after stable_runs runs in a
    # row with one UIDVALIDITY.
    uidvalidity_unstable_since = models.DateTimeField(null=True, blank=True)
    stable_runs = models.PositiveIntegerField(default=0)
    # What the server's STATUS reported at the last discovery (switched-off folders only;
    # NULL: never asked, the STATUS failed, or the folder is gone from the server). Lets
    # the portal say "mail sits in a folder that is not synced" (sync.labels_excluded).
    messages = models.PositiveIntegerField(null=True, blank=True)
    # The silent-gap check (sync.gap, see mailsync.engine.folder_gap_check): messages the
    # server holds within the sync window and behind the cursor that the portal has no
    # source row for, with the counts both sides gave at the last check.
    gap_missing = models.PositiveIntegerField(default=0)
    gap_counts = models.JSONField(default=dict, blank=True)
    gap_first_seen = models.DateTimeField(null=True, blank=True)
    gap_checked_at = models.DateTimeField(null=True, blank=True)
    # "Re-check this folder" was asked for: the next sync of the mailbox re-reads what is
    # missing (and checks again) before it clears this.
    recheck_requested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "name"], name="mailboxfolder_unique")
        ]

    def __str__(self) -> str:
        return self.name


class Message(models.Model):
    """One email as the firm knows it, whichever mailboxes it came through."""

    class DateSource(models.TextChoices):
        HEADER = "", _("the message's Date")
        SERVER = "server", _("the server's arrival time")
        RECEIVED = "received", _("the newest Received header")
        NONE = "none", _("no date")

    # No index of its own: message_unique_key_occurrence and message_unlinked_idx lead with
    # the firm (every index is one more write for each of the sync's inserted rows).
    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+", db_index=False)
    # sha256 of the normalised Message-ID with the sender's fingerprint, or of what the
    # sender wrote when it has none (see mailsync.parsing.message_key).
    key = models.CharField(max_length=64)
    # Messages without a Message-ID whose content is equal are one message per mail server
    # copy: the n-th such message of one folder (a UID or UIDL of its own) is occurrence n.
    occurrence = models.PositiveIntegerField(default=1)
    # sha256 of the normalised Date, From and Subject (mailsync.parsing.sender_fingerprint).
    fingerprint = models.CharField(max_length=64, blank=True)
    message_id = models.TextField(blank=True)
    subject = models.TextField(blank=True)
    from_name = models.CharField(max_length=200, blank=True)
    from_address = models.CharField(max_length=320, blank=True)
    to_addresses = models.JSONField(default=list)
    cc_addresses = models.JSONField(default=list)
    reply_to_addresses = models.JSONField(default=list)
    # " a@x b@y " — every address above, normalised, space-delimited so a relink can find
    # messages by address with a plain `contains` on any database.
    participants = models.TextField(blank=True)
    date = models.DateTimeField(null=True, blank=True)
    # Where ``date`` came from when the message had no readable Date (shown with it).
    date_source = models.CharField(max_length=10, choices=DateSource.choices, blank=True)
    in_reply_to = models.TextField(blank=True)
    references = models.TextField(blank=True)
    # Read with the messages and grouped in Python (mailsync.selectors.client_threads_page); no
    # query looks messages up by it, so it has no index.
    thread_key = models.CharField(max_length=64)
    snippet = models.CharField(max_length=300, blank=True)
    text_body = models.TextField(blank=True)
    # sha256 of the raw RFC 5322 bytes, kept in the blob store (portal.blobs), not here.
    # "" only for a message whose raw mail was never kept.
    raw_sha256 = models.CharField(max_length=64, blank=True, editable=False)
    size = models.PositiveBigIntegerField(default=0)
    parse_error = models.BooleanField(default=False)
    parse_error_detail = models.TextField(blank=True)
    created = models.DateTimeField(auto_now_add=True)
    # Whether the message has a client link: kept by mailsync.linking in the same
    # transaction as the links (the only code that adds or drops them), so unlinked mail is
    # found through the partial index below instead of checking every message for a link.
    linked = models.BooleanField(default=False, db_default=False)

    class Meta:
        ordering = ["-date", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["firm", "key", "occurrence"], name="message_unique_key_occurrence"
            )
        ]
        indexes = [
            # Serves the blob sweep's reference check (portal.blobs._referenced:
            # raw_sha256 IN (...)).
            models.Index(fields=["raw_sha256"], name="message_raw_sha256_idx"),
            # Unlinked mail (mailsync.selectors.unlinked_addresses, the dashboard's
            # unlinked summary, the sync.not_linked count): a firm's unlinked messages only;
            # with the id, a member's view probes it per message of their mailboxes without
            # reading the (mostly linked) messages' rows.
            models.Index(
                fields=["firm", "id"], condition=Q(linked=False), name="message_unlinked_idx"
            ),
        ]

    def __str__(self) -> str:
        return self.subject or self.key

    @property
    def raw(self) -> bytes:
        """The raw message, read from the blob store (b"" when none was kept)."""
        from portal.blobs import blob_read

        return blob_read(self.raw_sha256) if self.raw_sha256 else b""

    @raw.setter
    def raw(self, data: bytes) -> None:
        """Write ``data`` to the blob store now (before the row is saved, as the store's
        rules want) and point this message at it. For tests and one-off scripts: code that
        saves rows reusing blobs beside the sweep uses ``blob_put`` + ``blobs_confirm``."""
        from portal.blobs import blob_put

        ref = blob_put(bytes(data))
        self.raw_sha256, self.size = ref.sha256, ref.size


class MessageSource(models.Model):
    """Where a message was seen: one row per mailbox folder and UID (IMAP) or UIDL (POP3).

    Written in the same transaction as the folder cursor, so the pair is the sync's memory.
    """

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="sources")
    connection = models.ForeignKey(
        MailboxConnection, on_delete=models.CASCADE, related_name="sources"
    )
    folder = models.ForeignKey(MailboxFolder, on_delete=models.CASCADE, related_name="sources")
    uid = models.BigIntegerField(null=True, blank=True)
    uidl = models.CharField(max_length=100, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "folder", "uid"],
                condition=Q(uid__isnull=False),
                name="messagesource_unique_uid",
            ),
            models.UniqueConstraint(
                fields=["connection", "folder", "uidl"],
                condition=~Q(uidl=""),
                name="messagesource_unique_uidl",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.folder_id}:{self.uid or self.uidl}"


class MessageClientLink(models.Model):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="client_links")
    # No index of its own: messageclientlink_newest_idx leads with the client.
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+", db_index=False)
    created = models.DateTimeField(auto_now_add=True)
    # The message's date, copied when the link is written (a message's date never changes
    # once stored), so a client's newest mail is one index range of its links.
    message_date = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "client"], name="messageclientlink_unique")
        ]
        indexes = [
            # A client's Email tab (mailsync.selectors.client_threads_page): its newest links in
            # the messages' order (-date, -pk; NULL dates first, as PostgreSQL sorts them).
            models.Index(
                fields=["client", "-message_date", "-message"],
                name="messageclientlink_newest_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} → {self.client_id}"


class MessageAttachment(models.Model):
    """An attachment of a message as stored for one linked client (as that client's
    `Document`, shared by every message that carried the same bytes)."""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    document = models.ForeignKey(
        Document, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    filename = models.CharField(max_length=255)
    content_type = models.CharField(max_length=127, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    sha256 = models.CharField(max_length=64)
    skipped_reason = models.CharField(max_length=30, blank=True)

    class Meta:
        ordering = ["pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["message", "client", "sha256", "filename"],
                name="messageattachment_unique",
            )
        ]

    def __str__(self) -> str:
        return self.filename


class LinkedAddress(models.Model):
    """The contact addresses messages were last linked with, per firm.

    The relink task compares this with portal's `ContactAddress` rows to find addresses that
    were added, changed or removed since its last run (portal cannot tell mailsync itself).
    """

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+")
    normalized = models.CharField(max_length=320)
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["firm", "normalized", "client"], name="linkedaddress_unique"
            )
        ]

    def __str__(self) -> str:
        return self.normalized


# --- sending from a member's own mailbox (see mailsync.outgoing and mailsync.sending) ------


class OutgoingServer(models.Model):
    """The SMTP server a mailbox sends through, with the mailbox's own login.

    `MailboxConnection` keeps no SMTP settings (the account check only tests them). A row is
    saved here once a member tested sending; without one, the provider's known server is
    used (presets, Gmail, Microsoft): see `mailsync.sending.smtp_settings_for`.
    """

    connection = models.OneToOneField(
        MailboxConnection, on_delete=models.CASCADE, related_name="outgoing_server"
    )
    host = models.CharField(_("sending server (SMTP)"), max_length=253)
    port = models.PositiveIntegerField(_("SMTP port"))
    security = models.CharField(
        _("SMTP security"), max_length=10, choices=MailboxConnection.Security.choices
    )
    checked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class OutgoingAddress(models.Model):
    """An address a mailbox may send as: its own login address, or an alias the server
    accepted in a MAIL FROM test.

    `firm` and `owner` repeat the connection's so that "one default per member" (and one
    for the firm's shared mailbox) is a database constraint, and scoping is one filter.
    """

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    connection = models.ForeignKey(
        MailboxConnection, on_delete=models.CASCADE, related_name="outgoing_addresses"
    )
    address = models.CharField(_("email address"), max_length=320)
    normalized = models.CharField(max_length=320, editable=False)
    display_name = models.CharField(_("name shown to recipients"), max_length=200, blank=True)
    # The connection's own login address: always there, cannot be removed.
    is_own = models.BooleanField(default=False)
    is_default = models.BooleanField(default=False)
    verified_at = models.DateTimeField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("sending address")
        verbose_name_plural = _("sending addresses")
        ordering = ["connection_id", "-is_own", "address", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "normalized"], name="outgoingaddress_unique"
            ),
            models.UniqueConstraint(
                fields=["firm", "owner"],
                condition=Q(is_default=True, owner__isnull=False),
                name="outgoingaddress_one_default_per_member",
            ),
            models.UniqueConstraint(
                fields=["firm"],
                condition=Q(is_default=True, owner__isnull=True),
                name="outgoingaddress_one_shared_default",
            ),
        ]

    def __str__(self) -> str:
        return self.address


class ClientSender(models.Model):
    """The address one member sends to one client from (a project or brand of theirs)."""

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    address = models.ForeignKey(OutgoingAddress, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["member", "client"], name="clientsender_unique")
        ]

    def __str__(self) -> str:
        return f"{self.member_id} → {self.client_id}: {self.address_id}"


class IgnoredAddress(models.Model):
    """An address a member chose to leave unlinked (a newsletter, a supplier, a colleague).

    It is left off the unlinked-mail list and out of the `sync.not_linked` count; a message
    still counts while it names another address nobody has decided about.
    """

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+")
    normalized = models.CharField(_("email address"), max_length=320)
    ignored_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("ignored address")
        verbose_name_plural = _("ignored addresses")
        ordering = ["normalized"]
        constraints = [
            models.UniqueConstraint(fields=["firm", "normalized"], name="ignoredaddress_unique")
        ]

    def __str__(self) -> str:
        return self.normalized


class ImageSender(models.Model):
    """A sender whose remote images the firm chose to show ("Show images from this sender").

    Remote images are blocked by default: loading them tells the sender (and any tracker in
    the message) that the mail was opened, when, and from where.
    """

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+")
    normalized = models.CharField(_("email address"), max_length=320)
    allowed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("sender whose images are shown")
        verbose_name_plural = _("senders whose images are shown")
        ordering = ["normalized"]
        constraints = [
            models.UniqueConstraint(fields=["firm", "normalized"], name="imagesender_unique")
        ]

    def __str__(self) -> str:
        return self.normalized


class WrittenEmail(models.Model):
    """An email a member wrote to a client on the Email tab, kept from the moment they press
    Send until a worker on the send queue has sent it (`mailsync.written`).

    The page never waits on the member's mail server: a server that does not answer would
    hold a web worker for the send's whole timeout. Each rendering of the form carries its
    own ``submission_key``, unique per member, so a double click or a browser's retry keeps
    one row and sends one email. A row leaves "queued" for "sending" in one conditional
    update, so a redelivered or duplicated task sends nothing; a worker that died while
    "sending" leaves it "unknown" (it may have gone out), never sent twice.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", _("Waiting to be sent")
        SENDING = "sending", _("Sending")
        SENT = "sent", _("Sent")
        FAILED = "failed", _("Not sent")
        UNKNOWN = "unknown", _("Outcome unknown")

    # Failures that are not a server's answer (`SendResult.no_server`,
    # `SendResult.credentials_unavailable`), kept in ``failure_code`` beside the classified ones.
    NO_SERVER = "no_server"
    CREDENTIALS_UNAVAILABLE = "credentials_unavailable"
    SENDER_GONE = "sender_gone"
    BAD_HEADER = "bad_header"

    firm = models.ForeignKey(Firm, on_delete=models.CASCADE, related_name="+")
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    member = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    sender = models.ForeignKey(
        OutgoingAddress, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    reply_to = models.ForeignKey(Message, null=True, on_delete=models.SET_NULL, related_name="+")
    recipients = models.JSONField(default=list)  # validated addresses, in the form's order
    subject = models.CharField(max_length=500)
    body = models.TextField()
    submission_key = models.CharField(max_length=64)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    created = models.DateTimeField(default=timezone.now)
    # When its send task was last queued (the watchdog queues a lost one again).
    queued_at = models.DateTimeField(default=timezone.now)
    claimed_at = models.DateTimeField(null=True)
    finished_at = models.DateTimeField(null=True)
    # Why it was not sent: a `mailsync.errors` code, or one of the constants above.
    failure_code = models.CharField(max_length=64, blank=True)
    failure_step = models.CharField(max_length=32, blank=True)
    failure_detail = models.TextField(blank=True)
    refused = models.JSONField(default=dict)  # recipient -> the server's reply
    message = models.ForeignKey(Message, null=True, on_delete=models.SET_NULL, related_name="+")
    not_kept = models.BooleanField(default=False)  # sent, but the portal's copy was not stored
    # Taken off the client's Email tab: sent again from its form, or dismissed by the member.
    dismissed = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["member", "submission_key"], name="writtenemail_one_per_submission"
            )
        ]
        indexes = [
            # The client's Email tab: this member's emails to this client not (known) sent.
            models.Index(
                fields=["client", "member", "created"],
                condition=Q(dismissed=False) & ~Q(status="sent"),
                name="writtenemail_unsent_idx",
            ),
            # The watchdog's queries: rows still waiting or sending.
            models.Index(
                fields=["status", "queued_at"],
                condition=Q(status__in=["queued", "sending"]),
                name="writtenemail_open_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.subject} ({self.status})"

    @property
    def done(self) -> bool:
        return self.status not in (self.Status.QUEUED, self.Status.SENDING)

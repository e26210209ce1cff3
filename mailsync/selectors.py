"""Reads for the mailsync pages; each is a fixed number of queries, whatever the volume."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Prefetch, QuerySet
from django.db.models.functions import Lower

from accounts.models import User
from mailsync.models import MailboxConnection, MailboxFolder, Message, MessageAttachment
from portal.models import Client, Firm

Intent = MailboxConnection.Intent


def _visible(firm: Firm) -> QuerySet[MailboxConnection]:
    return (
        MailboxConnection.objects.filter(firm=firm)
        .exclude(intent=Intent.REMOVED)
        .defer("secret")
        .prefetch_related(Prefetch("folders", queryset=MailboxFolder.objects.order_by("name")))
    )


def connections_of_member(*, firm: Firm, user: User) -> list[MailboxConnection]:
    return list(_visible(firm).filter(owner=user))


def connections_shared(*, firm: Firm) -> list[MailboxConnection]:
    return list(_visible(firm).filter(owner__isnull=True))


def connections_failing_for_client(*, client: Client) -> list[MailboxConnection]:
    """Active mailboxes that are failing and whose mail links to this client (one query)."""
    return list(
        MailboxConnection.objects.filter(
            firm_id=client.firm_id,
            intent=Intent.ACTIVE,
            sources__message__client_links__client=client,
        )
        .exclude(health=MailboxConnection.Health.OK)
        .select_related("owner")
        .defer("secret")
        .distinct()
    )


# Folders that never hold client mail the member would want synced (deleted, spam, drafts,
# the member's own sent mail), by their usual names in English: a switched-off one full of
# mail is normal, not a sign that mail is missing. Compared case-insensitively, alone or
# under the prefixes servers put them under (Courier-style "INBOX.", Gmail's "[Gmail]/" and
# "[Google Mail]/" in the UK and Germany). The adapter's folder list carries no special-use
# flags (RFC 6154), so names are all we can go by.
NON_CLIENT_FOLDER_NAMES = frozenset(
    {
        "trash", "deleted items", "deleted messages", "bin",
        "junk", "junk e-mail", "junk email", "spam",
        "drafts",
        "sent", "sent items", "sent mail", "sent messages",
    }
)  # fmt: skip
_NON_CLIENT_FOLDER_PREFIXES = ("", "inbox.", "inbox/", "[gmail]/", "[google mail]/")
_NON_CLIENT_FOLDERS_LOWER = sorted(
    prefix + name for prefix in _NON_CLIENT_FOLDER_PREFIXES for name in NON_CLIENT_FOLDER_NAMES
)


def folders_excluded_with_mail(*, firm: Firm) -> list[MailboxFolder]:
    """Switched-off folders of the firm's active mailboxes that held mail at the last sync
    (sync.labels_excluded), leaving out trash, spam, drafts and sent folders. One query;
    each folder comes with ``connection`` and its ``owner``."""
    return list(
        MailboxFolder.objects.filter(
            connection__firm=firm,
            connection__intent=Intent.ACTIVE,
            enabled=False,
            messages__gt=0,
        )
        .alias(lower_name=Lower("name"))
        .exclude(lower_name__in=_NON_CLIENT_FOLDERS_LOWER)
        .select_related("connection__owner")
        .defer("connection__secret")
        .order_by("connection__email_address", "connection_id", "name")
    )


@dataclass
class Thread:
    key: str
    messages: list[Message] = field(default_factory=list)

    @property
    def subject(self) -> str:
        return self.messages[0].subject if self.messages else ""

    @property
    def latest(self) -> Message:
        return self.messages[-1]


def client_threads(*, client: Client, limit: int = 200) -> list[Thread]:
    """The client's latest messages grouped into threads (References / In-Reply-To), newest
    thread first. Two queries: messages, and their attachments for this client."""
    messages = list(
        Message.objects.filter(client_links__client=client)
        .defer("raw", "participants")
        .prefetch_related(
            Prefetch(
                "attachments",
                queryset=MessageAttachment.objects.filter(client=client).select_related("document"),
            )
        )
        .order_by("-date", "-pk")[:limit]
    )
    threads: dict[str, Thread] = {}
    for message in messages:
        threads.setdefault(message.thread_key, Thread(message.thread_key)).messages.append(message)
    for thread in threads.values():
        thread.messages.reverse()  # oldest first inside a thread
    return list(threads.values())

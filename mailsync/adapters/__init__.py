"""Mailbox provider adapters (IMAP, POP3): pure Python, no Django imports."""

from mailsync.adapters.base import (
    Credentials,
    FetchedMessage,
    FolderStatus,
    ServerSettings,
)
from mailsync.adapters.imap import ImapMailbox
from mailsync.adapters.pop3 import Pop3Mailbox

__all__ = [
    "Credentials",
    "FetchedMessage",
    "FolderStatus",
    "ImapMailbox",
    "Pop3Mailbox",
    "ServerSettings",
]

"""Outgoing addresses: which addresses a mailbox may send as, and which one a message to a
client goes from.

Every mailbox connection sends as its own address; a member may add aliases the server lets
them send as (checked with MAIL FROM, see `mailsync.sending.sender_check`), pick a default,
and pick per client which address that client's mail goes from (a project or a brand). The
firm's shared mailbox has addresses too, managed by owners.

`outgoing_for` decides: the member's choice for the client, else the member's default, else
any other usable address of the member's own mailboxes (a member's own mailbox wins over
the firm's), else the shared mailbox's default, else None. A mailbox that is stopped,
removed, needs re-authentication or has no known sending server is never chosen;
`outgoing_resolve` also says why each skipped choice was skipped, for the page.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from accounts.models import User
from mailsync import sending
from mailsync.errors import SyncError
from mailsync.models import ClientSender, MailboxConnection, OutgoingAddress
from portal.addresses import normalize_address, validate_address
from portal.models import Client, Firm

__all__ = [
    "Resolution",
    "address_add",
    "address_make_default",
    "address_remove",
    "address_rename",
    "addresses_available",
    "addresses_ensure_own",
    "client_sender_get",
    "client_sender_set",
    "connections_with_addresses",
    "outgoing_for",
    "outgoing_resolve",
    "unusable_reason",
]

Intent = MailboxConnection.Intent
Health = MailboxConnection.Health


def _scope(firm: Firm, owner: User | None) -> Q:
    return Q(firm=firm, owner=owner) if owner is not None else Q(firm=firm, owner__isnull=True)


# --- a mailbox's addresses ----------------------------------------------------------------


def addresses_ensure_own(*, connections: list[MailboxConnection]) -> None:
    """Give each connection its own address as a sending address (once), the default of
    its member (or of the shared mailbox) if they have none yet."""
    have = set(
        OutgoingAddress.objects.filter(connection__in=connections, is_own=True).values_list(
            "connection_id", flat=True
        )
    )
    for connection in connections:
        if connection.pk in have or connection.intent == Intent.REMOVED:
            continue
        with transaction.atomic():
            owner = connection.owner if connection.owner_id else None
            scope = _scope(connection.firm, owner)
            # A default on a removed mailbox cannot send: the new mailbox takes over.
            OutgoingAddress.objects.filter(
                scope, is_default=True, connection__intent=Intent.REMOVED
            ).update(is_default=False)
            has_default = OutgoingAddress.objects.filter(scope, is_default=True).exists()
            OutgoingAddress.objects.get_or_create(
                connection=connection,
                normalized=normalize_address(connection.email_address),
                defaults={
                    "firm_id": connection.firm_id,
                    "owner_id": connection.owner_id,
                    "address": connection.email_address,
                    "display_name": _default_name(connection),
                    "is_own": True,
                    "is_default": not has_default,
                    "verified_at": timezone.now(),
                },
            )


def _default_name(connection: MailboxConnection) -> str:
    if connection.owner_id:
        return connection.owner.get_full_name()[:200]
    return connection.firm.name[:200]


class AddressRefused(Exception):
    """The address cannot be added; ``message`` says why, ``code`` is a problem code or ''."""

    def __init__(self, message: str, *, code: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.detail = detail


def address_add(
    *, connection: MailboxConnection, address: str, display_name: str = ""
) -> OutgoingAddress:
    """Add an alias after the mailbox's SMTP server accepted it as a sender (MAIL FROM,
    RSET; nothing is sent). Raises `AddressRefused`; portal.addresses' `AddressError` for a
    malformed address."""
    valid = validate_address(address, check_deliverability=False)
    if OutgoingAddress.objects.filter(connection=connection, normalized=valid.normalized).exists():
        raise AddressRefused(
            _("This mailbox already sends as %(address)s.") % {"address": valid.address}
        )
    reason = unusable_reason(connection, check_server=False)
    if reason:
        raise AddressRefused(reason)
    try:
        sending.sender_check(connection=connection, address=valid.address)
    except sending.NoSendingServer as exc:
        raise AddressRefused(
            _("Enter this mailbox's sending server (SMTP) first, then add the address.")
        ) from exc
    except SyncError as error:
        raise AddressRefused(
            _("The mail server did not accept %(address)s as a sender for this mailbox.")
            % {"address": valid.address},
            code=error.code,
            detail=error.detail,
        ) from error
    return OutgoingAddress.objects.create(
        firm_id=connection.firm_id,
        owner_id=connection.owner_id,
        connection=connection,
        address=valid.address,
        normalized=valid.normalized,
        display_name=display_name,
        verified_at=timezone.now(),
    )


@transaction.atomic
def address_make_default(*, address: OutgoingAddress) -> None:
    """Make ``address`` the default of its member (or of the firm's shared mailbox)."""
    owner = address.owner if address.owner_id else None
    OutgoingAddress.objects.select_for_update().filter(
        _scope(address.firm, owner), is_default=True
    ).exclude(pk=address.pk).update(is_default=False)
    OutgoingAddress.objects.filter(pk=address.pk).update(is_default=True)
    address.is_default = True


@transaction.atomic
def address_remove(*, address: OutgoingAddress) -> None:
    """Remove an alias (a mailbox's own address stays). A removed default hands over to the
    mailbox's own address; clients that went from it fall back to the default."""
    if address.is_own:
        raise ValueError("a mailbox's own address cannot be removed")
    was_default = address.is_default
    address.delete()
    if was_default:
        own = OutgoingAddress.objects.filter(connection_id=address.connection_id, is_own=True)
        own.update(is_default=True)


def address_rename(*, address: OutgoingAddress, display_name: str) -> None:
    OutgoingAddress.objects.filter(pk=address.pk).update(display_name=display_name)
    address.display_name = display_name


def connections_with_addresses(*, firm: Firm, owner: User | None) -> list[MailboxConnection]:
    """The member's (or the firm's shared) mailboxes, each with ``addresses`` (own first)
    and ``sending_server`` (None if unknown): three queries, plus one per mailbox that has
    no sending address yet (the first visit after it was connected)."""
    connections = list(
        MailboxConnection.objects.filter(_scope(firm, owner))
        .exclude(intent=Intent.REMOVED)
        .select_related("owner", "firm", "outgoing_server")
        .defer("secret")
        .order_by("email_address", "pk")
    )
    addresses_ensure_own(connections=connections)
    by_connection: dict[int, list[OutgoingAddress]] = {c.pk: [] for c in connections}
    for address in OutgoingAddress.objects.filter(connection__in=connections):
        by_connection[address.connection_id].append(address)
    for connection in connections:
        connection.addresses = by_connection[connection.pk]
        connection.sending_server = sending.smtp_settings_for(connection)
        connection.unusable_reason = unusable_reason(connection)
    return connections


# --- which address sends ------------------------------------------------------------------


def unusable_reason(connection: MailboxConnection, *, check_server: bool = True) -> str:
    """Why mail cannot go out through ``connection`` now, in words for the member ('' when
    it can). Needs ``outgoing_server`` loaded (select_related) when ``check_server``."""
    if connection.intent == Intent.REMOVED:
        return _("the mailbox %(address)s was removed") % {"address": connection.email_address}
    if connection.intent == Intent.STOPPED:
        return _("Email Sync is stopped for %(address)s") % {"address": connection.email_address}
    if connection.health == Health.NEEDS_REAUTH:
        return _("%(address)s needs re-authentication (My Account → Email Sync)") % {
            "address": connection.email_address
        }
    if connection.health == Health.NEEDS_PERMISSIONS:
        return _("%(address)s must be connected again with access to mail") % {
            "address": connection.email_address
        }
    if check_server and sending.smtp_settings_for(connection) is None:
        return _("the sending server (SMTP) of %(address)s is not set") % {
            "address": connection.email_address
        }
    return ""


@dataclass
class Resolution:
    address: OutgoingAddress | None
    # Choices that would have come first but cannot send now: (address, why).
    skipped: list[tuple[OutgoingAddress, str]] = field(default_factory=list)
    # The member's choice for the client (usable or not), and every address they can send
    # from now (for the From select), so a page needs no second look-up.
    chosen: OutgoingAddress | None = None
    available: list[OutgoingAddress] = field(default_factory=list)


def _candidates(firm: Firm, user: User) -> QuerySet[OutgoingAddress]:
    return (
        OutgoingAddress.objects.filter(firm=firm)
        .filter(Q(owner=user) | Q(owner__isnull=True))
        .select_related("connection__outgoing_server", "connection__owner")
        .defer("connection__secret")
    )


def outgoing_resolve(
    member: User, client: Client | None = None, *, firm: Firm | None = None
) -> Resolution:
    """`outgoing_for` with the reasons why earlier choices were passed over. Two queries
    (three with a client), plus the first-visit creation of own addresses."""
    firm = firm or (client.firm if client is not None else None)
    if firm is None:
        raise ValueError("give a client or a firm")
    connections = list(
        MailboxConnection.objects.filter(firm=firm)
        .filter(Q(owner=member) | Q(owner__isnull=True))
        .exclude(intent=Intent.REMOVED)
        .select_related("owner", "firm")
        .defer("secret")
    )
    addresses_ensure_own(connections=connections)
    addresses = list(_candidates(firm, member))
    chosen = client_sender_get(member=member, client=client) if client is not None else None
    mine = [a for a in addresses if a.owner_id == member.pk]
    shared = [a for a in addresses if a.owner_id is None]
    # In order of preference; a mailbox's own address before its aliases as a fallback.
    order = [
        *([chosen] if chosen is not None else []),
        *[a for a in mine if a.is_default],
        *sorted((a for a in mine if not a.is_default), key=_fallback_order),
        *[a for a in shared if a.is_default],
        *sorted((a for a in shared if not a.is_default), key=_fallback_order),
    ]
    resolution = Resolution(address=None, chosen=chosen, available=_usable_sorted(addresses))
    for address in order:
        reason = unusable_reason(address.connection)
        if not reason:
            resolution.address = address
            return resolution
        if address is chosen or address.is_default:
            resolution.skipped.append((address, reason))
    return resolution


def _usable_sorted(addresses: list[OutgoingAddress]) -> list[OutgoingAddress]:
    # The member's own first (default first), then the shared mailbox's.
    usable = [a for a in addresses if not unusable_reason(a.connection)]
    return sorted(usable, key=lambda a: (a.owner_id is None, not a.is_default, a.address))


def _fallback_order(address: OutgoingAddress) -> tuple[bool, int, int]:
    return (not address.is_own, address.connection_id, address.pk)


def outgoing_for(
    member: User, client: Client | None = None, *, firm: Firm | None = None
) -> OutgoingAddress | None:
    """The address ``member``'s mail to ``client`` goes from: their choice for this client,
    else their default, else another of their own mailboxes, else the firm's shared
    mailbox's default, else None (the page then asks to connect a mailbox). ``firm`` is
    needed only without a client."""
    return outgoing_resolve(member, client, firm=firm).address


def addresses_available(*, firm: Firm, member: User) -> list[OutgoingAddress]:
    """Every address ``member`` can send from now (their own mailboxes', then the firm's
    shared mailbox's), for the From select."""
    return _usable_sorted(list(_candidates(firm, member)))


# --- per client ---------------------------------------------------------------------------


def client_sender_get(*, member: User, client: Client) -> OutgoingAddress | None:
    choice = (
        ClientSender.objects.filter(member=member, client=client)
        .select_related("address__connection__outgoing_server", "address__connection__owner")
        .defer("address__connection__secret")
        .first()
    )
    return choice.address if choice is not None else None


def client_sender_set(*, member: User, client: Client, address: OutgoingAddress | None) -> None:
    """Send ``member``'s mail to ``client`` from ``address`` (None: back to the default).
    The caller has checked that ``address`` is one ``member`` may send from."""
    if address is None:
        ClientSender.objects.filter(member=member, client=client).delete()
        return
    ClientSender.objects.update_or_create(
        member=member, client=client, defaults={"address": address, "firm_id": client.firm_id}
    )

"""The catalogue of known problems: for each stable code, what happened, why, who can fix
it, the steps, and the actions the portal offers in place.

Other apps record only codes and the raw detail (server reply, SMTP code, DNS answer). Only
this module turns a code into words for people, in the portal's own voice.

One piece (over 500 lines) on purpose: it is a catalogue, one entry per problem code;
kept in one file so a code is defined once and the whole set can be read and reviewed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _


class Kind(StrEnum):
    SYNC = "sync"
    SEND = "send"
    DELIVERY = "delivery"
    DOMAIN = "domain"


class Fixer(StrEnum):
    MAILBOX_OWNER = "mailbox_owner"
    MEMBER = "member"
    OWNER = "owner"
    CLIENT = "client"
    CLIENT_IT = "client_it"
    FIRM_IT = "firm_it"
    PORTAL = "portal"


FIXER_LABELS = {
    Fixer.MAILBOX_OWNER: _("The member whose mailbox it is"),
    Fixer.MEMBER: _("You or another member of your firm"),
    Fixer.OWNER: _("A firm owner"),
    Fixer.CLIENT: _("The client"),
    Fixer.CLIENT_IT: _("The client's IT or email provider"),
    Fixer.FIRM_IT: _("Your firm's IT or domain administrator"),
    Fixer.PORTAL: _("Nobody: the portal retries by itself"),
}


class Action(StrEnum):
    REAUTHENTICATE = "reauthenticate"
    STOP_SYNC = "stop_sync"
    SYNC_SETTINGS = "sync_settings"
    EDIT_ADDRESS_RESEND = "edit_address_resend"
    RESEND = "resend"
    REQUEST_REMOVAL = "request_removal"
    RECHECK_DNS = "recheck_dns"
    COPY_RECORD = "copy_record"
    SEND_TEST = "send_test"
    ALLOWLIST = "allowlist"
    LINK_ADDRESS = "link_address"
    MARK_HANDLED = "mark_handled"
    RECHECK_FOLDER = "recheck_folder"


@dataclass(frozen=True)
class Guide:
    code: str
    kind: Kind
    title: Promise
    what: Promise
    why: Promise
    fixers: tuple[Fixer, ...]
    steps: tuple[Promise, ...]
    actions: tuple[Action, ...] = ()
    # Problems the portal cannot see for itself are shown as guidance only; say why.
    detectable: bool = True
    not_detectable_because: Promise | None = None
    severity: int = field(default=2)  # 1 informational, 2 needs attention, 3 mail is lost

    @property
    def fixers_text(self) -> str:
        """Who can fix it, in the active language ("The client; The client's IT ...")."""
        return "; ".join(str(FIXER_LABELS[fixer]) for fixer in self.fixers)


GUIDES: tuple[Guide, ...] = (
    # Mailbox sync (incoming)
    Guide(
        "sync.auth_failed",
        Kind.SYNC,
        _("A mailbox stopped syncing: the sign-in was refused"),
        _(
            "The portal could not sign in to this member's mailbox, so new mail from clients "
            "no longer reaches their Email tabs and attachments stop arriving as documents."
        ),
        _(
            "The mailbox password was changed or has expired, or the email provider withdrew "
            "the portal's permission. Until someone signs in again, the portal stops trying."
        ),
        (Fixer.MAILBOX_OWNER,),
        (
            _("Open My Account → Email Sync."),
            _("Click Re-authenticate and sign in with the mailbox's current password."),
            _(
                "If that fails, click Stop Email Sync, confirm with Yes, Stop, then Sync Your "
                "Email with the new details. Mail synced so far stays where it is."
            ),
        ),
        (Action.REAUTHENTICATE, Action.STOP_SYNC),
        severity=3,
    ),
    Guide(
        "sync.insufficient_scope",
        Kind.SYNC,
        _("The mailbox is connected without every permission it needs"),
        _("The mailbox connected, but the portal was not allowed to read mail, so it cannot sync."),
        _("On the provider's consent screen some permissions were left unticked."),
        (Fixer.MAILBOX_OWNER,),
        (
            _(
                "In your Google or Microsoft account's security settings, remove the portal from "
                "the apps that can access your account."
            ),
            _("In the portal, connect the mailbox again and allow every permission asked for."),
        ),
        (Action.REAUTHENTICATE,),
        severity=3,
    ),
    Guide(
        "sync.server_settings",
        Kind.SYNC,
        _("The mail server settings do not work"),
        _("The portal could not connect to the mailbox with the server settings given."),
        _(
            "The server name, port, security (SSL/TLS or STARTTLS) or the user name format is "
            "not what the mail server expects."
        ),
        (Fixer.MAILBOX_OWNER, Fixer.FIRM_IT),
        (
            _("Check which step failed and the server's reply under technical details."),
            _(
                "Pick your provider's preset if there is one, or ask your mail administrator for "
                "the exact IMAP or POP3 settings."
            ),
            _("Run Test account again; it can only be saved once every step passes."),
        ),
        (Action.SYNC_SETTINGS,),
    ),
    Guide(
        "sync.protocol_unsupported",
        Kind.SYNC,
        _("The mail server does not offer the protocol used"),
        _("The server answered, but not with the protocol the portal asked for."),
        _(
            "IMAP or POP3 is switched off for this mailbox, or the server only offers the "
            "other one."
        ),
        (Fixer.FIRM_IT,),
        (
            _(
                "Ask your mail administrator to enable IMAP (preferred) or POP3 for this "
                "mailbox, or choose the protocol the server offers."
            ),
        ),
        (Action.SYNC_SETTINGS,),
    ),
    Guide(
        "sync.two_factor",
        Kind.SYNC,
        _("The provider wants an app password or another sign-in step"),
        _("The password is right, but the provider refused it for mail programs."),
        _(
            "With two-step verification on, many providers accept only an app password, or "
            "a sign-in through their own page, from mail programs."
        ),
        (Fixer.MAILBOX_OWNER,),
        (
            _(
                "Create an app password in your email account's security settings and use it "
                "instead of your normal password."
            ),
            _(
                "For Gmail and Microsoft 365, connect with the Google or Microsoft button "
                "instead of a password."
            ),
        ),
        (Action.REAUTHENTICATE,),
    ),
    Guide(
        "sync.connection",
        Kind.SYNC,
        _("Sync is delayed: the mail server cannot be reached"),
        _("The portal could not reach the mail server for a while."),
        _("The server is down, overloaded or unreachable from the internet."),
        (Fixer.PORTAL,),
        (
            _("Nothing to do for now: the portal keeps retrying, waiting longer each time."),
            _(
                "If this lasts more than a day, ask your mail provider whether the server is "
                "available."
            ),
        ),
        severity=1,
    ),
    Guide(
        "sync.labels_excluded",
        Kind.SYNC,
        _("Some emails are in folders that are not synced"),
        _(
            "Mail filed in folders or labels that are not selected for sync never appears in "
            "the portal."
        ),
        _(
            "Only the folders ticked in Email Sync are read; rules in the mailbox may move "
            "client mail elsewhere."
        ),
        (Fixer.MAILBOX_OWNER,),
        (_("Open My Account → Email Sync and tick the folders that hold client mail."),),
        (Action.SYNC_SETTINGS,),
        severity=1,
    ),
    Guide(
        "sync.uidvalidity_unstable",
        Kind.SYNC,
        _("A folder is renumbered by the mail server at every visit"),
        _(
            "The mail server gives this folder new message numbers each time the portal opens "
            "it, so numbers cannot tell new mail from old. The portal keeps syncing by reading "
            "the last few days again and skipping what it already holds: slower, but nothing "
            "is lost."
        ),
        _(
            "Some servers (Courier among them) keep a folder's numbers only once a mail program "
            "opens it for writing; when mail is delivered straight into the mailbox and only "
            "read, every visit gets new numbers. A restored backup or a rebuilt server index "
            "does the same for a while."
        ),
        (Fixer.FIRM_IT,),
        (
            _("Nothing to do to keep mail flowing: the portal reads the folder by date meanwhile."),
            _(
                "Ask whoever runs the mail server to make the folder's index writable (Courier: "
                "the courierimapuiddb file in the Maildir), or open the folder once in a mail "
                "program such as Thunderbird."
            ),
            _(
                "Once the numbers hold for about an hour of syncs, the portal returns to its "
                "faster way and this message goes away."
            ),
        ),
        severity=1,
    ),
    Guide(
        "sync.not_linked",
        Kind.SYNC,
        _("Emails were synced but not linked to a client"),
        _("These emails are in the portal but on no client's Email tab."),
        _("None of the addresses in From, To, Cc or Reply-To belongs to a client's contact."),
        (Fixer.MAILBOX_OWNER,),
        (
            _(
                "Add the sender's address to the right client's contact; the emails move onto "
                "that client at once."
            ),
        ),
        (Action.LINK_ADDRESS,),
        severity=1,
    ),
    Guide(
        "sync.gap",
        Kind.SYNC,
        _("Some emails in a synced folder are missing from the portal"),
        _(
            "The mail server counts more emails in this folder than the portal holds for the "
            "same period, although the sync reported no error."
        ),
        _(
            "A message the sync skipped (the server did not hand it over when asked), or "
            "emails removed from the portal's records. The counts compare only the period "
            "the portal syncs, so older mail does not count."
        ),
        (Fixer.MAILBOX_OWNER, Fixer.MEMBER),
        (
            _(
                "Click Re-check this folder: the portal fetches exactly the emails it is "
                "missing, without duplicating those it has."
            ),
            _(
                "If the numbers still differ after the next sync, send the technical details "
                "to support."
            ),
        ),
        (Action.RECHECK_FOLDER,),
        severity=3,
    ),
    # Sending from a member's own mailbox
    Guide(
        "send.smtp_auth_disabled",
        Kind.SEND,
        _("Sending from this mailbox is switched off by its provider"),
        _("Mail arrives in the synced mailbox, but sending from the portal through it fails."),
        _(
            "Authenticated SMTP is disabled for the Microsoft 365 tenant or mailbox, or the "
            "tenant's device management quarantined the portal's connection."
        ),
        (Fixer.FIRM_IT,),
        (
            _(
                "Your Microsoft 365 administrator releases the quarantined connection in the "
                "security portal."
            ),
            _("They enable authenticated SMTP for this mailbox."),
            _("Then re-authenticate the mailbox in Email Sync."),
        ),
        (Action.REAUTHENTICATE,),
    ),
    Guide(
        "send.sender_refused",
        Kind.SEND,
        _("The mail server will not send as this address"),
        _(
            "The member's mail server refused the From address: it does not let this mailbox "
            "send as that address, so the email was not sent or the address was not added."
        ),
        _(
            "The address is an alias or a shared address the mailbox has no right to send "
            "as (Microsoft 365: no Send As permission; other servers: the address is not "
            "owned by the login)."
        ),
        (Fixer.MAILBOX_OWNER, Fixer.FIRM_IT),
        (
            _("Choose one of your own sending addresses as From and send again."),
            _(
                "Or ask your mail administrator to give this mailbox the right to send as the "
                "address (in Microsoft 365: Send As permission on the shared mailbox), then add "
                "it again under Sending addresses."
            ),
        ),
        (Action.SYNC_SETTINGS,),
    ),
    Guide(
        "send.invalid_recipient_chars",
        Kind.SEND,
        _("The address contains characters email cannot use"),
        _("The email was not sent because the address has a character that is not allowed there."),
        _(
            # The acute accent is written out: gettext's extractor does not read \u escapes.
            'Addresses cannot contain \\ / " : < > | * ´ ` ~ ^, spaces or invisible '  # noqa: RUF001
            "characters; these often come from copying an address out of a document."
        ),
        (Fixer.MEMBER,),
        (
            _("Edit the contact's address: the character is named and its position shown."),
            _("Send again."),
        ),
        (Action.EDIT_ADDRESS_RESEND,),
        severity=3,
    ),
    # Delivery to clients
    Guide(
        "delivery.invalid_address",
        Kind.DELIVERY,
        _("The address cannot receive email"),
        _("The invoice email could not be delivered: the address or its domain does not exist."),
        _("A typo in the address, or a domain that has no mail servers."),
        (Fixer.MEMBER, Fixer.CLIENT),
        (_("Check the address with the client and correct it."), _("Resend the email.")),
        (Action.EDIT_ADDRESS_RESEND,),
        severity=3,
    ),
    Guide(
        "delivery.hard_bounce",
        Kind.DELIVERY,
        _("The email you sent did not reach the recipient"),
        _("The recipient's mail server answered that this mailbox does not exist."),
        _("The address has a typo, the mailbox was closed, or the person left the company."),
        (Fixer.MEMBER, Fixer.CLIENT),
        (
            _(
                "Ask the client for their current address, or send to another address they "
                "gave you."
            ),
            _("Correct the contact and resend."),
        ),
        (Action.EDIT_ADDRESS_RESEND,),
        severity=3,
    ),
    Guide(
        "delivery.soft_bounce",
        Kind.DELIVERY,
        _("Delivery is delayed for now"),
        _("The recipient's server did not take the email this time."),
        _(
            "The mailbox is full, the message is too large, or the server is busy or "
            "greylisting new senders. These are temporary."
        ),
        (Fixer.PORTAL, Fixer.CLIENT),
        (
            _("The sending service retries by itself."),
            _(
                "If it keeps failing, ask the client to make room in their mailbox or check with "
                "their email provider. After repeated failures the address is blocked."
            ),
        ),
        (Action.RESEND,),
        severity=1,
    ),
    Guide(
        "delivery.rejected_policy",
        Kind.DELIVERY,
        _("The recipient's server refused the email"),
        _("Security rules or a spam filter on the client's side turned the email away."),
        _("The client's mail system does not trust the sending server or the content."),
        (Fixer.CLIENT_IT,),
        (
            _(
                "Ask the client's IT to allow the portal's sender: give them the allowlist page "
                "with our sending hostnames and IP addresses."
            ),
            _("Then resend."),
        ),
        (Action.ALLOWLIST, Action.RESEND),
        severity=3,
    ),
    Guide(
        "delivery.suppressed",
        Kind.DELIVERY,
        _("Sending to this address is blocked"),
        _("The portal skipped this address instead of sending to it."),
        _(
            "An earlier email bounced permanently, the recipient marked one as spam, or "
            "delivery failed again and again. Sending more would harm your firm's reputation."
        ),
        (Fixer.MEMBER, Fixer.OWNER),
        (
            _("Correct the address if it is wrong, then resend."),
            _(
                "If the address is right and the client confirms it works again, an owner can "
                "request its removal from the block list."
            ),
        ),
        (Action.EDIT_ADDRESS_RESEND, Action.REQUEST_REMOVAL),
        severity=3,
    ),
    Guide(
        "delivery.blocked_repeated_failures",
        Kind.DELIVERY,
        _("The address was blocked after repeated failures"),
        _("Several emails in a short time failed to reach this address, so it is now blocked."),
        _("A mailbox that stays full or a server that keeps refusing mail."),
        (Fixer.CLIENT, Fixer.OWNER),
        (
            _("Ask the client to fix their mailbox or give you another address."),
            _("Once it works, an owner can request removal from the block list."),
        ),
        (Action.EDIT_ADDRESS_RESEND, Action.REQUEST_REMOVAL),
        severity=3,
    ),
    Guide(
        "delivery.complaint",
        Kind.DELIVERY,
        _("The recipient marked the email as spam"),
        _("The client's email provider reported that the recipient flagged your email as spam."),
        _("Sometimes by mistake, sometimes because they no longer expect mail from you."),
        (Fixer.MEMBER, Fixer.OWNER),
        (
            _("Confirm with the client that they want invoices by email at this address."),
            _("The address stays blocked until an owner removes it at the client's request."),
        ),
        (Action.REQUEST_REMOVAL,),
        severity=2,
    ),
    Guide(
        "delivery.spam_folder",
        Kind.DELIVERY,
        _("The client says nothing arrived, yet it was delivered"),
        _("The recipient's server accepted the email, but the client does not see it."),
        _("It most likely landed in the spam or junk folder, or a rule filed it away."),
        (Fixer.CLIENT,),
        (
            _("Ask the client to look in spam or junk and mark the email as not spam."),
            _("Ask them to add the sender address to their contacts."),
            _("Send yourself a test to see how the email arrives."),
        ),
        (Action.SEND_TEST, Action.RESEND),
        detectable=False,
        not_detectable_because=_(
            "Mail providers do not tell senders which folder a message "
            "landed in; opens are only approximate."
        ),
        severity=1,
    ),
    Guide(
        "delivery.flagged_dangerous",
        Kind.DELIVERY,
        _("Gmail warns about the invoice email"),
        _("The email arrives with a warning and the Pay Now button may not be clickable."),
        _(
            "The sending domain is not fully authenticated (SPF, DKIM, DMARC), or the link's "
            "domain looks unlike the sender's."
        ),
        (Fixer.CLIENT, Fixer.FIRM_IT),
        (
            _("The client can click “Looks safe” on that email."),
            _(
                "Fix your domain's SPF, DKIM and DMARC as shown on the domain checks so future "
                "mail passes."
            ),
        ),
        # Gmail does not tell senders, so this is inferred: shown on the invoices that left
        # From the firm's own domain to a Google-served domain while that domain does not
        # align (DMARC fails). Mail From the platform's address passes the platform's DMARC.
        (Action.RECHECK_DNS, Action.SEND_TEST),
    ),
    Guide(
        "delivery.not_sent_rejected_document",
        Kind.DELIVERY,
        _("The email was never sent"),
        _("The portal did not send this email; the client received nothing."),
        _(
            "The invoice had no usable recipient address, or sending failed before the email "
            "left the portal."
        ),
        (Fixer.MEMBER,),
        (
            _(
                "Read the error under technical details, fix the address or the invoice, then "
                "send again."
            ),
        ),
        (Action.EDIT_ADDRESS_RESEND,),
        severity=3,
    ),
    Guide(
        "delivery.outcome_unknown",
        Kind.DELIVERY,
        _("It is not known whether the email went out"),
        _(
            "Sending was interrupted after the email may already have left, so the portal "
            "cannot tell whether the mail server took it. It was sent at most once: the client "
            "received it once or not at all."
        ),
        _(
            "The sending process stopped (a restart or a crash) before it could write down the "
            "mail server's answer. The portal does not send again on a guess, so that the "
            "client is never sent the same invoice twice."
        ),
        (Fixer.MEMBER,),
        (
            _("Check with the client whether the invoice email arrived."),
            _(
                "If it did not, or you cannot tell, click Resend: the client gets a new email "
                "and the Pay Now link in any earlier one stops working."
            ),
        ),
        (Action.RESEND,),
        severity=2,
    ),
    # The firm's sending domain
    Guide(
        "domain.via_shown",
        Kind.DOMAIN,
        _("Recipients see “via” next to your firm's name"),
        _("Mail clients show your address together with another domain."),
        _(
            "Your domain has not authorised the portal's sending service, so the mail is not "
            "aligned with your From address."
        ),
        (Fixer.FIRM_IT,),
        (
            _("Publish the SPF and DKIM records shown here in your domain's DNS."),
            _("Click Re-check once they are published."),
        ),
        (Action.COPY_RECORD, Action.RECHECK_DNS),
    ),
    Guide(
        "domain.spf_missing",
        Kind.DOMAIN,
        _("Your domain has no SPF record"),
        _("Nothing in your domain's DNS says which servers may send its mail."),
        _("Without SPF, receiving servers trust your invoices less and may send them to spam."),
        (Fixer.FIRM_IT,),
        (_("Publish the TXT record shown here at your domain."), _("Click Re-check.")),
        (Action.COPY_RECORD, Action.RECHECK_DNS),
    ),
    Guide(
        "domain.spf_invalid",
        Kind.DOMAIN,
        _("Your domain's SPF record is broken or does not include the portal"),
        _(
            "Your SPF record cannot be read correctly, or it does not allow the portal's "
            "sending service."
        ),
        _("A typo in the record, two SPF records at once, or the portal's include missing."),
        (Fixer.FIRM_IT,),
        (
            _("Replace your SPF record with the merged record shown here (one record only)."),
            _("Click Re-check."),
        ),
        (Action.COPY_RECORD, Action.RECHECK_DNS),
    ),
    Guide(
        "domain.spf_too_many_lookups",
        Kind.DOMAIN,
        _("Your SPF record needs too many DNS lookups"),
        _(
            "Checking your SPF record takes more than the 10 DNS lookups receivers allow, so "
            "they treat it as an error."
        ),
        _("Too many include: entries, often left from services you no longer use."),
        (Fixer.FIRM_IT,),
        (
            _(
                "Remove includes of services you no longer send through, or replace them with "
                "the ip4:/ip6: ranges they use."
            ),
            _("Click Re-check."),
        ),
        (Action.RECHECK_DNS,),
    ),
    Guide(
        "domain.dkim_missing",
        Kind.DOMAIN,
        _("DKIM signing keys are missing"),
        _("The DKIM records the portal signs with are not in your domain's DNS."),
        _("They were never published, or were removed or mistyped."),
        (Fixer.FIRM_IT,),
        (_("Publish each DKIM record shown here exactly as written."), _("Click Re-check.")),
        (Action.COPY_RECORD, Action.RECHECK_DNS),
    ),
    Guide(
        "domain.dmarc_missing",
        Kind.DOMAIN,
        _("Your domain has no DMARC policy"),
        _("Receivers have no instructions for mail that claims to come from your domain."),
        _("Gmail and other large providers expect a DMARC record from domains that send invoices."),
        (Fixer.FIRM_IT,),
        (
            _("Publish the starting DMARC record shown here (it only monitors at first)."),
            _("Click Re-check."),
        ),
        (Action.COPY_RECORD, Action.RECHECK_DNS),
    ),
    Guide(
        "domain.dmarc_misaligned",
        Kind.DOMAIN,
        _("Your DMARC policy would fail the portal's mail"),
        _(
            "Your DMARC policy asks receivers to reject or quarantine mail that the portal "
            "sends, because it is not yet aligned with your domain."
        ),
        _("Strict alignment, or SPF/DKIM not set up for the portal's service."),
        (Fixer.FIRM_IT,),
        (
            _("Set up SPF and DKIM for the portal first, or relax the policy as shown."),
            _("Click Re-check."),
        ),
        (Action.COPY_RECORD, Action.RECHECK_DNS),
    ),
    Guide(
        "domain.imported_settings_stale",
        Kind.DOMAIN,
        _("Sender details look wrong after an import"),
        _("After importing data, clients stopped receiving mail from the firm."),
        _("The firm's sender or reply-to address came over with extra characters or spaces."),
        (Fixer.OWNER,),
        (
            _("Re-enter the sender and reply-to addresses by hand in Firm Settings."),
            _("Send a test to yourself."),
            _("If it still fails, try an address on another domain."),
        ),
        (Action.SEND_TEST,),
    ),
)

BY_CODE: dict[str, Guide] = {guide.code: guide for guide in GUIDES}


def guide_for(code: str) -> Guide | None:
    return BY_CODE.get(code)


# One plain sentence per problem, where a page has room for a line rather than the guide
# (the invoice's delivery timeline). The only other wording of codes besides the guides.
SHORT_TEXT: dict[str, Promise] = {
    "delivery.invalid_address": _(
        "The address does not exist or its domain takes no mail. Edit the address, then resend."
    ),
    "delivery.hard_bounce": _(
        "The email did not reach the recipient: the receiving server says the address does "
        "not exist. Check the address with the client, or send to another address."
    ),
    "delivery.soft_bounce": _(
        "The receiving server could not take the email for now (for example a full mailbox). "
        "Resend later; repeated failures block the address."
    ),
    "delivery.rejected_policy": _(
        "The client's mail server refused the email by its security rules. Ask the client's IT "
        "to allow mail from us, then resend."
    ),
    "delivery.suppressed": _(
        "Not sent: this address is blocked after earlier failures. Fix the address, or request "
        "removal of the block once the client confirmed it works."
    ),
    "delivery.blocked_repeated_failures": _(
        "This address is now blocked after several failed attempts."
    ),
    "delivery.complaint": _("The recipient marked the email as spam."),
    "delivery.not_sent_rejected_document": _(
        "Not sent: the email was refused before sending. Fix the address, then resend."
    ),
    "delivery.outcome_unknown": _(
        "Sending was interrupted after the email may have left: it went out at most once. Check "
        "with the client whether it arrived, or resend it."
    ),
    "send.invalid_recipient_chars": _(
        "Not sent: the address contains a character email addresses cannot hold. Edit the "
        "address, then resend."
    ),
}


def short_text(code: str) -> str:
    """The one-line wording of a code: its sentence, else its guide's title, else ""."""
    if code in SHORT_TEXT:
        return str(SHORT_TEXT[code])
    guide = guide_for(code)
    return str(guide.title) if guide else ""


# How the domain checks' findings read on the domain checks card.
CHECK_LABELS: dict[str, Promise] = {
    "spf": _("SPF"),
    "dmarc": _("DMARC"),
    "alignment": _("Which mechanism aligns"),
    "ownership": _("Verification record"),
}
_MODES = {"r": _("relaxed"), "s": _("strict")}


def check_label(name: str) -> str:
    if name.startswith("dkim:"):
        return _("DKIM key %(selector)s") % {"selector": name.split(":", 1)[1]}
    return str(CHECK_LABELS.get(name, name))


def _dkim_words(facts: dict) -> str | None:
    state = facts.get("state")
    if state == "ok" and facts.get("type") == "ed25519":
        return _("An Ed25519 key is published: receivers can verify the portal's signature.")
    if state == "ok":
        return _(
            "An RSA key of %(bits)s bits is published: receivers can verify the portal's signature."
        ) % {"bits": facts.get("bits")}
    return {
        "revoked": _("The key has been revoked (its p= is empty): no signature can be verified."),
        "too_short": _("The RSA key has only %(bits)s bits; receivers ignore keys under 1024 bits.")
        % {"bits": facts.get("bits")},
        "unreadable": _("The key cannot be read, so receivers cannot verify the signature."),
        "unknown_type": _("The key is of a type receivers do not know."),
        "missing": _("No key is published at this selector."),
        "wrong_cname": _("The selector points to another key than the portal's."),
    }.get(state)


def _alignment_words(facts: dict) -> str:
    if facts.get("dkim") and facts.get("spf"):
        return _("Both DKIM and SPF align with your domain: the portal's mail passes DMARC.")
    if facts.get("dkim"):
        if facts.get("return_path_domain"):
            spf = _("SPF does not, because the Return-Path is on %(domain)s.") % {
                "domain": facts["return_path_domain"]
            }
        else:
            spf = _("SPF does not, because the sending service uses its own Return-Path.")
        passes = _("The portal's mail passes DMARC through DKIM: it is signed with your domain.")
        return " ".join((str(passes), str(spf)))
    if facts.get("spf"):
        return _(
            "The portal's mail passes DMARC through SPF: the Return-Path is on your domain. "
            "DKIM does not align."
        )
    return _("Neither DKIM nor SPF aligns with your domain, so the portal's mail fails DMARC.")


def check_words(result: dict) -> str:
    """A domain check's result in plain words ("" where the pass/fail mark says it all:
    a failure's details are on its problem)."""
    facts = result.get("facts") or {}
    name = result.get("name", "")
    words = None
    if name.startswith("dkim:") and facts:
        words = _dkim_words(facts)
    elif name == "alignment" and facts:
        words = _alignment_words(facts)
    elif name == "dmarc" and facts.get("p"):
        words = _("Policy %(policy)s; DKIM alignment %(adkim)s, SPF alignment %(aspf)s.") % {
            "policy": facts["p"],
            "adkim": _MODES.get(facts.get("adkim"), facts.get("adkim")),
            "aspf": _MODES.get(facts.get("aspf"), facts.get("aspf")),
        }
    return str(words) if words else ""

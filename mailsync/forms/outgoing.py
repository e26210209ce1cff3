"""Forms for sending addresses (settings) and for writing to a client (compose)."""

from __future__ import annotations

import secrets

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from mailsync.models import MailboxConnection, OutgoingAddress
from portal.addresses import AddressError, validate_address
from portal.headers import HeaderTextError, check_header_text
from portal.models import ContactAddress

# portal.addresses' codes for a character no address may contain: send.invalid_recipient_chars.
CHARACTER_CODES = frozenset({"forbidden_character", "space", "invisible_character"})
INVALID_RECIPIENT_CHARS = "send.invalid_recipient_chars"


def _one_line(value: str) -> str:
    # Header values: a line break would start a new header (header injection), also one
    # hidden in an RFC 2047 encoded word (portal.headers checks the decoded forms too).
    try:
        check_header_text(value)
    except HeaderTextError as exc:
        raise ValidationError(str(exc), code="line_break") from exc
    return value.strip()


def _address_label(address: OutgoingAddress) -> str:
    if address.display_name:
        return f"{address.display_name} <{address.address}>"
    return address.address


class SenderAddressForm(forms.Form):
    address = forms.CharField(label=_("Email address"), max_length=320)
    display_name = forms.CharField(
        label=_("Name shown to recipients"), max_length=200, required=False
    )

    def clean_address(self) -> str:
        try:
            return validate_address(
                self.cleaned_data["address"], check_deliverability=False
            ).address
        except AddressError as exc:
            raise ValidationError(exc.message, code=exc.code) from exc

    def clean_display_name(self) -> str:
        return _one_line(self.cleaned_data["display_name"])


class DisplayNameForm(forms.Form):
    display_name = forms.CharField(
        label=_("Name shown to recipients"), max_length=200, required=False
    )

    def clean_display_name(self) -> str:
        return _one_line(self.cleaned_data["display_name"])


class SendingServerForm(forms.Form):
    host = forms.CharField(label=_("Sending server (SMTP)"), max_length=253)
    port = forms.IntegerField(label=_("SMTP port"), min_value=1, max_value=65535)
    security = forms.ChoiceField(
        label=_("SMTP security"), choices=MailboxConnection.Security.choices
    )
    # The stored login is only ever sent to a server its owner confirmed by typing it.
    password = forms.CharField(
        label=_("The mailbox's password"),
        widget=forms.PasswordInput,
        required=False,
        strip=False,
    )

    def clean_host(self) -> str:
        host = self.cleaned_data["host"].strip()
        if any(char.isspace() or char in "/:@" for char in host):
            raise ValidationError(_("A server name has no spaces, slashes, colons or @."))
        return host


class ComposeForm(forms.Form):
    """An email to some of a client's contact addresses, from one of the member's sending
    addresses. Choices are ids of rows the view already scoped to the member's firm."""

    sender = forms.ChoiceField(label=_("From"))
    recipients = forms.MultipleChoiceField(
        label=_("To"),
        widget=forms.CheckboxSelectMultiple,
        error_messages={"required": _("Choose at least one of the client's addresses.")},
    )
    subject = forms.CharField(label=_("Subject"), max_length=500)
    body = forms.CharField(label=_("Message"), widget=forms.Textarea(attrs={"rows": 14}))
    # The earlier email this one sends again, when the form came back from its failure.
    retry_of = forms.IntegerField(widget=forms.HiddenInput, required=False)
    # One per rendering of the form: pressing Send twice (or a browser posting it again)
    # sends one email (mailsync.written).
    submission = forms.CharField(
        widget=forms.HiddenInput,
        max_length=64,
        error_messages={
            "required": _("This form is out of date. Check what you wrote and press Send again.")
        },
    )

    def __init__(
        self,
        *args: object,
        senders: list[OutgoingAddress],
        addresses: list[ContactAddress],
        **kwargs: object,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not self.is_bound:
            self.initial["submission"] = secrets.token_urlsafe(24)
        self._senders = {str(a.pk): a for a in senders}
        self._addresses = {str(a.pk): a for a in addresses}
        self.fields["sender"].choices = [(str(a.pk), _address_label(a)) for a in senders]
        self.fields["recipients"].choices = [
            (str(a.pk), f"{a.contact.name} <{a.address}>") for a in addresses
        ]
        # (contact address, error) for each chosen address that cannot be sent to.
        self.recipient_errors: list[tuple[ContactAddress, AddressError]] = []

    def clean_sender(self) -> OutgoingAddress:
        return self._senders[self.cleaned_data["sender"]]

    def clean_recipients(self) -> list[str]:
        valid = []
        for pk in self.cleaned_data["recipients"]:
            contact_address = self._addresses[pk]
            try:
                valid.append(validate_address(contact_address.address).address)
            except AddressError as exc:
                self.recipient_errors.append((contact_address, exc))
        if self.recipient_errors:
            raise ValidationError(
                [exc.message for _address, exc in self.recipient_errors], code="invalid_address"
            )
        return valid

    def clean_subject(self) -> str:
        return _one_line(self.cleaned_data["subject"])

    @property
    def invalid_characters(self) -> bool:
        """Whether an address failed for a character email cannot carry."""
        return any(exc.code in CHARACTER_CODES for _address, exc in self.recipient_errors)


class ClientSenderForm(forms.Form):
    """Which sending address a member's mail to one client goes from ('' = the default)."""

    address = forms.ChoiceField(label=_("Send to this client from"), required=False)

    def __init__(self, *args: object, senders: list[OutgoingAddress], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self._senders = {str(a.pk): a for a in senders}
        self.fields["address"].choices = [
            ("", _("My default address")),
            *((str(a.pk), _address_label(a)) for a in senders),
        ]

    def clean_address(self) -> OutgoingAddress | None:
        value = self.cleaned_data["address"]
        return self._senders[value] if value else None

from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from mailsync.models import MailboxConnection
from mailsync.presets import PRESETS, preset_choices
from portal.addresses import AddressError, ValidAddress, normalize_address, validate_address
from portal.forms import AddressField
from portal.models import Client

# Default SMTP port for each security setting (submission over TLS, submission, relay).
SMTP_PORTS = {"ssl": 465, "starttls": 587, "none": 25}


def _bad_host(host: str) -> bool:
    return any(char.isspace() or char in "/:@" for char in host)


class ConnectionForm(forms.Form):
    """A mailbox's server and login. The password is never rendered back."""

    preset = forms.ChoiceField(label=_("Provider"), choices=preset_choices, required=False)
    kind = forms.ChoiceField(
        label=_("Protocol"),
        choices=[
            (MailboxConnection.Kind.IMAP, _("IMAP (recommended)")),
            (MailboxConnection.Kind.POP3, _("POP3")),
        ],
        initial=MailboxConnection.Kind.IMAP,
    )
    email_address = AddressField(label=_("Email address"))
    host = forms.CharField(label=_("Server"), max_length=253, required=False)
    port = forms.IntegerField(label=_("Port"), min_value=1, max_value=65535, required=False)
    security = forms.ChoiceField(
        label=_("Security"),
        choices=MailboxConnection.Security.choices,
        initial=MailboxConnection.Security.SSL,
    )
    username = forms.CharField(
        label=_("User name"),
        max_length=320,
        required=False,
        help_text=_("Usually your email address."),
    )
    password = forms.CharField(
        label=_("Password"), strip=False, widget=forms.PasswordInput(render_value=False)
    )
    # Sending (SMTP). Only tested, never stored: the portal does not send through members'
    # mailboxes yet, so the settings are used for "Test account" and then dropped.
    smtp_host = forms.CharField(
        label=_("Sending server (SMTP)"),
        max_length=253,
        required=False,
        help_text=_(
            "Tested with the same user name and password. Filled in for you when you choose a "
            "provider. Leave empty if you do not send from this mailbox."
        ),
    )
    smtp_port = forms.IntegerField(
        label=_("SMTP port"), min_value=1, max_value=65535, required=False
    )
    smtp_security = forms.ChoiceField(
        label=_("SMTP security"),
        choices=[("", _("Automatic (from the port)")), *MailboxConnection.Security.choices],
        required=False,
    )
    skip_smtp = forms.BooleanField(
        label=_("Save without sending"),
        required=False,
        help_text=_(
            "Skip the sending (SMTP) check. Mail is still synced; only sending from the portal "
            "through this mailbox is not checked."
        ),
    )

    def __init__(self, *args: object, reauth: bool = False, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        if reauth:
            # Re-authenticate keeps the record and its settings; only the password changes.
            for name in ("preset", "kind", "email_address", "host", "port", "security"):
                self.fields[name].disabled = True
            self.fields["username"].disabled = True

    def clean(self) -> dict:
        data = super().clean()
        preset = PRESETS.get(data.get("preset") or "")
        if preset is not None:
            data["kind"], data["host"] = preset.kind, preset.host
            data["port"], data["security"] = preset.port, preset.security
        if preset is not None and preset.smtp_host:
            data["smtp_host"], data["smtp_port"] = preset.smtp_host, preset.smtp_port
            data["smtp_security"] = preset.smtp_security
        if not data.get("host"):
            self.add_error("host", _("Enter the server's name, or choose a provider."))
        elif _bad_host(data["host"]):
            self.add_error("host", _("A server name has no spaces, slashes, colons or @."))
        self._clean_smtp(data)
        if not data.get("port"):
            secure = data.get("security") == "ssl"
            data["port"] = (
                (993 if secure else 143) if data.get("kind") == "imap" else (995 if secure else 110)
            )
        if not data.get("username"):
            data["username"] = data.get("email_address", "")
        return data

    def _clean_smtp(self, data: dict) -> None:
        data["smtp_host"] = (data.get("smtp_host") or "").strip()
        if not data["smtp_host"]:
            data["smtp_port"], data["smtp_security"] = None, ""
            return
        if _bad_host(data["smtp_host"]):
            self.add_error("smtp_host", _("A server name has no spaces, slashes, colons or @."))
        if not data.get("smtp_security"):
            data["smtp_security"] = "ssl" if data.get("smtp_port") == 465 else "starttls"
        if not data.get("smtp_port"):
            data["smtp_port"] = SMTP_PORTS[data["smtp_security"]]

    @property
    def checks_smtp(self) -> bool:
        """Whether Test account logs in to the SMTP server too (after a valid form)."""
        return bool(self.cleaned_data.get("smtp_host")) and not self.cleaned_data.get("skip_smtp")


class FolderForm(forms.Form):
    folders = forms.MultipleChoiceField(
        label=_("Folders to sync"), required=False, widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args: object, names: list[str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["folders"].choices = [(name, name) for name in names]


class LinkAddressForm(forms.Form):
    """Link an address of unlinked mail to a contact of one client, or to a new contact."""

    NEW_CONTACT = ""

    address = forms.CharField(max_length=320, widget=forms.HiddenInput)
    contact = forms.ChoiceField(label=_("Contact"), required=False)
    new_contact_name = forms.CharField(
        label=_("Name of the new contact"), max_length=200, required=False
    )

    def __init__(self, *args: object, client: Client, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.client = client
        self.contacts = {str(contact.pk): contact for contact in client.contacts.all()}
        self.fields["contact"].choices = [
            (self.NEW_CONTACT, _("New contact")),
            *((pk, contact.name) for pk, contact in self.contacts.items()),
        ]

    @staticmethod
    def address_problem(address: str) -> str:
        """Why a contact cannot hold ``address`` ("" if it can): mail servers pass
        addresses that the portal refuses to send to."""
        try:
            validate_address(address)
        except AddressError as exc:
            return _("This address cannot be added to a contact: %(reason)s") % {
                "reason": exc.message
            }
        return ""

    def clean_address(self) -> ValidAddress:
        address = self.cleaned_data["address"]
        problem = self.address_problem(address)
        if problem:
            raise forms.ValidationError(problem)
        return validate_address(address)

    def clean(self) -> dict:
        data = super().clean()
        data["contact"] = self.contacts.get(data.get("contact") or "")
        data["new_contact_name"] = (data.get("new_contact_name") or "").strip()
        if data["contact"] is None and not data["new_contact_name"]:
            self.add_error(
                "new_contact_name", _("Enter the new contact's name, or choose a contact.")
            )
        return data


class IgnoreAddressForm(forms.Form):
    """The address of unlinked mail to ignore, as listed (already normalised)."""

    address = forms.CharField(max_length=320)

    def clean_address(self) -> str:
        address = self.cleaned_data["address"].strip()
        if "@" not in address or any(char.isspace() for char in address):
            raise forms.ValidationError(_("That is not an email address."))
        return normalize_address(address)

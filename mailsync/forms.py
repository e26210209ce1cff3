from __future__ import annotations

from django import forms
from django.utils.translation import gettext_lazy as _

from mailsync.models import MailboxConnection
from mailsync.presets import PRESETS, preset_choices


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
    email_address = forms.EmailField(label=_("Email address"))
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
        if not data.get("host"):
            self.add_error("host", _("Enter the server's name, or choose a provider."))
        elif any(char.isspace() or char in "/:@" for char in data["host"]):
            self.add_error("host", _("A server name has no spaces, slashes, colons or @."))
        if not data.get("port"):
            secure = data.get("security") == "ssl"
            data["port"] = (
                (993 if secure else 143) if data.get("kind") == "imap" else (995 if secure else 110)
            )
        if not data.get("username"):
            data["username"] = data.get("email_address", "")
        return data


class FolderForm(forms.Form):
    folders = forms.MultipleChoiceField(
        label=_("Folders to sync"), required=False, widget=forms.CheckboxSelectMultiple
    )

    def __init__(self, *args: object, names: list[str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.fields["folders"].choices = [(name, name) for name in names]

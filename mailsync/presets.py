"""Server settings of common providers, so most members only type an address and password."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.translation import gettext_lazy as _


@dataclass(frozen=True)
class Preset:
    key: str
    label: str
    kind: str
    host: str
    port: int
    security: str
    # The provider's submission server for sending as this mailbox (same login).
    smtp_host: str = ""
    smtp_port: int | None = None
    smtp_security: str = ""
    note: str = ""


PRESETS: dict[str, Preset] = {
    preset.key: preset
    for preset in (
        Preset(
            "gmail",
            _("Gmail / Google Workspace (app password)"),
            "imap",
            "imap.gmail.com",
            993,
            "ssl",
            "smtp.gmail.com",
            465,
            "ssl",
            _("Google requires an app password when two-step verification is on."),
        ),
        Preset(
            "microsoft",
            _("Microsoft 365 / Outlook.com"),
            "imap",
            "outlook.office365.com",
            993,
            "ssl",
            "smtp.office365.com",
            587,
            "starttls",
        ),
        Preset(
            "icloud",
            _("iCloud Mail"),
            "imap",
            "imap.mail.me.com",
            993,
            "ssl",
            "smtp.mail.me.com",
            587,
            "starttls",
        ),
        Preset(
            "yahoo",
            _("Yahoo Mail"),
            "imap",
            "imap.mail.yahoo.com",
            993,
            "ssl",
            "smtp.mail.yahoo.com",
            465,
            "ssl",
        ),
        Preset(
            "fastmail",
            _("Fastmail"),
            "imap",
            "imap.fastmail.com",
            993,
            "ssl",
            "smtp.fastmail.com",
            465,
            "ssl",
        ),
    )
}


def preset_for_host(host: str) -> Preset | None:
    """The preset whose incoming server is ``host`` (to pre-fill SMTP on Re-authenticate)."""
    host = host.strip().lower()
    return next((p for p in PRESETS.values() if p.host == host), None)


def preset_choices() -> list[tuple[str, str]]:
    return [
        ("", _("Other server (enter its settings)")),
        *((k, p.label) for k, p in PRESETS.items()),
    ]

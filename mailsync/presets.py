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
            _("Google requires an app password when two-step verification is on."),
        ),
        Preset(
            "microsoft",
            _("Microsoft 365 / Outlook.com"),
            "imap",
            "outlook.office365.com",
            993,
            "ssl",
        ),
        Preset("icloud", _("iCloud Mail"), "imap", "imap.mail.me.com", 993, "ssl"),
        Preset("yahoo", _("Yahoo Mail"), "imap", "imap.mail.yahoo.com", 993, "ssl"),
        Preset("fastmail", _("Fastmail"), "imap", "imap.fastmail.com", 993, "ssl"),
    )
}


def preset_choices() -> list[tuple[str, str]]:
    return [
        ("", _("Other server (enter its settings)")),
        *((k, p.label) for k, p in PRESETS.items()),
    ]

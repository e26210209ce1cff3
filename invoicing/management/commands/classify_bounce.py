"""``manage.py classify_bounce FILE...``: one JSON line per message, for triage by hand."""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from invoicing.delivery.bounces import classify_bounce


class Command(BaseCommand):
    help = "Classify raw bounce messages (.eml files) and print one JSON object per file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="+", metavar="FILE", help="raw RFC 5322 message")

    def handle(self, *args: object, **options: object) -> None:
        failed = 0
        for name in options["files"]:  # type: ignore[union-attr]
            try:
                raw = Path(str(name)).read_bytes()
            except OSError as exc:
                failed += 1
                line = {"file": str(name), "error": f"{type(exc).__name__}: {exc.strerror}"}
            else:
                line = {"file": str(name), **classify_bounce(raw).to_json_dict()}
            self.stdout.write(json.dumps(line, ensure_ascii=False))
        if failed:
            # Still print every readable file first; the exit status tells scripts.
            raise CommandError(f"{failed} file(s) could not be read", returncode=1)

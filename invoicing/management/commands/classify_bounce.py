"""``manage.py classify_bounce FILE...``: one JSON line per message, for triage by hand.

With ``--expected FILE.jsonl`` (labelled rows as in the conformance corpora: ``file`` plus
the expected fields) it also prints how often each field, and each labelled reason, agrees.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from invoicing.delivery.bounces import classify_bounce
from invoicing.delivery.bounces.agreement import Agreement, load_expected


class Command(BaseCommand):
    help = "Classify raw bounce messages (.eml files) and print one JSON object per file."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("files", nargs="*", metavar="FILE", help="raw RFC 5322 message")
        parser.add_argument(
            "--expected",
            metavar="FILE.jsonl",
            help=(
                "labelled rows (one JSON object per line with 'file' and the expected "
                "fields); prints the per-field and per-reason agreement table. Without "
                "FILE arguments, every labelled file is classified, found beside the "
                "labels or in their messages/ folder"
            ),
        )

    def handle(self, *args: object, **options: object) -> None:
        names = [str(name) for name in options["files"]]  # type: ignore[union-attr]
        expected_path = options.get("expected")
        rows: dict[str, dict] = {}
        if expected_path:
            path = Path(str(expected_path))
            try:
                labelled = load_expected(path)
            except (OSError, ValueError) as exc:
                raise CommandError(f"cannot read {path}: {exc}") from exc
            rows = {str(row.get("file")): row for row in labelled}
            if not names:
                base = path.parent / "messages"
                base = base if base.is_dir() else path.parent
                names = [str(base / name) for name in rows]
        if not names:
            raise CommandError("give FILE arguments, or --expected FILE.jsonl")

        agreement = Agreement()
        failed = 0
        for name in names:
            try:
                raw = Path(name).read_bytes()
            except OSError as exc:
                failed += 1
                line = {"file": name, "error": f"{type(exc).__name__}: {exc.strerror}"}
            else:
                line = {"file": name, **classify_bounce(raw).to_json_dict()}
                row = rows.get(Path(name).name)
                if row is not None:
                    agreement.add(row, line)
            self.stdout.write(json.dumps(line, ensure_ascii=False))
        if expected_path:
            self.stdout.write("")
            self.stdout.write(f"agreement with {expected_path} ({agreement.total} labelled):")
            self.stdout.write(agreement.field_table())
            self.stdout.write("")
            self.stdout.write(agreement.reason_table())
        if failed:
            # Still print every readable file first; the exit status tells scripts.
            raise CommandError(f"{failed} file(s) could not be read", returncode=1)

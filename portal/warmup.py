"""What a new web process loads before it takes its first request, so that no user waits
for it.

Django loads much of itself on first use: the URL patterns (and with them every view
module and what it imports) on the first request, each language's catalogues on the first
request in that language, each template on its first render. In a fresh gunicorn worker
at scale that made the first request 0.4-0.6 s and the first Problems page 1.3 s, and the
first requests of every worker after a deploy or a restart queued behind them
(bench/README.md, "Warm workers"). gunicorn.conf.py calls ``warm_up`` in each worker
before it accepts connections.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.template import TemplateSyntaxError, engines
from django.urls import get_resolver
from django.utils import translation

TEMPLATE_SUFFIXES = (".html", ".txt")

logger = logging.getLogger(__name__)


def warm_up() -> int:
    """Import every view, load every language's catalogues, and compile the project's
    templates (those under the template DIRS); returns how many templates were compiled."""
    resolver = get_resolver()
    for code, _name in settings.LANGUAGES:
        with translation.override(code):
            translation.gettext("Clients")  # loads the language's catalogues
            resolver.reverse_dict  # noqa: B018 - the URL patterns, kept per language
    return _templates_compile()


def _templates_compile() -> int:
    """Compile each template once; the cached template loader keeps it for the process.
    A template that does not compile is logged and left for its page to report: a worker
    that would not start over it would take every other page down with it (the test suite
    compiles them all)."""
    compiled = 0
    for engine in engines.all():
        for directory in getattr(engine, "dirs", []):
            root = Path(directory)
            for path in sorted(root.rglob("*")):
                if path.suffix not in TEMPLATE_SUFFIXES or not path.is_file():
                    continue
                name = path.relative_to(root).as_posix()
                try:
                    engine.get_template(name)
                except TemplateSyntaxError:
                    logger.exception("template %s does not compile", name)
                    continue
                compiled += 1
    return compiled

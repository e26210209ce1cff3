"""A new web process loads views, catalogues and templates before its first request."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.template import TemplateDoesNotExist, engines
from django.template.loader import get_template
from django.template.loaders.filesystem import Loader as FileSystemLoader
from django.test import override_settings

from portal.warmup import TEMPLATE_SUFFIXES, warm_up


def _project_templates() -> list[str]:
    root = Path(settings.TEMPLATES[0]["DIRS"][0])
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.suffix in TEMPLATE_SUFFIXES and p.is_file()
    )


def test_warm_up_compiles_every_project_template():
    assert warm_up() == len(_project_templates()) > 50


def test_a_warmed_process_renders_templates_without_reading_them_again(monkeypatch):
    warm_up()

    def unreadable(self, origin):  # type: ignore[no-untyped-def]
        raise TemplateDoesNotExist(origin)

    monkeypatch.setattr(FileSystemLoader, "get_contents", unreadable)
    for name in _project_templates():
        assert get_template(name) is not None


def test_a_template_that_does_not_compile_is_logged_and_the_rest_still_compile(tmp_path, caplog):
    (tmp_path / "good.html").write_text("<p>{{ value }}</p>")
    (tmp_path / "broken.html").write_text("{% if %}")
    templates = [{**settings.TEMPLATES[0], "DIRS": [tmp_path], "APP_DIRS": False}]
    with override_settings(TEMPLATES=templates):
        assert warm_up() == 1
        assert engines["django"].get_template("good.html").render({"value": 7}) == "<p>7</p>"
    assert "broken.html does not compile" in caplog.text

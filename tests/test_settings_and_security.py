"""Settings come from the environment and fail loudly; production defaults are strict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from portal.env import env_bool, env_int, env_str

ROOT = Path(__file__).resolve().parent.parent


def _settings_with(
    env: dict[str, str], *, code: str = "import django; django.setup()"
) -> subprocess.CompletedProcess:
    """``code`` run in a new interpreter over ``portal.settings`` with ``env`` added."""
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    return subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, "DJANGO_SETTINGS_MODULE": "portal.settings", **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_production_refuses_to_start_without_a_secret_key():
    result = _settings_with({"DEBUG": "0"})
    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stderr


def test_development_runs_without_a_secret_key():
    assert _settings_with({"DEBUG": "1"}).returncode == 0


def test_a_malformed_boolean_is_an_error_not_a_guess(monkeypatch):
    monkeypatch.setenv("SOME_FLAG", "maybe")
    with pytest.raises(Exception, match="SOME_FLAG must be a boolean"):
        env_bool("SOME_FLAG")


def test_a_malformed_number_is_an_error(monkeypatch):
    monkeypatch.setenv("SOME_NUMBER", "ten")
    with pytest.raises(Exception, match="SOME_NUMBER must be a whole number"):
        env_int("SOME_NUMBER", 1)


def test_a_secret_can_come_from_a_file(monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    monkeypatch.delenv("MY_SECRET", raising=False)
    monkeypatch.setenv("MY_SECRET_FILE", str(secret))
    assert env_str("MY_SECRET") == "from-a-file"


def test_pages_carry_a_content_security_policy(client, db):
    response = client.get("/accounts/login/")
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy


def test_https_pages_carry_hsts_and_secure_cookies(client, db, settings):
    response = client.get("/accounts/login/", secure=True)
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")
    assert settings.SESSION_COOKIE_SECURE
    assert settings.CSRF_COOKIE_SECURE

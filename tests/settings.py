"""Settings for the test suite: the production settings with test-only shortcuts."""

import os
import tempfile

os.environ.setdefault("SECRET_KEY", "tests-only-secret-key")
os.environ.setdefault("SECURE_SSL_REDIRECT", "0")
os.environ.setdefault("ADDRESS_ALLOWED_SPECIAL_DOMAINS", "test")
# Owners' MFA is on by default with DEBUG=0; tests that need it switch it on per firm
# (tests/security/test_mfa_owners.py).
os.environ.setdefault("MFA_REQUIRED_FOR_OWNERS", "0")
# The mail servers of the suite (Dovecot, aiosmtpd) listen on loopback, which the portal
# refuses by default; tests/security proves that refusal with the setting off.
os.environ.setdefault("OUTBOUND_ALLOW_PRIVATE_HOSTS", "1")
os.environ.setdefault("PORTAL_VAR_DIR", os.path.join(tempfile.gettempdir(), "portal-tests-var"))

from portal.settings import *  # noqa: F403

# Hashing passwords slowly is the point in production and only costs time here.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
STORAGES = {
    **STORAGES,  # noqa: F405
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
MEDIA_ROOT = tempfile.mkdtemp(prefix="portal-tests-media-")
CELERY_TASK_ALWAYS_EAGER = False
CELERY_BROKER_URL = "memory://"
# Static files come from the finders in tests; there is no collectstatic output to serve.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True

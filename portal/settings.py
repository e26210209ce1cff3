"""Settings for practice-portal.

Every value comes from the environment; the defaults run the whole portal on one machine with
nothing to install (SQLite, a broker on the file system, a local outbox for mail).
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _
from kombu import Queue

from portal.env import env_bool, env_float, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PORTAL_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)

_DEV_SECRET_KEY = "dev-only-insecure-key-never-use-in-production"  # noqa: S105
SECRET_KEY = env_str("SECRET_KEY", _DEV_SECRET_KEY if DEBUG else "")
if not DEBUG and (not SECRET_KEY or SECRET_KEY == _DEV_SECRET_KEY):
    raise ImproperlyConfigured("Set SECRET_KEY (or run with DEBUG=1 for local development).")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "portal",
    "accounts",
    "mailsync",
    "invoicing",
    "troubleshooting",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "allauth",
    "allauth.account",
    "allauth.mfa",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.google",
    "allauth.socialaccount.providers.microsoft",
    "anymail",
    "csp",
    "django_celery_beat",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # ESP webhooks (WEBHOOK_PATHS below) answer here, without the browser middleware after it.
    "portal.middleware_webhooks.WebhookShortcutMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "allauth.account.middleware.AccountMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "accounts.middleware.CurrentFirmMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
]

# Machine-to-machine webhook paths that skip the browser middleware: prefix -> the context
# manager (dotted path) each request's view runs in, or "" for none. Only csrf_exempt views.
WEBHOOK_PATHS = {"/webhooks/anymail/": "invoicing.delivery.webhooks.tracking_events_collected"}

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.portal",
                "accounts.context_processors.support_banner_context",
            ],
        },
    },
]

# Database: an SQLite file by default; PostgreSQL (psycopg 3) in production and in CI.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "portal:home"

# django-allauth: email is the login, verified; MFA for everyone; allauth's rate limits stay on.
ACCOUNT_LOGIN_METHODS = {"email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "password1*", "password2*"]
ACCOUNT_USER_MODEL_USERNAME_FIELD = None
ACCOUNT_UNIQUE_EMAIL = True
ACCOUNT_EMAIL_VERIFICATION = env_str("ACCOUNT_EMAIL_VERIFICATION", "mandatory")
ACCOUNT_LOGIN_ON_EMAIL_CONFIRMATION = True
ACCOUNT_ALLOW_SIGNUP = env_bool("ACCOUNT_ALLOW_SIGNUP", True)
ACCOUNT_SIGNUP_FORM_CLASS = "accounts.forms.FirmSignupForm"
ACCOUNT_ADAPTER = "accounts.adapter.AccountAdapter"
ACCOUNT_DEFAULT_HTTP_PROTOCOL = "https" if SITE_URL.startswith("https") else "http"
ACCOUNT_EMAIL_SUBJECT_PREFIX = ""
# Failed sign-ins are limited per client address, and per account *from that address*
# (accounts.adapter keys them by both): someone who knows an owner's email cannot lock the
# owner out, who can still sign in from another network.
ACCOUNT_RATE_LIMITS = {"login_failed": "10/m/ip,5/5m/key"}
MFA_SUPPORTED_TYPES = ["totp", "recovery_codes"]
MFA_TOTP_ISSUER = env_str("MFA_TOTP_ISSUER", "Practice Portal")
# Firms' owners must set up MFA unless their firm switches it off in Firm Settings.
MFA_REQUIRED_FOR_OWNERS = env_bool("MFA_REQUIRED_FOR_OWNERS", not DEBUG)

# Social accounts exist only to connect Gmail / Microsoft 365 mailboxes (process=connect);
# mailsync's adapter refuses them for signing in. Tokens are stored so the callback can copy
# them into the mailbox's encrypted secret. A provider without credentials in the environment
# has no app, and the Sync Your Email wizard does not offer it.
SOCIALACCOUNT_ADAPTER = "mailsync.views.oauth.MailboxSocialAccountAdapter"
SOCIALACCOUNT_STORE_TOKENS = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
_GOOGLE_CLIENT_ID = env_str("GOOGLE_CLIENT_ID", "")
_MICROSOFT_CLIENT_ID = env_str("MICROSOFT_CLIENT_ID", "")
MICROSOFT_TENANT = env_str("MICROSOFT_TENANT", "common")
SOCIALACCOUNT_PROVIDERS = {
    "google": {
        # https://mail.google.com/ is the only Google scope that allows IMAP.
        "SCOPE": ["openid", "email", "profile", "https://mail.google.com/"],
        # offline + consent: Google only returns a refresh token on a consent screen.
        "AUTH_PARAMS": {"access_type": "offline", "prompt": "consent"},
        "OAUTH_PKCE_ENABLED": True,
        "APPS": (
            [
                {
                    "client_id": _GOOGLE_CLIENT_ID,
                    "secret": env_str("GOOGLE_CLIENT_SECRET", ""),
                    "key": "",
                }
            ]
            if _GOOGLE_CLIENT_ID
            else []
        ),
    },
    "microsoft": {
        # User.Read first: allauth reads the profile from Graph with the token it receives,
        # and Microsoft issues that token for the first scope's resource. The IMAP token is
        # then obtained with the refresh token (mailsync.oauth asks for the IMAP scope).
        "SCOPE": [
            "User.Read",
            "offline_access",
            "https://outlook.office.com/IMAP.AccessAsUser.All",
            # Writing to clients from the portal goes out over the member's own SMTP. Same
            # resource as IMAP, so Microsoft puts it in the IMAP token when granted; it is not
            # required (a tenant may forbid SMTP sending and must still sync) and not named in
            # refreshes (naming an unconsented scope would fail the refresh).
            "https://outlook.office.com/SMTP.Send",
        ],
        "AUTH_PARAMS": {"prompt": "consent"},
        "OAUTH_PKCE_ENABLED": True,
        "TENANT": MICROSOFT_TENANT,
        "APPS": (
            [
                {
                    "client_id": _MICROSOFT_CLIENT_ID,
                    "secret": env_str("MICROSOFT_CLIENT_SECRET", ""),
                    "key": "",
                    "settings": {"tenant": MICROSOFT_TENANT},
                }
            ]
            if _MICROSOFT_CLIENT_ID
            else []
        ),
    },
}

# Languages: English plus five; the catalogues under locale/ are complete (a test checks).
LANGUAGE_CODE = "en"
LANGUAGES = [
    ("en", _("English")),
    ("ro", _("Romanian")),
    ("fi", _("Finnish")),
    ("nb", _("Norwegian Bokmål")),
    ("es", _("Spanish")),
    ("pl", _("Polish")),
]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
# English times without "p.m." (portal/formats/en): no "p.m.." at the end of a sentence.
FORMAT_MODULE_PATH = ["portal.formats"]
USE_TZ = True
TIME_ZONE = env_str("TIME_ZONE", "UTC")

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = "/media/"  # never served directly: downloads go through a firm-checked view
# Raw mail (and anything else kept by content) goes to the "blobs" store: files under
# PORTAL_BLOB_ROOT by default, or an S3-compatible bucket with BLOB_STORAGE=s3 (needs
# django-storages[s3]; see the README).
BLOB_ROOT = Path(env_str("PORTAL_BLOB_ROOT", str(VAR_DIR / "blobs")))
BLOB_STORAGE = env_str("BLOB_STORAGE", "filesystem")
# A blob no row names is deleted by the periodic sweep only once it is this old: a writer
# writes the blob before it commits the row, so a younger orphan may be about to be named.
BLOB_SWEEP_GRACE_HOURS = env_int("BLOB_SWEEP_GRACE_HOURS", 24)
# django-storages' S3Storage, with one boto3 connection per process (portal/s3.py).
BLOB_S3_BACKEND = "portal.s3.BlobS3Storage"
MEDIA_S3_BACKEND = "portal.s3.SharedS3Storage"
# S3Storage options both stores kept in a bucket always have: private objects, reached only
# through the portal's firm-checked views (no public URLs).
S3_OPTIONS = {"default_acl": "private", "querystring_auth": True}
# ... and the blob store's: content-addressed, so the same name is the same bytes.
BLOB_S3_OPTIONS = {**S3_OPTIONS, "file_overwrite": True}


def _s3_storage(name: str, backend: str, options: dict[str, object]) -> dict[str, object]:
    """django-storages' S3Storage for a store ``name`` (BLOB, MEDIA) configured by its
    ``{name}_S3_*`` variables."""
    bucket = env_str(f"{name}_S3_BUCKET", "")
    if not bucket:
        raise ImproperlyConfigured(f"{name}_STORAGE=s3 needs {name}_S3_BUCKET")
    return {
        "BACKEND": backend,
        "OPTIONS": {
            **options,
            "bucket_name": bucket,
            "endpoint_url": env_str(f"{name}_S3_ENDPOINT_URL", "") or None,
            "region_name": env_str(f"{name}_S3_REGION", "") or None,
            "access_key": env_str(f"{name}_S3_ACCESS_KEY_ID", "") or None,
            "secret_key": env_str(f"{name}_S3_SECRET_ACCESS_KEY", "") or None,
            "location": env_str(f"{name}_S3_PREFIX", ""),
        },
    }


if BLOB_STORAGE == "filesystem":
    _BLOBS = {
        "BACKEND": "portal.blobs.BlobFileSystemStorage",
        "OPTIONS": {"location": str(BLOB_ROOT), "base_url": None},
    }
elif BLOB_STORAGE == "s3":
    _BLOBS = _s3_storage("BLOB", BLOB_S3_BACKEND, BLOB_S3_OPTIONS)
else:
    raise ImproperlyConfigured("BLOB_STORAGE must be 'filesystem' or 's3'")
# Client documents (uploads, and the attachments of client mail): files under MEDIA_ROOT, or
# an S3-compatible bucket with MEDIA_STORAGE=s3, which several machines share like the blobs.
MEDIA_STORAGE = env_str("MEDIA_STORAGE", "filesystem")
if MEDIA_STORAGE == "filesystem":
    _MEDIA: dict[str, object] = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
elif MEDIA_STORAGE == "s3":
    # Stored under random names (portal.models._document_path): never overwritten.
    _MEDIA = _s3_storage("MEDIA", MEDIA_S3_BACKEND, {**S3_OPTIONS, "file_overwrite": False})
else:
    raise ImproperlyConfigured("MEDIA_STORAGE must be 'filesystem' or 's3'")
if BLOB_SWEEP_GRACE_HOURS < 1:
    raise ImproperlyConfigured("BLOB_SWEEP_GRACE_HOURS must be at least 1")
STORAGES = {
    "default": _MEDIA,
    "blobs": _BLOBS,
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}
DOCUMENT_MAX_UPLOAD_BYTES = env_int("DOCUMENT_MAX_UPLOAD_BYTES", 25 * 1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# Outbound mail: the local outbox by default (mail is kept and shown in the browser). Set
# EMAIL_BACKEND to an anymail backend (with ANYMAIL_* settings) or to Django's SMTP backend.
EMAIL_BACKEND = env_str("EMAIL_BACKEND", "portal.mail_outbox.OutboxBackend")
SIMULATOR_BACKEND = "invoicing.delivery.simulator.SimulatorBackend"
# The mail simulator (README): how long after a send its later answers (delivered, a bounce
# report, a complaint) arrive.
EMAIL_SIMULATOR_DELAY_SECONDS = env_int("EMAIL_SIMULATOR_DELAY_SECONDS", 15)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 30)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Practice Portal <no-reply@portal.localhost>")
SERVER_EMAIL = env_str("SERVER_EMAIL", DEFAULT_FROM_EMAIL)
ANYMAIL = {
    key.removeprefix("ANYMAIL_"): env_str(key)
    for key in (
        "ANYMAIL_WEBHOOK_SECRET",
        "ANYMAIL_POSTMARK_SERVER_TOKEN",
        "ANYMAIL_SENDGRID_API_KEY",
        "ANYMAIL_MAILGUN_API_KEY",
        "ANYMAIL_MAILGUN_SENDER_DOMAIN",
        "ANYMAIL_MAILGUN_WEBHOOK_SIGNING_KEY",
        "ANYMAIL_SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY",
        "ANYMAIL_BREVO_API_KEY",
        "ANYMAIL_MAILJET_API_KEY",
        "ANYMAIL_MAILJET_SECRET_KEY",
        "ANYMAIL_AMAZON_SES_CLIENT_PARAMS",
    )
    if env_str(key)
}

# Invoices: how long a Pay Now link works, and the invoice list's page size.
PAY_LINK_DAYS = env_int("PAY_LINK_DAYS", 60)
INVOICES_PER_PAGE = env_int("INVOICES_PER_PAGE", 50)
# Long lists count this many rows at most ("Page 3 of more than 50"): portal.paging.
LIST_COUNT_CAP = env_int("LIST_COUNT_CAP", 2_500)

# Card payments through Stripe Checkout, on while STRIPE_SECRET_KEY is set. The webhook
# (/webhooks/stripe/) is refused until STRIPE_WEBHOOK_SECRET (its endpoint's whsec_...) is set.
STRIPE_SECRET_KEY = env_str("STRIPE_SECRET_KEY")
STRIPE_WEBHOOK_SECRET = env_str("STRIPE_WEBHOOK_SECRET")
STRIPE_API_BASE = env_str("STRIPE_API_BASE", "https://api.stripe.com").rstrip("/")

# Delivery: this many soft bounces of one address within this many days block it.
SUPPRESS_AFTER_SOFT_BOUNCES = env_int("SUPPRESS_AFTER_SOFT_BOUNCES", 3)
SUPPRESS_SOFT_BOUNCE_DAYS = env_int("SUPPRESS_SOFT_BOUNCE_DAYS", 7)
# Invoices leave from <this>@<firm's sending domain> once the domain checks pass for it
# (unless the firm's reply-to address is on that domain: then from that address).
FIRM_SENDER_LOCAL_PART = env_str("FIRM_SENDER_LOCAL_PART", "invoices")
# Blocked addresses owners may unblock per firm in any 24 hours: mail to dead addresses hurts
# the firm's sending reputation, so a hurried or hijacked session cannot empty the list.
SUPPRESSION_REMOVALS_PER_DAY = env_int("SUPPRESSION_REMOVALS_PER_DAY", 5)
# Minutes after which an email refused for now (4.x.x) at send time is tried again.
DELIVERY_SOFT_RETRY_MINUTES = [
    int(m) for m in env_list("DELIVERY_SOFT_RETRY_MINUTES", "15,60,240") if m.isdigit()
]
# Seconds a sender may hold a claimed group without renewing its lease; it renews every
# DELIVERY_SENDING_LEASE_RENEW_SECONDS while it works, and a claim not renewed for the lease
# is a sender that died: the watchdog marks its deliveries "outcome unknown".
DELIVERY_SENDING_LEASE_SECONDS = env_int("DELIVERY_SENDING_LEASE_SECONDS", 30 * 60)
DELIVERY_SENDING_LEASE_RENEW_SECONDS = env_int(
    "DELIVERY_SENDING_LEASE_RENEW_SECONDS", max(1, DELIVERY_SENDING_LEASE_SECONDS // 10)
)
if not 0 < DELIVERY_SENDING_LEASE_RENEW_SECONDS < DELIVERY_SENDING_LEASE_SECONDS:
    raise ImproperlyConfigured(
        "DELIVERY_SENDING_LEASE_RENEW_SECONDS must be above 0 and below the lease"
    )
# Minutes an ESP webhook event for a message no delivery knows yet is kept pending. Through an
# ESP a delivery learns its message id only when the sender records its group, after the email
# left, and a sender may take up to invoicing.delivery.sender.SENDING_LEASE (30 minutes) before the
# watchdog gives up on it: keep the default above that lease (lease + 10). Older events that
# still match nothing are not ours (another system on the same ESP account) and are closed.
WEBHOOK_UNMATCHED_GRACE_MINUTES = env_int("WEBHOOK_UNMATCHED_GRACE_MINUTES", 40)

# Bounces for plain-SMTP setups: every delivery gets its own Return-Path under
# BOUNCE_ADDRESS (VERP), and the mailbox behind it is polled read-only over IMAP. Both are
# off while unset (ESP setups learn about bounces from webhooks).
BOUNCE_ADDRESS = env_str("BOUNCE_ADDRESS")
if BOUNCE_ADDRESS and (BOUNCE_ADDRESS.count("@") != 1 or "+" in BOUNCE_ADDRESS):
    raise ImproperlyConfigured(
        f"BOUNCE_ADDRESS must be one plain address such as bounces@bounce.example, "
        f"got {BOUNCE_ADDRESS!r}"
    )
BOUNCE_MAILBOX_HOST = env_str("BOUNCE_MAILBOX_HOST")
BOUNCE_MAILBOX_SECURITY = env_str("BOUNCE_MAILBOX_SECURITY", "ssl").lower()
if BOUNCE_MAILBOX_SECURITY not in ("ssl", "starttls", "none"):
    raise ImproperlyConfigured(
        f"BOUNCE_MAILBOX_SECURITY must be ssl, starttls or none, got {BOUNCE_MAILBOX_SECURITY!r}"
    )
BOUNCE_MAILBOX_PORT = env_int(
    "BOUNCE_MAILBOX_PORT", 993 if BOUNCE_MAILBOX_SECURITY == "ssl" else 143
)
BOUNCE_MAILBOX_USER = env_str("BOUNCE_MAILBOX_USER")
BOUNCE_MAILBOX_PASSWORD = env_str("BOUNCE_MAILBOX_PASSWORD")
BOUNCE_MAILBOX_FOLDER = env_str("BOUNCE_MAILBOX_FOLDER", "INBOX")
BOUNCE_MAILBOX_TIMEOUT = env_float("BOUNCE_MAILBOX_TIMEOUT", 30.0)

# How the portal sends mail, for domain checks and the allowlist page: the SPF include
# firms add, the sending IP addresses and host names, and DKIM selectors as
# "selector:cname-target" pairs.
PORTAL_SPF_INCLUDE = env_str("PORTAL_SPF_INCLUDE")
PORTAL_SENDING_IPS = env_list("PORTAL_SENDING_IPS")
PORTAL_SENDING_HOSTS = env_list("PORTAL_SENDING_HOSTS")
PORTAL_DKIM_SELECTORS = [
    tuple(pair.split(":", 1)) for pair in env_list("PORTAL_DKIM_SELECTORS") if ":" in pair
]

# Addresses: a deliverability check (does the domain have mail servers?) is off unless
# enabled, because the embedded run may have no DNS at all.
ADDRESS_CHECK_DELIVERABILITY = env_bool("ADDRESS_CHECK_DELIVERABILITY", False)
ADDRESS_ALLOWED_SPECIAL_DOMAINS = env_list("ADDRESS_ALLOWED_SPECIAL_DOMAINS")
if EMAIL_BACKEND == SIMULATOR_BACKEND and "test" not in ADDRESS_ALLOWED_SPECIAL_DOMAINS:
    # The simulator's addresses and the demo's people are under the reserved `.test`.
    ADDRESS_ALLOWED_SPECIAL_DOMAINS = [*ADDRESS_ALLOWED_SPECIAL_DOMAINS, "test"]

# DNS: one resolver configuration for every lookup the portal makes (address checks, domain
# checks). Empty nameservers means the system resolver.
DNS_NAMESERVERS = env_list("DNS_NAMESERVERS")
DNS_PORT = env_int("DNS_PORT", 53)
DNS_TIMEOUT = env_float("DNS_TIMEOUT", 3.0)

# Mailbox sync. Credentials are encrypted with MAILSYNC_FERNET_KEYS (comma-separated Fernet
# keys, newest first; older keys still decrypt, so keys can be rotated). With DEBUG on and no
# key a development key is derived from SECRET_KEY; with DEBUG off and no key, saving mailbox
# credentials fails with a clear message (the rest of the portal keeps working).
MAILSYNC_FERNET_KEYS = env_list("MAILSYNC_FERNET_KEYS")
MAILSYNC_INITIAL_DAYS = env_int("MAILSYNC_INITIAL_DAYS", 90)
MAILSYNC_BATCH_SIZE = env_int("MAILSYNC_BATCH_SIZE", 150)
MAILSYNC_MAX_ATTACHMENT_BYTES = env_int("MAILSYNC_MAX_ATTACHMENT_BYTES", 25 * 1024 * 1024)
MAILSYNC_POLL_SECONDS = env_int("MAILSYNC_POLL_SECONDS", 300)
MAILSYNC_TIMEOUT = env_float("MAILSYNC_TIMEOUT", 60.0)
# Web requests of one process that may wait on a member's mail server at once ("Test
# account", a sending server's or address's test): the rest of its threads stay free for
# pages (mailsync.server_waits).
MAIL_SERVER_WAITS_PER_PROCESS = env_int("MAIL_SERVER_WAITS_PER_PROCESS", 1)
# The demo's sending server on loopback (scripts/run.sh, manage.py demo_smtp): the demo
# mailboxes send through it, and what they send lands in the local Outbox.
DEMO_SMTP_PORT = env_int("DEMO_SMTP_PORT", 2525)
# Mail servers members type (Test account, sync, sending, the shared mailbox) must be on
# the public internet: private, loopback, link-local and reserved addresses are refused so
# the portal cannot be used to probe its own network. On-premises installations whose mail
# server is on the local network (and the test suite's loopback servers) switch this on.
OUTBOUND_ALLOW_PRIVATE_HOSTS = env_bool("OUTBOUND_ALLOW_PRIVATE_HOSTS", False)

# Signed ESP webhook posts (Mailgun) older than this are refused as replays.
WEBHOOK_MAX_AGE_SECONDS = env_int("WEBHOOK_MAX_AGE_SECONDS", 300)
# Budgets of portal.ratelimits, {action: (per member, per firm, seconds)}; empty: its defaults.
RATE_LIMITS: dict[str, tuple[int, int, int]] = {}
# Mailboxes on one server that sync at the same time, across all workers (hosted servers
# often allow only 4-10 connections per IP); 0: no limit. Presets may set their own.
MAILSYNC_MAX_CONNECTIONS_PER_HOST = env_int("MAILSYNC_MAX_CONNECTIONS_PER_HOST", 4)
# A sync owns its mailbox for this long and renews it with every batch it commits; a batch
# that commits after its lease ran out (or was taken over) is refused and the run stops.
# Must be longer than one batch takes (fetch, parse and store MAILSYNC_BATCH_SIZE messages).
MAILSYNC_LEASE_SECONDS = env_int("MAILSYNC_LEASE_SECONDS", 30 * 60)
# Token endpoints the mailbox sync refreshes OAuth access tokens at (tests point them at a
# loopback server).
MAILSYNC_GOOGLE_TOKEN_URL = env_str("GOOGLE_TOKEN_URL", "https://oauth2.googleapis.com/token")
MAILSYNC_MICROSOFT_TOKEN_URL = env_str(
    "MICROSOFT_TOKEN_URL",
    f"https://login.microsoftonline.com/{MICROSOFT_TENANT}/oauth2/v2.0/token",
)
if MAILSYNC_BATCH_SIZE < 1 or MAILSYNC_INITIAL_DAYS < 0:
    raise ImproperlyConfigured("MAILSYNC_BATCH_SIZE must be >= 1 and MAILSYNC_INITIAL_DAYS >= 0")
if MAILSYNC_LEASE_SECONDS < 60:
    raise ImproperlyConfigured("MAILSYNC_LEASE_SECONDS must be at least 60")

# Celery: a broker on the file system needs no server; production sets CELERY_BROKER_URL
# to Redis (or RabbitMQ). Beat uses django-celery-beat's database scheduler.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
if CELERY_BROKER_URL == "filesystem://":
    _queue_dir = VAR_DIR / "celery-broker"
    for _sub in ("in", "processed", "control"):
        (_queue_dir / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "in"),
        "data_folder_out": str(_queue_dir / "in"),
        "processed_folder": str(_queue_dir / "processed"),
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }
else:
    # Tasks acknowledge late: Redis (and SQS) hand a task that is not acknowledged within the
    # visibility timeout to another worker, and a countdown task is not acknowledged until it
    # ran. The timeout must exceed the longest countdown (the soft retries, in hours), or two
    # workers run it. Each task claims its rows under a lock as well, so a redelivery does no
    # harm, but it must stay rare. Seconds; default 6 hours.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_BROKER_VISIBILITY_TIMEOUT", 6 * 3600),
    }
_longest_countdown = 60 * max(DELIVERY_SOFT_RETRY_MINUTES, default=0)
if CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout", float("inf")) <= _longest_countdown:
    raise ImproperlyConfigured(
        "CELERY_BROKER_VISIBILITY_TIMEOUT must be longer than the longest of "
        "DELIVERY_SOFT_RETRY_MINUTES, or a retry is run by two workers"
    )
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# One queue per kind of work, so that a flood of one kind (a thousand mailboxes due, a burst
# of ESP webhooks, a bulk invoice run) never starves another: each queue has its own
# workers (`manage.py run_worker QUEUE`, or `celery -A portal worker -Q QUEUE`). A worker
# started without -Q consumes every queue (the embedded run and small installs). Task names
# are unchanged; anything not routed here goes to "default".
CELERY_QUEUES = ("sync", "send", "webhooks", "checks", "default")
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_QUEUES = [Queue(name, routing_key=name) for name in CELERY_QUEUES]
CELERY_TASK_ROUTES = {
    # Reading members' mailboxes: long tasks (minutes for a first sync).
    "mailsync.sync_mailbox": {"queue": "sync"},
    # Sending invoices and notices, and the watchdogs of sending.
    "invoicing.deliveries_send": {"queue": "send"},
    "invoicing.delivery_soft_retry": {"queue": "send"},
    "invoicing.invoice_paid_notify": {"queue": "send"},
    "invoicing.pay_link_request_notify": {"queue": "send"},
    "invoicing.requeue_stale_deliveries": {"queue": "send"},
    "invoicing.expire_stuck_sending": {"queue": "send"},
    # Emails members write on a client's Email tab, and their watchdog.
    "mailsync.send_written_email": {"queue": "send"},
    "mailsync.written_emails_watch": {"queue": "send"},
    # What the ESPs and the bounce mailbox tell us about sent mail.
    "invoicing.process_webhook_event": {"queue": "webhooks"},
    "invoicing.sweep_webhook_events": {"queue": "webhooks"},
    "invoicing.match_waiting_webhook_events": {"queue": "webhooks"},
    "invoicing.poll_bounce_mailbox": {"queue": "webhooks"},
    # DNS checks of firms' sending domains and clients' address domains.
    "troubleshooting.check_domain": {"queue": "checks"},
    "troubleshooting.check_all_domains": {"queue": "checks"},
    "troubleshooting.check_address_domains": {"queue": "checks"},
    # default: portal.heartbeat, portal.sweep_blobs, mailsync.dispatch_due (it only
    # enqueues, so a busy sync queue never delays it), mailsync.release_stuck_leases,
    # mailsync.relink_changed_addresses, accounts.notify_expired_support_grants.
}
# Worker processes per queue for `manage.py run_worker QUEUE` on one machine (each queue's
# workers may run on any number of machines; the figures add up). Sync tasks wait on mail
# servers and are capped per server (MAILSYNC_MAX_CONNECTIONS_PER_HOST), so more processes
# than cores is fine there; override with CELERY_CONCURRENCY_<QUEUE>.
CELERY_QUEUE_CONCURRENCY = {
    name: env_int(f"CELERY_CONCURRENCY_{name.upper()}", default)
    for name, default in (("sync", 4), ("send", 2), ("webhooks", 2), ("checks", 2), ("default", 2))
}
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_TIMEZONE = TIME_ZONE
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Security. With DEBUG off everything is strict; SECURE_SSL_REDIRECT can be turned off when a
# proxy in front terminates TLS and already redirects.
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# A strict content security policy everywhere, so development shows what production enforces.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "frame-ancestors": [NONE],
        # Browsers apply form-action to a form's redirects too: Pay by card answers with a
        # redirect to Stripe Checkout.
        "form-action": [SELF, *(["https://checkout.stripe.com"] if STRIPE_SECRET_KEY else [])],
        "base-uri": [SELF],
        "object-src": [NONE],
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

# The cache: each process's own memory, unless CACHE_URL names a Redis database
# (redis://host:6379/1). Production: one cache for every web process and worker, so that
# rate-limit counters (portal.ratelimits, allauth's login limits) count together and what
# the pages keep there (portal.cache_once: the unlinked-mail summary, the Problems
# dashboard's counts) is counted once, not once per process.
CACHE_URL = env_str("CACHE_URL", "")
if CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
        }
    }
    # Sessions read from the shared cache and written through to the database: one query
    # fewer on every request (the session row; 0.2-0.3 ms of the bare view's 2.6 in
    # process; portal/sessions.py: the cache only a shortcut). Only with a shared cache:
    # with each process's own memory, a session signed out in one process would stay
    # signed in, from its cache, in the others.
    SESSION_ENGINE = "portal.sessions"

CLIENTS_PER_PAGE = env_int("CLIENTS_PER_PAGE", 25)
# bench/bench_pages.py's floor: a bare view at /bench/floor/ (never on in production).
BENCH_FLOOR_VIEW = env_bool("BENCH_FLOOR_VIEW", False)
# Functions (dotted paths) that add columns to the shown page of the client list (they get
# the page's clients, never the whole list): the apps above portal plug in here, so portal
# imports none of them.
CLIENT_LIST_PAGE_ANNOTATIONS = ["troubleshooting.selectors.problem_counts_for_clients"]

# Staff users in this group are the support team that firms can let in (Editor access).
SUPPORT_GROUP_NAME = env_str("SUPPORT_GROUP_NAME", "Support")
# The longest an owner can let support in for at once (Editor access), in days.
SUPPORT_ACCESS_MAX_DAYS = env_int("SUPPORT_ACCESS_MAX_DAYS", 365)

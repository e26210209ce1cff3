from __future__ import annotations

from typing import Any

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core.internal.ratelimit import get_ip
from django.conf import settings
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from portal.addresses import clean_address_field


class AccountAdapter(DefaultAccountAdapter):
    error_messages = {
        **DefaultAccountAdapter.error_messages,
        "too_many_login_attempts": _(
            "Too many failed sign-ins to this account from your network. Try again in a few "
            "minutes. The account is not locked: its owner can still sign in from another "
            "network."
        ),
    }

    def clean_email(self, email: str) -> str:
        """allauth's sign-up and add-email forms use the portal's one address validator
        (which refuses bidi overrides and invisible characters EmailField lets through)."""
        return super().clean_email(clean_address_field(email))

    def is_open_for_signup(self, request: HttpRequest) -> bool:

        return settings.ACCOUNT_ALLOW_SIGNUP

    def _get_login_attempts_cache_key(self, request: HttpRequest, **credentials: Any) -> str:
        # allauth counts failed sign-ins per account ("key") everywhere, so anyone who knows an
        # owner's email could lock them out; counting per account *and* client address keeps
        # the limit on the guesser only (the per-address limit in ACCOUNT_RATE_LIMITS stays).
        return f"{get_ip(request)}:{super()._get_login_attempts_cache_key(request, **credentials)}"

from __future__ import annotations

from allauth.account.adapter import DefaultAccountAdapter
from django.conf import settings
from django.http import HttpRequest

from portal.addresses import clean_address_field


class AccountAdapter(DefaultAccountAdapter):
    def clean_email(self, email: str) -> str:
        """allauth's sign-up and add-email forms use the portal's one address validator
        (which refuses bidi overrides and invisible characters EmailField lets through)."""
        return super().clean_email(clean_address_field(email))

    def is_open_for_signup(self, request: HttpRequest) -> bool:

        return settings.ACCOUNT_ALLOW_SIGNUP

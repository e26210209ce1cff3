"""The ESP webhook endpoints (``/webhooks/anymail/...``): anymail's views, made safe to expose.

- An ESP whose keys are not configured has no endpoint: its URL answers 404 instead of the
  server error anymail's view raises when it is built without its settings.
- Mailgun signs only a timestamp and a random token, not the body, so a captured signature
  could be sent again with another body. Its posts are refused when the timestamp is older
  than ``WEBHOOK_MAX_AGE_SECONDS`` (or too far in the future), and a token is accepted only
  once: it is remembered in the cache as the post is checked, and forgotten again if the
  post fails on our side (answered 500), so Mailgun's retry with the same token gets through.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from anymail import urls as anymail_urls
from anymail.exceptions import AnymailWebhookValidationFailure
from anymail.webhooks.mailgun import MailgunTrackingWebhookView
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import got_request_exception
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.urls import URLPattern
from django.views.decorators.csrf import csrf_exempt

logger = logging.getLogger(__name__)

# A Mailgun clock a little ahead of ours is not an attack.
FUTURE_SKEW_SECONDS = 60


def _mailgun_token(request: HttpRequest) -> tuple[str, str]:
    """(token, timestamp) of a post whose signature anymail has already checked."""
    if request.content_type == "application/json":
        block = json.loads(request.body.decode("utf-8"))["signature"]
        return str(block["token"]), str(block["timestamp"])
    return request.POST["token"], request.POST["timestamp"]


def _token_key(token: str) -> str:
    return "webhook:mailgun:token:" + hashlib.sha256(token.encode()).hexdigest()


class MailgunTrackingView(MailgunTrackingWebhookView):
    """anymail's Mailgun tracking view with a freshness window and one use per token."""

    def validate_request(self, request: HttpRequest) -> None:
        super().validate_request(request)  # basic auth and the signature of timestamp+token
        token, timestamp = _mailgun_token(request)
        try:
            age = time.time() - float(timestamp)
        except ValueError as exc:
            raise AnymailWebhookValidationFailure("Mailgun webhook with a bad timestamp") from exc
        if age > settings.WEBHOOK_MAX_AGE_SECONDS or age < -FUTURE_SKEW_SECONDS:
            raise AnymailWebhookValidationFailure(
                f"Mailgun webhook timestamp is {int(age)} seconds old: refused as a replay"
            )
        # add() is atomic: of two posts with one token (a replay racing the original), one
        # gets through.
        if not cache.add(
            _token_key(token), 1, timeout=settings.WEBHOOK_MAX_AGE_SECONDS + FUTURE_SKEW_SECONDS
        ):
            raise AnymailWebhookValidationFailure("Mailgun webhook token seen before: a replay")
        request._mailgun_token = token  # type: ignore[attr-defined]


@receiver(got_request_exception)
def _forget_token_of_failed_post(
    sender: object, request: HttpRequest | None = None, **kw: Any
) -> None:
    """A post that failed on our side (storing its events, say; answered 500) was not
    handled: Mailgun's retry with the same token must get through."""
    token = getattr(request, "_mailgun_token", None)
    if token is not None:
        cache.delete(_token_key(token))


def _configured_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @functools.wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except ImproperlyConfigured as exc:  # anymail's AnymailConfigurationError included
            logger.warning("ESP webhook %s is not configured: %s", request.path, exc)
            return HttpResponseNotFound()

    return csrf_exempt(guarded)


def _patterns() -> list[URLPattern]:
    patterns = []
    for pattern in anymail_urls.urlpatterns:
        view = pattern.callback
        if getattr(view, "view_class", None) is MailgunTrackingWebhookView:
            view = MailgunTrackingView.as_view()
        patterns.append(
            URLPattern(pattern.pattern, _configured_only(view), pattern.default_args, pattern.name)
        )
    return patterns


app_name = "anymail"
urlpatterns = _patterns()

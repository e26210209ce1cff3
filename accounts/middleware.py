from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from accounts.selectors import membership_for_request


class CurrentFirmMiddleware:
    """Put the firm the member is acting for on the request (`firm`, `member_role`).

    Resolved once per request from the member's memberships; the session may pick one
    firm when a user belongs to several.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        membership = membership_for_request(request)
        request.membership = membership
        request.firm = membership.firm if membership else None
        request.member_role = membership.role if membership else None
        return self.get_response(request)

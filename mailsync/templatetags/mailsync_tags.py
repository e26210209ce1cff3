"""Template tags that let accounts' settings pages show Email Sync without importing
mailsync: the templates include ours, and these read `request` from the context."""

from __future__ import annotations

from django import template

from accounts.models import Role
from mailsync import selectors

register = template.Library()


@register.inclusion_tag("mailsync/_connections.html", takes_context=True)
def email_sync_section(context: template.Context) -> dict:
    request = context["request"]
    return {
        "request": request,
        "connections": selectors.connections_of_member(firm=request.firm, user=request.user),
        "shared": False,
        "can_manage": True,
    }


@register.inclusion_tag("mailsync/_connections.html", takes_context=True)
def shared_mailbox_section(context: template.Context) -> dict:
    request = context["request"]
    return {
        "request": request,
        "connections": selectors.connections_shared(firm=request.firm),
        "shared": True,
        "can_manage": request.member_role == Role.OWNER,
    }

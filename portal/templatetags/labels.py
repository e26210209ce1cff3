"""``{{ row|label:"status" }}``: ``row.get_status_display`` for lists of many rows (see
portal.choices)."""

from __future__ import annotations

from django import template
from django.db import models

from portal.choices import choice_label

register = template.Library()


@register.filter
def label(instance: models.Model, field_name: str) -> str:
    return choice_label(instance, field_name)

"""A field's choice label as ``get_FOO_display()`` gives it, for lists of many rows.

``get_FOO_display()`` rebuilds a dict of the field's choices on every call (about 25 µs);
a list of 50 rows with two such columns paid 2-3 ms for it. The dict is built once per
field here; its labels stay lazy, so each is translated into the language of the page.
"""

from __future__ import annotations

from functools import cache

from django.db import models
from django.utils.encoding import force_str


@cache
def _labels(model: type[models.Model], field_name: str) -> dict:
    return dict(model._meta.get_field(field_name).flatchoices)


def choice_label(instance: models.Model, field_name: str) -> str:
    return value_label(type(instance), field_name, getattr(instance, field_name))


def value_label(model: type[models.Model], field_name: str, value: object) -> str:
    """`choice_label` of a value read as a plain column (``values_list``)."""
    return force_str(_labels(model, field_name).get(value, value), strings_only=True)

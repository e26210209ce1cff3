"""Small things a first user tripped over, each fixed where they saw it."""

from __future__ import annotations

import datetime

from django.template import Context, Template
from django.urls import reverse
from django.utils import timezone, translation

from invoicing.delivery.models import Suppression


def test_the_profile_language_box_says_what_empty_means(owner_client):
    page = owner_client.get(reverse("accounts:my_account")).content.decode()
    assert "---------" not in page
    assert "As chosen in the language menu" in page


def test_a_sentence_ending_with_a_time_has_one_period():
    moment = timezone.make_aware(datetime.datetime(2026, 12, 6, 15, 30))
    with translation.override("en"):
        for name in ("DATETIME_FORMAT", "SHORT_DATETIME_FORMAT", "TIME_FORMAT"):
            text = Template(f'ends {{{{ when|date:"{name}" }}}}.').render(Context({"when": moment}))
            assert not text.endswith(".."), text
            assert "3:30" in text


def test_unblocking_says_it_takes_effect_at_once(owner_client, firm):
    suppression = Suppression.objects.create(
        firm=firm, normalized="gone@client.test", reason=Suppression.Reason.HARD_BOUNCE
    )
    listing = owner_client.get(reverse("invoicing:suppressions")).content.decode()
    assert "Request removal" not in listing and "Unblock…" in listing
    page = owner_client.get(
        reverse("invoicing:suppression_remove", args=[suppression.pk])
    ).content.decode()
    assert "Unblocking takes effect at once" in page
    assert "Unblock now" in page

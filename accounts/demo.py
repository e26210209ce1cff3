"""Demo data for the embedded run: a firm, its people, 50 clients with contacts, documents."""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from allauth.account.models import EmailAddress
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.files.base import ContentFile
from django.db import transaction

from accounts.models import Membership
from portal.addresses import validate_address
from portal.models import Client, Contact, ContactAddress, Document, Firm

DEMO_FIRM_SLUG = "demo-accounting"
DEMO_PASSWORD = "demo-portal-2026"  # noqa: S105 - printed on purpose, development only

FIRST = ["Anna", "Mikko", "Ingrid", "Lucía", "Piotr", "Ioana", "James", "Sofia", "Lars", "Marta"]
LAST = ["Berg", "Virtanen", "Hansen", "García", "Nowak", "Popescu", "Smith", "Moreno", "Olsen"]
COMPANY = ["Bakery", "Builders", "Consulting", "Design", "Farm", "Logistics", "Studio", "Dental"]
TOWNS = ["Oslo", "Turku", "Sevilla", "Kraków", "Cluj", "Leeds", "Bergen", "Tampere", "Málaga"]


@dataclass(frozen=True)
class DemoLogin:
    email: str
    role: str


DEMO_USERS = [
    DemoLogin("owner@demo.test", "owner"),
    DemoLogin("anna.staff@demo.test", "staff"),
    DemoLogin("mikko.staff@demo.test", "staff"),
]


def _user(email: str, first: str, last: str, **extra: bool) -> object:
    user_model = get_user_model()
    user = user_model.objects.filter(email=email).first()
    if user is None:
        user = user_model.objects.create_user(
            email=email, password=DEMO_PASSWORD, first_name=first, last_name=last, **extra
        )
    EmailAddress.objects.get_or_create(
        user=user, email=email, defaults={"primary": True, "verified": True}
    )
    return user


@transaction.atomic
def seed_demo(*, clients: int = 50) -> tuple[Firm, list[DemoLogin]]:
    firm, _created = Firm.objects.get_or_create(
        slug=DEMO_FIRM_SLUG,
        defaults={
            "name": "Demo Accounting",
            "sender_name": "Demo Accounting",
            "reply_to_email": "office@demo-accounting.test",
        },
    )
    names = {"owner": ("Olivia", "Owner"), "anna": ("Anna", "Staff"), "mikko": ("Mikko", "Staff")}
    for login in DEMO_USERS:
        first, last = names[login.email.split("@")[0].split(".")[0]]
        user = _user(login.email, first, last)
        Membership.objects.get_or_create(user=user, firm=firm, defaults={"role": login.role})
    support = _user("support@demo.test", "Sam", "Support", is_staff=True, is_superuser=True)
    support.groups.add(Group.objects.get_or_create(name=settings.SUPPORT_GROUP_NAME)[0])

    rng = random.Random(2026)  # the same demo every time
    existing = Client.objects.filter(firm=firm).count()
    for n in range(existing, clients):
        first, last, town = rng.choice(FIRST), rng.choice(LAST), rng.choice(TOWNS)
        if n % 3 == 0:
            name, kind = f"{first} {last}", Client.Kind.INDIVIDUAL
        else:
            name, kind = f"{last} {rng.choice(COMPANY)} {town} #{n + 1}", Client.Kind.COMPANY
        client = Client.objects.create(firm=firm, display_name=name, kind=kind)
        for c in range(1 + n % 2):
            contact_first = rng.choice(FIRST)
            contact = Contact.objects.create(client=client, name=f"{contact_first} {last}")
            for a in range(1 + (n + c) % 2):
                valid = validate_address(
                    f"{contact_first}.{last}{n}{'' if a == 0 else '.billing'}@example.com",
                    check_deliverability=False,
                )
                ContactAddress.objects.get_or_create(
                    contact=contact,
                    normalized=valid.normalized,
                    defaults={
                        "firm": firm,
                        "address": valid.address,
                        "is_primary": a == 0,
                        "receives_invoices": True,
                    },
                )
        if n < 5:
            body = f"Demo engagement letter for {name}.\n".encode()
            document = Document(
                client=client,
                original_name=f"engagement-letter-{n + 1}.txt",
                content_type="text/plain",
                size=len(body),
                sha256="",
            )
            document.file.save(document.original_name, ContentFile(body), save=False)
            document.sha256 = hashlib.sha256(body).hexdigest()
            document.save()
    from accounts.demo_story import story_seed

    user_model = get_user_model()
    story_seed(
        firm=firm,
        owner=user_model.objects.get(email="owner@demo.test"),
        member=user_model.objects.get(email="anna.staff@demo.test"),
        other_member=user_model.objects.get(email="mikko.staff@demo.test"),
    )
    return firm, DEMO_USERS

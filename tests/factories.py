from __future__ import annotations

import factory
from allauth.account.models import EmailAddress
from django.core.files.base import ContentFile

from accounts.models import Membership, Role, User
from portal.addresses import normalize_address
from portal.models import Client, Contact, ContactAddress, Document, Firm

PASSWORD = "correct horse battery staple"


class FirmFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Firm

    name = factory.Sequence(lambda n: f"Firm {n}")
    slug = factory.Sequence(lambda n: f"firm-{n}")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    email = factory.Sequence(lambda n: f"user{n}@firm.test")
    first_name = "Test"
    last_name = factory.Sequence(lambda n: f"User{n}")

    @factory.post_generation
    def password(self, create: bool, extracted: str | None, **kwargs: object) -> None:
        self.set_password(extracted or PASSWORD)
        if create:
            self.save()
            EmailAddress.objects.create(user=self, email=self.email, primary=True, verified=True)


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    firm = factory.SubFactory(FirmFactory)
    role = Role.STAFF


class ClientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Client

    firm = factory.SubFactory(FirmFactory)
    display_name = factory.Sequence(lambda n: f"Client {n:04d}")
    kind = Client.Kind.COMPANY


class ContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Contact

    client = factory.SubFactory(ClientFactory)
    name = factory.Sequence(lambda n: f"Contact {n}")


class ContactAddressFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ContactAddress

    contact = factory.SubFactory(ContactFactory)
    firm = factory.LazyAttribute(lambda o: o.contact.client.firm)
    address = factory.Sequence(lambda n: f"person{n}@client.test")
    normalized = factory.LazyAttribute(lambda o: normalize_address(o.address))
    is_primary = True


class DocumentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Document

    client = factory.SubFactory(ClientFactory)
    original_name = factory.Sequence(lambda n: f"statement-{n}.pdf")
    file = factory.LazyAttribute(lambda o: ContentFile(b"%PDF-1.4 demo", name=o.original_name))
    content_type = "application/pdf"
    size = 13
    sha256 = factory.Sequence(lambda n: f"{n:064x}")  # one client has each content once

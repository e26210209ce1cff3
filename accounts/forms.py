from __future__ import annotations

from datetime import datetime, time

from django import forms
from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.http import HttpRequest
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from accounts.models import Role, User
from accounts.services import firm_create_with_owner
from accounts.support import PRESETS, support_access_limit
from portal.addresses import clean_address_field
from portal.forms import AddressField
from portal.headers import clean_header_field, validate_header_text
from portal.models import Firm


class FirmSignupForm(forms.Form):
    """Extra sign-up fields for allauth: the new user's name and their firm."""

    first_name = forms.CharField(label=_("First name"), max_length=150)
    last_name = forms.CharField(label=_("Last name"), max_length=150)
    firm_name = forms.CharField(
        label=_("Firm name"), max_length=200, validators=[validate_header_text]
    )

    def signup(self, request: HttpRequest, user: User) -> None:
        user.first_name = self.cleaned_data["first_name"]
        user.last_name = self.cleaned_data["last_name"]
        user.save(update_fields=["first_name", "last_name"])
        firm_create_with_owner(name=self.cleaned_data["firm_name"], owner=user)


class InviteForm(forms.Form):
    email = AddressField(label=_("Email address"))
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices, initial=Role.STAFF)


class RoleForm(forms.Form):
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices)


class AcceptInvitationForm(forms.Form):
    first_name = forms.CharField(label=_("First name"), max_length=150)
    last_name = forms.CharField(label=_("Last name"), max_length=150)
    password = forms.CharField(label=_("Password"), widget=forms.PasswordInput)

    def __init__(self, *args: object, email: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.email = email

    def clean_password(self) -> str:
        password = self.cleaned_data["password"]
        validate_password(password, User(email=self.email))
        return password


class ProfileForm(forms.ModelForm):
    class Meta:
        model = User
        fields = ["first_name", "last_name", "language", "problems_digest"]

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # Empty means "whatever the language menu says", which a row of dashes does not say.
        self.fields["language"].choices = [
            ("", _("As chosen in the language menu")),
            *settings.LANGUAGES,
        ]


class FirmProfileForm(forms.ModelForm):
    owners_must_use_mfa = forms.BooleanField(
        label=_("Owners must sign in with two-factor authentication"),
        required=False,
        help_text=_(
            "Owners without an authenticator app are asked to set one up before anything else."
        ),
    )

    class Meta:
        model = Firm
        fields = [
            "name",
            "sender_name",
            "reply_to_email",
            "sending_domain",
            "language",
            "time_zone",
            "owners_must_use_mfa",
        ]
        help_texts = {
            "sender_name": _("The name clients see on emails the portal sends for your firm."),
            "reply_to_email": _("Where clients' replies to those emails go."),
            "sending_domain": _(
                "Your own domain for sending (for example yourfirm.com). Leave empty to send "
                "from the portal's domain."
            ),
        }

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        # An unset choice follows the platform's default: show what applies now.
        self.initial["owners_must_use_mfa"] = self.instance.owners_need_mfa()

    def clean_name(self) -> str:
        return clean_header_field(self.cleaned_data["name"])

    def clean_sender_name(self) -> str:
        return clean_header_field(self.cleaned_data["sender_name"])

    def clean_reply_to_email(self) -> str:
        # The Reply-To of every invoice email: the one address validator, not EmailField's.
        value = self.cleaned_data["reply_to_email"].strip()
        return clean_address_field(value) if value else value

    def clean_sending_domain(self) -> str:
        domain = self.cleaned_data["sending_domain"].strip().lower().rstrip(".")
        if domain and ("." not in domain or any(c in domain for c in " @/\\:")):
            raise forms.ValidationError(_("Enter a domain name such as yourfirm.com."))
        return domain


class EditorAccessForm(forms.Form):
    PERIODS = [
        ("1d", _("1 day")),
        ("1w", _("1 week")),
        ("1m", _("1 month")),
        ("3m", _("3 months")),
        ("date", _("Until a date")),
    ]

    enabled = forms.BooleanField(
        label=_("Allow the support team to log in with owner permissions"), required=False
    )
    period = forms.ChoiceField(
        label=_("For how long"), choices=PERIODS, initial="1m", widget=forms.RadioSelect
    )
    until = forms.DateField(
        label=_("End date"),
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text=_("Access ends at the end of this day."),
    )

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("enabled") and cleaned.get("period") == "date":
            until = cleaned.get("until")
            if until is None:
                self.add_error("until", _("Choose the date when access ends."))
            elif until < timezone.localdate():
                self.add_error("until", _("Choose a date that has not passed."))
        if (
            cleaned.get("enabled")
            and not self.errors
            and self.expires_at() > support_access_limit()
        ):
            days = settings.SUPPORT_ACCESS_MAX_DAYS
            field = "until" if cleaned.get("period") == "date" else "period"
            self.add_error(
                field,
                ngettext(
                    "Editor access can last %(days)d day at most: choose an end on or before "
                    "%(date)s.",
                    "Editor access can last %(days)d days at most: choose an end on or before "
                    "%(date)s.",
                    days,
                )
                % {"days": days, "date": date_format(support_access_limit().date())},
            )
        return cleaned

    def expires_at(self) -> datetime:
        period = self.cleaned_data["period"]
        if period == "date":
            end_of_day = datetime.combine(self.cleaned_data["until"], time.max)
            return timezone.make_aware(end_of_day)
        return timezone.now() + PRESETS[period]

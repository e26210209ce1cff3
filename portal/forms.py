from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.utils.translation import gettext_lazy as _

from portal.addresses import (
    AddressError,
    ValidAddress,
    clean_address_field,
    split_addresses,
    validate_address,
)
from portal.models import Client, ContactAddress


class ClientForm(forms.ModelForm):
    class Meta:
        model = Client
        fields = ["display_name", "kind", "status", "language", "billing_address", "tax_id"]
        widgets = {"billing_address": forms.Textarea(attrs={"rows": 3})}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Empty means "whatever the firm uses", which a row of dashes does not say.
        self.fields["language"].choices = [("", _("The firm's language")), *settings.LANGUAGES]


class AddressField(forms.CharField):
    """One email address, checked by `portal.addresses.clean_address_field` (never Django's
    EmailField alone, which lets bidi and invisible characters through)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max_length", 320)
        super().__init__(*args, **kwargs)

    def clean(self, value: str) -> str:
        text = super().clean(value)
        return clean_address_field(text) if text else text


class AddressListField(forms.CharField):
    """A text field taking one or more addresses (`;`, `,` or one per line)."""

    widget = forms.Textarea(attrs={"rows": 2})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault(
            "help_text",
            _("Separate several addresses with a semicolon, a comma or a new line."),
        )
        super().__init__(*args, **kwargs)

    def clean(self, value: str) -> list[ValidAddress]:
        text = super().clean(value)
        errors: list[str] = []
        valid: list[ValidAddress] = []
        for item in split_addresses(text):
            try:
                valid.append(validate_address(item))
            except AddressError as exc:
                errors.append(exc.message)
        if errors:
            raise forms.ValidationError(errors)
        return valid


class TypoConfirmMixin:
    """Turn a likely domain typo into an error unless the person confirms the address."""

    def check_suggestions(self, addresses: list[ValidAddress]) -> None:
        if self.cleaned_data.get("keep_as_typed"):
            return
        suggestions = [a for a in addresses if a.suggestion]
        if suggestions:
            self.fields["keep_as_typed"].widget = forms.CheckboxInput()
            for valid in suggestions:
                self.add_error(
                    None,
                    _(
                        "Did you mean %(suggestion)s instead of %(address)s? Correct it, or tick "
                        "“Keep as typed”."
                    )
                    % {"suggestion": valid.suggestion, "address": valid.address},
                )


class ContactForm(TypoConfirmMixin, forms.Form):
    name = forms.CharField(label=_("Name"), max_length=200)
    addresses = AddressListField(label=_("Email addresses"), required=False)
    keep_as_typed = forms.BooleanField(
        label=_("Keep as typed"), required=False, widget=forms.HiddenInput
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        self.check_suggestions(cleaned.get("addresses") or [])
        return cleaned


class AddAddressesForm(TypoConfirmMixin, forms.Form):
    addresses = AddressListField(label=_("Add email addresses"))
    keep_as_typed = forms.BooleanField(
        label=_("Keep as typed"), required=False, widget=forms.HiddenInput
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        self.check_suggestions(cleaned.get("addresses") or [])
        return cleaned


class AddressForm(TypoConfirmMixin, forms.ModelForm):
    address = forms.CharField(label=_("Email address"), max_length=320)
    keep_as_typed = forms.BooleanField(
        label=_("Keep as typed"), required=False, widget=forms.HiddenInput
    )

    class Meta:
        model = ContactAddress
        fields = ["address", "is_primary", "receives_invoices"]

    def clean_address(self) -> ValidAddress:
        try:
            return validate_address(self.cleaned_data["address"])
        except AddressError as exc:
            raise forms.ValidationError(exc.message, code=exc.code) from exc

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if isinstance(cleaned.get("address"), ValidAddress):
            self.check_suggestions([cleaned["address"]])
        return cleaned

    def _post_clean(self) -> None:
        # The model instance is updated by the service, not by the form.
        pass


class DocumentUploadForm(forms.Form):
    file = forms.FileField(label=_("File"))

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        limit = settings.DOCUMENT_MAX_UPLOAD_BYTES
        if upload.size > limit:
            raise forms.ValidationError(
                _("This file is %(size)s; the largest file you can upload is %(limit)s.")
                % {"size": filesizeformat(upload.size), "limit": filesizeformat(limit)}
            )
        return upload

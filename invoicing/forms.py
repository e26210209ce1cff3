from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from django import forms
from django.core.signals import setting_changed
from django.db.models import QuerySet
from django.dispatch import receiver
from django.http import QueryDict
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from invoicing.invoices import LineData
from invoicing.models import FirmBillingSettings, Invoice
from portal.addresses import normalize_address
from portal.models import Client


class InvoiceForm(forms.Form):
    client = forms.ModelChoiceField(label=_("Client"), queryset=Client.objects.none())
    currency = forms.CharField(label=_("Currency"), max_length=3, min_length=3, initial="EUR")
    issue_date = forms.DateField(
        label=_("Issue date"), widget=forms.DateInput(attrs={"type": "date"})
    )
    due_date = forms.DateField(label=_("Due date"), widget=forms.DateInput(attrs={"type": "date"}))
    notes = forms.CharField(
        label=_("Notes"), required=False, widget=forms.Textarea(attrs={"rows": 3})
    )

    def __init__(self, *args: object, clients: QuerySet[Client], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["client"].queryset = clients  # type: ignore[attr-defined]

    def clean_currency(self) -> str:
        currency = self.cleaned_data["currency"].strip().upper()
        if not currency.isalpha():
            raise forms.ValidationError(_("Use a three-letter currency code such as EUR."))
        return currency

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        issue, due = data.get("issue_date"), data.get("due_date")
        if issue and due and due < issue:
            self.add_error("due_date", _("The due date cannot be before the issue date."))
        return data


class LineForm(forms.Form):
    description = forms.CharField(label=_("Description"), max_length=500)
    quantity = forms.DecimalField(
        label=_("Quantity"), max_digits=12, decimal_places=2, min_value=Decimal("0.01")
    )
    unit_price = forms.DecimalField(label=_("Unit price"), max_digits=12, decimal_places=2)


class BaseLineFormSet(forms.BaseFormSet):
    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        if not self.lines():
            raise forms.ValidationError(_("An invoice needs at least one line."))

    def lines(self) -> list[LineData]:
        return [
            LineData(
                description=form.cleaned_data["description"],
                quantity=form.cleaned_data["quantity"],
                unit_price=form.cleaned_data["unit_price"],
            )
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]


LineFormSet = forms.formset_factory(
    LineForm, formset=BaseLineFormSet, extra=3, can_delete=True, max_num=200, validate_max=True
)


def line_initial(invoice: Invoice) -> list[dict[str, object]]:
    return [
        {"description": line.description, "quantity": line.quantity, "unit_price": line.unit_price}
        for line in invoice.lines.all()
    ]


class InvoiceFilterForm(forms.Form):
    status = forms.ChoiceField(
        label=_("Status"),
        required=False,
        choices=[("", _("All statuses")), *Invoice.Status.choices],
    )
    # Chosen through the search box beside it (a firm can have thousands of clients).
    client = forms.ModelChoiceField(
        label=_("Client"),
        required=False,
        queryset=Client.objects.none(),
        widget=forms.HiddenInput,
    )
    issued_from = forms.DateField(
        label=_("Issued from"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    issued_to = forms.DateField(
        label=_("Issued until"), required=False, widget=forms.DateInput(attrs={"type": "date"})
    )
    overdue = forms.BooleanField(label=_("Overdue only"), required=False)

    def __init__(self, *args: object, clients: QuerySet[Client], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.fields["client"].queryset = clients  # type: ignore[attr-defined]

    def clean(self) -> dict[str, object]:
        data = super().clean() or {}
        start, end = data.get("issued_from"), data.get("issued_to")
        if start and end and end < start:
            self.add_error("issued_to", _("The end date cannot be before the start date."))
        return data


# The filter fields the invoice list renders from what was submitted (the client is chosen
# through a search box and shown apart).
_FILTER_FIELDS = ("status", "issued_from", "issued_to", "overdue")


@dataclass(frozen=True, slots=True)
class InvoiceFilters:
    """The invoice list's filter fields as submitted: invoicing/_filter_status.html and
    _filter_dates.html render the form they make, once per content (portal.rows). Django's
    widgets render each field, each option of a select, through templates of their own: a
    millisecond, a ninth of the page, on every view of the list for the same few forms."""

    data: tuple[tuple[str, str], ...] | None  # the submitted fields; None: nothing was

    @classmethod
    def of(cls, query: QueryDict) -> InvoiceFilters:
        if not query:
            return cls(None)
        return cls(tuple((name, query[name]) for name in _FILTER_FIELDS if name in query))

    @property
    def form(self) -> InvoiceFilterForm:
        data = None if self.data is None else dict(self.data)
        return InvoiceFilterForm(data, clients=Client.objects.none())


class PaymentForm(forms.Form):
    amount = forms.DecimalField(
        label=_("Amount received"), max_digits=12, decimal_places=2, min_value=Decimal("0.01")
    )
    reference = forms.CharField(
        label=_("Reference"),
        required=False,
        max_length=255,
        help_text=_("Bank transaction or receipt number, if any."),
    )
    # One per form shown: the same form submitted twice (a double click, a reload that
    # posts again) records one payment.
    submission = forms.CharField(
        required=False,
        max_length=64,
        widget=forms.HiddenInput,
        initial=lambda: secrets.token_urlsafe(24),
    )


# The submission key's stand-in while the empty form is rendered once per language (see
# portal.rows' CSRF slot: drawn afresh by each process, so nothing typed can spell it).
_SUBMISSION_SLOT = secrets.token_hex(20)


def empty_payment_form_html() -> SafeString:
    """An empty `PaymentForm` as ``as_p`` renders it, with a submission key of its own.

    The invoice page shows one on every view, and Django's form templates took 0.5-1 ms of
    a 12 ms page to render the same three fields again. Only the key differs from one view
    to the next: a key shared by two views would merge two real payments of one amount."""
    html = _empty_payment_form_html(get_language())
    return mark_safe(html.replace(_SUBMISSION_SLOT, secrets.token_urlsafe(24)))  # noqa: S308


@lru_cache(maxsize=16)
def _empty_payment_form_html(language: str | None) -> str:
    return str(PaymentForm(initial={"submission": _SUBMISSION_SLOT}).as_p())


@receiver(setting_changed)
def _settings_changed(**kwargs: object) -> None:
    _empty_payment_form_html.cache_clear()  # form templates or formats may read differently


class SuppressionRemovalForm(forms.Form):
    """Typing the blocked address again is the confirmation: a click alone is too easy."""

    address = forms.CharField(
        label=_("Type the blocked address again"),
        max_length=320,
        help_text=_("Only after the client confirmed that this address works."),
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
    note = forms.CharField(
        label=_("How did you confirm it?"),
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def __init__(self, *args: object, blocked: str, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.blocked = blocked

    def clean_address(self) -> str:
        typed = self.cleaned_data["address"]
        # Compared as addresses are matched everywhere else: case-insensitive, IDNA domain.
        if normalize_address(typed) != self.blocked:
            raise forms.ValidationError(
                _("This is not the blocked address. Type %(address)s exactly as shown above."),
                params={"address": self.blocked},
            )
        return typed


class BillingSettingsForm(forms.ModelForm):
    class Meta:
        model = FirmBillingSettings
        fields = [
            "legal_name",
            "address",
            "tax_id",
            "bank_details",
            "payment_instructions",
            "currency",
        ]
        widgets = {
            "payment_instructions": forms.Textarea(attrs={"rows": 4}),
            "address": forms.Textarea(attrs={"rows": 3}),
            "bank_details": forms.Textarea(attrs={"rows": 3}),
        }

    def clean_currency(self) -> str:
        currency = self.cleaned_data["currency"].strip().upper()
        if len(currency) != 3 or not currency.isalpha():
            raise forms.ValidationError(_("Use a three-letter currency code such as EUR."))
        return currency

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_POST

from accounts.models import Role
from accounts.selectors import member_choices
from invoicing.delivery.models import Delivery
from invoicing.invoices import InvoiceError
from invoicing.sending import delivery_resend
from mailsync import services as mailsync_services
from mailsync.account_check import check_account
from mailsync.adapters.base import Credentials, ServerSettings
from mailsync.models import MailboxConnection
from mailsync.netguard import guard_from_settings
from portal.addresses import AddressError, validate_address
from portal.emails import send_templated
from portal.models import ContactAddress
from portal.ratelimits import RateLimited, hit, limited_response
from portal.redirects import next_path, redirect_next
from portal.services import contact_address_update
from portal.tenancy import get_client_for_member, member_required, roles_required
from troubleshooting.cards import problem_cards, problem_groups
from troubleshooting.catalogue import GUIDES, Kind, guide_for
from troubleshooting.selectors import (
    code_page,
    dashboard_groups,
    latest_domain_run,
    problems_for_client,
)
from troubleshooting.services import problem_mark_handled
from troubleshooting.status import platform_status
from troubleshooting.tasks import check_firm_domain


def _back(request: HttpRequest) -> HttpResponse:
    """Return to the page the form was on, if it is ours; else to the dashboard."""
    return redirect_next(request, "troubleshooting:dashboard")


@member_required
def client_problems(request: HttpRequest, client_pk: int) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    run = latest_domain_run(request.firm)
    problems = problems_for_client(client, domain_run=run)
    context = {
        "client": client,
        "tab": "problems",
        "problems": problems,
        "cards": problem_cards(problems, request=request),
        "domain_failures": run.failures if run else [],
    }
    return render(request, "troubleshooting/client_problems.html", context)


@member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Counts per problem code and the clients they touch first, with the cards of the
    codes that have few problems; one code's cards page by page under ``?code=``. Costs
    what it shows, not the firm's history."""
    kind = request.GET.get("kind") or None
    if kind not in (None, *Kind):
        kind = None
    member = request.GET.get("member", "")
    member_pk = int(member) if member.isdigit() else None
    guide = guide_for(request.GET.get("code", ""))
    page = run = None
    if guide is not None and guide.kind == Kind.DELIVERY:
        # One code's cards: the domain's checks and the mailbox filter say nothing about
        # them, so that page leaves both out (and does not read them).
        group, page = code_page(request.firm, guide.code, request.GET.get("page"))
        groups = [group] if group.count else []
    else:
        run = latest_domain_run(request.firm)
        groups = dashboard_groups(request.firm, kind=kind, member=member_pk, domain_run=run)
    problem_groups(groups, request=request, on_code_page=page is not None)
    context = {
        "members": member_choices(request.firm) if page is None else [],
        "member": member_pk,
        "groups": groups,
        "code": guide.code if page else None,
        "page": page,
        "kind": kind,
        "kinds": list(Kind),
        "total": sum(g.count for g in groups),
        "run": run,
    }
    return render(request, "troubleshooting/dashboard.html", context)


@member_required
def guides(request: HttpRequest) -> HttpResponse:
    return render(request, "troubleshooting/guides.html", {"guides": GUIDES})


@member_required
@require_POST
def mark_handled(request: HttpRequest) -> HttpResponse:
    code = request.POST.get("code", "")
    subject = request.POST.get("subject", "")
    if guide_for(code) is None or not subject:
        return HttpResponse(status=400)
    # The subject names an object of the firm: only ever stored against the member's firm.
    problem_mark_handled(
        firm=request.firm,
        subject=subject,
        code=code,
        note=request.POST.get("note", "").strip()[:2000],
        author=request.user,
    )
    messages.success(request, _("Marked as handled."))
    return _back(request)


@roles_required(Role.OWNER, Role.ADMIN)
@require_POST
def recheck_domain(request: HttpRequest) -> HttpResponse:
    if not request.firm.sending_domain:
        messages.error(request, _("Set your firm's sending domain in Firm Settings first."))
        return redirect("troubleshooting:dashboard")
    firm_id = request.firm.pk
    # DNS can be slow: the check runs in a worker and the page never waits for it.
    transaction.on_commit(lambda: check_firm_domain.delay(firm_id))
    messages.success(
        request,
        _("Checking %(domain)s now. Reload this page in a minute.")
        % {"domain": request.firm.sending_domain},
    )
    return redirect("troubleshooting:dashboard")


@member_required
def allowlist(request: HttpRequest) -> HttpResponse:
    context = {
        "hosts": settings.PORTAL_SENDING_HOSTS,
        "ips": settings.PORTAL_SENDING_IPS,
        "sender": settings.DEFAULT_FROM_EMAIL,
    }
    return render(request, "troubleshooting/allowlist.html", context)


def status_page(request: HttpRequest) -> HttpResponse:
    status = platform_status()
    if request.GET.get("format") == "json" or "application/json" in request.headers.get(
        "Accept", ""
    ):
        return JsonResponse(status.as_dict(), status=200 if status.ok else 503)
    return render(
        request, "troubleshooting/status.html", {"status": status}, status=200 if status.ok else 503
    )


@member_required
@require_POST
def fix_address_resend(request: HttpRequest, delivery_pk: int) -> HttpResponse:
    """One form on the problem: correct the contact's address, then resend to it."""
    delivery = get_object_or_404(
        Delivery.objects.select_related("client", "invoice"), pk=delivery_pk, firm=request.firm
    )
    target = reverse("troubleshooting:client_problems", args=[delivery.client_id])
    address = ContactAddress.objects.filter(
        firm=request.firm, contact__client=delivery.client, normalized=delivery.normalized
    ).first()
    if address is None:
        messages.error(
            request,
            _(
                "This address is no longer on the client. Open the invoice "
                "to send it to the client's current addresses."
            ),
        )
        return redirect(target)
    try:
        valid = validate_address(request.POST.get("address", ""))
    except AddressError as exc:
        messages.error(request, exc.message)
        return redirect(target)
    contact_address_update(
        address=address,
        new=valid,
        is_primary=address.is_primary,
        receives_invoices=address.receives_invoices,
    )
    try:
        sent = delivery_resend(delivery=delivery)
    except InvoiceError as exc:
        messages.error(request, str(exc))
        return redirect(target)
    messages.success(
        request,
        _("Address corrected to %(address)s; invoice #%(number)s is on its way again.")
        % {"address": ", ".join(d.address for d in sent), "number": delivery.invoice.number},
    )
    return redirect(target)


@member_required
@require_POST
def send_test(request: HttpRequest) -> HttpResponse:
    """Send the member an email the way the portal sends for the firm, to see how it lands."""
    try:
        hit("send_test", user_id=request.user.pk, firm_id=request.firm.pk)
    except RateLimited as limited:
        back = next_path(request) or reverse("troubleshooting:dashboard")
        return limited_response(request, limited, back)
    send_templated(
        "test-message",
        to=[request.user.email],
        firm=request.firm,
        context={"firm": request.firm, "user": request.user},
    )
    messages.success(
        request,
        _("A test email is on its way to %(address)s. Check the inbox and the spam folder.")
        % {"address": request.user.email},
    )
    return _back(request)


@member_required
@require_POST
def fix_server_settings(request: HttpRequest, connection_pk: int) -> HttpResponse:
    """sync.server_settings fixed in place: new host, port and security, with the password
    typed again (it is never rendered back). Saved only once the account check passes."""
    connection = get_object_or_404(
        MailboxConnection.objects.defer("secret"),
        pk=connection_pk,
        firm=request.firm,
        intent=MailboxConnection.Intent.ACTIVE,
        kind__in=[MailboxConnection.Kind.IMAP, MailboxConnection.Kind.POP3],
    )
    # Only the member whose mailbox it is (an owner for the shared one) may change it.
    if connection.owner_id != request.user.pk and not (
        connection.owner_id is None and request.member_role == Role.OWNER
    ):
        raise Http404
    host = request.POST.get("host", "").strip()
    port = request.POST.get("port", "")
    security = request.POST.get("security", "")
    password = request.POST.get("password", "")
    if (
        not host
        or not port.isdigit()
        or not 0 < int(port) < 65536
        or security not in MailboxConnection.Security.values
        or not password
    ):
        messages.error(
            request,
            _("Enter the server name, a port from 1 to 65535, the security and the password."),
        )
        return _back(request)
    try:
        # Typing a password and a server to try is the same as Test account: limited alike.
        hit("account_test", user_id=request.user.pk, firm_id=request.firm.pk)
    except RateLimited as limited:
        return limited_response(
            request, limited, next_path(request) or reverse("troubleshooting:dashboard")
        )
    result = check_account(
        ServerSettings(
            host,
            int(port),
            security,
            connection.username,
            timeout=20,
            guard=guard_from_settings(),
        ),
        Credentials(password=password),
        protocol=connection.kind,
    )
    if not result.ok:
        messages.error(
            request,
            _("The new settings did not work either (failed at: %(step)s): %(reply)s")
            % {"step": result.failed_step, "reply": result.error.detail},
        )
        return _back(request)
    mailsync_services.connection_server_settings_update(
        connection=connection, host=host, port=int(port), security=security, password=password
    )
    messages.success(request, _("The new server settings work and are saved. Sync resumes now."))
    return _back(request)

"""Email Sync settings (a member's own mailboxes, the firm's shared one) and the client's
Email tab. Every view reaches connections only through `_get_connection_for_member`."""

from __future__ import annotations

from django.contrib import messages
from django.core.paginator import Paginator
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role
from mailsync import email_tab, selectors, services, tasks
from mailsync.account_check import AccountCheck, check_account
from mailsync.adapters import Credentials, ServerSettings
from mailsync.check_words import plain_failure
from mailsync.crypto import CredentialsUnavailable
from mailsync.errors import SMTP_AUTH_DISABLED, SyncError
from mailsync.forms.mailbox import ConnectionForm, FolderForm, IgnoreAddressForm, LinkAddressForm
from mailsync.models import IgnoredAddress, MailboxConnection, MailboxFolder
from mailsync.netguard import guard_from_settings
from mailsync.presets import preset_for_host
from mailsync.server_waits import MailServerBusy, mail_server_wait
from mailsync.written import written_emails_unsent
from portal.addresses import normalize_address
from portal.ratelimits import RateLimited, hit
from portal.redirects import next_path, redirect_next
from portal.tenancy import get_client_for_member, member_required

# Steps of the account check, in words a member understands (lazy: the member's language).
STEP_LABELS = {
    "connect": gettext_lazy("Connect to the server"),
    "tls": gettext_lazy("Secure the connection (TLS)"),
    "login": gettext_lazy("Log in"),
    "list_folders": gettext_lazy("List folders"),
    "stat": gettext_lazy("Read the mailbox"),
    "smtp_connect": gettext_lazy("Connect to the sending server (SMTP)"),
    "smtp_tls": gettext_lazy("Secure the sending connection (TLS)"),
    "smtp_login": gettext_lazy("Log in to send (SMTP)"),
}
SMTP_STEPS = frozenset({"smtp_connect", "smtp_tls", "smtp_login"})


def _get_connection_for_member(request: HttpRequest, connection_pk: int) -> MailboxConnection:
    """The member's own mailbox, or the firm's shared one for an owner; otherwise 404."""
    connection = get_object_or_404(
        MailboxConnection.objects.defer("secret").select_related("owner"),
        pk=connection_pk,
        firm=request.firm,
        intent__in=[MailboxConnection.Intent.ACTIVE, MailboxConnection.Intent.STOPPED],
    )
    if connection.owner_id is None:
        if request.member_role != Role.OWNER:
            raise Http404
    elif connection.owner_id != request.user.pk:
        raise Http404
    return connection


def _back(connection_or_shared: MailboxConnection | bool) -> HttpResponse:
    shared = (
        connection_or_shared
        if isinstance(connection_or_shared, bool)
        else connection_or_shared.is_shared
    )
    return redirect("accounts:firm_profile" if shared else "accounts:my_account")


def _check(data: dict, *, smtp: bool) -> AccountCheck:
    settings_ = ServerSettings(
        data["host"],
        data["port"],
        data["security"],
        data["username"],
        timeout=20,
        guard=guard_from_settings(),
    )
    smtp_settings = None
    if smtp:
        smtp_settings = ServerSettings(
            data["smtp_host"],
            data["smtp_port"],
            data["smtp_security"],
            data["username"],
            timeout=20,
            guard=guard_from_settings(),
        )
    return check_account(
        settings_, Credentials(password=data["password"]), smtp_settings, protocol=data["kind"]
    )


def _send_problem(result: AccountCheck) -> SyncError | None:
    """The SMTP failure that may be saved with the mailbox: reading works, and only the
    provider's policy refuses sending (send.smtp_auth_disabled)."""
    error = result.error
    if error is not None and error.step in SMTP_STEPS and error.code == SMTP_AUTH_DISABLED:
        return error
    return None


def _save_checked(
    request: HttpRequest,
    form: ConnectionForm,
    connection: MailboxConnection | None,
    *,
    shared: bool,
    smtp_checked: bool,
    send_problem: SyncError | None,
) -> HttpResponse | None:
    """Save the mailbox whose check passed (or failed only at sending, by the provider's
    policy): the page to go to next, or None with the reason on the form."""
    data = form.cleaned_data
    try:
        if connection is not None:
            services.connection_reauthenticate(
                connection=connection,
                password=data["password"],
                smtp_checked=smtp_checked,
                send_problem=send_problem,
            )
            messages.success(request, _("Signed in again. Sync resumes where it stopped."))
        else:
            connection = services.connection_create(
                firm=request.firm,
                owner=None if shared else request.user,
                kind=data["kind"],
                email_address=data["email_address"],
                host=data["host"],
                port=data["port"],
                security=data["security"],
                username=data["username"],
                password=data["password"],
                send_problem=send_problem,
            )
            messages.success(request, _("Mailbox connected. The first sync starts now."))
        if send_problem is not None:
            messages.warning(
                request,
                _(
                    "Mail will be synced, but the provider refuses sending from this "
                    "mailbox (authenticated SMTP is switched off). Ask your IT "
                    "administrator to enable it, then Re-authenticate."
                ),
            )
    except CredentialsUnavailable as exc:
        form.add_error(None, str(exc))
    else:
        pk = connection.pk
        transaction.on_commit(lambda: tasks.sync_mailbox.delay(pk))
        return _back(connection)
    return None


@member_required
@require_http_methods(["GET", "POST"])
def credentials(request: HttpRequest) -> HttpResponse:
    """Sync Your Email (new mailbox) and Re-authenticate (``?connection=<pk>``).

    Saving always runs the account check first: a failed test cannot be saved.
    """
    connection = None
    if request.GET.get("connection", "").isdigit():
        connection = _get_connection_for_member(request, int(request.GET["connection"]))
    shared = connection.is_shared if connection else request.GET.get("shared") == "1"
    if shared and request.member_role != Role.OWNER:
        return render(request, "portal/forbidden.html", status=403)
    initial = {}
    if connection is not None:
        initial = {
            "kind": connection.kind,
            "email_address": connection.email_address,
            "host": connection.host,
            "port": connection.port,
            "security": connection.security,
            "username": connection.username,
        }
        # SMTP settings are not stored (see ConnectionForm): offer the provider's, if known.
        preset = preset_for_host(connection.host)
        if preset is not None and preset.smtp_host:
            initial.update(
                smtp_host=preset.smtp_host,
                smtp_port=preset.smtp_port,
                smtp_security=preset.smtp_security,
            )
    form = ConnectionForm(request.POST or None, initial=initial, reauth=connection is not None)
    result: AccountCheck | None = None
    send_problem: SyncError | None = None
    status = 200
    limited: RateLimited | None = None
    if request.method == "POST" and form.is_valid():
        try:
            hit("account_test", user_id=request.user.pk, firm_id=request.firm.pk)
        except RateLimited as exc:
            limited = exc
            form.add_error(None, exc.message)
            status = 429
    if request.method == "POST" and limited is None and form.is_valid():
        data = form.cleaned_data
        smtp_checked = form.checks_smtp
        try:
            with mail_server_wait():
                result = _check(data, smtp=smtp_checked)
        except MailServerBusy as busy:
            form.add_error(None, busy.message)
            status = 503
        else:
            send_problem = _send_problem(result)
            if connection is not None and result.ok and smtp_checked:
                # SMTP login worked for this mailbox: sending is allowed again, whether or not
                # the member saves the new password.
                services.connection_send_problem_clear(connection=connection)
            if (result.ok or send_problem is not None) and request.POST.get("action") == "save":
                saved = _save_checked(
                    request,
                    form,
                    connection,
                    shared=shared,
                    smtp_checked=smtp_checked,
                    send_problem=send_problem,
                )
                if saved is not None:
                    return saved
    plain = None
    if result is not None and result.error is not None:
        plain = plain_failure(result.error, host=str(form.cleaned_data.get("host") or ""))
    elif result is not None:
        # A test that passed keeps the password typed, so Save needs no retyping.
        form.fields["password"].widget.render_value = True
    steps = [
        {
            "name": step.name,
            "label": STEP_LABELS.get(step.name, step.name),
            "ok": step.ok,
            "detail": step.detail,
        }
        for step in (result.steps if result else [])
    ]
    return render(
        request,
        "mailsync/credentials.html",
        {
            "form": form,
            "connection": connection,
            "shared": shared,
            "result": result,
            "steps": steps,
            "failed_code": result.error.code if result and result.error else "",
            "plain": plain,
            "failed_step": result.failed_step if result else None,
            # Reading works; only sending failed. Saving is allowed for send_problem, and
            # for any other SMTP failure once the member ticks "Save without sending".
            "smtp_failed": bool(result and result.failed_step in SMTP_STEPS),
            "send_problem": send_problem,
            "smtp_fields": ("smtp_host", "smtp_port", "smtp_security", "skip_smtp"),
        },
        status=status,
    )


@member_required
@require_http_methods(["GET", "POST"])
def stop(request: HttpRequest, connection_pk: int) -> HttpResponse:
    connection = _get_connection_for_member(request, connection_pk)
    if request.method == "POST":
        services.connection_stop(connection=connection)
        messages.success(request, _("Email sync stopped. Mail already synced stays."))
        return _back(connection)
    return render(request, "mailsync/confirm_stop.html", {"connection": connection})


@member_required
@require_http_methods(["GET", "POST"])
def remove(request: HttpRequest, connection_pk: int) -> HttpResponse:
    connection = _get_connection_for_member(request, connection_pk)
    if request.method == "POST":
        services.connection_remove(connection=connection)
        messages.success(request, _("Mailbox removed. Mail already synced stays."))
        return _back(connection)
    return render(request, "mailsync/confirm_remove.html", {"connection": connection})


@member_required
@require_POST
def sync_now(request: HttpRequest, connection_pk: int) -> HttpResponse:
    connection = _get_connection_for_member(request, connection_pk)
    services.connection_sync_soon(connection=connection)
    pk = connection.pk
    transaction.on_commit(lambda: tasks.sync_mailbox.delay(pk))
    messages.success(request, _("Sync requested."))
    return _back(connection)


@member_required
@require_POST
def folder_recheck(request: HttpRequest, connection_pk: int, folder_pk: int) -> HttpResponse:
    """Re-check this folder (sync.gap): queue a sync that backfills what is missing. The
    mailbox's member may ask, and so may the firm's owners and admins, who see the problem
    on the dashboard: it only reads the mailbox again."""
    folder = get_object_or_404(
        MailboxFolder.objects.select_related("connection"),
        pk=folder_pk,
        connection_id=connection_pk,
        connection__firm=request.firm,
        connection__intent=MailboxConnection.Intent.ACTIVE,
    )
    connection = folder.connection
    own = connection.owner_id == request.user.pk
    if not own and request.member_role not in (Role.OWNER, Role.ADMIN):
        raise Http404
    services.folder_recheck_request(folder=folder)
    pk = connection.pk
    transaction.on_commit(lambda: tasks.sync_mailbox.delay(pk, force=True))
    messages.success(
        request,
        _(
            "Re-checking %(folder)s: missing emails are fetched at the next sync, in a "
            "minute or two."
        )
        % {"folder": folder.name},
    )
    back = next_path(request)
    return redirect(back) if back else _back(connection)


@member_required
@require_http_methods(["GET", "POST"])
def folders(request: HttpRequest, connection_pk: int) -> HttpResponse:
    connection = _get_connection_for_member(request, connection_pk)
    rows = list(connection.folders.order_by("name"))
    form = FolderForm(
        request.POST or None,
        names=[row.name for row in rows],
        initial={"folders": [row.name for row in rows if row.enabled]},
    )
    if request.method == "POST" and form.is_valid():
        services.folders_select(
            connection=connection, enabled_names=set(form.cleaned_data["folders"])
        )
        messages.success(request, _("Folders saved."))
        return _back(connection)
    return render(request, "mailsync/folders.html", {"connection": connection, "form": form})


@member_required
def status(request: HttpRequest, connection_pk: int) -> HttpResponse:
    """The connection's status block, polled by htmx while a sync is in progress."""
    connection = _get_connection_for_member(request, connection_pk)
    return render(request, "mailsync/_status.html", {"connection": connection})


@member_required
def client_email(request: HttpRequest, client_pk: int) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    try:
        number = int(request.GET.get("page", "1"))
    except ValueError:
        number = 1
    page = selectors.client_threads_page(client=client, number=number)
    if not page.threads and page.number > 1:
        # Past the oldest mail (a stale link, or mail unlinked since): the newest page.
        return redirect("mailsync:client_email", client.pk)
    email_tab.threads_html(page.threads)
    context = {
        "client": client,
        "tab": "email",
        "page": page,
        "threads": page.threads,
        "failing": email_tab.failing_html(client),
        "unsent": written_emails_unsent(member=request.user, client=client),
    }
    return render(request, "mailsync/client_email.html", context)


# --- unlinked mail -----------------------------------------------------------------------

UNLINKED_PER_PAGE = 25


def _address_param(request: HttpRequest) -> str:
    """The address the link pages are about (``?address=``), as listed: normalised."""
    address = request.GET.get("address", "").strip()[:320]
    return normalize_address(address) if "@" in address else ""


def _back_to_unlinked(request: HttpRequest) -> HttpResponse:
    """Back to the page of the list the member came from (a local URL only)."""
    return redirect_next(request, "mailsync:unlinked")


@member_required
def unlinked(request: HttpRequest) -> HttpResponse:
    """Addresses in synced mail that reached no client, newest first, to link or ignore."""
    addresses = selectors.unlinked_addresses_cached(firm=request.firm, viewer=request.user)
    page = Paginator(addresses, UNLINKED_PER_PAGE).get_page(request.GET.get("page"))
    selectors.unlinked_addresses_describe(page.object_list)
    rows = selectors.unlinked_rows(page.object_list, request=request)
    return render(request, "mailsync/unlinked.html", {"page": page, "rows": rows})


@member_required
def unlinked_choose_client(request: HttpRequest) -> HttpResponse:
    """Link to a client, step 1: find the client (htmx swaps in the results as you type)."""
    address = _address_param(request)
    if not address:
        return redirect("mailsync:unlinked")
    query = request.GET.get("q", "").strip()
    context = {
        "address": address,
        "query": query,
        "clients": selectors.clients_for_linking(firm=request.firm, query=query, address=address),
    }
    if request.headers.get("HX-Request"):
        return render(request, "mailsync/_unlinked_clients.html", context)
    return render(request, "mailsync/unlinked_choose_client.html", context)


@member_required
@require_http_methods(["GET", "POST"])
def unlinked_link(request: HttpRequest, client_pk: int) -> HttpResponse:
    """Link to a client, step 2: pick the contact (or a new one) and link the mail."""
    client = get_client_for_member(request, client_pk)
    address = _address_param(request)
    initial = {"address": address}
    if request.method == "GET":
        if not address:
            return redirect("mailsync:unlinked")
        initial["new_contact_name"] = selectors.unlinked_address_name(
            firm=request.firm, address=address
        )
    form = LinkAddressForm(request.POST or None, client=client, initial=initial)
    address_problem = "" if form.is_bound else LinkAddressForm.address_problem(address)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        links = services.unlinked_address_link(
            firm=request.firm,
            address=data["address"],
            client=client,
            contact=data["contact"],
            new_contact_name=data["new_contact_name"],
        )
        messages.success(
            request,
            ngettext(
                "%(address)s now belongs to %(client)s: %(count)d email is on its Email tab.",
                "%(address)s now belongs to %(client)s: %(count)d emails are on its Email tab.",
                links,
            )
            % {"address": data["address"].address, "client": client.display_name, "count": links},
        )
        return redirect("mailsync:unlinked")
    return render(
        request,
        "mailsync/unlinked_link.html",
        {
            "client": client,
            "form": form,
            "address": form["address"].value(),
            "address_problem": address_problem,
        },
    )


@member_required
@require_POST
def unlinked_ignore(request: HttpRequest) -> HttpResponse:
    form = IgnoreAddressForm(request.POST)
    if form.is_valid():
        address = form.cleaned_data["address"]
        services.address_ignore(firm=request.firm, normalized=address, user=request.user)
        messages.success(
            request,
            _("%(address)s is ignored: its mail stays unlinked and is no longer reported.")
            % {"address": address},
        )
    else:
        messages.error(request, _("That address could not be ignored."))
    return _back_to_unlinked(request)


@member_required
def unlinked_ignored(request: HttpRequest) -> HttpResponse:
    ignored = IgnoredAddress.objects.filter(firm=request.firm).select_related("ignored_by")
    page = Paginator(ignored, UNLINKED_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "mailsync/unlinked_ignored.html", {"page": page})


@member_required
@require_POST
def unlinked_unignore(request: HttpRequest, ignored_pk: int) -> HttpResponse:
    ignored = get_object_or_404(IgnoredAddress, pk=ignored_pk, firm=request.firm)
    services.address_unignore(ignored=ignored)
    messages.success(
        request,
        _("%(address)s is listed with the unlinked mail again.") % {"address": ignored.normalized},
    )
    return redirect("mailsync:unlinked_ignored")

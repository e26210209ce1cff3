"""Sending addresses (My Account → Email Sync, and the firm's shared mailbox for owners) and
writing to a client from the portal (the client's Email tab: Write email, Reply).

Every connection, address and message is reached through the request's firm (and, for a
member's own mailboxes, the member): another firm's object is a 404.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods, require_POST

from accounts.models import Role
from mailsync import outgoing, sending
from mailsync.errors import SEND_CODES, SyncError
from mailsync.forms.outgoing import (
    INVALID_RECIPIENT_CHARS,
    ClientSenderForm,
    ComposeForm,
    DisplayNameForm,
    SenderAddressForm,
    SendingServerForm,
)
from mailsync.models import MailboxConnection, Message, WrittenEmail
from mailsync.server_waits import MailServerBusy, mail_server_wait
from mailsync.written import written_email_dismiss, written_email_queue, written_email_result
from portal.addresses import normalize_address
from portal.headers import HeaderTextError
from portal.models import Client, ContactAddress
from portal.ratelimits import RateLimited, hit
from portal.tenancy import get_client_for_member, member_required

# Steps of sending, in words a member understands (the account check's, plus sending's own).
STEP_LABELS = {
    "smtp_connect": gettext_lazy("Connect to the sending server (SMTP)"),
    "smtp_tls": gettext_lazy("Secure the sending connection (TLS)"),
    "smtp_login": gettext_lazy("Log in to send (SMTP)"),
    "smtp_mail_from": gettext_lazy("Give the sender address"),
    "smtp_data": gettext_lazy("Send the message"),
    "token_refresh": gettext_lazy("Renew the mailbox's access"),
}


def _failure(error: SyncError) -> dict[str, str]:
    return {
        "code": error.code,
        "detail": error.detail,
        "step": str(STEP_LABELS.get(error.step, error.step)),
    }


# --- sending addresses --------------------------------------------------------------------


@member_required
@require_http_methods(["GET", "POST"])
def sending_addresses(request: HttpRequest) -> HttpResponse:
    """The member's own mailboxes: a section per mailbox with its sending addresses."""
    return _addresses_page(request, shared=False)


@member_required
@require_http_methods(["GET", "POST"])
def shared_sending_addresses(request: HttpRequest) -> HttpResponse:
    """The firm's shared mailbox's sending addresses; owners only."""
    if request.member_role != Role.OWNER:
        return render(request, "portal/forbidden.html", status=403)
    return _addresses_page(request, shared=True)


def _addresses_page(request: HttpRequest, *, shared: bool) -> HttpResponse:
    connections = outgoing.connections_with_addresses(
        firm=request.firm, owner=None if shared else request.user
    )
    failed: dict | None = None
    if request.method == "POST":
        connection = _posted_connection(request, connections)
        failed = _address_action(request, connection)
        if failed is None:
            return redirect(request.path)
        failed["connection_pk"] = connection.pk
    return render(
        request,
        "mailsync/outgoing_addresses.html",
        {
            "connections": connections,
            "shared": shared,
            "failed": failed,
            "security_choices": MailboxConnection.Security.choices,
            "step_labels": STEP_LABELS,
        },
        status=failed.get("status", 200) if failed else 200,
    )


def _posted_connection(
    request: HttpRequest, connections: list[MailboxConnection]
) -> MailboxConnection:
    pk = request.POST.get("connection", "")
    for connection in connections:
        if pk.isdigit() and connection.pk == int(pk):
            return connection
    raise Http404  # not one of this page's mailboxes (another member's, another firm's)


def _posted_address(request: HttpRequest, connection: MailboxConnection):
    pk = request.POST.get("address", "")
    for address in connection.addresses:
        if pk.isdigit() and address.pk == int(pk):
            return address
    raise Http404


def _address_action(request: HttpRequest, connection: MailboxConnection) -> dict | None:
    """Carry out the posted action; None on success, else what the section must show."""
    action = request.POST.get("action", "")
    if action == "add":
        form = SenderAddressForm(request.POST)
        if not form.is_valid():
            return {"action": action, "form": form}
        try:
            with mail_server_wait():
                added = outgoing.address_add(
                    connection=connection,
                    address=form.cleaned_data["address"],
                    display_name=form.cleaned_data["display_name"],
                )
        except MailServerBusy as busy:
            return {"action": action, "form": form, "message": busy.message, "status": 503}
        except outgoing.AddressRefused as exc:
            return {
                "action": action,
                "form": form,
                "message": exc.message,
                "code": exc.code,
                "detail": exc.detail,
            }
        messages.success(
            request,
            _("The server accepts %(address)s as a sender: it is now one of your addresses.")
            % {"address": added.address},
        )
        return None
    if action == "server":
        form = SendingServerForm(request.POST)
        if not form.is_valid():
            return {"action": action, "form": form}
        try:
            # The form checks the mailbox's password: without a limit it could be guessed.
            hit("password_check", user_id=request.user.pk, firm_id=request.firm.pk)
        except RateLimited as limited:
            form.add_error(None, limited.message)
            return {"action": action, "form": form, "status": 429}
        try:
            with mail_server_wait():
                sending.server_check(connection=connection, **form.cleaned_data)
        except MailServerBusy as busy:
            form.add_error(None, busy.message)
            return {"action": action, "form": form, "status": 503}
        except sending.ServerNotAllowed as refused:
            form.add_error(None, refused.message)
            return {"action": action, "form": form}
        except SyncError as error:
            return {"action": action, "form": form, **_failure(error)}
        messages.success(request, _("Logged in to the sending server. Saved."))
        return None
    address = _posted_address(request, connection)
    if action == "default":
        outgoing.address_make_default(address=address)
        messages.success(
            request, _("%(address)s is now the default.") % {"address": address.address}
        )
    elif action == "remove" and not address.is_own:
        outgoing.address_remove(address=address)
        messages.success(request, _("%(address)s removed.") % {"address": address.address})
    elif action == "rename":
        form = DisplayNameForm(request.POST)
        if not form.is_valid():
            return {"action": action, "form": form, "address_pk": address.pk}
        outgoing.address_rename(address=address, display_name=form.cleaned_data["display_name"])
        messages.success(request, _("Name saved."))
    else:
        return {"action": action, "message": _("Unknown action.")}
    return None


# --- writing to a client ------------------------------------------------------------------


@member_required
@require_http_methods(["GET", "POST"])
def compose(request: HttpRequest, client_pk: int) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    return _compose(request, client, reply_to=None)


@member_required
@require_http_methods(["GET", "POST"])
def reply(request: HttpRequest, client_pk: int, message_pk: int) -> HttpResponse:
    client = get_client_for_member(request, client_pk)
    message = get_object_or_404(
        Message.objects.all(),
        pk=message_pk,
        firm=request.firm,
        client_links__client=client,
    )
    return _compose(request, client, reply_to=message)


def _reply_subject(subject: str) -> str:
    return subject if subject[:3].lower() == "re:" else f"Re: {subject}".strip()


def _quoted(message: Message) -> str:
    sender = message.from_name or message.from_address
    date = message.date.strftime("%Y-%m-%d %H:%M") if message.date else ""
    lines = message.text_body[:10_000].splitlines()
    intro = _("On %(date)s, %(sender)s wrote:") % {"date": date, "sender": sender}
    return "\n\n" + intro + "\n" + "\n".join(f"> {line}" for line in lines)


def _initial(
    addresses: list[ContactAddress], reply_to: Message | None, sender_pk: int | None
) -> dict:
    if reply_to is not None:
        participants = set(reply_to.participants.split())
        chosen = [a for a in addresses if a.normalized in participants]
        initial = {"subject": _reply_subject(reply_to.subject), "body": _quoted(reply_to)}
    else:
        chosen, initial = [], {}
    chosen = chosen or [a for a in addresses if a.is_primary] or addresses[:1]
    initial["recipients"] = [str(a.pk) for a in chosen]
    if sender_pk is not None:
        initial["sender"] = str(sender_pk)
    return initial


def _client_addresses(client: Client) -> list[ContactAddress]:
    return list(
        ContactAddress.objects.filter(firm=client.firm, contact__client=client)
        .select_related("contact")
        .order_by("contact__name", "-is_primary", "address")
    )


def _compose(request: HttpRequest, client: Client, *, reply_to: Message | None) -> HttpResponse:
    resolution = outgoing.outgoing_resolve(request.user, client)
    addresses = _client_addresses(client)
    resolved = resolution.address
    form = ComposeForm(
        request.POST or None,
        senders=resolution.available,
        addresses=addresses,
        initial=_initial(addresses, reply_to, resolved.pk if resolved else None),
    )
    if request.method == "POST" and resolution.available and form.is_valid():
        data = form.cleaned_data
        try:
            # What the worker will build, built now: a sender's stored name that cannot be
            # a header is the member's to fix here, not a failure to poll for.
            sending.email_build(
                sender=data["sender"],
                recipients=data["recipients"],
                subject=data["subject"],
                body=data["body"],
                reply_to=reply_to,
            )
        except HeaderTextError as exc:
            form.add_error("sender", str(exc))
        else:
            written = written_email_queue(
                member=request.user,
                client=client,
                sender=data["sender"],
                recipients=data["recipients"],
                subject=data["subject"],
                body=data["body"],
                reply_to=reply_to,
                submission_key=data["submission"],
                retry_of=data.get("retry_of"),
            )
            return redirect("mailsync:written_email", client.pk, written.pk)
    return _compose_page(request, client, form, resolution, reply_to=reply_to)


def _compose_page(
    request: HttpRequest,
    client: Client,
    form: ComposeForm,
    resolution: outgoing.Resolution,
    *,
    reply_to: Message | None,
    written: WrittenEmail | None = None,
) -> HttpResponse:
    """The compose page: the form, and why an earlier press of Send did not send."""
    result = written_email_result(written) if written is not None else None
    # The address the page talks about: the one just tried, else the resolved one.
    sender = (
        (written.sender if written is not None else None)
        or getattr(form, "cleaned_data", {}).get("sender")
        or resolution.address
    )
    failure = _failure(result.error) if result is not None and result.error is not None else None
    return render(
        request,
        "mailsync/compose.html",
        {
            "client": client,
            "tab": "email",
            "form": form,
            "reply_to": reply_to,
            "senders": resolution.available,
            "resolution": resolution,
            "sender": sender,
            "send_problem": _send_problem_of(sender),
            "result": result,
            "written": written,
            "failure": failure,
            "invalid_recipient_code": INVALID_RECIPIENT_CHARS if form.invalid_characters else "",
            "sender_form": ClientSenderForm(
                senders=resolution.available,
                initial={"address": str(resolution.chosen.pk) if resolution.chosen else ""},
            ),
        },
    )


@member_required
@require_http_methods(["GET"])
def written_email(request: HttpRequest, client_pk: int, written_pk: int) -> HttpResponse:
    """Where Send leads: "Sending..." until a worker has sent the email (the page asks again
    every second), then the client's Email tab; if it was not sent, the compose page again
    with everything that was written and why."""
    client = get_client_for_member(request, client_pk)
    written = get_object_or_404(
        WrittenEmail.objects.select_related("sender__connection", "reply_to"),
        pk=written_pk,
        firm=request.firm,
        client=client,
        member=request.user,
    )
    if request.headers.get("HX-Request"):
        response = render(
            request, "mailsync/_written_status.html", {"client": client, "written": written}
        )
        if written.done:
            response["HX-Redirect"] = request.path  # the whole page shows the outcome
        return response
    if not written.done:
        return render(
            request,
            "mailsync/written_status.html",
            {"client": client, "tab": "email", "written": written},
        )
    if written.status == WrittenEmail.Status.SENT:
        _sent_messages(request, written)
        return redirect("mailsync:client_email", client.pk)
    # Not sent, or not known to be: the form again, filled in, with a new submission key.
    resolution = outgoing.outgoing_resolve(request.user, client)
    addresses = _client_addresses(client)
    form = ComposeForm(
        senders=resolution.available,
        addresses=addresses,
        initial={
            "sender": str(written.sender_id or ""),
            "recipients": _address_pks(addresses, written.recipients),
            "subject": written.subject,
            "body": written.body,
            "retry_of": written.pk,
        },
    )
    return _compose_page(
        request, client, form, resolution, reply_to=written.reply_to, written=written
    )


@member_required
@require_POST
def written_dismiss(request: HttpRequest, client_pk: int, written_pk: int) -> HttpResponse:
    """Take an email that was not sent off the client's Email tab (the member's own)."""
    client = get_client_for_member(request, client_pk)
    if not written_email_dismiss(member=request.user, client=client, written_id=written_pk):
        raise Http404
    messages.success(request, _("Taken off the list of emails not sent."))
    return redirect("mailsync:client_email", client.pk)


def _address_pks(addresses: list[ContactAddress], recipients: list[str]) -> list[str]:
    wanted = {normalize_address(r) for r in recipients}
    return [str(a.pk) for a in addresses if a.normalized in wanted]


def _sent_messages(request: HttpRequest, written: WrittenEmail) -> None:
    messages.success(request, _("Email sent."))
    if written.not_kept:
        messages.warning(
            request,
            _(
                "The portal could not keep its copy of this email just now, so it may "
                "not show on this client's Email tab. Do not send it again."
            ),
        )
    for address, reply_text in written.refused.items():
        messages.warning(
            request,
            _("The server refused %(address)s: %(reply)s")
            % {"address": address, "reply": reply_text},
        )


def _send_problem_of(address) -> dict | None:
    """A sending problem recorded on the address's mailbox (e.g. send.smtp_auth_disabled)."""
    if address is None or address.connection.problem_code not in SEND_CODES:
        return None
    connection = address.connection
    return {"code": connection.problem_code, "detail": connection.problem_detail}


@member_required
@require_POST
def client_sender(request: HttpRequest, client_pk: int) -> HttpResponse:
    """Save which of the member's addresses their mail to this client goes from."""
    client = get_client_for_member(request, client_pk)
    senders = outgoing.addresses_available(firm=request.firm, member=request.user)
    form = ClientSenderForm(request.POST, senders=senders)
    if not form.is_valid():
        raise Http404  # an address this member cannot send from
    address = form.cleaned_data["address"]
    outgoing.client_sender_set(member=request.user, client=client, address=address)
    if address is None:
        messages.success(request, _("Mail to this client goes from your default address."))
    else:
        messages.success(
            request,
            _("Mail to this client now goes from %(address)s.") % {"address": address.address},
        )
    return redirect(reverse("mailsync:compose", args=[client.pk]))

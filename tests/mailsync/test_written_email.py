"""Send on a client's Email tab: the page keeps the email and answers at once, a worker on
the send queue sends it, exactly once however often the form is posted or the task is
run, and the page Send leads to shows the outcome.

Mail goes to the loopback submission server of tests/servers/smtp_auth.py.
"""

from __future__ import annotations

import datetime
import secrets
import socket

import pytest
from django.urls import reverse
from django.utils import timezone

from mailsync import sending
from mailsync.models import OutgoingServer, WrittenEmail
from mailsync.outgoing import outgoing_for
from mailsync.tasks import send_written_email
from mailsync.written import (
    REQUEUE_AFTER,
    SENDING_LEASE,
    written_email_queue,
    written_email_send,
    written_emails_watch,
)
from portal.celery import app
from tests.db_locks import only_on_postgresql, second_meets_first
from tests.mailsync.factories import fernet_key  # noqa: F401
from tests.mailsync.writing import compose_url, run_send_worker, sending_mailbox
from tests.servers import smtp_auth

submission_server = smtp_auth.submission_server
submission = smtp_auth.submission

Status = WrittenEmail.Status


@pytest.fixture
def sender(owner, firm, client_, submission):
    sending_mailbox(submission, firm=firm, owner=owner.user, address="ann@alder.test")
    return outgoing_for(owner.user, client_)


def _form(client, sender, key: str = "", **fields) -> dict:
    address = client.contacts.get().addresses.get(address="bea@bakery.test")
    return {
        "sender": sender.pk,
        "recipients": [address.pk],
        "subject": "Your year-end accounts",
        "body": "Dear Bea,\n\nThe accounts are ready.",
        "submission": key or secrets.token_urlsafe(8),
        **fields,
    }


def _queued(owner, client, sender, key: str = "k1") -> WrittenEmail:
    return written_email_queue(
        member=owner.user,
        client=client,
        sender=sender,
        recipients=["bea@bakery.test"],
        subject="Your year-end accounts",
        body="Dear Bea",
        reply_to=None,
        submission_key=key,
    )


def _page(response) -> str:
    return response.content.decode()


def test_send_answers_before_the_mail_server_is_asked(owner_client, client_, sender, submission):
    response = owner_client.post(compose_url(client_), _form(client_, sender))

    written = WrittenEmail.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("mailsync:written_email", args=[client_.pk, written.pk])
    assert written.status == Status.QUEUED
    assert submission.received == []
    page = _page(owner_client.get(response["Location"]))
    assert "Your email is kept and waiting to be sent" in page
    assert 'hx-trigger="every 1s"' in page


def test_the_send_task_goes_to_the_send_queue():
    route = app.amqp.router.route({}, send_written_email.name)

    assert route["queue"].name == "send"


def test_pressing_send_twice_on_one_form_sends_one_email(owner_client, client_, sender, submission):
    form = _form(client_, sender)

    first = owner_client.post(compose_url(client_), form)
    second = owner_client.post(compose_url(client_), form)
    run_send_worker()

    assert first["Location"] == second["Location"]
    assert WrittenEmail.objects.count() == 1
    assert len(submission.received) == 1


def test_two_forms_send_two_emails(owner_client, client_, sender, submission):
    owner_client.post(compose_url(client_), _form(client_, sender))
    owner_client.post(compose_url(client_), _form(client_, sender))
    run_send_worker()

    assert len(submission.received) == 2


def test_a_form_without_its_submission_key_keeps_what_was_written(
    owner_client, client_, sender, submission
):
    page = _page(owner_client.post(compose_url(client_), _form(client_, sender, submission="")))

    assert "This form is out of date" in page
    assert "The accounts are ready." in page
    assert not WrittenEmail.objects.exists()


@only_on_postgresql("two requests inserting one submission key at once")
@pytest.mark.django_db(transaction=True)
def test_one_form_posted_twice_at_once_keeps_one_email(owner, client_, sender, submission):
    first, second = second_meets_first(
        lambda: _queued(owner, client_, sender), lambda: _queued(owner, client_, sender)
    )

    assert first.pk == second.pk
    assert WrittenEmail.objects.count() == 1


def test_a_task_delivered_twice_sends_once(owner, client_, sender, submission):
    written = _queued(owner, client_, sender)

    send_written_email(written.pk)
    send_written_email(written.pk)

    assert len(submission.received) == 1
    written.refresh_from_db()
    assert written.status == Status.SENT and written.message is not None


@only_on_postgresql("two workers claiming one email at once")
@pytest.mark.django_db(transaction=True)
def test_two_workers_running_one_task_at_once_send_once(owner, client_, sender, submission):
    written = _queued(owner, client_, sender)

    first, second = second_meets_first(
        lambda: written_email_send(written.pk), lambda: written_email_send(written.pk)
    )

    assert first is not None and first.status == Status.SENT
    assert second is None
    assert len(submission.received) == 1


def test_a_worker_that_stopped_mid_send_leaves_it_unknown_and_it_is_not_sent_again(
    owner_client, owner, client_, sender, submission
):
    written = _queued(owner, client_, sender)
    # The worker claimed it and died before recording anything.
    WrittenEmail.objects.filter(pk=written.pk).update(
        status=Status.SENDING, claimed_at=timezone.now() - SENDING_LEASE - datetime.timedelta(1)
    )

    assert written_emails_watch() == (0, 1)
    send_written_email(written.pk)  # its task, delivered again after the restart

    assert submission.received == []
    page = _page(owner_client.get(reverse("mailsync:written_email", args=[client_.pk, written.pk])))
    assert "it may have gone out" in page
    assert "Dear Bea" in page  # what was written, ready to send again after a look


def test_a_worker_slower_than_the_lease_still_records_that_it_sent(
    owner, client_, sender, submission, monkeypatch
):
    written = _queued(owner, client_, sender)
    real_send = sending.email_send

    def send_while_the_watchdog_gives_up(**kwargs):
        written_emails_watch(now=timezone.now() + SENDING_LEASE * 2)
        return real_send(**kwargs)

    monkeypatch.setattr(sending, "email_send", send_while_the_watchdog_gives_up)
    written_email_send(written.pk)

    written.refresh_from_db()
    assert written.status == Status.SENT
    assert len(submission.received) == 1


def test_an_email_whose_task_was_lost_is_queued_again(
    owner, client_, sender, submission, django_capture_on_commit_callbacks, monkeypatch
):
    queued: list[int] = []
    monkeypatch.setattr(send_written_email, "delay", queued.append)
    written = _queued(owner, client_, sender)  # its task never reached a worker
    WrittenEmail.objects.filter(pk=written.pk).update(
        queued_at=timezone.now() - REQUEUE_AFTER - datetime.timedelta(seconds=1)
    )

    with django_capture_on_commit_callbacks(execute=True):
        assert written_emails_watch() == (1, 0)
        assert written_emails_watch() == (0, 0)  # not again until REQUEUE_AFTER has passed
    for pk in queued:
        send_written_email(pk)

    assert queued == [written.pk]
    assert len(submission.received) == 1


def test_the_page_asks_again_until_sent_then_opens_the_email_tab(
    owner_client, client_, sender, submission
):
    url = owner_client.post(compose_url(client_), _form(client_, sender))["Location"]

    waiting = owner_client.get(url, headers={"HX-Request": "true"})
    run_send_worker()
    done = owner_client.get(url, headers={"HX-Request": "true"})
    landed = owner_client.get(url)

    assert "HX-Redirect" not in waiting and 'hx-trigger="every 1s"' in _page(waiting)
    assert done["HX-Redirect"] == url and "hx-trigger" not in _page(done)
    assert landed.status_code == 302
    assert landed["Location"] == reverse("mailsync:client_email", args=[client_.pk])
    tab = _page(owner_client.get(landed["Location"]))
    assert "Email sent." in tab and "Your year-end accounts" in tab


def test_an_unreachable_server_gives_the_form_back_with_everything_written(
    owner_client, client_, sender, submission
):
    _unreachable(sender)
    form = _form(client_, sender)

    url = owner_client.post(compose_url(client_), form)["Location"]
    run_send_worker()
    page = _page(owner_client.get(url))

    assert "The email was not sent." in page and "sync.connection" in page
    assert 'value="Your year-end accounts"' in page and "The accounts are ready." in page
    assert f'value="{form["recipients"][0]}" checked' in page.replace(' id="id_recipients_0"', "")
    # A new key: sending again is a new email, not the failed one.
    assert f'value="{form["submission"]}"' not in page
    assert f'action="{compose_url(client_)}"' in page


def test_another_member_cannot_open_your_written_email(
    owner_client, staff_client, client_, sender, submission
):
    url = owner_client.post(compose_url(client_), _form(client_, sender))["Location"]

    assert staff_client.get(url).status_code == 404


def test_the_watchdog_leaves_waiting_and_sending_emails_alone_within_their_time(
    owner, client_, sender, submission
):
    _queued(owner, client_, sender, key="waiting")
    sending_now = _queued(owner, client_, sender, key="sending")
    WrittenEmail.objects.filter(pk=sending_now.pk).update(
        status=Status.SENDING, claimed_at=timezone.now()
    )

    assert written_emails_watch() == (0, 0)
    assert set(WrittenEmail.objects.values_list("status", flat=True)) == {"queued", "sending"}


def test_asking_for_the_outcome_costs_the_same_few_queries_while_waiting(
    owner_client, client_, sender, submission, django_assert_num_queries
):
    url = owner_client.post(compose_url(client_), _form(client_, sender))["Location"]
    owner_client.get(url, headers={"HX-Request": "true"})  # the session is warm

    # session, user, membership, client, the email with its sender and mailbox.
    with django_assert_num_queries(5):
        owner_client.get(url, headers={"HX-Request": "true"})


def _email_tab(http, client) -> str:
    return _page(http.get(reverse("mailsync:client_email", args=[client.pk])))


def _unreachable(sender) -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    OutgoingServer.objects.filter(connection=sender.connection).update(port=port)


def test_an_email_that_failed_after_the_member_left_shows_on_the_email_tab(
    owner_client, client_, sender, submission
):
    _unreachable(sender)
    url = owner_client.post(compose_url(client_), _form(client_, sender))["Location"]
    waiting = _email_tab(owner_client, client_)  # they left the page at once

    run_send_worker()

    tab = _email_tab(owner_client, client_)
    assert "Your emails to this client not sent yet" in waiting
    assert "Waiting to be sent" in waiting
    assert "Not sent. Open it to see why and send it again." in tab
    assert url in tab and "sync.connection" in tab


def test_sending_it_again_from_its_form_takes_it_off_the_list(
    owner_client, client_, sender, submission
):
    _unreachable(sender)
    failed_url = owner_client.post(compose_url(client_), _form(client_, sender))["Location"]
    run_send_worker()
    form_again = _page(owner_client.get(failed_url))
    failed = WrittenEmail.objects.get()
    assert f'name="retry_of" value="{failed.pk}"' in form_again
    OutgoingServer.objects.filter(connection=sender.connection).update(port=submission.port)

    owner_client.post(compose_url(client_), _form(client_, sender, retry_of=failed.pk))
    run_send_worker()

    assert len(submission.received) == 1
    assert "not sent yet" not in _email_tab(owner_client, client_)


def test_a_member_can_dismiss_an_email_that_was_not_sent(owner_client, client_, sender, submission):
    _unreachable(sender)
    owner_client.post(compose_url(client_), _form(client_, sender))
    run_send_worker()
    failed = WrittenEmail.objects.get()

    response = owner_client.post(
        reverse("mailsync:written_dismiss", args=[client_.pk, failed.pk]), follow=True
    )

    assert "Taken off the list of emails not sent." in _page(response)
    assert "not sent yet" not in _page(response)


def test_another_member_neither_sees_nor_dismisses_your_emails_not_sent(
    owner_client, staff_client, client_, sender, submission
):
    _unreachable(sender)
    owner_client.post(compose_url(client_), _form(client_, sender))
    run_send_worker()
    failed = WrittenEmail.objects.get()

    dismiss = staff_client.post(reverse("mailsync:written_dismiss", args=[client_.pk, failed.pk]))

    assert "not sent yet" not in _email_tab(staff_client, client_)
    assert dismiss.status_code == 404
    assert "not sent yet" in _email_tab(owner_client, client_)

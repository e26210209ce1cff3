"""`manage.py sync_mailbox`: one mailbox in the foreground, with counts and state."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from mailsync import services
from mailsync.models import Message
from tests.factories import UserFactory
from tests.mailsync.factories import fernet_key  # noqa: F401


@pytest.fixture
def connection(firm, mailbox_user):
    return services.connection_create(
        firm=firm,
        owner=UserFactory(),
        kind="imap",
        email_address="cmd@firm.test",
        host=mailbox_user.server.host,
        port=mailbox_user.server.imap_port,
        security="none",
        username=mailbox_user.name,
        password=mailbox_user.password,
    )


def _run(*args: str) -> str:
    out = StringIO()
    call_command("sync_mailbox", *args, stdout=out)
    return out.getvalue()


def test_it_syncs_by_address_and_prints_counts_and_state(connection, mailbox_user, make_message):
    mailbox_user.server.append(mailbox_user.name, make_message("From the command"))

    output = _run("CMD@firm.test")

    assert "INBOX: 1/1" in output
    assert "fetched=1 new=1 duplicates=0" in output
    assert "health=ok" in output
    assert Message.objects.get().subject == "From the command"


def test_it_shows_an_auth_failure_and_its_code(connection, mailbox_user):
    mailbox_user.server.set_password(mailbox_user.name, "changed-elsewhere")

    output = _run(str(connection.pk))

    assert "health=needs_reauth problem=sync.auth_failed" in output
    assert "changed-elsewhere" not in output and mailbox_user.password not in output


def test_it_refuses_an_unknown_mailbox(db):
    with pytest.raises(CommandError, match="No mailbox matches"):
        _run("nobody@nowhere.test")


def test_all_syncs_every_due_mailbox_once(connection, mailbox_user, make_message):
    mailbox_user.server.append(mailbox_user.name, make_message("Due"))

    assert "new=1" in _run("--all")
    # Just synced: not due again until the poll interval passes.
    assert "new=" not in _run("--all")


def test_a_held_lease_keeps_a_second_sync_out(connection):
    held = services.connection_claim(pk=connection.pk)
    assert held is not None

    assert services.connection_claim(pk=connection.pk, force=True) is None
    assert "another sync holds it" in _run(str(connection.pk))

    services.connection_release(connection=held)
    assert services.connection_claim(pk=connection.pk, force=True) is not None

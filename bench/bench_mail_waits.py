"""Pages while members' mail servers do not answer: what a host serves when a dozen
requests would wait on dead mail servers at once.

    .venv/bin/python bench/bench_mail_waits.py [--senders 6] [--testers 6] [--seconds 12]

Starts the portal under gunicorn as gunicorn.conf.py configures it, over a throwaway
PostgreSQL database (beside $DATABASE_URL's), with ``--senders`` + ``--testers`` members
whose mailboxes' servers are a silent listener on loopback: it accepts connections and never
says a word, as a firewalled or overloaded server does (each wait lasts the client's
timeout; MAILSYNC_TIMEOUT is 15 s here). Then, in one run:

1. floor: wrk on the bare view (``/bench/floor/``, signed in) for ``--seconds``;
2. storm: at the same moment every sender presses Send on a client's Email tab and every
   tester presses "Test account" with their server's settings; wrk drives the bare view
   again, starting half a second later, for ``--seconds``.

Prints the bare view's requests/s, latency percentiles and wrk's errors (timeouts: no
answer within 2 s) in both phases, and each storm request's status and time. No Celery
worker runs: an email kept for the worker stays queued. Asserts nothing.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import statistics
import subprocess
import threading
import time
from urllib.parse import urlencode

import benchkit
from bench_pages import server_start, static_settings
from cryptography.fernet import Fernet

from tests.servers.silent import SilentServer

LATENCY = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _members(count: int, silent_port: int) -> list[tuple[str, int, int]]:
    """``count`` members with a mailbox on the silent server: (cookie, client pk, sender pk)."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    from accounts.models import Membership, User
    from mailsync.models import OutgoingServer
    from mailsync.outgoing import outgoing_for
    from mailsync.services import connection_create
    from portal.models import Client, Contact, ContactAddress, Firm

    firm = Firm.objects.create(name="Silent Servers Ltd", slug="silent-servers")
    client = Client.objects.create(firm=firm, display_name="Birch Bakery")
    contact = Contact.objects.create(client=client, name="Bea Birch")
    ContactAddress.objects.create(
        contact=contact, firm=firm, address="bea@bakery.test", is_primary=True
    )
    members = []
    for n in range(count):
        user = User.objects.create_user(email=f"member{n}@silent.test", password="x" * 20)
        Membership.objects.create(firm=firm, user=user, role="owner" if n == 0 else "staff")
        connection = connection_create(
            firm=firm,
            owner=user,
            kind="imap",
            email_address=f"member{n}@silent.test",
            host="127.0.0.1",
            port=silent_port,
            security="none",
            username=f"member{n}",
            password="mailbox-password",
        )
        OutgoingServer.objects.create(
            connection=connection, host="127.0.0.1", port=silent_port, security="none"
        )
        session = SessionStore()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.save()
        sender = outgoing_for(user, client)  # the mailbox's own address, made on first use
        cookie = f"{settings.SESSION_COOKIE_NAME}={session.session_key}"
        members.append((cookie, client.pk, sender.pk))
    return members


def _form_page(port: int, path: str, cookie: str) -> tuple[str, str, str]:
    """GET a form: (the cookies to send with its POST, its CSRF token, the page)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", path, headers={"Cookie": cookie, "Host": "127.0.0.1"})
    response = conn.getresponse()
    body = response.read().decode()
    csrf = re.search(r"csrftoken=([^;]+)", response.getheader("Set-Cookie", "")).group(1)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', body).group(1)
    conn.close()
    return f"{cookie}; csrftoken={csrf}", token, body


def _post(port: int, path: str, cookies: str, data: dict, out: list) -> None:
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request(
            "POST",
            path,
            body=urlencode(data, doseq=True),
            headers={
                "Cookie": cookies,
                "Host": "127.0.0.1",
                "Referer": f"http://127.0.0.1:{port}{path}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        status = conn.getresponse().status
    except OSError as exc:
        status = type(exc).__name__
    out.append((path, status, time.perf_counter() - start))
    conn.close()


def _wrk(port: int, cookie: str, seconds: int, connections: int) -> dict[str, float | str]:
    result = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-H",
            f"Cookie: {cookie}",
            f"http://127.0.0.1:{port}/bench/floor/",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout
    figures: dict[str, float | str] = {
        f"p{p}": float(v) * UNIT[u] for p, v, u in LATENCY.findall(out)
    }
    figures["req/s"] = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    figures["requests"] = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: (.*)", out)
    figures["errors"] = errors.group(1) if errors else "none"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--senders", type=int, default=6)
    parser.add_argument("--testers", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()
    silent = SilentServer()
    with benchkit.temp_dir("bench-waits-") as work, benchkit.throwaway_database(work) as db:
        env = benchkit.portal_env(
            database_url=db,
            var_dir=work,
            BENCH_FLOOR_VIEW="1",
            MAILSYNC_TIMEOUT="15",
            MFA_REQUIRED_FOR_OWNERS="0",
            MAILSYNC_FERNET_KEYS=Fernet.generate_key().decode(),
        )
        os.environ.update(env)
        env.update(static_settings(work))
        benchkit.django_start(env)
        members = _members(args.senders + args.testers, silent.port)
        from django.db import connections

        connections.close_all()
        port = benchkit.free_port()
        server = server_start(port, env)
        try:
            floor = _wrk(port, members[0][0], args.seconds, args.connections)
            storm: list = []
            threads = []
            for n, (cookie, client_pk, sender_pk) in enumerate(members):
                if n < args.senders:
                    path = f"/clients/{client_pk}/email/write/"
                    cookies, token, page = _form_page(port, path, cookie)
                    recipient = re.search(r'name="recipients" value="(\d+)"', page).group(1)
                    data = {
                        "csrfmiddlewaretoken": token,
                        "sender": sender_pk,
                        "recipients": [recipient],
                        "subject": "Year-end",
                        "body": "Hello",
                        "submission": f"bench-{n}",
                    }
                else:
                    path = "/settings/email-sync/connect/"
                    cookies, token, _page = _form_page(port, path, cookie)
                    data = {
                        "csrfmiddlewaretoken": token,
                        "kind": "imap",
                        "email_address": f"member{n}@silent.test",
                        "host": "127.0.0.1",
                        "port": silent.port,
                        "security": "none",
                        "username": f"member{n}",
                        "password": "mailbox-password",
                        "skip_smtp": "on",
                        "action": "test",
                    }
                threads.append(
                    threading.Thread(target=_post, args=(port, path, cookies, data, storm))
                )
            for thread in threads:
                thread.start()
            time.sleep(0.5)
            during = _wrk(port, members[0][0], args.seconds, args.connections)
            for thread in threads:
                thread.join()
        finally:
            server.terminate()
            server.wait(timeout=30)
            silent.close()
    print(f"\nbare view at {args.connections} connections, {args.seconds} s each (ms)")
    print(f"{'phase':<34} {'answered':>8} {'req/s':>8} {'p50':>8} {'p90':>8} {'p99':>8}  errors")
    for name, figures in (("floor", floor), ("while mail servers are silent", during)):
        print(
            f"{name:<34} {figures['requests']:>8} {figures['req/s']:>8.0f} "
            f"{figures.get('p50', 0):>8.1f} {figures.get('p90', 0):>8.1f} "
            f"{figures.get('p99', 0):>8.1f}  {figures['errors']}"
        )
    print("\nthe storm's requests (path, status, seconds)")
    for kind in ("/email/write/", "/connect/"):
        rows = [(s, t) for p, s, t in storm if kind in p]
        statuses = sorted({str(s) for s, _t in rows})
        times = [t for _s, t in rows]
        print(
            f"  {kind:<16} {len(rows)} requests, statuses {', '.join(statuses)}, "
            f"median {statistics.median(times):.2f} s, longest {max(times):.2f} s"
        )


if __name__ == "__main__":
    main()

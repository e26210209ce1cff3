"""ESP tracking webhooks, posted as each ESP posts them to anymail's real webhook URLs.

anymail checks the basic-auth secret (and Mailgun's HMAC / SendGrid's ECDSA signature,
computed here with test keys), our receiver stores the event, and the processing task (run
eagerly through Celery) records it on the delivery. anymail reads its settings when each
request's view is built (Django makes a view instance per request), so the `settings`
fixture takes effect without reloading anything.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import time
import uuid

import pytest
from anymail.exceptions import AnymailInsecureWebhookWarning
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from invoicing.delivery.models import Delivery, DeliveryEvent, Suppression, WebhookEvent
from invoicing.delivery.tasks import webhook_events_sweep_task
from invoicing.models import Invoice
from portal.celery import app as celery_app
from tests.factories import ClientFactory, FirmFactory

S = Delivery.Status
SECRET = "user:pass"
AUTH = "Basic " + base64.b64encode(SECRET.encode()).decode()
MAILGUN_KEY = "key-mailgun-signing-test"
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())
SENDGRID_PUBLIC = base64.b64encode(
    SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
).decode()
sendgrid_unsupported = pytest.mark.filterwarnings(
    # anymail warns on every SendGrid request that it no longer supports SendGrid officially.
    "ignore::anymail.exceptions.AnymailNotSupportedWarning"
)


@pytest.fixture(autouse=True)
def _webhook_settings(settings):
    settings.ANYMAIL = {
        "WEBHOOK_SECRET": SECRET,
        "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY,
        "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": SENDGRID_PUBLIC,
    }
    # Run the processing task in-process, through Celery, when the receiver queues it.
    conf = celery_app.conf
    before = {
        "task_always_eager": conf.task_always_eager,
        "task_eager_propagates": conf.task_eager_propagates,
    }
    conf.update(task_always_eager=True, task_eager_propagates=True)
    yield
    conf.update(**before)


@pytest.fixture
def invoice(db) -> Invoice:
    firm = FirmFactory()
    return Invoice.objects.create(
        firm=firm,
        client=ClientFactory(firm=firm),
        number=1,
        due_date=datetime.date(2030, 1, 31),
    )


@pytest.fixture
def make_delivery(invoice):
    def make(address: str = "ana@client.test", esp_message_id: str = "") -> Delivery:
        return Delivery.objects.create(
            firm=invoice.firm,
            invoice=invoice,
            client=invoice.client,
            address=address,
            normalized=address.lower(),
            status=S.SENT,
            esp_message_id=esp_message_id or str(uuid.uuid4()),
            verp_token=uuid.uuid4().hex,
        )

    return make


@pytest.fixture
def post(client, django_capture_on_commit_callbacks):
    """POST like the ESP does; on-commit callbacks (the task) run before it returns."""

    def send(esp: str, body: object, *, auth: str | None = AUTH, headers: dict | None = None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        extra = dict(headers or {})
        if auth:
            extra["Authorization"] = auth
        with django_capture_on_commit_callbacks(execute=True):
            return client.post(
                f"/webhooks/anymail/{esp}/tracking/",
                data=data,
                content_type="application/json",
                headers=extra,
            )

    return send


def _timeline(delivery: Delivery) -> list[tuple[str, str]]:
    return list(delivery.events.values_list("kind", "source"))


# --------------------------------------------------------------------------- Postmark


def postmark_bounce(message_id: str, *, email: str = "ana@client.test", **fields) -> dict:
    return {
        "RecordType": "Bounce",
        "MessageStream": "outbound",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "invoice",
        "MessageID": message_id,
        "Metadata": {},
        "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user, "
        "mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist. "
        "Please try double-checking the recipient's email address for typos or unnecessary "
        "spaces.",
        "Email": email,
        "From": "invoices@portal.test",
        "BouncedAt": "2024-11-05T16:33:54.9070259Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "Invoice #1",
        **fields,
    }


def postmark_delivery(message_id: str, *, email: str = "ana@client.test") -> dict:
    return {
        "RecordType": "Delivery",
        "ServerID": 23,
        "MessageStream": "outbound",
        "MessageID": message_id,
        "Recipient": email,
        "Tag": "invoice",
        "DeliveredAt": "2024-11-05T16:40:00.0000000Z",
        "Details": "smtp;250 2.0.0 OK 1604597954 x13si1234567qkj.123 - gsmtp",
        "Metadata": {},
    }


def test_it_records_a_postmark_hard_bounce(post, make_delivery):
    delivery = make_delivery()
    response = post("postmark", postmark_bounce(delivery.esp_message_id))
    assert response.status_code == 200
    delivery.refresh_from_db()
    assert delivery.status == S.BOUNCED
    assert delivery.problem_code == "delivery.hard_bounce"
    event = delivery.events.get()
    assert (event.kind, event.source) == (S.BOUNCED, DeliveryEvent.Source.WEBHOOK)
    assert (event.reply_code, event.status_code) == ("550", "5.1.1")
    assert "does not exist" in event.diagnostic
    assert WebhookEvent.objects.get().processed_at is not None
    assert Suppression.objects.filter(normalized="ana@client.test", reason="hard_bounce").exists()


def test_it_decides_soft_from_the_reply_not_the_esps_label(post, make_delivery):
    delivery = make_delivery()
    body = postmark_bounce(
        delivery.esp_message_id,
        Details="smtp;552 5.2.2 The email account that you tried to reach is over quota.",
    )
    post("postmark", body)  # Postmark calls it a HardBounce; a full mailbox is not
    delivery.refresh_from_db()
    assert delivery.status == S.SOFT_BOUNCED
    assert delivery.problem_code == "delivery.soft_bounce"
    assert not Suppression.objects.exists()


def test_it_records_the_same_event_once(post, make_delivery):
    delivery = make_delivery()
    body = postmark_bounce(delivery.esp_message_id)
    assert post("postmark", body).status_code == 200
    assert post("postmark", body).status_code == 200  # the ESP retried
    assert delivery.events.count() == 1
    assert WebhookEvent.objects.filter(processed_at__isnull=True).count() == 0


def test_a_late_delivered_does_not_hide_a_bounce(post, make_delivery):
    delivery = make_delivery()
    post("postmark", postmark_bounce(delivery.esp_message_id))
    post("postmark", postmark_delivery(delivery.esp_message_id))
    delivery.refresh_from_db()
    assert delivery.status == S.BOUNCED
    assert delivery.problem_code == "delivery.hard_bounce"
    assert sorted(_timeline(delivery)) == [(S.BOUNCED, "webhook"), (S.DELIVERED, "webhook")]


def test_a_delivered_then_a_bounce_ends_bounced(post, make_delivery):
    delivery = make_delivery()
    post("postmark", postmark_delivery(delivery.esp_message_id))
    delivery.refresh_from_db()
    assert delivery.status == S.DELIVERED
    post("postmark", postmark_bounce(delivery.esp_message_id))
    delivery.refresh_from_db()
    assert delivery.status == S.BOUNCED


def test_an_unknown_message_is_answered_200_and_recorded_nowhere(post, make_delivery):
    delivery = make_delivery()
    response = post("postmark", postmark_bounce("not-one-of-ours"))
    assert response.status_code == 200
    assert not DeliveryEvent.objects.exists()
    # Kept pending while its delivery may still be recorded: see test_early_webhooks.py.
    assert WebhookEvent.objects.get().error.startswith("waiting for its delivery")
    delivery.refresh_from_db()
    assert delivery.status == S.SENT


@pytest.mark.parametrize("auth", [None, "Basic " + base64.b64encode(b"user:wrong").decode()])
def test_it_refuses_a_wrong_or_missing_secret(post, make_delivery, auth):
    delivery = make_delivery()
    response = post("postmark", postmark_bounce(delivery.esp_message_id), auth=auth)
    assert response.status_code in (400, 403)
    assert not WebhookEvent.objects.exists()
    assert not DeliveryEvent.objects.exists()


def test_it_refuses_events_while_no_secret_is_configured(settings, post, make_delivery):
    settings.ANYMAIL = {}
    delivery = make_delivery()
    with pytest.warns(AnymailInsecureWebhookWarning):
        response = post("postmark", postmark_bounce(delivery.esp_message_id), auth=None)
    assert response.status_code == 400
    assert not WebhookEvent.objects.exists()


def test_it_only_answers_post(client):
    response = client.get("/webhooks/anymail/postmark/tracking/", headers={"Authorization": AUTH})
    assert response.status_code == 405


def test_a_lost_task_is_made_up_by_the_sweep(client, make_delivery, monkeypatch):
    delivery = make_delivery()
    # No on-commit capture: inside the test's transaction the task is never queued, as
    # when the broker was down at the time.
    client.post(
        "/webhooks/anymail/postmark/tracking/",
        data=json.dumps(postmark_bounce(delivery.esp_message_id)),
        content_type="application/json",
        headers={"Authorization": AUTH},
    )
    stored = WebhookEvent.objects.get()
    assert stored.processed_at is None
    WebhookEvent.objects.filter(pk=stored.pk).update(
        received=stored.received - datetime.timedelta(minutes=10)
    )
    assert webhook_events_sweep_task() == 1
    delivery.refresh_from_db()
    assert delivery.status == S.BOUNCED
    assert webhook_events_sweep_task() == 0


# --------------------------------------------------------------------------- SendGrid


def _sendgrid_headers(body: bytes) -> dict:
    timestamp = "1700000000"
    signature = SENDGRID_KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
    }


def _sendgrid_event(anymail_id: str, email: str, event: str, **fields) -> dict:
    return {
        "email": email,
        "timestamp": 1700000000,
        "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
        "event": event,
        "category": ["invoice"],
        "sg_event_id": base64.b64encode(uuid.uuid4().bytes).decode(),
        "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
        "anymail_id": anymail_id,
        **fields,
    }


@sendgrid_unsupported
def test_it_reads_a_signed_sendgrid_batch(post, make_delivery):
    dead, full, blocked = (
        make_delivery("dead@client.test"),
        make_delivery("full@client.test"),
        make_delivery("strict@client.test"),
    )
    events = [
        _sendgrid_event(
            dead.esp_message_id,
            "dead@client.test",
            "bounce",
            reason="550 5.1.1 The email account that you tried to reach does not exist.",
            status="5.1.1",
            type="bounce",
        ),
        _sendgrid_event(
            full.esp_message_id,
            "full@client.test",
            "deferred",
            response="452 4.2.2 The email account that you tried to reach is over quota.",
            attempt="1",
        ),
        _sendgrid_event(
            blocked.esp_message_id,
            "strict@client.test",
            "bounce",
            reason="554 5.7.1 Message rejected because of spam content",
            status="5.7.1",
            type="blocked",
        ),
    ]
    body = json.dumps(events).encode()
    response = post("sendgrid", body, headers=_sendgrid_headers(body))
    assert response.status_code == 200
    for delivery in (dead, full, blocked):
        delivery.refresh_from_db()
    assert (dead.status, dead.problem_code) == (S.BOUNCED, "delivery.hard_bounce")
    assert (full.status, full.problem_code) == (S.DEFERRED, "delivery.soft_bounce")
    assert (blocked.status, blocked.problem_code) == (S.REJECTED, "delivery.rejected_policy")
    assert full.events.get().reply_code == "452"


@sendgrid_unsupported
def test_it_refuses_a_sendgrid_post_with_a_bad_signature(post, make_delivery):
    delivery = make_delivery()
    body = json.dumps([_sendgrid_event(delivery.esp_message_id, delivery.address, "open")])
    headers = _sendgrid_headers(b"something else")
    assert post("sendgrid", body.encode(), headers=headers).status_code == 400
    assert not WebhookEvent.objects.exists()


# --------------------------------------------------------------------------- Mailgun


def _mailgun(event_data: dict, *, key: str = MAILGUN_KEY) -> dict:
    timestamp, token = str(int(time.time())), uuid.uuid4().hex + uuid.uuid4().hex[:18]
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256)
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature.hexdigest()},
        "event-data": event_data,
    }


def _mailgun_failed(message_id: str, email: str, severity: str, code: int, message: str) -> dict:
    return {
        "event": "failed",
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": 1700000000.501324,
        "log-level": "error" if severity == "permanent" else "warn",
        "severity": severity,
        "reason": "bounce" if severity == "permanent" else "generic",
        "envelope": {"sender": "invoices@mg.portal.test", "transport": "smtp", "targets": email},
        "delivery-status": {
            "attempt-no": 1,
            "code": code,
            "message": message,
            "description": "",
            "session-seconds": 1.2,
        },
        "message": {
            "headers": {
                "to": email,
                "message-id": message_id.strip("<>"),
                "from": "Alder & Birch <invoices@mg.portal.test>",
                "subject": "Invoice #1",
            },
            "attachments": [],
            "size": 4111,
        },
        "recipient": email,
        "recipient-domain": email.split("@")[1],
        "tags": [],
        "user-variables": {},
    }


def test_it_reads_a_signed_mailgun_permanent_failure(post, make_delivery):
    delivery = make_delivery(esp_message_id="<20240503182626.18666.16540@mg.portal.test>")
    body = _mailgun(
        _mailgun_failed(
            delivery.esp_message_id,
            delivery.address,
            "permanent",
            550,
            "5.1.1 The email account that you tried to reach does not exist.",
        )
    )
    assert post("mailgun", body).status_code == 200
    delivery.refresh_from_db()
    assert (delivery.status, delivery.problem_code) == (S.BOUNCED, "delivery.hard_bounce")
    event = delivery.events.get()
    assert (event.reply_code, event.status_code) == ("550", "5.1.1")


def test_a_mailgun_temporary_failure_is_a_delay(post, make_delivery):
    delivery = make_delivery(esp_message_id="<20240503182626.18666.16541@mg.portal.test>")
    body = _mailgun(
        _mailgun_failed(
            delivery.esp_message_id,
            delivery.address,
            "temporary",
            452,
            "4.2.2 The email account that you tried to reach is over quota.",
        )
    )
    post("mailgun", body)
    delivery.refresh_from_db()
    assert delivery.status == S.DEFERRED


def test_it_refuses_a_mailgun_post_signed_with_another_key(post, make_delivery):
    delivery = make_delivery(esp_message_id="<x@mg.portal.test>")
    body = _mailgun(
        _mailgun_failed(delivery.esp_message_id, delivery.address, "permanent", 550, "5.1.1"),
        key="someone-elses-key",
    )
    assert post("mailgun", body).status_code == 400
    assert not WebhookEvent.objects.exists()


# --------------------------------------------------------------------------- Amazon SES


@pytest.fixture
def ses_without_boto3(monkeypatch):
    """anymail builds boto3 parameters when the SES view starts, only to confirm SNS
    subscriptions; tracking notifications need none of it. Without boto3 installed (it is
    not in requirements yet), stand in for that one helper."""
    try:
        import boto3  # noqa: F401
    except ImportError:
        monkeypatch.setattr(
            "anymail.webhooks.amazon_ses._get_anymail_boto3_params", lambda kwargs: ({}, {})
        )


def _sns(ses_event: dict) -> tuple[dict, dict]:
    message_id = str(uuid.uuid4())
    envelope = {
        "Type": "Notification",
        "MessageId": message_id,
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-events",
        "Subject": "Amazon SES Email Event Notification",
        "Message": json.dumps(ses_event),
        "Timestamp": "2024-11-05T16:33:55.112Z",
        "SignatureVersion": "1",
        "Signature": "EXAMPLEpH+..",
        "SigningCertURL": "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0.pem",
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    }
    headers = {"x-amz-sns-message-type": "Notification", "x-amz-sns-message-id": message_id}
    return envelope, headers


def _ses_mail(message_id: str, destination: list[str]) -> dict:
    return {
        "timestamp": "2024-11-05T16:33:50.000Z",
        "source": "invoices@portal.test",
        "sourceArn": "arn:aws:ses:eu-west-1:123456789012:identity/portal.test",
        "sendingAccountId": "123456789012",
        "messageId": message_id,
        "destination": destination,
        "headersTruncated": False,
        "headers": [{"name": "Subject", "value": "Invoice #1"}],
    }


def test_it_reads_an_ses_bounce_for_each_recipient(post, make_delivery, ses_without_boto3):
    esp_id = "0102018f3b8f9f6a-1b2c3d4e-0000-0000-0000-000000000000-000000"
    dead = make_delivery("dead@client.test", esp_message_id=esp_id)
    full = make_delivery("full@client.test", esp_message_id=esp_id)
    envelope, headers = _sns(
        {
            "eventType": "Bounce",
            "bounce": {
                "bounceType": "Permanent",
                "bounceSubType": "General",
                "bouncedRecipients": [
                    {
                        "emailAddress": "dead@client.test",
                        "action": "failed",
                        "status": "5.1.1",
                        "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                    },
                    {
                        "emailAddress": "full@client.test",
                        "action": "failed",
                        "status": "5.2.2",
                        "diagnosticCode": "smtp; 552 5.2.2 Mailbox full",
                    },
                ],
                "timestamp": "2024-11-05T16:33:54.000Z",
                "feedbackId": "0102018f3b8fa1b2-feedback-000000",
                "reportingMTA": "dsn; a1-2.smtp-out.eu-west-1.amazonses.com",
            },
            "mail": _ses_mail(esp_id, ["dead@client.test", "full@client.test"]),
        }
    )
    assert post("amazon_ses", envelope, headers=headers).status_code == 200
    dead.refresh_from_db()
    full.refresh_from_db()
    assert (dead.status, dead.problem_code) == (S.BOUNCED, "delivery.hard_bounce")
    assert (full.status, full.problem_code) == (S.SOFT_BOUNCED, "delivery.soft_bounce")
    # One SNS notification id, two recipients: two events.
    assert DeliveryEvent.objects.count() == 2


def test_it_reads_an_ses_complaint(post, make_delivery, ses_without_boto3):
    delivery = make_delivery(esp_message_id="0102018f3b8f9f6a-complaint-000000")
    envelope, headers = _sns(
        {
            "eventType": "Complaint",
            "complaint": {
                "complainedRecipients": [{"emailAddress": delivery.address}],
                "timestamp": "2024-11-05T17:00:00.000Z",
                "feedbackId": "0102018f3b8fa1b2-complaint-000000",
                "complaintFeedbackType": "abuse",
                "userAgent": "Mail.ru FBL",
            },
            "mail": _ses_mail(delivery.esp_message_id, [delivery.address]),
        }
    )
    assert post("amazon_ses", envelope, headers=headers).status_code == 200
    delivery.refresh_from_db()
    assert (delivery.status, delivery.problem_code) == (S.COMPLAINED, "delivery.complaint")
    assert Suppression.objects.get().reason == Suppression.Reason.COMPLAINT


def test_ses_without_the_secret_is_asked_for_it(post, make_delivery, ses_without_boto3):
    envelope, headers = _sns({"eventType": "Delivery", "mail": _ses_mail("x", ["a@b.test"])})
    response = post("amazon_ses", envelope, auth=None, headers=headers)
    assert response.status_code == 401  # SNS sends basic auth only after a challenge
    assert not WebhookEvent.objects.exists()


# --------------------------------------------------------------------------- Brevo


def _brevo(event: str, message_id: str, email: str, **fields) -> dict:
    return {
        "event": event,
        "email": email,
        "id": 1234567,
        "date": "2024-11-05 17:33:54",
        "ts": 1730824434,
        "message-id": message_id,
        "ts_event": 1730824434,
        "subject": "Invoice #1",
        "tag": "",
        "sending_ip": "185.41.28.109",
        "ts_epoch": 1730824434123,
        "tags": [],
        **fields,
    }


def test_a_brevo_hard_bounce_for_a_full_mailbox_is_soft(post, make_delivery):
    delivery = make_delivery(esp_message_id="<202411051733.12345678901@smtp-relay.mailin.fr>")
    body = _brevo(
        "hard_bounce", delivery.esp_message_id, delivery.address, reason="552 5.2.2 Mailbox full"
    )
    assert post("brevo", body).status_code == 200
    delivery.refresh_from_db()
    assert delivery.status == S.SOFT_BOUNCED
    event = delivery.events.get()
    assert (event.reply_code, event.status_code, event.reason) == ("552", "5.2.2", "mailboxfull")


def test_brevo_events_without_ids_are_still_recorded_once(post, make_delivery):
    delivery = make_delivery(esp_message_id="<202411051733.98765@smtp-relay.mailin.fr>")
    body = _brevo("unique_opened", delivery.esp_message_id, delivery.address)
    post("brevo", body)
    post("brevo", body)
    delivery.refresh_from_db()
    assert delivery.status == S.OPENED
    assert delivery.events.count() == 1


# --------------------------------------------------------------------------- Mailjet


def _mailjet(event: str, message_id: int, email: str, **fields) -> dict:
    return {
        "event": event,
        "time": 1730824434,
        "MessageID": message_id,
        "Message_GUID": "1ab23cd4-e567-8901-2345-6789f0gh1i2j",
        "email": email,
        "mj_campaign_id": 0,
        "mj_contact_id": 0,
        "customcampaign": "",
        "CustomID": "",
        "Payload": "",
        **fields,
    }


def test_it_reads_mailjet_events(post, make_delivery):
    delivery = make_delivery(esp_message_id="19421777396190490")
    delivered = _mailjet(
        "sent",
        19421777396190490,
        delivery.address,
        mj_message_id="19421777396190490",
        smtp_reply="sent (250 2.0.0 OK 1433333948 fa5si855896wjc.199 - gsmtp)",
    )
    assert post("mailjet", [delivered]).status_code == 200
    delivery.refresh_from_db()
    assert delivery.status == S.DELIVERED
    spam = _mailjet("spam", 19421777396190490, delivery.address, source="JMRPP")
    post("mailjet", spam)  # Mailjet also posts single events bare
    delivery.refresh_from_db()
    assert (delivery.status, delivery.problem_code) == (S.COMPLAINED, "delivery.complaint")


def test_a_mailjet_bounce_without_a_server_reply_is_never_hard(post, make_delivery):
    delivery = make_delivery(esp_message_id="19421777396190491")
    bounce = _mailjet(
        "bounce",
        19421777396190491,
        delivery.address,
        blocked=False,
        hard_bounce=True,
        error_related_to="recipient",
        error="user unknown",
        comment="",
    )
    post("mailjet", [bounce])
    delivery.refresh_from_db()
    # Mailjet's "hard_bounce: true" without any reply code is a label, not evidence.
    assert delivery.status == S.SOFT_BOUNCED
    assert "user unknown" in delivery.events.get().diagnostic
    assert not Suppression.objects.exists()

"""One behaviour per test for the bounce classification rules (no Django, no data files)."""

from __future__ import annotations

from email.message import EmailMessage, Message
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

from invoicing.delivery.bounces import REASONS, Reason, classify_bounce


def dsn(
    status: str,
    diagnostic: str,
    *,
    action: str = "failed",
    recipient: str = "Client@Example.COM",
    report_type: str = "delivery-status",
) -> bytes:
    """A minimal RFC 3464 report, built with the stdlib the way an MTA would send it."""
    report = MIMEMultipart("report", report_type=report_type)
    report["From"] = "Mail Delivery System <MAILER-DAEMON@mx.example.net>"
    report["To"] = "billing@firm.example"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report.attach(
        MIMEText(
            "I'm sorry to have to inform you that your message could not be "
            "delivered to one or more recipients.\n"
        )
    )
    # The stdlib models message/delivery-status as a list of header blocks.
    per_message = Message()
    per_message["Reporting-MTA"] = "dns; mx.example.net"
    per_recipient = Message()
    per_recipient["Final-Recipient"] = f"rfc822; {recipient}"
    per_recipient["Action"] = action
    per_recipient["Status"] = status
    per_recipient["Remote-MTA"] = "dns; mx.example.com"
    per_recipient["Diagnostic-Code"] = f"smtp; {diagnostic}"
    status_part = Message()
    status_part["Content-Type"] = "message/delivery-status"
    status_part.attach(per_message)
    status_part.attach(per_recipient)
    report.attach(status_part)
    original = EmailMessage()
    original["From"] = "billing@firm.example"
    original["To"] = recipient
    original["Subject"] = "Invoice 2024-0042"
    original.set_content("Please find your invoice attached.")
    report.attach(MIMEMessage(original))
    return report.as_bytes()


def test_it_treats_550_5_1_1_unknown_user_as_hard_user_unknown() -> None:
    result = classify_bounce(dsn("5.1.1", "550 5.1.1 <client@example.com>: User unknown"))
    assert result.is_bounce is True
    assert result.hard is True
    assert result.reason == Reason.USER_UNKNOWN
    assert result.status == "5.1.1"
    assert result.reply_code == "550"


def test_it_treats_452_4_2_2_mailbox_full_as_soft() -> None:
    result = classify_bounce(dsn("4.2.2", "452 4.2.2 Mailbox full", action="delayed"))
    assert result.is_bounce is True
    assert result.hard is False
    assert result.reason == Reason.MAILBOX_FULL
    assert result.action == "delayed"


def test_it_treats_552_5_2_2_mailbox_full_as_soft_even_though_permanent() -> None:
    result = classify_bounce(dsn("5.2.2", "552 5.2.2 Over quota"))
    assert result.hard is False
    assert result.reason == Reason.MAILBOX_FULL
    assert result.reply_code == "552"


def test_it_treats_554_5_7_1_as_soft_policy_block() -> None:
    result = classify_bounce(
        dsn("5.7.1", "554 5.7.1 <client@example.com>: Relay access not authorized by policy")
    )
    assert result.hard is False
    assert result.reason == Reason.POLICY_BLOCKED


def test_it_treats_4_7_1_greylisting_as_soft() -> None:
    result = classify_bounce(
        dsn(
            "4.7.1",
            "450 4.7.1 <client@example.com>: Recipient address rejected: Greylisted, "
            "please try again in 300 seconds",
            action="delayed",
        )
    )
    assert result.is_bounce is True
    assert result.hard is False
    assert result.status == "4.7.1"


def test_it_sends_an_unrecognised_5_0_0_failure_to_review_and_never_hard() -> None:
    result = classify_bounce(dsn("5.0.0", "550 Frobnication of the quux did not succeed"))
    assert result.is_bounce is True
    assert result.reason == Reason.NEEDS_REVIEW
    assert result.hard is False


def test_it_reads_a_stdlib_built_multipart_report_with_lower_cased_recipient() -> None:
    result = classify_bounce(dsn("5.1.1", "550 5.1.1 No such user"))
    assert result.recipient == "client@example.com"
    assert result.diagnostic == "550 5.1.1 No such user"
    assert len(result.recipients) == 1
    assert result.recipients[0].recipient == "client@example.com"


def test_it_treats_a_no_such_domain_failure_as_hard_host_unknown() -> None:
    result = classify_bounce(dsn("5.1.2", "550 5.1.2 Host or domain name not found"))
    assert result.hard is True
    assert result.reason == Reason.HOST_UNKNOWN


def test_it_treats_a_message_too_large_failure_as_soft() -> None:
    result = classify_bounce(dsn("5.3.4", "552 5.3.4 Message size exceeds fixed limit"))
    assert result.hard is False
    assert result.reason == Reason.MESSAGE_TOO_LARGE


def test_it_does_not_count_a_delivery_notice_as_a_bounce() -> None:
    result = classify_bounce(dsn("2.0.0", "250 2.0.0 Ok: queued", action="delivered"))
    assert result.is_bounce is False
    assert result.hard is None
    assert result.reason == Reason.DELIVERED


def test_it_does_not_count_an_arf_complaint_as_a_bounce() -> None:
    report = MIMEMultipart("report", report_type="feedback-report")
    report["From"] = "fbl@isp.example"
    report["Subject"] = "Abuse report"
    report.attach(MIMEText("This is an email abuse report.\n"))
    feedback = EmailMessage()
    feedback["Content-Type"] = "message/feedback-report"
    feedback.set_payload("Feedback-Type: abuse\nVersion: 1\nOriginal-Rcpt-To: Client@Example.com\n")
    report.attach(feedback)
    result = classify_bounce(report.as_bytes())
    assert result.is_bounce is False
    assert result.reason == Reason.COMPLAINT
    assert result.recipient == "client@example.com"


def test_it_does_not_count_a_vacation_reply_as_a_bounce() -> None:
    reply = EmailMessage()
    reply["From"] = "Client <client@example.com>"
    reply["To"] = "billing@firm.example"
    reply["Subject"] = "Out of Office: Invoice 2024-0042"
    reply["Auto-Submitted"] = "auto-replied"
    reply.set_content("I am away until Monday.")
    result = classify_bounce(reply.as_bytes())
    assert result.is_bounce is False
    assert result.reason == Reason.AUTO_REPLY
    assert result.hard is None


def test_it_reads_a_plain_text_qmail_bounce() -> None:
    raw = (
        b"From: MAILER-DAEMON@mx.firm.example\r\n"
        b"To: billing@firm.example\r\n"
        b"Subject: failure notice\r\n\r\n"
        b"Hi. This is the qmail-send program at mx.firm.example.\r\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
        b"This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
        b"<Client@Example.com>:\r\n"
        b"192.0.2.1 does not like recipient.\r\n"
        b"Remote host said: 550 5.1.1 <client@example.com>... User unknown\r\n\r\n"
        b"--- Below this line is a copy of the message.\r\n"
    )
    result = classify_bounce(raw)
    assert result.recipient == "client@example.com"
    assert result.status == "5.1.1"
    assert result.hard is True


def test_it_keeps_an_unknown_user_reported_after_data_soft() -> None:
    result = classify_bounce(
        dsn("5.0.0", "550 Unknown user client@example.com (in reply to end of DATA command)")
    )
    assert result.hard is False


def test_it_keeps_an_unknown_user_reply_with_an_empty_address_slot_soft() -> None:
    # "550 : User unknown" is how carriers' address filters answer after DATA.
    result = classify_bounce(dsn("5.0.0", "550 : User unknown"))
    assert result.hard is False


def test_it_treats_an_unknown_user_reply_that_echoes_the_address_as_hard() -> None:
    result = classify_bounce(dsn("5.0.0", "550 <client@example.com>: User unknown"))
    assert result.hard is True
    assert result.reason == Reason.USER_UNKNOWN


def test_it_believes_a_mailbox_status_over_unknown_user_prose_without_rcpt() -> None:
    # 5.2.1 says the mailbox refused this message, not that it does not exist.
    result = classify_bounce(dsn("5.2.1", "550 5.2.1 Unknown user client@example.com"))
    assert result.hard is False


def test_it_does_not_read_the_5_5_0_relays_write_for_a_bare_550_as_evidence() -> None:
    result = classify_bounce(dsn("5.5.0", "550 Requested action not taken: mailbox unavailable"))
    assert result.hard is True
    assert result.reason == Reason.USER_UNKNOWN


def test_it_gives_each_recipient_of_a_prose_report_its_own_reason() -> None:
    # Exim-style report listing recipients without blank lines between them.
    body = (
        "A message that you sent could not be delivered to one or more of\n"
        "its recipients. This is a permanent error. The following address\n"
        "failed:\n\n"
        '"first@example.com":\n'
        "SMTP error from remote server after RCPT command:\n"
        "host: mx.example.com\n"
        "5.1.1 <first@example.com>... User Unknown\n"
        '"second@example.com":\n'
        "SMTP error from remote server after RCPT command:\n"
        "host: mx.example.com\n"
        "5.2.2 <second@example.com>... Mailbox Full\n"
    )
    report = EmailMessage()
    report["From"] = "Mail Delivery System <mailer-daemon@mail.example.net>"
    report["To"] = "billing@firm.example"
    report["Subject"] = "Mail delivery failed: returning message to sender"
    report.set_content(body)
    result = classify_bounce(report.as_bytes())
    by_recipient = {r.recipient: r for r in result.recipients}
    assert by_recipient["first@example.com"].reason == Reason.USER_UNKNOWN
    assert by_recipient["first@example.com"].hard is True
    assert by_recipient["second@example.com"].reason == Reason.MAILBOX_FULL
    assert by_recipient["second@example.com"].hard is False


def test_it_names_a_quoted_local_part_the_same_however_the_report_spells_it() -> None:
    quoted = classify_bounce(
        dsn("5.1.1", "550 5.1.1 User unknown", recipient='"Jo..Smith"@Example.com')
    )
    bare = classify_bounce(
        dsn("5.1.1", "550 5.1.1 User unknown", recipient="jo..smith@example.com")
    )
    assert quoted.recipient == bare.recipient == '"jo..smith"@example.com'


def test_it_drops_quotes_that_protect_nothing() -> None:
    result = classify_bounce(
        dsn("5.1.1", "550 5.1.1 User unknown", recipient='"jo.smith"@example.com')
    )
    assert result.recipient == "jo.smith@example.com"


def _prose(subject: str, body: str, sender: str = "MAILER-DAEMON@mx.example.net") -> bytes:
    report = EmailMessage()
    report["From"] = sender
    report["To"] = "billing@firm.example"
    report["Subject"] = subject
    report.set_content(body)
    return report.as_bytes()


def test_it_recognises_a_prose_bounce_by_the_smtp_reply_it_quotes() -> None:
    raw = _prose(
        "Undelivered Mail Returned to Sender",
        "<client@example.com>: host mx.example.com[192.0.2.1] said: 550 5.2.1 The\n"
        "    account is disabled. (in reply to RCPT TO command)\n",
    )
    result = classify_bounce(raw)
    assert result.is_bounce is True
    assert result.recipient == "client@example.com"
    assert result.status == "5.2.1"


def test_it_reads_a_japanese_report_that_the_address_does_not_exist_as_hard() -> None:
    raw = _prose(
        "\u914d\u4fe1\u4e0d\u80fd\u306e\u304a\u77e5\u3089\u305b",
        "\u4ee5\u4e0b\u306e\u30a2\u30c9\u30ec\u30b9\u3078\u306e\u30e1\u30fc\u30eb\u306f"
        "\u914d\u4fe1\u3067\u304d\u307e\u305b\u3093\u3067\u3057\u305f\u3002\n\n"
        "\u5b9b\u5148: client@example.jp\n"
        "\u7406\u7531: \u30e1\u30fc\u30eb\u30a2\u30c9\u30ec\u30b9\u306f"
        "\u5b58\u5728\u3057\u307e\u305b\u3093\u3002\n",
    )
    result = classify_bounce(raw)
    assert result.is_bounce is True
    assert result.recipient == "client@example.jp"
    assert result.reason == Reason.USER_UNKNOWN
    assert result.hard is True


def test_it_reads_a_domino_directory_miss_as_user_unknown_not_a_blocklist() -> None:
    raw = _prose(
        "DELIVERY FAILURE: User client (client@example.com) not listed in Domino Directory",
        "Your message\n\n  Subject: Invoice\n\nwas not delivered to:\n\n  client@example.com\n\n"
        "because:\n\n  User client (client@example.com) not listed in Domino Directory\n",
        sender="Postmaster@example.com",
    )
    result = classify_bounce(raw)
    assert result.reason == Reason.USER_UNKNOWN
    assert result.hard is True


def test_it_reads_an_unknown_user_in_german_as_hard() -> None:
    result = classify_bounce(dsn("5.0.0", "550 Empfaenger unbekannt"))
    assert result.reason == Reason.USER_UNKNOWN
    assert result.hard is True


def test_it_lists_every_recipient_of_a_sendmail_v5_transcript_with_its_own_verdict() -> None:
    raw = _prose(
        "Returned mail: User unknown",
        "   ----- Transcript of session follows -----\n"
        "... while talking to mx.example.com.:\n"
        ">>> RCPT To:<first@example.com>\n"
        "<<< 550 <first@example.com>... User unknown\n"
        "550 first@example.com... User unknown\n"
        ">>> RCPT To:<second@example.com>\n"
        "<<< 452 <second@example.com>... Mailbox full\n"
        "452 second@example.com... Mailbox full\n"
        "421 example.com (smtp)... Deferred: Connection timed out\n\n"
        "   ----- Unsent message follows -----\n"
        "From: billing@firm.example\nTo: first@example.com, second@example.com\n\nHello\n",
    )
    result = classify_bounce(raw)
    by_recipient = {r.recipient: r for r in result.recipients}
    assert list(by_recipient) == ["first@example.com", "second@example.com"]
    assert by_recipient["first@example.com"].hard is True
    assert by_recipient["second@example.com"].reason == Reason.MAILBOX_FULL
    assert by_recipient["second@example.com"].hard is False


def test_it_lists_every_reason_in_the_closed_public_list() -> None:
    assert set(REASONS) == {
        "user_unknown",
        "mailbox_full",
        "host_unknown",
        "message_too_large",
        "policy_blocked",
        "spam_blocked",
        "expired",
        "auto_reply",
        "complaint",
        "delivered",
        "needs_review",
        "other",
    }


def test_it_never_raises_on_garbage() -> None:
    result = classify_bounce(b"\xff\xfe\x00garbage\r\n\r\n--")
    assert result.is_bounce is False

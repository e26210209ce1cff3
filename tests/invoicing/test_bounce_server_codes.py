"""One behaviour per test for providers' own error codes and wording (``server_codes``)."""

from __future__ import annotations

from invoicing.delivery.bounces import Reason, classify_bounce
from invoicing.delivery.bounces.rules import classify_failure
from invoicing.delivery.bounces.server_codes import remote_host_from_text, server_detail
from invoicing.delivery.events import classify_reply

from .test_bounce_rules import dsn


def test_a_la_poste_code_ending_416_is_a_hard_unknown_user_whatever_the_status() -> None:
    result = classify_bounce(dsn("5.5.0", "550 5.5.0 Destinataire invalide. LPN123_416"))
    assert result.reason == Reason.USER_UNKNOWN
    assert result.hard is True


def test_an_orange_code_without_a_number_group_is_read_too() -> None:
    assert server_detail("552 5.1.1 Boite pleine. Recipient overquota. OFR_417 [417]") == (
        "mailboxfull"
    )


def test_an_orange_try_later_code_leaves_the_cause_to_the_generic_rules() -> None:
    assert server_detail("421 4.2.1 Veuillez essayer plus tard. OFR004_201") is None


def test_an_orange_service_refused_505_stays_a_system_error_not_expired() -> None:
    result = classify_bounce(dsn("4.2.0", "421 4.2.0 Service refuse, try later. OFR999_505"))
    assert result.reason == Reason.OTHER
    assert result.hard is False


def test_a_godaddy_ib_code_outweighs_a_5_1_1_status() -> None:
    diagnostic = "550 5.1.1 <client@example.com> - sent to too many recipients this hour. IB607"
    assert server_detail(diagnostic, "smtp.secureserver.net") == "speeding"
    assert classify_failure("5.1.1", "550", diagnostic, remote_host="smtp.secureserver.net") == (
        "speeding"
    )


def test_a_godaddy_ib_code_is_ignored_when_the_host_is_not_godaddy() -> None:
    assert server_detail("550 rejected IB103", "mx.example.com", "example.com") is None


def test_a_spectrum_aup_number_is_read_by_range() -> None:
    diagnostic = "550 5.1.0 sender rejected. AUP#In-1320"
    assert server_detail(diagnostic) == "toomanyconn"


def test_a_cox_aup_word_code_names_an_ip_block() -> None:
    assert server_detail("554 192.0.2.9 rejected. AUP#CXBL") == "blocked"


def test_a_cox_dnsbl_code_is_read_by_its_prefix() -> None:
    assert server_detail("554 not allowed. AUP#IPBL1010") == "blocked"


def test_an_i_ua_error_link_names_a_frozen_mailbox() -> None:
    assert server_detail("550 Mailbox is frozen. See http://mail.i.ua/err/3/") == "suspend"


def test_an_exchange_resolver_code_is_a_hard_unknown_user() -> None:
    result = classify_bounce(
        dsn("5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound; Recipient not found")
    )
    assert result.reason == Reason.USER_UNKNOWN
    assert result.hard is True


def test_an_exchange_size_limit_code_is_message_too_large() -> None:
    diagnostic = "550 5.2.3 RESOLVER.RST.RecipSizeLimit; message too large for this recipient"
    assert server_detail(diagnostic) == "exceedlimit"


def test_an_outlook_directory_edge_block_is_an_unknown_user() -> None:
    diagnostic = "550 5.4.1 Recipient address rejected: Access denied. AS(201806281)"
    assert server_detail(diagnostic, "mx.eur.protection.outlook.com") == "userunknown"


def test_an_outlook_network_block_list_code_is_a_block() -> None:
    diagnostic = "550 5.7.1 messages from [192.0.2.1] weren't sent. Contact your ISP (S3150)."
    assert server_detail(diagnostic, "mx4.hotmail.com") == "blocked"


def test_a_gmail_disabled_account_is_suspended_not_unknown() -> None:
    diagnostic = "550 5.2.1 The email account that you tried to reach is disabled. - gsmtp"
    assert server_detail(diagnostic, "gmail-smtp-in.l.google.com") == "suspend"


def test_gmail_is_recognised_by_its_gsmtp_suffix_without_a_host() -> None:
    diagnostic = "550 5.7.1 This message is likely unsolicited mail. abc123 - gsmtp"
    assert server_detail(diagnostic) == "spamdetected"


def test_a_yahoo_bracket_code_names_a_block_list() -> None:
    diagnostic = "553 5.7.1 [BL21] Connections will not be accepted from 192.0.2.3"
    assert server_detail(diagnostic, "mta7.am0.yahoodns.net") == "blocked"


def test_an_icloud_greeting_names_the_provider_inside_the_reply() -> None:
    diagnostic = "554 mx01-smtpin002.me.com ESMTP not accepting connections"
    assert server_detail(diagnostic, "relay.example.net") == "blocked"


def test_a_qq_frequency_limit_is_found_by_the_recipient_domain() -> None:
    result = server_detail("550 Ip frequency limited", None, "qq.com")
    assert result == "toomanyconn"


def test_a_mimecast_reason_string_is_read_on_a_mimecast_host() -> None:
    diagnostic = "550 Rejected by header based Blocked Senders - envelope blocked"
    assert server_detail(diagnostic, "eu-smtp-inbound-1.mimecast.com") == "rejected"


def test_a_messagelabs_invalid_recipient_is_an_unknown_user() -> None:
    diagnostic = "550-Invalid recipient <client@example.com> (#5.1.1)"
    assert server_detail(diagnostic, "server-5.tower-1.messagelabs.com") == "userunknown"


def test_a_facebook_response_code_is_read_on_a_facebook_host() -> None:
    assert server_detail("550 5.1.1 RCP-P1 unknown", "mx.facebook.com") == "userunknown"


def test_docomo_unknown_user_after_data_is_a_rejection() -> None:
    diagnostic = "550 Unknown user client@docomo.ne.jp"
    assert server_detail(diagnostic, "mfsmax.docomo.ne.jp", None, "5.0.0", "DATA") == "rejected"


def test_a_provider_unknown_user_phrase_after_data_is_only_filtered() -> None:
    assert server_detail("552 mailbox not found", "mta5.yahoodns.net", None, None, "DATA") == (
        "filtered"
    )


def test_a_provider_unknown_user_code_after_data_stays_unknown_user() -> None:
    assert server_detail("550 Invalid recipient. LPN007_416", None, None, None, "DATA") == (
        "userunknown"
    )


def test_a_provider_unknown_user_at_mail_from_is_our_sender_rejected() -> None:
    assert server_detail("550 Invalid recipient. OFR_416", None, None, None, "MAIL") == ("rejected")


def test_a_lookalike_domain_is_not_the_provider() -> None:
    assert server_detail("550 account disabled", "mx.notsecureserver.net") is None


def test_the_remote_host_is_read_from_postfix_prose() -> None:
    text = "host mx1.example.com[192.0.2.1] said: 550 no"
    assert remote_host_from_text(text) == "mx1.example.com"


def test_the_remote_host_is_read_from_a_sendmail_transcript() -> None:
    assert remote_host_from_text("... while talking to mx.example.org.:\n>>> DATA") == (
        "mx.example.org"
    )


def test_text_without_a_provider_code_is_left_to_the_generic_rules() -> None:
    assert server_detail("550 5.1.1 <client@example.com>: User unknown", "mx.example.com") is None


def test_an_smtp_refusal_is_read_with_the_recipients_provider_codes() -> None:
    # The sending path and ESP webhooks know the recipient, not the remote host.
    at_qq = classify_reply("550", "", "550 Ip frequency limited", recipient="client@qq.com")
    elsewhere = classify_reply(
        "550", "", "550 Ip frequency limited", recipient="client@example.com"
    )
    assert at_qq.reason == "toomanyconn"
    assert elsewhere.reason != "toomanyconn"

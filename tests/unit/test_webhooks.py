"""The webhook rules of the core: signature, backoff, and which notify_urls are accepted."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from urllib.parse import urlsplit

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reportcore.errors import ValidationError
from reportcore.webhooks import (
    AllowedHost,
    AttemptOutcome,
    Delivery,
    DeliveryState,
    Notification,
    SendResult,
    WebhookRules,
    after_attempt,
    backoff,
    check_notify_url,
    delivery_headers,
    event_body,
    notification_of,
    parse_allowed_hosts,
    schedule,
    signature,
    verify_signature,
)

from ..clock import pinned_now

SECRET = b"webhook-secret-0123456789"
BODY = b'{"type":"report_job.succeeded","job":{"id":"j1"}}'
NOW = int(pinned_now().timestamp())
# the tests read the tests' clock: test_any_day.py runs them again on awkward days
pytestmark = pytest.mark.clock

# --- signature ---


def test_the_signature_is_t_and_the_hex_hmac_sha256_of_t_dot_body() -> None:
    header = signature(SECRET, 1767225600, BODY)
    expected = hmac.new(SECRET, b"1767225600." + BODY, hashlib.sha256).hexdigest()
    assert header == f"t=1767225600,v1={expected}"
    assert re.fullmatch(r"t=\d+,v1=[0-9a-f]{64}", header)


def test_a_signature_verifies_with_the_same_secret_body_and_a_recent_t() -> None:
    header = signature(SECRET, NOW, BODY)
    assert verify_signature(SECRET, header, BODY, now=NOW + 10)
    # the header's parts may come in any order, with spaces, and with several v1 (key rotation)
    mac = header.split("v1=")[1]
    assert verify_signature(SECRET, f"v1={'0' * 64}, v1={mac} ,t={NOW}", BODY, now=NOW)


@pytest.mark.parametrize(
    "change",
    ["other secret", "other body", "stale t", "future t", "no v1", "two t", "t not a number"],
)
def test_a_signature_does_not_verify_when_anything_differs(change: str) -> None:
    header = signature(SECRET, NOW, BODY)
    secret, body, now = SECRET, BODY, NOW
    if change == "other secret":
        secret = b"another-secret-0123456789"
    elif change == "other body":
        body = BODY.replace(b"j1", b"j2")
    elif change == "stale t":
        now = NOW + 301
    elif change == "future t":
        now = NOW - 301
    elif change == "no v1":
        header = f"t={NOW}"
    elif change == "two t":
        header = f"t={NOW},{header}"
    else:
        header = header.replace(f"t={NOW}", "t=\uff11\uff12")  # fullwidth digits
    assert not verify_signature(secret, header, body, now=now)


def test_a_missing_or_empty_header_does_not_verify() -> None:
    assert not verify_signature(SECRET, None, BODY, now=NOW)
    assert not verify_signature(SECRET, "", BODY, now=NOW)
    assert not verify_signature(SECRET, "garbage", BODY, now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        "t=" + "9" * 400 + ",v1=00",  # a float of it overflows
        "t=" + "1" * 5000 + ",v1=00",  # int() refuses more than 4,300 digits
        f"t={NOW},v1=" + "\u00e9" * 64,  # compare_digest refuses non-ASCII text
        f"t={NOW},v1=" + "A" * 64,
    ],
)
def test_a_forged_header_does_not_verify_and_never_raises(header: str) -> None:
    """The documented receiver's check raised (OverflowError, ValueError, TypeError) on these:
    a 500, or a dropped connection, for anyone who reaches the receiver."""
    assert verify_signature(SECRET, header, BODY, now=NOW) is False


def test_the_body_is_the_type_and_the_job_json() -> None:
    assert event_body("report_job.failed", {"id": "j1", "status": "failed"}) == (
        b'{"type":"report_job.failed","job":{"id":"j1","status":"failed"}}'
    )


# --- backoff ---


def test_the_backoff_starts_at_the_base_and_doubles() -> None:
    rules = WebhookRules(retry_base_sec=10.0, max_attempts=8)
    assert [backoff(n, rules) for n in range(1, 8)] == [10, 20, 40, 80, 160, 320, 640]
    assert schedule(rules) == [10, 20, 40, 80, 160, 320, 640], "8 attempts, 7 waits"


def test_the_backoff_is_capped_at_an_hour_however_many_attempts_failed() -> None:
    rules = WebhookRules(retry_base_sec=10.0, max_attempts=30)
    assert backoff(9, rules) == 2560
    assert backoff(10, rules) == 3600
    assert backoff(1000, rules) == 3600
    assert max(schedule(rules)) == 3600


def test_a_sub_second_base_doubles_too() -> None:
    rules = WebhookRules(retry_base_sec=0.2, max_attempts=4)
    assert schedule(rules) == pytest.approx([0.2, 0.4, 0.8])


def _delivery(attempts: int = 0) -> Delivery:
    now = pinned_now()
    return Delivery(
        id="d1",
        job_id="j1",
        event="report_job.succeeded",
        url="https://hooks.example.com/x",
        attempts=attempts,
        next_attempt_at=now,
        created_at=now,
        updated_at=now,
    )


def test_a_failed_attempt_waits_its_backoff_and_the_last_one_gives_up() -> None:
    rules = WebhookRules(retry_base_sec=10.0, max_attempts=3)
    now = pinned_now()
    first = after_attempt(_delivery(0), SendResult(status=503), BODY, now, rules)
    assert first.state is DeliveryState.PENDING and first.attempts == 1
    assert first.next_attempt_at == now + dt.timedelta(seconds=10)
    assert first.last_error == "HTTP 503"
    second = after_attempt(
        _delivery(1), SendResult(error="timeout (ReadTimeout)"), BODY, now, rules
    )
    assert second.state is DeliveryState.PENDING
    assert second.next_attempt_at == now + dt.timedelta(seconds=20)
    last = after_attempt(_delivery(2), SendResult(status=500), BODY, now, rules)
    assert last.state is DeliveryState.FAILED and last.attempts == 3
    assert last.next_attempt_at is None and last.last_error == "HTTP 500"


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_delivers(status: int) -> None:
    done = after_attempt(
        _delivery(0), SendResult(status=status), BODY, pinned_now(), WebhookRules()
    )
    assert done.state is DeliveryState.DELIVERED and done.last_error is None


@pytest.mark.parametrize("status", [199, 301, 302, 400, 404, 429, 500, 503])
def test_anything_else_fails_the_attempt_redirects_too(status: int) -> None:
    assert not SendResult(status=status).ok


def test_a_long_error_is_cut() -> None:
    assert len(SendResult(error="x" * 10_000).describe()) == 500


# --- allowed hosts ---

ALLOWED = parse_allowed_hosts(
    "hooks.example.com, HTTP://Internal.Example, http://127.0.0.1, [fd00::1], 10.1.2.3"
)


def test_the_allowed_hosts_are_parsed_lower_case_with_http_marked() -> None:
    # parsed here, not only at import (ALLOWED): a mutation run judges what runs in a test
    assert parse_allowed_hosts(
        "hooks.example.com, HTTP://Internal.Example, http://127.0.0.1, [fd00::1], 10.1.2.3"
    ) == (
        AllowedHost("hooks.example.com"),
        AllowedHost("internal.example", plain_http=True),
        AllowedHost("127.0.0.1", plain_http=True),
        AllowedHost("fd00::1"),
        AllowedHost("10.1.2.3"),
    )
    assert parse_allowed_hosts(" , ") == ()


@pytest.mark.parametrize(
    "entry", ["hooks.example.com:0", "hooks.example.com:65536", "hooks.example.com/x", "a@b", "a b"]
)
def test_an_allowed_host_with_a_bad_port_a_path_user_or_space_is_refused(entry: str) -> None:
    with pytest.raises(ValueError):
        parse_allowed_hosts(entry)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/reports",
        "https://HOOKS.example.com./reports?x=1",
        "https://hooks.example.com:8443/reports",
        "http://internal.example/hook",
        "https://internal.example/hook",
        "http://127.0.0.1:9000/hook",
        "https://[fd00::1]/hook",
        "https://[fd00:0::1]/hook",
        "https://10.1.2.3/hook",
    ],
)
def test_a_url_of_a_listed_host_is_accepted(url: str) -> None:
    assert check_notify_url(url, ALLOWED) == url


def _refused(url: str, allowed: tuple[AllowedHost, ...] = ALLOWED) -> str:
    with pytest.raises(ValidationError) as caught:
        check_notify_url(url, allowed)
    assert caught.value.field == "notify_url"
    assert caught.value.message.startswith("notify_url ")
    return caught.value.message


def test_a_wider_allowed_list_never_refuses_what_a_narrower_one_took() -> None:
    """Of a host's entries the one naming the port was preferred over the one allowing plain
    http: adding `hooks.example.com:8443` to `http://hooks.example.com` refused
    http://hooks.example.com:8443 (pending deliveries to it failed at once)."""
    url = "http://hooks.example.com:8443/x"
    assert check_notify_url(url, parse_allowed_hosts("http://hooks.example.com")) == url
    wider = parse_allowed_hosts("hooks.example.com:8443,http://hooks.example.com")
    assert check_notify_url(url, wider) == url
    assert check_notify_url("https://hooks.example.com:8443/x", wider)


def test_without_allowed_hosts_webhooks_are_off() -> None:
    assert "webhooks are off" in _refused("https://hooks.example.com/x", ())


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/x",
        "https://hooks.example.com.evil.example/x",
        "https://sub.hooks.example.com/x",
        "https://2130706433/x",  # 127.0.0.1 spelled as a number: a name, and not listed
        "https://8.8.8.8/x",
    ],
)
def test_a_host_not_listed_is_refused(url: str) -> None:
    assert "is not in REPORT_WEBHOOK_ALLOWED_HOSTS" in _refused(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.2/x",
        "https://10.0.0.1/x",
        "https://192.168.1.1/x",
        "https://172.16.0.1/x",
        "https://169.254.169.254/latest/meta-data",
        "https://0.0.0.0/x",
        "https://[::1]/x",
        "https://[::ffff:127.0.0.1]/x",
        "https://[fe80::1]/x",
        "https://[fd00::2]/x",
    ],
)
def test_a_private_or_loopback_literal_not_listed_is_refused(url: str) -> None:
    assert "private or loopback address" in _refused(url)


def test_plain_http_needs_a_host_listed_as_http() -> None:
    assert "must use https" in _refused("http://hooks.example.com/x")
    assert "must use https" in _refused("http://10.1.2.3/x")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://hooks.example.com/x", "https:// URL"),
        ("hooks.example.com/x", "https:// URL"),
        ("https:///x", "https:// URL"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("https://hooks.example.com/a b", "spaces"),
        ("https://hooks.example.com/\r\nX: y", "spaces"),
        ("https://hooks.example.com:99999/x", "valid URL"),
        ("https://hooks.example.com:port/x", "valid URL"),
        ("https://hooks.example.com/" + "x" * 2048, "2048"),
        ("", "2048"),
    ],
)
def test_a_malformed_url_is_refused(url: str, why: str) -> None:
    assert why in _refused(url)


@given(
    secret=st.binary(min_size=16, max_size=64),
    body=st.binary(max_size=2048),
    stamp=st.integers(min_value=0, max_value=2**40),
    skew=st.integers(min_value=-300, max_value=300),
)
def test_every_signature_verifies_within_the_tolerance_and_no_other_body_does(
    secret: bytes, body: bytes, stamp: int, skew: int
) -> None:
    header = signature(secret, stamp, body)
    assert verify_signature(secret, header, body, now=stamp + skew)
    assert not verify_signature(secret, header, body + b" ", now=stamp + skew)


# --- what the list of allowed hosts accepts, exactly ---


def test_an_allowed_host_loses_its_https_prefix_and_trailing_dot_and_keeps_https_required() -> None:
    assert parse_allowed_hosts("https://Hooks.Example.COM.,hooks2.example.com.") == (
        AllowedHost("hooks.example.com"),
        AllowedHost("hooks2.example.com"),
    )


def test_empty_entries_between_commas_are_skipped_not_the_end_of_the_list() -> None:
    assert parse_allowed_hosts("a.example,, ,b.example") == (
        AllowedHost("a.example"),
        AllowedHost("b.example"),
    )


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            "hooks.example.com:84x3",
            "'hooks.example.com:84x3' has no port 1..65535 after its colon",
        ),
        ("http://", "'http://' is not a host name (host or host:port, no path or user)"),
        ("[fd00::1", "'[fd00::1' is not a host name (host or host:port, no path or user)"),
        (
            "hooks.example.com?x",
            "'hooks.example.com?x' is not a host name (host or host:port, no path or user)",
        ),
        (
            "hooks.example.com#x",
            "'hooks.example.com#x' is not a host name (host or host:port, no path or user)",
        ),
        (" a b ", "'a b' is not a host name"),
    ],
)
def test_a_bad_allowed_host_is_refused_naming_the_entry(entry: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_allowed_hosts(f"ok.example,{entry}")
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "notify_url must be a URL of 1..2048 characters"),
        (
            "https://hooks.example.com/" + "x" * 2023,
            "notify_url must be a URL of 1..2048 characters",
        ),
        (
            "https://hooks.example.com/a b",
            "notify_url must not contain spaces or control characters",
        ),
        (
            "https://hooks.example.com/\x1f",
            "notify_url must not contain spaces or control characters",
        ),
        (
            "https://hooks.example.com/\x7f",
            "notify_url must not contain spaces or control characters",
        ),
        ("https://hooks.example.com:port/x", "notify_url is not a valid URL"),
        ("ftp://hooks.example.com/x", "notify_url must be an https:// URL with a host"),
        ("https://user:pw@hooks.example.com/x", "notify_url must not carry credentials"),
        ("https://user@hooks.example.com/x", "notify_url must not carry credentials"),
        ("https://:pw@hooks.example.com/x", "notify_url must not carry credentials"),
        ("https://hooks.example.com/x#f", "notify_url must not have a #fragment"),
        (
            "https://192.168.1.1/x",
            "notify_url names a private or loopback address that REPORT_WEBHOOK_ALLOWED_HOSTS "
            "does not list",
        ),
        (
            "https://Evil.example./x",
            "notify_url host 'evil.example' is not in REPORT_WEBHOOK_ALLOWED_HOSTS",
        ),
        (
            "http://hooks.example.com/x",
            "notify_url must use https (http only for hosts listed as http://hooks.example.com)",
        ),
    ],
)
def test_a_refused_notify_url_gets_its_exact_message(url: str, message: str) -> None:
    assert _refused(url) == message


def test_the_message_of_webhooks_off_names_the_setting() -> None:
    assert _refused("https://hooks.example.com/x", ()) == (
        "notify_url is not accepted: webhooks are off (REPORT_WEBHOOK_ALLOWED_HOSTS is empty)"
    )


def test_a_url_of_exactly_2048_characters_with_any_printable_ascii_is_accepted() -> None:
    url = "https://hooks.example.com/!~" + "x" * 2020
    assert len(url) == 2048
    assert check_notify_url(url, ALLOWED) == url


@pytest.mark.parametrize(
    "url",
    [
        "https://224.0.0.1/x",  # multicast, not private
        "https://[ff02::1]/x",  # multicast
        "https://[4000::1]/x",  # reserved, not private
        "https://[::]/x",  # unspecified
    ],
)
def test_a_multicast_reserved_or_unspecified_literal_not_listed_is_refused(url: str) -> None:
    assert "private or loopback address" in _refused(url)


def test_a_public_ipv4_mapped_into_ipv6_is_judged_as_its_ipv4_address() -> None:
    # ::ffff:8.8.8.8 is "reserved" as an IPv6 address, but it is 8.8.8.8: public, just unlisted
    assert "is not in REPORT_WEBHOOK_ALLOWED_HOSTS" in _refused("https://[::ffff:8.8.8.8]/x")


def test_a_listed_ip_literal_matches_by_address_and_a_listed_name_by_name() -> None:
    allowed = parse_allowed_hosts("10.1.2.3,hooks.example.com")
    assert check_notify_url("https://10.1.2.3/x", allowed) == "https://10.1.2.3/x"
    assert "private or loopback" in _refused("https://10.1.2.4/x", allowed)


# --- the edges of a signature's tolerance, and the header of an attempt ---


def test_a_t_exactly_the_tolerance_away_verifies_and_one_second_more_does_not() -> None:
    header = signature(SECRET, NOW, BODY)
    assert verify_signature(SECRET, header, BODY, now=NOW + 300)
    assert verify_signature(SECRET, header, BODY, now=NOW - 300)
    assert verify_signature(SECRET, header, BODY, now=NOW + 10, tolerance_sec=10)
    assert not verify_signature(SECRET, header, BODY, now=NOW + 11, tolerance_sec=10)
    assert not verify_signature(SECRET, header, BODY, now=NOW - 11, tolerance_sec=10)


def test_parts_without_an_equals_sign_are_ignored_and_a_t_must_be_plain_digits() -> None:
    mac = signature(SECRET, NOW, BODY).split("v1=")[1]
    assert verify_signature(SECRET, f"scheme,t={NOW},v1={mac}", BODY, now=NOW)
    assert not verify_signature(SECRET, f"t=+{NOW},v1={mac}", BODY, now=NOW)
    assert not verify_signature(SECRET, f"t=,v1={mac}", BODY, now=NOW)
    assert not verify_signature(SECRET, f"t={NOW},v2={mac}", BODY, now=NOW)


def test_an_attempt_carries_json_its_signature_and_the_same_delivery_id_twice() -> None:
    assert delivery_headers(SECRET, "d-1", "report_job.failed", NOW, BODY) == {
        "Content-Type": "application/json",
        "X-FarmIQ-Signature": signature(SECRET, NOW, BODY),
        "X-FarmIQ-Delivery": "d-1",
        "Idempotency-Key": "d-1",
        "X-FarmIQ-Event": "report_job.failed",
    }


# --- the edges of an attempt ---


def test_300_is_not_a_success_and_299_is() -> None:
    assert not SendResult(status=300).ok
    assert SendResult(status=299).ok
    assert not SendResult().ok, "no status: the request never got an answer"


def test_an_attempt_number_under_one_waits_the_base() -> None:
    rules = WebhookRules(retry_base_sec=10.0)
    assert backoff(0, rules) == 10.0
    assert backoff(-3, rules) == 10.0


def test_each_outcome_of_an_attempt_keeps_the_body_sent_and_the_time_of_the_attempt() -> None:
    rules = WebhookRules(retry_base_sec=10.0, max_attempts=2)
    now = pinned_now()
    assert after_attempt(_delivery(0), SendResult(status=204), BODY, now, rules) == AttemptOutcome(
        state=DeliveryState.DELIVERED,
        attempts=1,
        next_attempt_at=None,
        last_error=None,
        body=BODY,
        at=now,
    )
    assert after_attempt(_delivery(0), SendResult(status=503), BODY, now, rules) == AttemptOutcome(
        state=DeliveryState.PENDING,
        attempts=1,
        next_attempt_at=now + dt.timedelta(seconds=10),  # the first backoff (rules above)
        last_error="HTTP 503",
        body=BODY,
        at=now,
    )
    assert after_attempt(_delivery(1), SendResult(error="refused"), BODY, now, rules) == (
        AttemptOutcome(
            state=DeliveryState.FAILED,
            attempts=2,
            next_attempt_at=None,
            last_error="refused",
            body=BODY,
            at=now,
        )
    )


def test_a_delivery_shows_its_state_attempts_and_last_error_to_clients() -> None:
    delivery = msgspec.structs.replace(
        _delivery(3), state=DeliveryState.FAILED, last_error="HTTP 410"
    )
    assert notification_of(delivery) == Notification(
        state=DeliveryState.FAILED, attempts=3, last_error="HTTP 410"
    )


def test_the_backoff_doubles_exactly_however_small_the_base_and_caps_however_many_attempts() -> (
    None
):
    tiny = WebhookRules(retry_base_sec=1e-18)
    assert backoff(65, tiny) == pytest.approx(18.446744073709553), "1e-18 * 2**64, under the cap"
    assert backoff(66, tiny) == pytest.approx(36.893488147419106)
    assert backoff(2000, WebhookRules(retry_base_sec=10.0)) == 3600.0
    assert backoff(10**9, WebhookRules(retry_base_sec=10.0, max_backoff_sec=60.0)) == 60.0


def test_an_ipv6_allowed_host_may_be_bracketed_or_bare() -> None:
    assert parse_allowed_hosts("[FD00::2],fd00::1,https://[::ffff:10.0.0.5]") == (
        AllowedHost("fd00::2"),
        AllowedHost("fd00::1"),
        AllowedHost("::ffff:10.0.0.5"),
    )


def test_a_header_with_two_t_does_not_verify_even_if_one_is_malformed() -> None:
    mac = signature(SECRET, NOW, BODY).split("v1=")[1]
    assert not verify_signature(SECRET, f"t=1=2,t={NOW},v1={mac}", BODY, now=NOW)


def test_an_allowed_host_may_name_a_port_and_then_allows_that_port_alone() -> None:
    allowed = parse_allowed_hosts(
        "hooks.example.com:8443,http://127.0.0.1:9000,[fd00::1]:8080,open.example"
    )
    assert allowed == (
        AllowedHost("hooks.example.com", port=8443),
        AllowedHost("127.0.0.1", plain_http=True, port=9000),
        AllowedHost("fd00::1", port=8080),
        AllowedHost("open.example"),
    )
    for url in (
        "https://hooks.example.com:8443/x",
        "http://127.0.0.1:9000/hook",
        "https://[fd00::1]:8080/hook",
        "https://open.example:8443/any-port-when-none-is-listed",
    ):
        assert check_notify_url(url, allowed) == url
    for url, ports in (
        ("https://hooks.example.com/x", "8443"),  # https's 443 is not 8443
        ("https://hooks.example.com:8444/x", "8443"),
        ("http://127.0.0.1:5432/", "9000"),  # the database next door
        ("https://[fd00::1]/hook", "8080"),
    ):
        with pytest.raises(ValidationError) as refused:
            check_notify_url(url, allowed)
        host = urlsplit(url).hostname
        assert refused.value.message == (
            f"notify_url must use the port REPORT_WEBHOOK_ALLOWED_HOSTS lists for {host!r} "
            f"({ports})"
        )


def test_a_host_listed_with_two_ports_takes_either() -> None:
    allowed = parse_allowed_hosts("hooks.example.com:8443,hooks.example.com:9443")
    assert check_notify_url("https://hooks.example.com:9443/x", allowed)
    with pytest.raises(ValidationError, match=r"\(8443, 9443\)$"):
        check_notify_url("https://hooks.example.com/x", allowed)


@pytest.mark.parametrize(
    "hosts",
    [
        "hooks.example.com,http://hooks.example.com:8080",
        "http://hooks.example.com:8080,hooks.example.com",
    ],
)
def test_the_order_of_the_allowed_hosts_never_changes_what_is_accepted(hosts: str) -> None:
    """The first entry for the host won: listed https-only first, it refused the http port
    the second entry allows."""
    allowed = parse_allowed_hosts(hosts)
    for url in ("http://hooks.example.com:8080/x", "https://hooks.example.com/x"):
        assert check_notify_url(url, allowed) == url
    with pytest.raises(ValidationError, match="must use https"):
        check_notify_url("http://hooks.example.com/x", allowed)


def test_a_listed_port_is_compared_with_the_schemes_default_when_the_url_names_none() -> None:
    allowed = parse_allowed_hosts("secure.example:443,http://plain.example:80,odd.example:1")
    for url in (
        "https://secure.example/x",  # https without a port is 443
        "https://secure.example:443/x",
        "http://plain.example/x",  # http without a port is 80
        "https://odd.example:1/x",  # the lowest port
    ):
        assert check_notify_url(url, allowed) == url
    with pytest.raises(ValidationError, match=r"\(80\)$"):
        check_notify_url("http://plain.example:443/x", allowed)
    with pytest.raises(ValidationError, match=r"\(443\)$"):
        check_notify_url("https://secure.example:80/x", allowed)


@pytest.mark.parametrize("url", ["https://secure.example:0/x", "http://plain.example:00/x"])
def test_a_url_naming_port_0_is_refused_not_read_as_the_schemes_port(url: str) -> None:
    """`parts.port or 443` read :0 as 443: the URL passed a host:443 entry, and every
    delivery then failed connecting to port 0."""
    allowed = parse_allowed_hosts("secure.example:443,http://plain.example:80")
    with pytest.raises(ValidationError, match="must not name port 0"):
        check_notify_url(url, allowed)


def test_ports_1_and_65535_may_be_listed_and_none_beyond() -> None:
    assert parse_allowed_hosts("a.example:1,b.example:65535") == (
        AllowedHost("a.example", port=1),
        AllowedHost("b.example", port=65535),
    )

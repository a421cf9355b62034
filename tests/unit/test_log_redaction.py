"""The redaction's shortcut: text the quick pre-search passes over must be text that none of the
patterns would have changed, so skipping them can never let a secret through."""

from __future__ import annotations

import logging
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entrypoints.runtime import logs

# pieces the patterns look for, so that generated text often comes near a match
NEAR_SECRETS = st.sampled_from(
    [
        "eyJ",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln",
        ".",
        "token=",
        "ACCESS_TOKEN=",
        "Secret=",
        "password=",
        "PASSWD=",
        "Bearer ",
        "basic ",
        "amqp://guest:",
        "postgresql://u:",
        "@host",
        "://",
        " ",
        "&",
    ]
)
TEXT = st.lists(st.one_of(NEAR_SECRETS, st.text(max_size=8)), max_size=12).map("".join)


def every_pattern(text: str) -> str:
    for pattern, replacement in logs._PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@given(TEXT)
def test_the_pre_search_skips_only_text_no_pattern_would_change(text: str) -> None:
    assert logs.redact(text) == every_pattern(text)


def test_each_kind_of_secret_is_still_redacted() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    line = (
        f"GET /file?token=abc123 auth=Bearer {jwt} "
        "url=amqp://guest:hunter2@mq:5672/%2F Basic dXNlcjpwdw=="
    )
    out = logs.redact(line)
    for secret in ("abc123", jwt, "hunter2", "dXNlcjpwdw=="):
        assert secret not in out


# --- long values: cut before redaction, and redaction in linear time (issue 26, row 6) ---


def _cpu_seconds_to_redact(text: str) -> float:
    began = time.process_time()
    for pattern, replacement in logs._PATTERNS:
        pattern.sub(replacement, text)
    return time.process_time() - began


@pytest.mark.parametrize(
    "run", ["a" * 200_000, "ab-" * 70_000, "token" * 40_000, "ab" * 100_000 + "://"]
)
def test_a_long_run_of_scheme_characters_is_redacted_in_linear_time(run: str) -> None:
    # quadratic in the run's length, the URL pattern took ~3 s of CPU at 60,000 characters,
    # ~30 s at 200,000; linear, all four patterns take milliseconds
    assert _cpu_seconds_to_redact(f"GET http://feed/api?cursor={run}&limit=100") < 1.0


def test_a_record_with_an_upstream_url_of_60_kb_is_written_cut_and_redacted() -> None:
    cursor = "Q" * 60_000
    url = f"http://bob:pw@feed/api/v1/feed/intake?token=abc&cursor={cursor}"
    record = logging.LogRecord(
        "reportsvc.upstream", logging.WARNING, "", 0, "retrying %s", (url,), None
    )
    record.url = url  # a field passed with extra=
    logs.RedactingFilter().filter(record)
    for written in (record.msg, record.url):
        assert isinstance(written, str)
        assert len(written) < logs.MAX_LOGGED_CHARS + 100
        assert written.endswith("more characters cut]")
        assert "pw@" not in written and "token=abc" not in written
        assert cursor not in written


def test_a_jwt_cut_inside_its_payload_is_still_redacted() -> None:
    header, payload = "eyJhbGciOiJIUzI1NiJ9", "eyJzdWIiOiJ1c2VyLTEifQ"
    text = f"Authorization header {header}.{payload}.sig" + "x" * 5000
    cut_at = len("Authorization header ") + len(header) + 1 + 10  # ten characters of the payload
    written = logs.redact(text, limit=cut_at)
    assert written.startswith(f"Authorization header {logs.REDACTED}")
    assert written.endswith("[5016 more characters cut]")
    assert "eyJ" not in written


def test_text_up_to_the_limit_is_kept_whole() -> None:
    text = "k" * logs.MAX_LOGGED_CHARS
    assert logs.cut(text) == text
    assert logs.cut(text + "k") == text + "...[1 more characters cut]"

"""Webhooks at the HTTP edge: notify_url on create, the job JSON's notification, the settings
and the OpenAPI document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from entrypoints.settings import ConfigError, Settings, load_settings
from reportcore.requests import ListQuery
from reportcore.webhooks import AllowedHost, DeliveryState, parse_allowed_hosts, verify_signature

from .api_support import FEED_BODY, JOBS, TENANT, ApiWorld, api_world, feed_record

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days

URL = "https://hooks.example.com/reports"
SECRET = "webhook-secret-0123456789"


@pytest.fixture
def world() -> Iterator[ApiWorld]:
    with api_world(
        webhook_allowed_hosts=parse_allowed_hosts("hooks.example.com"), webhook_secret=SECRET
    ) as w:
        yield w


def test_a_notify_url_is_a_400_naming_it_when_webhooks_are_off() -> None:
    with api_world() as off:
        answer = off.client.post(JOBS, json={**FEED_BODY, "notify_url": URL}, headers=off.headers())
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["message"].startswith("notify_url is not accepted: webhooks are off")


@pytest.mark.parametrize(
    "url", ["https://evil.example/x", "https://10.0.0.1/x", "http://hooks.example.com/x", 7]
)
def test_a_notify_url_not_allowed_is_a_400(world: ApiWorld, url: Any) -> None:
    answer = world.client.post(JOBS, json={**FEED_BODY, "notify_url": url}, headers=world.headers())
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "VALIDATION_ERROR"
    assert "notify_url" in answer.json()["error"]["message"]
    assert world.jobs.find(TENANT, ListQuery()) == [], "no job was stored"


def test_the_job_json_echoes_notify_url_and_shows_its_notification(world: ApiWorld) -> None:
    job = world.create({**FEED_BODY, "notify_url": URL})
    assert job["notify_url"] == URL and job["notification"] is None
    world.run_queued([feed_record(i) for i in range(3)])
    shown = world.client.get(f"{JOBS}/{job['id']}", headers=world.headers()).json()
    assert shown["status"] == "succeeded"
    assert shown["notification"] == {"state": "pending", "attempts": 0, "last_error": None}
    listed = world.client.get(JOBS, headers=world.headers()).json()["items"]
    assert [j["notification"] for j in listed] == [shown["notification"]]


def test_a_job_without_notify_url_shows_neither_field(world: ApiWorld) -> None:
    job = world.create()
    assert "notify_url" not in job and "notification" not in job
    world.run_queued([feed_record(0)])
    shown = world.client.get(f"{JOBS}/{job['id']}", headers=world.headers()).json()
    assert "notify_url" not in shown and "notification" not in shown
    assert world.jobs.outbox.deliveries() == []


def test_a_cancel_in_the_api_puts_the_cancelled_event_in_the_outbox(world: ApiWorld) -> None:
    job = world.create({**FEED_BODY, "notify_url": URL})
    answer = world.client.post(f"{JOBS}/{job['id']}/cancel", headers=world.headers())
    assert answer.status_code == 200
    assert answer.json()["notification"] == {"state": "pending", "attempts": 0, "last_error": None}
    [delivery] = world.jobs.outbox.deliveries()
    assert delivery.event == "report_job.cancelled" and delivery.url == URL
    assert delivery.state is DeliveryState.PENDING


def test_the_openapi_document_describes_notify_url_and_notification(world: ApiWorld) -> None:
    document = json.loads(world.client.get("/api-docs/openapi.json").text)
    schemas = document["components"]["schemas"]
    create = next(s for name, s in schemas.items() if name.endswith("CreateRequest"))
    assert "notify_url" in create["properties"]
    job = next(s for name, s in schemas.items() if name.endswith("JobOut"))
    assert {"notify_url", "notification"} <= set(job["properties"])
    assert "notify_url" not in job.get("required", [])


# --- settings ---


def test_webhooks_are_off_by_default_with_eight_attempts_from_ten_seconds() -> None:
    settings = load_settings({})
    assert settings.webhook_allowed_hosts is None
    assert (settings.webhook_max_attempts, settings.webhook_retry_base_sec) == (8, 10.0)


def test_the_webhook_settings_are_read_from_the_environment() -> None:
    settings = load_settings(
        {
            "REPORT_WEBHOOK_ALLOWED_HOSTS": "hooks.example.com,http://10.0.0.7",
            "REPORT_WEBHOOK_SECRET": SECRET,
            "REPORT_WEBHOOK_MAX_ATTEMPTS": "3",
            "REPORT_WEBHOOK_RETRY_BASE_SEC": "0.5",
        }
    )
    assert settings == Settings(
        webhook_allowed_hosts=(
            AllowedHost("hooks.example.com"),
            AllowedHost("10.0.0.7", plain_http=True),
        ),
        webhook_secret=SECRET,
        webhook_max_attempts=3,
        webhook_retry_base_sec=0.5,
    )


def test_allowed_hosts_without_a_secret_stop_the_process() -> None:
    with pytest.raises(ConfigError, match=r"^REPORT_WEBHOOK_SECRET is required when"):
        load_settings({"REPORT_WEBHOOK_ALLOWED_HOSTS": "hooks.example.com"})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REPORT_WEBHOOK_ALLOWED_HOSTS": "hooks.example.com:0"}, "REPORT_WEBHOOK_ALLOWED_HOSTS"),
        ({"REPORT_WEBHOOK_SECRET": "short"}, "at least 16"),
        ({"REPORT_WEBHOOK_MAX_ATTEMPTS": "0"}, "at least 1"),
        ({"REPORT_WEBHOOK_RETRY_BASE_SEC": "-1"}, "a number of seconds"),
    ],
)
def test_a_malformed_webhook_setting_stops_the_process(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(env)


def test_the_workers_sender_posts_the_job_json_as_the_api_shows_it(world: ApiWorld) -> None:
    from entrypoints.worker import Worker
    from reportcore.testing import RecordingWebhookSender

    job = world.create({**FEED_BODY, "notify_url": URL})
    world.run_queued([feed_record(0)])
    shown = world.client.get(f"{JOBS}/{job['id']}", headers=world.headers()).json()
    done = Worker(world.container.reports(), world.container.settings()).deliver_once()
    assert done is not None and done.delivered == 1
    sender = world.container.sender()
    assert isinstance(sender, RecordingWebhookSender)
    [sent] = sender.sent
    event = json.loads(sent.body)
    assert event["type"] == "report_job.succeeded"
    # the notification is this very delivery's: null in its own body
    assert event["job"] == {**shown, "notification": None}
    now = world.clock.now().timestamp()
    assert verify_signature(SECRET.encode(), sent.headers["X-FarmIQ-Signature"], sent.body, now=now)
    after = world.client.get(f"{JOBS}/{job['id']}", headers=world.headers()).json()
    assert after["notification"] == {"state": "delivered", "attempts": 1, "last_error": None}

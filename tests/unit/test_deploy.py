"""deploy/: the Prometheus alert rules pass ``promtool check rules`` and the cases of
``promtool test rules`` (tests/prometheus/alerts_test.yml), and every expression of
the rules and of the Grafana dashboard names only metrics the service serves; the dashboard
charts every metric of the service."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from adapters import metrics
from entrypoints.runtime.probes import BacklogCollector
from reportcore.policy import Policy
from reportcore.testing import FakeClock, InMemoryJobRepository
from tests.clock import pinned_now
from tests.conftest import REQUIRE_SERVICES

pytestmark = pytest.mark.clock  # reads the tests' clock: rerun on awkward days

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "reportsvc-dashboard.json"
ALERT_CASES = Path(__file__).resolve().parents[1] / "prometheus" / "alerts_test.yml"
# what Prometheus and prometheus-client's own collectors serve beside ours
FOREIGN = re.compile(r"^(up|process_\w+|python_\w+)$")
_NAME = re.compile(r"\b([a-z_][a-z0-9_]*_[a-z0-9_]+)\b")
# PromQL words that look like metric names: functions, keywords, label names
_WORDS = frozenset(
    {
        "histogram_quantile",
        "status_class",
        "error_code",
        "max_over_time",
        "min_over_time",
        "avg_over_time",
        "clamp_min",
    }
)


def served_samples() -> set[str]:
    """Every sample name the service serves: the registry's and the worker's scrape-time
    gauges (one of each series recorded, so that every family shows its samples)."""
    registry = CollectorRegistry()
    jobs = InMemoryJobRepository()
    registry.register(
        BacklogCollector(
            lambda: jobs, FakeClock(pinned_now()), Policy(), lambda: {"report.jobs.dlq": 0}
        )
    )
    text = metrics.exposition() + metrics.exposition(registry)
    names = set()
    for family in text_string_to_metric_families(text.decode()):
        names.update(sample.name for sample in family.samples)
    # histograms and counters with no series yet show no samples: name them as they will be
    for family in metrics.REGISTRY.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        if family.type == "histogram":
            names.update(f"{family.name}_{s}" for s in ("bucket", "sum", "count"))
    return names


def expressions() -> list[tuple[str, str]]:
    """(where, expr) of every alert rule and dashboard target."""
    found = []
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        found += [(f"alert {rule['alert']}", rule["expr"]) for rule in group["rules"]]
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        found += [(f"panel {panel['title']!r}", t["expr"]) for t in panel["targets"]]
    return found


def names_in(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    without_by = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_labels)
    return {n for n in _NAME.findall(without_by) if n not in _WORDS}


def test_every_expression_names_only_metrics_the_service_serves() -> None:
    served = served_samples()
    for where, expr in expressions():
        names = names_in(expr)
        assert names, f"{where} names no metric: {expr}"
        unknown = {n for n in names if n not in served and not FOREIGN.match(n)}
        assert not unknown, f"{where} names {unknown}, which nothing serves"


def test_the_dashboard_charts_every_metric_of_the_service() -> None:
    charted = {n for _, expr in expressions() for n in names_in(expr)}
    families = {
        f.name
        for f in text_string_to_metric_families(metrics.exposition().decode())
        if f.name.startswith("reportsvc_")
    } | {"reportsvc_publish_backlog_jobs", "reportsvc_jobs_lease_expired"}
    for family in families:
        assert any(n == family or n.startswith(family + "_") for n in charted), family


def test_the_dashboard_is_grafana_json_with_unique_panel_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)) and dashboard["uid"] and dashboard["title"]
    assert all(panel["datasource"]["type"] == "prometheus" for panel in dashboard["panels"])


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        if REQUIRE_SERVICES:
            pytest.fail("REQUIRE_SERVICES=1 but promtool is not installed", pytrace=False)
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_alert_rules_pass_promtool() -> None:
    done = _promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


def test_the_alert_rules_pass_their_promtool_cases() -> None:
    """ReportWorkerAbsent fires 5 minutes after the last worker is gone (none ever scraped, or
    every one stopped), stays silent while one is up, even with no scrape-time gauge; and
    ReportJobLeaseExpired cannot fire without a worker (why ReportWorkerAbsent exists)."""
    done = _promtool("test", "rules", str(ALERT_CASES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
    cases = yaml.safe_load(ALERT_CASES.read_text())
    assert [Path(f).name for f in cases["rule_files"]] == [ALERTS.name]
    assert (ALERT_CASES.parent / cases["rule_files"][0]).resolve() == ALERTS.resolve()


def test_every_metric_docs_operations_md_names_is_served() -> None:
    text = (DEPLOY.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`(reportsvc_[a-z0-9_]+)`", text))
    histograms = {f.name for f in metrics.REGISTRY.collect() if f.type == "histogram"}
    assert len(documented) >= 15
    assert documented - served_samples() - histograms == set()

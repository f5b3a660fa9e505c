"""config/alerts.yml: valid Prometheus rules (promtool), each alert shown to fire on
synthetic series (config/alerts.test.yml), on metrics /metrics really exposes, with the
thresholds /healthz uses.

promtool comes from Debian's `prometheus` package, which .ci/run installs as it does
chromium; where it is missing the promtool tests skip and say how to install it, as the
browser test does for chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bridge.setup import health

CONFIG = Path(__file__).resolve().parent.parent / "config"
RULES = CONFIG / "alerts.yml"
RULE_TESTS = CONFIG / "alerts.test.yml"
SEVERITIES = {"page", "ticket"}


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(
            "promtool not found: install the Debian package `prometheus`"
            " (apt-get install prometheus)"
        )
    return found


def run_promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def alerts() -> dict[str, dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def rule_tests() -> list[dict]:
    return [
        case
        for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in group["alert_rule_test"]
    ]


def test_promtool_checks_the_rules():
    done = run_promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in done.stdout


def test_promtool_unit_tests_fire_every_alert():
    done = run_promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not():
    fires = {case["alertname"] for case in rule_tests() if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in rule_tests() if not case.get("exp_alerts")}
    assert fires == set(alerts())
    assert quiet == set(alerts())


def test_every_alert_says_how_bad_and_what_to_do():
    for name, rule in alerts().items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"], name
        assert len(rule["annotations"]["description"]) > 60, name


def test_the_rules_use_only_metrics_and_checks_the_bridge_exposes(client):
    families = list(text_string_to_metric_families(client.get("/metrics").get_data(as_text=True)))
    # By family too: bridge_events has no sample until an event is stored.
    exposed = {family.name for family in families} | {
        sample.name for family in families for sample in family.samples
    }
    for name, rule in alerts().items():
        for metric in re.findall(r"\bbridge_\w+", rule["expr"]):
            assert metric in exposed, (name, metric)
        for checks in re.findall(r'check=~?"([^"]+)"', rule["expr"]):
            assert set(checks.split("|")) <= set(health.CHECKS), (name, checks)


def test_the_thresholds_are_the_ones_healthz_uses():
    rules = alerts()
    assert rules["BridgeGHLFailing"]["expr"].endswith(f"> {health.GHL_FAILING_SECONDS}")
    assert rules["BridgeBacklog"]["expr"].endswith(f"> {health.BACKLOG_SECONDS}")

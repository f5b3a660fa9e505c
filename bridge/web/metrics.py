"""GET /metrics in Prometheus text format.

gunicorn runs several web processes and the worker is another, so per-process counters
would each tell part of the story. Whatever the store knows (events, queue, GHL calls,
reconciliation runs) is therefore read from SQLite by a custom collector, from totals the
store keeps (m036) and the queue's index, so a scrape costs the same at any history
length; and the answer is computed at most once per CACHE_SECONDS per process, so
scrapers looping on it (no login needed) cannot crowd out the webhook. It adds nothing
to the webhook's path. The health gauges come from the same report /healthz gives
(bridge/setup/health.py), so an alert and the monitor's 503 mean the same thing; like
/healthz, that report commits one small row at most once a second per process, since
only a commit shows a full disk. Only webhook answers that store nothing
(ignored, rejected, unauthorized) are counted in the process that gave them; under
gunicorn those counters use prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set in gunicorn_conf.py) so every process adds to one total.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterator

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.multiprocess import MultiProcessCollector

from bridge.config import Config
from bridge.reconcile import runs
from bridge.setup import health
from bridge.store import db as store
from bridge.store import inbox
from bridge.web.snapshot import Snapshot

bp = Blueprint("metrics", __name__)
EXTENSION = "bridge.metrics"

WEBHOOK_ENDPOINT = "webhooks.receive_instantly"
# How long one reading of the store answers every scrape of a process; Prometheus scrapes
# every 15 s or more, so it never sees a stale one. The app's BRIDGE_METRICS_CACHE_SECONDS
# overrides it (tests set 0).
CACHE_SECONDS = 2.0

log = logging.getLogger("bridge.metrics")

DELIVERIES = Counter(
    "bridge_webhook_deliveries",
    "Webhook deliveries answered, by outcome (accepted, duplicate, ignored, rejected, "
    "unauthorized, unavailable).",
    ["outcome"],
    registry=None,
)


def count_delivery(response: Response) -> Response:
    """after_request: count the webhook's answer by outcome (no database write)."""
    if request.endpoint == WEBHOOK_ENDPOINT:
        try:
            DELIVERIES.labels(outcome=_outcome(response)).inc()
        except OSError as exc:
            # Under gunicorn the counter lives in a file; a full disk must cost a metric,
            # never the answer (a 503 that makes Instantly retry, or a stored event's 202).
            log.warning("webhook delivery not counted in /metrics: %s", exc)
    return response


def _outcome(response: Response) -> str:
    code = response.status_code
    if code == 202:
        return "accepted"
    if code == 200:
        try:
            body = json.loads(response.get_data(as_text=True))
        except ValueError:
            return "ok"
        return str(body.get("status") or "ok") if isinstance(body, dict) else "ok"
    if code == 401:
        return "unauthorized"
    if code in (400, 413, 415):
        return "rejected"
    if code == 503:
        return "unavailable"
    return f"http_{code}"


class StoreCollector:
    """Reads the metrics the store holds, at most once per `ttl` seconds."""

    def __init__(self, config: Config, ttl: float = CACHE_SECONDS):
        self.config = config
        self.snapshot = Snapshot(self._read, ttl)

    def collect(self) -> Iterator[Metric]:
        return iter(self.snapshot.get())

    def _read(self) -> list[Metric]:
        up = GaugeMetricFamily("bridge_store_up", "1 when the SQLite store could be read.")
        try:
            db = store.cached(self.config.database)
            facts = health.report(db, self.config)
            families = list(self._families(db, facts))
        except sqlite3.Error as exc:
            store.forget_cached()
            up.add_metric([], 0)
            return [up, *health_families(health.unreachable(exc))]
        up.add_metric([], 1)
        return [up, *families, *health_families(facts)]

    def _families(self, db, facts: dict) -> Iterator[Metric]:
        # `location` is the GHL location id; '' for events not routed yet and held ones.
        events = GaugeMetricFamily(
            "bridge_events",
            "Events received and stored, by location, event type and current status"
            " (location '' is not routed yet, or held: status unrouted).",
            labels=["location", "event_type", "status"],
        )
        depth: dict[str, int] = dict.fromkeys(facts.get("locations", {}), 0)
        for location, event_type, status, n in health.by_location(db, self.config.ghl_location_id):
            events.add_metric([location, event_type, status], n)
            if status in (inbox.PENDING, inbox.PROCESSING):
                depth[location] = depth.get(location, 0) + n
        yield events

        queue = GaugeMetricFamily(
            "bridge_queue_depth",
            "Events waiting for the worker (pending or processing), by location"
            " ('' for those not routed yet).",
            labels=["location"],
        )
        depth.setdefault("", 0)
        for location, n in sorted(depth.items()):
            queue.add_metric([location], n)
        yield queue
        oldest = inbox.oldest_pending_age(db)
        yield GaugeMetricFamily(
            "bridge_queue_oldest_pending_seconds",
            "Age of the oldest event waiting for the worker (0 when none waits).",
            value=oldest or 0.0,
        )
        paused = GaugeMetricFamily(
            "bridge_ghl_paused",
            "1 while a location's GHL writes are paused because GHL refused its token.",
            labels=["location"],
        )
        for location, block in facts.get("locations", {}).items():
            paused.add_metric([location], 1 if block["ghl_paused"] else 0)
        yield paused
        held = GaugeMetricFamily(
            "bridge_ghl_budget_held",
            "1 while a location's events wait for GHL's daily budget (what is left is down to"
            " sync.ghl_daily_reserve); they resume by themselves when GHL reports it back.",
            labels=["location"],
        )
        remaining = GaugeMetricFamily(
            "bridge_ghl_daily_remaining",
            "Calls of a location's GHL daily budget left, as GHL last reported them"
            " (X-RateLimit-Daily-Remaining); absent until GHL has reported it.",
            labels=["location"],
        )
        for location, block in facts.get("locations", {}).items():
            spent = block["ghl_budget"]
            held.add_metric([location], 1 if spent and spent["held_since"] else 0)
            if spent and spent["daily_remaining"] is not None:
                remaining.add_metric([location], spent["daily_remaining"])
        yield held
        yield remaining
        yield GaugeMetricFamily(
            "bridge_unrouted_events",
            "Events held because no route claims their campaign or workspace and there is"
            " no default location (replay them once a route exists).",
            value=facts.get("unrouted", 0),
        )

        calls = CounterMetricFamily(
            "bridge_ghl_calls",
            "GHL API calls made, by HTTP status (0 = network error or timeout).",
            labels=["status"],
        )
        for status, n in db.execute("SELECT status, calls FROM ghl_call_totals ORDER BY status"):
            calls.add_metric([str(status)], n)
        yield calls
        yield self._latency(db)

        totals = runs.totals(db)
        reconcile = CounterMetricFamily(
            "bridge_reconcile_runs", "Reconciliation runs, by status.", labels=["status"]
        )
        for status, n in sorted(totals["by_status"].items()):
            reconcile.add_metric([status], n)
        yield reconcile
        yield CounterMetricFamily(
            "bridge_reconcile_events_found",
            "Events reconciliation found in Instantly, over all runs.",
            value=totals["found"],
        )
        yield CounterMetricFamily(
            "bridge_reconcile_events_new",
            "Events reconciliation found that webhooks had missed, over all runs.",
            value=totals["new"],
        )

    def _latency(self, db) -> HistogramMetricFamily:
        total, sum_ms = db.execute(
            "SELECT IFNULL(SUM(calls), 0), IFNULL(SUM(duration_ms), 0) FROM ghl_call_totals"
        ).fetchone()
        # Each bucket's count is kept cumulative (calls at or under its bound).
        buckets = [
            (_bound(le_ms / 1000), n)
            for le_ms, n in db.execute("SELECT le_ms, calls FROM ghl_call_latency ORDER BY le_ms")
        ]
        buckets.append(("+Inf", total))
        return HistogramMetricFamily(
            "bridge_ghl_call_duration_seconds",
            "GHL API call latency.",
            buckets=buckets,
            sum_value=sum_ms / 1000,
        )


def health_families(facts: dict) -> Iterator[Metric]:
    """The health report as gauges: its state, each check, and the figures its thresholds
    are applied to (config/alerts.yml alerts on them)."""
    status = GaugeMetricFamily(
        "bridge_health_status",
        "1 for the state /healthz reports (ok, degraded, unhealthy), 0 for the others.",
        labels=["status"],
    )
    for name in health.STATUSES:
        status.add_metric([name], 1 if facts["status"] == name else 0)
    yield status
    # Labelled with the state the check's failing puts the bridge in, not "severity": an
    # alert's own severity label would overwrite that.
    checks = GaugeMetricFamily(
        "bridge_health_check_failed",
        "1 while a /healthz check fails; state is what that makes the bridge (unhealthy:"
        " /healthz answers 503; degraded: 200, or 503 with ?strict=1).",
        labels=["check", "state"],
    )
    failing = set(facts["failing_checks"])
    for name, severity in health.CHECKS.items():
        made = health.UNHEALTHY if severity == health.PROBLEM else health.DEGRADED
        checks.add_metric([name, made], 1 if name in failing else 0)
    yield checks
    if facts["database"] in ("ok", "cannot be written") or "database_unreachable" in failing:
        yield GaugeMetricFamily(
            "bridge_database_writable",
            "1 when a commit to the database succeeds (a full disk or read-only file fails).",
            value=1 if facts["database"] == "ok" else 0,
        )
    if "queue" not in facts:
        return  # not migrated, or unreadable: there are no figures to give
    yield GaugeMetricFamily(
        "bridge_queue_oldest_due_seconds",
        "How long the event next in line has been due without a worker taking it"
        " (0 when none is due); a location waiting for GHL's daily budget holds its events"
        " back on purpose, and they are left out.",
        value=facts["oldest_due_seconds"] or 0.0,
    )
    yield GaugeMetricFamily(
        "bridge_ghl_failing_seconds",
        "How long every GHL call has failed (network error, timeout, 408, 5xx), counted"
        " from the first failure after the last call that reached GHL; 0 when that last"
        " call reached it.",
        value=facts["ghl_failing_seconds"] or 0.0,
    )
    yield GaugeMetricFamily(
        "bridge_reconcile_last_run_failed",
        "1 when the latest finished reconciliation run failed.",
        value=1 if "reconcile_failed" in failing else 0,
    )


def _bound(seconds: float) -> str:
    return repr(float(seconds))


def registry(collector: StoreCollector) -> CollectorRegistry:
    """A registry for one scrape: the store collector plus the webhook outcome counter."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(reg)
    else:
        reg.register(DELIVERIES)
    return reg


@bp.get("/metrics")
def metrics() -> Response:
    body = generate_latest(registry(current_app.extensions[EXTENSION]))
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """The /metrics route, its store collector (one per app, so its cache serves every
    thread of the process), and the webhook outcome counter."""
    config = app.config["BRIDGE_CONFIG"]
    ttl = app.config.get("BRIDGE_METRICS_CACHE_SECONDS", CACHE_SECONDS)
    app.extensions[EXTENSION] = StoreCollector(config, ttl)
    app.register_blueprint(bp)
    app.after_request(count_delivery)

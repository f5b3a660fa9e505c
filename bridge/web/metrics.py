"""GET /metrics in Prometheus text format.

gunicorn runs several web processes and the worker is another, so per-process counters
would each tell part of the story. Whatever the store knows (events, queue, GHL calls,
reconciliation runs) is therefore read from SQLite at scrape time by a custom collector,
and adds nothing to the webhook's path. Only webhook answers that store nothing
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

from bridge.reconcile import runs
from bridge.store import db as store
from bridge.store import inbox, state

bp = Blueprint("metrics", __name__)

WEBHOOK_ENDPOINT = "webhooks.receive_instantly"
# GHL answers in tens to hundreds of milliseconds; a timeout takes 30 s.
LATENCY_BUCKETS_SECONDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

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
    """Reads the metrics the store holds, at scrape time."""

    def __init__(self, database: str):
        self.database = database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("bridge_store_up", "1 when the SQLite store could be read.")
        try:
            db = store.cached(self.database)
            families = list(self._families(db))
        except sqlite3.Error:
            store.forget_cached()
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self, db) -> Iterator[Metric]:
        events = GaugeMetricFamily(
            "bridge_events",
            "Events received and stored, by event type and current status.",
            labels=["event_type", "status"],
        )
        for event_type, status, n in db.execute(
            "SELECT event_type, status, COUNT(*) FROM events GROUP BY event_type, status"
        ):
            events.add_metric([event_type, status], n)
        yield events

        counts = inbox.counts(db)
        yield GaugeMetricFamily(
            "bridge_queue_depth",
            "Events waiting for the worker (pending or processing).",
            value=counts[inbox.PENDING] + counts[inbox.PROCESSING],
        )
        oldest = inbox.oldest_pending_age(db)
        yield GaugeMetricFamily(
            "bridge_queue_oldest_pending_seconds",
            "Age of the oldest event waiting for the worker (0 when none waits).",
            value=oldest or 0.0,
        )
        yield GaugeMetricFamily(
            "bridge_ghl_paused",
            "1 while GHL writes are paused because GHL refused the token.",
            value=1 if state.get(db, state.GHL_PAUSE) else 0,
        )

        calls = CounterMetricFamily(
            "bridge_ghl_calls",
            "GHL API calls made, by HTTP status (0 = network error or timeout).",
            labels=["status"],
        )
        for status, n in db.execute("SELECT status, COUNT(*) FROM ghl_calls GROUP BY status"):
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
        bounds_ms = [b * 1000 for b in LATENCY_BUCKETS_SECONDS]
        cases = ", ".join(
            f"COALESCE(SUM(CASE WHEN duration_ms <= {b} THEN 1 ELSE 0 END), 0)" for b in bounds_ms
        )
        row = db.execute(
            f"SELECT COUNT(*), COALESCE(SUM(duration_ms), 0), {cases} FROM ghl_calls"
        ).fetchone()
        total, sum_ms, cumulative = row[0], row[1], row[2:]
        buckets = [(_bound(b), n) for b, n in zip(LATENCY_BUCKETS_SECONDS, cumulative, strict=True)]
        buckets.append(("+Inf", total))
        return HistogramMetricFamily(
            "bridge_ghl_call_duration_seconds",
            "GHL API call latency.",
            buckets=buckets,
            sum_value=sum_ms / 1000,
        )


def _bound(seconds: float) -> str:
    return repr(float(seconds))


def registry(database: str) -> CollectorRegistry:
    """A registry for one scrape: the store collector plus the webhook outcome counter."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreCollector(database))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(reg)
    else:
        reg.register(DELIVERIES)
    return reg


@bp.get("/metrics")
def metrics() -> Response:
    config = current_app.config["BRIDGE_CONFIG"]
    body = generate_latest(registry(config.database))
    return Response(body, content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    app.after_request(count_delivery)

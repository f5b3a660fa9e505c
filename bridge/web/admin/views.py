"""Dashboard, events, dead letters, held events, reconcile-now, setup checks and webhook
registration."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import sqlite_utils
from flask import abort, flash, g, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from bridge import settings as settings_mod
from bridge.clients.instantly import InstantlyError
from bridge.locations import registry as locations
from bridge.reconcile import runs
from bridge.setup import doctor, health, subscriptions
from bridge.store import inbox, state
from bridge.web import error_summary, wording
from bridge.web.admin.blueprint import bp, config, database
from bridge.web.admin.redirects import safe_next

PAGE_SIZE = 50
LATEST = 15
GHL_CONTACT_URL = "https://app.gohighlevel.com/v2/location/{location}/contacts/detail/{contact}"
# A held event is replayed too: routed again by the routes as they are now.
FINAL_STATUSES = (inbox.DONE, inbox.IGNORED, inbox.SUPERSEDED, inbox.DEAD, inbox.UNROUTED)


def contact_url(contact_id: str | None, location_id: str | None = None) -> str | None:
    """The contact's page in GHL, in the location it was synced to (GHL_LOCATION_ID's for
    an event from before locations were recorded), when both ids are known."""
    location = location_id or config().ghl_location_id
    if not (contact_id and location):
        return None
    return GHL_CONTACT_URL.format(
        location=quote(location, safe=""), contact=quote(contact_id, safe="")
    )


@bp.app_template_global()
def ghl_contact_url(contact_id: str | None, location_id: str | None = None) -> str | None:
    return contact_url(contact_id, location_id)


def served() -> locations.Registry:
    """The locations this bridge serves, once per request. Stored settings that no longer
    validate (the dashboard's banner says so) leave GHL_LOCATION_ID's location alone, so
    the pages still open."""
    if "bridge_registry" not in g:
        try:
            g.bridge_registry = health.served_registry(database(), config())
        except settings_mod.SettingsError:
            g.bridge_registry = locations.build(config(), {}, database())
    return g.bridge_registry


def several_locations() -> bool:
    """Whether pages name and filter by location: a bridge serving one says nothing new."""
    return len(served().locations) > 1


@bp.app_template_global()
def event_location(event: dict[str, Any]) -> str:
    """The location an event's row belongs to ('' when not routed yet or held)."""
    return health.located(event.get("location_id"), event["status"], config().ghl_location_id)


@bp.app_template_global()
def served_locations() -> tuple[locations.Location, ...]:
    return served().locations


@bp.app_template_global()
def location_label(location_id: str | None) -> str:
    return served().label(location_id)


@bp.app_template_global()
def workspace_label(workspace_id: str | None) -> str:
    """An Instantly workspace by its declared name, or its id; the payload may lack it."""
    if not workspace_id:
        return "(not given)"
    found = next((ws for ws in served().workspaces if ws.id == workspace_id), None)
    return found.label if found else workspace_id


# What the templates say about errors, counts and times (bridge/web/error_summary.py and
# bridge/web/wording.py hold the rules).
bp.add_app_template_filter(error_summary.summarise, "error_summary")
bp.add_app_template_global(error_summary.summarise_call, "call_error_summary")
bp.add_app_template_filter(wording.since, "since")
bp.add_app_template_filter(wording.next_try, "next_try")
bp.add_app_template_filter(wording.duration, "duration")
bp.add_app_template_global(wording.plural, "plural")


@bp.get("/")
def dashboard() -> ResponseReturnValue:
    return _dashboard()


def _dashboard(typed_url: str | None = None) -> str:
    """The dashboard; `typed_url` keeps what was typed in the register form after a refusal."""
    db = database()
    facts = health.report(db, config())
    latest_events = list(db["events"].rows_where(order_by="id DESC", limit=LATEST))
    last_checks = doctor.last_result(db)
    # Never from the request's Host header: any visitor sets that, and the URL typed here
    # is where Instantly will send the webhook secret.
    public_url = subscriptions.public_webhook_url(config())
    remembered = public_url or state.get(db, subscriptions.WEBHOOK_URL_STATE) or ""
    return render_template(
        "dashboard.html",
        facts=facts,
        several=several_locations(),
        events=latest_events,
        checks=last_checks,
        webhook_url=remembered if typed_url is None else typed_url,
        public_url_set=public_url is not None,
    )


@bp.get("/events")
def events() -> ResponseReturnValue:
    db = database()
    status = request.args.get("status", "")
    query = request.args.get("q", "").strip()
    if status and status not in inbox.STATUSES:
        abort(400, f"unknown status {status[:40]!r}; use one of {', '.join(inbox.STATUSES)}")
    page = _page_number()
    location, where, params = _location_filter(db)
    if status:
        where.append("status = ?")
        params.append(status)
    if query:
        where.append("email LIKE ? ESCAPE '\\'")
        params.append("%" + _like_escape(query.lower()) + "%")
    clause = " AND ".join(where) or None
    total = db["events"].count_where(clause, params) if clause else db["events"].count
    rows = list(
        db["events"].rows_where(
            clause, params, order_by="id DESC", limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE
        )
    )
    return render_template(
        "events.html",
        events=rows,
        status=status,
        query=query,
        location=location,
        several=several_locations(),
        page=page,
        pages=max(1, -(-total // PAGE_SIZE)),
        total=total,
        statuses=inbox.STATUSES,
    )


@bp.get("/events/<int:event_id>")
def event_detail(event_id: int) -> ResponseReturnValue:
    db = database()
    event = _event_or_404(db, event_id)
    payload = _payload(event["payload"])
    calls = list(db["ghl_calls"].rows_where("event_id = ?", [event_id], order_by="id"))
    return render_template(
        "event.html",
        event=event,
        payload=payload,
        payload_text=json.dumps(payload, indent=2, ensure_ascii=False, sort_keys=True),
        reply_text=_reply_text(payload),
        calls=calls,
        can_replay=event["status"] in FINAL_STATUSES,
        several=several_locations(),
    )


@bp.post("/events/<int:event_id>/replay")
def replay_event(event_id: int) -> ResponseReturnValue:
    db = database()
    event = _event_or_404(db, event_id)
    if event["status"] not in FINAL_STATUSES:
        abort(409, f"event {event_id} is {event['status']}: it is already queued")
    inbox.replay(db, [event_id])
    flash(f"Event {event_id} queued again; the worker picks it up within seconds.", "ok")
    return redirect(_back(url_for("admin.event_detail", event_id=event_id)))


def _event_or_404(db: sqlite_utils.Database, event_id: int) -> dict[str, Any]:
    event = inbox.get(db, event_id)
    if event is None:
        abort(404, f"there is no event {event_id}")
    return event


@bp.get("/dead")
def dead_letters() -> ResponseReturnValue:
    db = database()
    location, where, params = _location_filter(db)
    clause = " AND ".join(["status = 'dead'", *where])
    rows = list(db["events"].rows_where(clause, params, order_by="id DESC", limit=500))
    return render_template(
        "dead.html",
        events=rows,
        shown=db["events"].count_where(clause, params) if location else None,
        total=db["events"].count_where("status = 'dead'"),
        location=location,
        several=several_locations(),
    )


@bp.post("/dead/replay")
def replay_dead() -> ResponseReturnValue:
    count = inbox.replay(database())
    flash(f"{wording.plural(count, 'dead event')} queued again.", "ok")
    return redirect(url_for("admin.dead_letters"))


@bp.get("/unrouted")
def held_events() -> ResponseReturnValue:
    db = database()
    total = db["events"].count_where("status = ?", [inbox.UNROUTED])
    return render_template(
        "unrouted.html",
        events=inbox.unrouted(db, limit=500),
        total=total,
        default_location=served().default_id,
    )


@bp.post("/unrouted/replay")
def replay_held() -> ResponseReturnValue:
    count = inbox.replay(database(), unrouted=True)
    flash(
        f"{wording.plural(count, 'held event')} queued again: each is routed by the routes"
        " as they are now; one that still matches none is held again.",
        "ok",
    )
    return redirect(url_for("admin.held_events"))


@bp.post("/reconcile")
def reconcile_now() -> ResponseReturnValue:
    db = database()
    runs.request_run(db)
    flash("Reconciliation requested: the worker starts it within a minute.", "ok")
    return redirect(url_for("admin.dashboard"))


@bp.post("/doctor")
def run_doctor() -> ResponseReturnValue:
    db = database()
    checks = doctor.run_checks(config(), webhook_url=state.get(db, subscriptions.WEBHOOK_URL_STATE))
    doctor.save_result(db, checks)
    bad = sum(1 for c in checks if c.ok is False)
    if bad:
        flash(f"{bad} of {len(checks)} checks failed: see the fixes below.", "error")
    else:
        flash("All checks passed.", "ok")
    return redirect(url_for("admin.dashboard") + "#checks")


@bp.post("/instantly-webhooks")
def register_webhooks() -> ResponseReturnValue:
    """Register this bridge's webhooks. A refusal answers on the dashboard, with what to
    fix and the URL as typed, never as a bare error page."""
    cfg = config()
    typed = request.form.get("url", "")
    try:
        url = subscriptions.webhook_url(typed)
        actions = subscriptions.register_for_bridge(
            database(), cfg, url, resume="resume" in request.form
        )
    except subscriptions.SetupMissing as exc:
        return _register_refused(typed, _setup_fix(str(exc)), 409)
    except ValueError as exc:  # a malformed URL, or UnsafeWebhookURL: its message says why
        return _register_refused(typed, str(exc), 400)
    except InstantlyError as exc:
        return _register_refused(typed, _instantly_fix(exc, cfg.instantly_base_url), 502)
    for action in actions or []:
        flash(f"Webhook {action.line()}", "ok")
    if not actions:
        flash("No event type is enabled in settings, so no webhook is needed.", "ok")
    if url.startswith("http://"):
        flash("http:// sends the X-Bridge-Secret header unencrypted: use https://", "error")
    return redirect(url_for("admin.dashboard") + "#checks")


def _register_refused(typed: str, message: str, code: int) -> ResponseReturnValue:
    flash(f"Registering the webhooks failed: {message}", "error")
    return _dashboard(typed_url=typed), code


def _setup_fix(message: str) -> str:
    if "INSTANTLY_API_KEY" in message:
        return (
            f"{message}.\nFix: add INSTANTLY_API_KEY=<an Instantly API key with the"
            " webhooks:all scope> to .env, then restart the bridge."
        )
    return message


def _instantly_fix(exc: InstantlyError, base_url: str) -> str:
    """Instantly's answer in one line, and what the operator does about it."""
    said = error_summary.summarise(str(exc), limit=200)
    if exc.status == 401:
        fix = (
            "check INSTANTLY_API_KEY in .env is a current key of this workspace with the"
            " webhooks:all scope (Instantly: Settings, Integrations, API keys), then restart"
        )
    elif exc.status == 403:
        fix = (
            "give the key the webhooks:all scope (or webhooks:read, webhooks:create and"
            " webhooks:update), or create a key that has it"
        )
    elif exc.status == 402:
        fix = "Instantly's API needs an active paid plan on the workspace"
    elif exc.status == 429:
        fix = "Instantly is limiting requests: wait a minute, then register again"
    elif exc.status == 0:
        fix = (
            f"the bridge cannot reach Instantly at {base_url}: check this machine's network,"
            " DNS and outbound proxy (INSTANTLY_BASE_URL if it is not the default), then"
            " register again"
        )
    elif exc.status >= 500:
        fix = "Instantly failed on its side: register again in a few minutes"
    else:
        fix = "Instantly refused the request as sent: check the URL, then register again"
    return f"{said}\nFix: {fix}."


def _location_filter(db: sqlite_utils.Database) -> tuple[str, list[str], list[Any]]:
    """?location=<id>: the id, and the SQL that keeps its events. A finished event stored
    without a location was synced to GHL_LOCATION_ID's (m042). An id this bridge neither
    serves nor has events of is a 400 naming it."""
    location = request.args.get("location", "").strip()
    if not location:
        return "", [], []
    if served().get(location) is None and not _has_events(db, location):
        abort(
            400,
            f"unknown location {location[:40]!r}: pick one of the locations this bridge"
            " serves from the list (the settings page declares them)",
        )
    if location == config().ghl_location_id:
        finished = ", ".join("?" * len(health.FINISHED))
        return (
            location,
            [f"(location_id = ? OR (location_id IS NULL AND status IN ({finished})))"],
            [location, *health.FINISHED],
        )
    return location, ["location_id = ?"], [location]


def _has_events(db: sqlite_utils.Database, location: str) -> bool:
    """A location no longer declared still has its history; two index lookups."""
    return bool(
        db.execute(
            "SELECT 1 FROM event_totals WHERE location_id = ? AND events > 0 LIMIT 1",
            [location],
        ).fetchone()
        or db.execute(
            "SELECT 1 FROM events WHERE location_id = ? AND status IN ('pending', 'processing')"
            " LIMIT 1",
            [location],
        ).fetchone()
    )


def _page_number() -> int:
    raw = request.args.get("page", "1")
    try:
        page = int(raw)
    except ValueError:
        abort(400, f"page must be a number, got {raw[:20]!r}")
    if page < 1:
        abort(400, "page must be 1 or more")
    return page


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _payload(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _reply_text(payload: Any) -> str:
    if not isinstance(payload, dict):
        return ""
    for key in ("reply_text", "reply_text_snippet"):
        value = payload.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return ""


def _back(default: str) -> str:
    return safe_next(request.form.get("next", ""), default)

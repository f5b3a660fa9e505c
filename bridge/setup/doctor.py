"""Setup checks as data: what works, what does not, and the one-line fix.

`instantly-ghl-bridge doctor` prints them and the dashboard shows them; both call `run_checks`.
Every call made here reads, so running the checks is always safe.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

import sqlite_utils

from bridge import settings as settings_mod
from bridge.clients.budget import Budget
from bridge.clients.ghl import GHLClient, GHLError
from bridge.clients.ghl_conversations import GHLConversations
from bridge.clients.instantly import InstantlyClient, InstantlyError
from bridge.clock import now_iso
from bridge.config import Config
from bridge.locations import registry
from bridge.logs import MASK
from bridge.settings import CUSTOM_FIELD_PREFIX
from bridge.setup import ghl_refs, subscriptions
from bridge.store import db as store
from bridge.store import state

LAST_RESULT_STATE = "doctor_last"
# Doctor answers while someone waits: fail fast rather than hang on a dead API.
TIMEOUT = (5.0, 10.0)
PLACEHOLDER_URL = "https://<your bridge>/webhooks/instantly"
# The scopes the reply_message action writes with: only a write shows whether they are granted.
CONVERSATION_WRITE_SCOPES = ("conversations.write", "conversations/message.write")


@dataclass(frozen=True)
class Check:
    """One check: ok is True, False, or None when it could not run (another check failed).
    `block` names the location or workspace it is about, when the bridge has several."""

    name: str
    ok: bool | None
    detail: str
    fix: str = ""
    block: str = ""

    @property
    def mark(self) -> str:
        return {True: "✓", False: "✗", None: "–"}[self.ok]


def failed(checks: Iterable[Check]) -> bool:
    return any(c.ok is False for c in checks)


def run_checks(config: Config, webhook_url: str | None = None) -> list[Check]:
    """Run every check in order: the bridge's, then one block per GHL location and one per
    Instantly workspace, each with its own token or key. A check that cannot run says
    which one to fix first."""
    checks: list[Check] = []
    db, settings, database_check = _database(config)
    checks.append(database_check)
    checks.append(_secret_check(config))
    checks.append(_admin_check(config))
    # A database that cannot be read has no page-entered tokens to offer.
    served = registry.build(config, settings or {}, db if settings is not None else None)
    plain = _single(config, served)

    for location in served.locations or (None,):
        block = "" if plain or location is None else f"Location {location.label}"
        found = _location_checks(config, location, db, settings)
        checks += [replace(check, block=block) for check in found]

    if webhook_url is None:
        # The configured address is this bridge's; the one registered last may be older.
        webhook_url = subscriptions.public_webhook_url(config)
    if webhook_url is None and settings is not None:
        webhook_url = state.get(db, subscriptions.WEBHOOK_URL_STATE)
    for workspace in served.workspaces or (None,):
        block = "" if plain or workspace is None else f"Workspace {workspace.label}"
        found = _workspace_checks(config, workspace, settings, webhook_url)
        checks += [replace(check, block=block) for check in found]
    if db is not None:
        db.close()
    secrets = config.secret_values() + served.secret_values()
    return [_redacted(c, secrets) for c in checks]


def _single(config: Config, served: registry.Registry) -> bool:
    """Whether this is a bridge of one location (GHL_LOCATION_ID's, or none yet) and
    INSTANTLY_API_KEY's workspace alone: then the checks read as they always did, with
    no blocks."""
    return (
        len(served.locations) <= 1
        and all(loc.id == config.ghl_location_id for loc in served.locations)
        and len(served.workspaces) <= 1
        and not any(ws.id for ws in served.workspaces)
    )


def _location_checks(
    config: Config,
    location: registry.Location | None,
    db: sqlite_utils.Database | None,
    settings: dict | None,
) -> list[Check]:
    """One location's block: its token against its own id, its scopes, its pause, and the
    custom fields and ids of its own settings (the bridge's with its overrides)."""
    own = settings
    if settings is not None and location is not None:
        try:
            own = settings_mod.for_location(settings, location.overrides)
        except settings_mod.SettingsError as exc:
            bad = "; ".join(settings_mod.error_lines(exc))
            return [
                Check(
                    "Location settings",
                    False,
                    f"the overrides do not make valid settings: {bad}",
                    "fix this location's overrides on the settings page",
                )
            ]
    ghl = None
    if location is not None and not location.problem:
        # On the location's shared budget, so doctor's calls beside a busy worker draw no 429.
        budget = Budget(db, location.id) if db is not None else None
        ghl = GHLClient(
            config.ghl_base_url, location.token, location.id, timeout=TIMEOUT, budget=budget
        )
    location_check = _ghl_location(config, location, ghl)
    lists, scope_check = _ghl_scopes(ghl if location_check.ok else None, own)
    ghl_ok = ghl is not None and bool(location_check.ok)
    checks = [location_check, scope_check]
    if _reply_message_on(own):
        checks.append(_ghl_conversations(ghl if ghl_ok else None, db, location))
    return [
        *checks,
        _ghl_writes(db if settings is not None else None, location, config),
        _field_map(own, lists.get("custom_fields"), ghl_ok),
        _action_ids(own, lists, ghl_ok),
    ]


def _workspace_checks(
    config: Config,
    workspace: registry.Workspace | None,
    settings: dict | None,
    url: str | None,
) -> list[Check]:
    """One workspace's block: its key, and the webhooks delivering its events here."""
    instantly = None
    if workspace is not None and not workspace.problem:
        instantly = InstantlyClient.for_setup(
            config.instantly_base_url, workspace.key, timeout=TIMEOUT, key_name=workspace.key_source
        )
    key_check = _instantly_key(workspace, instantly)
    target = subscriptions.workspace_url(url, workspace.id) if url and workspace else url
    return [
        key_check,
        _webhooks(config, instantly if key_check.ok else None, settings, target, url),
    ]


def save_result(db: sqlite_utils.Database, checks: list[Check]) -> None:
    """Keep the latest results, so the dashboard shows them without calling the APIs."""
    state.put(db, LAST_RESULT_STATE, {"at": now_iso(), "checks": [asdict(c) for c in checks]})


def last_result(db: sqlite_utils.Database) -> tuple[str, list[Check]] | None:
    saved = state.get(db, LAST_RESULT_STATE)
    if not saved:
        return None
    return saved["at"], [Check(**c) for c in saved["checks"]]


def format_text(checks: list[Check]) -> str:
    """The checks as lines for a terminal: mark, name, detail, and the fix under a failure;
    a location's or workspace's checks under its name. The last line counts the failures
    and names the blocks they are in."""
    lines = []
    block = ""
    for check in checks:
        if check.block != block:
            block = check.block
            if block:
                lines.append(f"{block}:")
        indent = "  " if block else ""
        lines.append(f"{indent}{check.mark} {check.name}: {check.detail}")
        if check.ok is False and check.fix:
            lines.append(f"{indent}    fix: {check.fix}")
    bad = [c for c in checks if c.ok is False]
    if not bad:
        lines.append("all checks passed")
        return "\n".join(lines)
    summary = f"{len(bad)} of {len(checks)} checks failed"
    where = list(dict.fromkeys(c.block for c in bad if c.block))
    lines.append(summary + (f" (in {', '.join(where)})" if where else ""))
    return "\n".join(lines)


# --- the checks --------------------------------------------------------------------------


def _database(config: Config) -> tuple[sqlite_utils.Database | None, dict | None, Check]:
    name = "Database"
    try:
        db = store.connect(config.database)
        pending = store.pending_migrations(db)
    except (sqlite3.Error, OSError) as exc:
        return (
            None,
            None,
            Check(
                name,
                False,
                f"cannot open {config.database}: {exc}",
                "check BRIDGE_DATABASE and that its folder is writable",
            ),
        )
    if pending:
        return (
            db,
            None,
            Check(
                name,
                False,
                f"{len(pending)} migration steps pending",
                "run `instantly-ghl-bridge migrate`",
            ),
        )
    try:
        version, settings = settings_mod.current(db)
    except settings_mod.SettingsError as exc:
        return (
            db,
            None,
            Check(
                name, False, str(exc), "fix the setting named on the settings page, or import TOML"
            ),
        )
    return db, settings, Check(name, True, f"migrated; settings valid (version {version})")


def _secret_check(config: Config) -> Check:
    if config.webhook_secret:
        return Check("Webhook secret", True, "BRIDGE_WEBHOOK_SECRET is set")
    return Check(
        "Webhook secret",
        False,
        "BRIDGE_WEBHOOK_SECRET is not set, so every webhook is refused",
        "run `instantly-ghl-bridge init-env` on a new install, or set BRIDGE_WEBHOOK_SECRET"
        " and restart",
    )


def _admin_check(config: Config) -> Check:
    if config.admin_password:
        return Check("Config page password", True, "BRIDGE_ADMIN_PASSWORD is set")
    return Check(
        "Config page password",
        False,
        "BRIDGE_ADMIN_PASSWORD is not set, so the config page is closed",
        "set BRIDGE_ADMIN_PASSWORD in .env and restart the web app",
    )


def _ghl_location(
    config: Config, location: registry.Location | None, ghl: GHLClient | None
) -> Check:
    name = "GHL token and location"
    if location is None:
        missing = [n for n in ("GHL_TOKEN", "GHL_LOCATION_ID") if n in config.missing()]
        return Check(
            name,
            False,
            f"{' and '.join(missing)} not set: events are queued but not synced",
            "set GHL_TOKEN (a Private Integration token of the sub-account) and "
            "GHL_LOCATION_ID in .env, then restart",
        )
    if ghl is None:
        return Check(name, False, location.problem or "no token", _token_fix(location))
    try:
        data = ghl.get_location()
    except GHLError as exc:
        return Check(
            name,
            False,
            f"GET /locations/{{id}}: {exc}",
            _ghl_fix(exc, "locations.readonly", location),
        )
    found = data.get("location") or {}
    label = found.get("name") or "(no name)"
    return Check(name, True, f"token works for location {label!r} ({ghl.location_id})")


def _token_fix(location: registry.Location) -> str:
    if location.token_source == registry.PAGE:
        return (
            "enter this location's Private Integration token on the settings page, or set "
            "token_env to the variable holding it"
        )
    return (
        f"set {location.token_source} (a Private Integration token of the sub-account) in "
        "the bridge's environment, then restart"
    )


def _ghl_fix(exc: GHLError, scope: str, location: registry.Location) -> str:
    # The env location's settings are GHL_TOKEN and GHL_LOCATION_ID; a declared one's
    # are its token's source and its `id` in [[locations]].
    token = location.token_source or "GHL_TOKEN"
    where = (
        "GHL_LOCATION_ID" if token == "GHL_TOKEN" else f"the id of [[locations]] {location.label}"
    )
    if exc.status == 401:
        return (
            f"the token is invalid or lacks the {scope} scope: create a Private Integration "
            f"token in the GHL sub-account with the scopes in the README and set {token}"
        )
    if exc.status == 403:
        return f"the token has no access to this location or lacks {scope}: check {where}"
    if exc.status in (400, 404, 422):
        return f"{where} looks wrong: copy it from the sub-account's Settings → Business Profile"
    return "GHL did not answer normally; try again later, or check GHL_BASE_URL"


def _ghl_scopes(
    ghl: GHLClient | None, settings: dict | None
) -> tuple[dict[str, list[dict[str, Any]]], Check]:
    """Probe the read scopes the bridge needs; write scopes show on the first sync.

    Returns what each probe read (custom_fields, workflows, pipelines), for the checks of
    the ids the settings name.
    """
    name = "GHL scopes"
    if ghl is None:
        return {}, Check(name, None, "not checked: fix the GHL token and location first")
    probes: list[tuple[str, str, Any]] = [
        ("locations/customFields.readonly", "custom_fields", ghl.custom_fields)
    ]
    wants = _setting_values(settings or {})
    if wants.get("workflow_id"):
        probes.append(("workflows.readonly", "workflows", ghl.workflows))
    if wants.get("pipeline_id") or wants.get("stage_id"):
        probes.append(("opportunities.readonly", "pipelines", ghl.pipelines))
    good, bad = ["locations.readonly"], []
    read: dict[str, list[dict[str, Any]]] = {}
    for scope, what, call in probes:
        try:
            read[what] = call()
        except GHLError as exc:
            bad.append(f"{scope} ({exc.status or 'network error'}: {exc.message})")
            continue
        good.append(scope)
    detail = f"readable: {', '.join(good)}"
    if bad:
        return read, Check(
            name,
            False,
            f"{detail}; failing: {'; '.join(bad)}",
            "edit the Private Integration in GHL (Settings → Private Integrations) to add the "
            "failing scopes, then update GHL_TOKEN if GHL issued a new one",
        )
    return read, Check(
        name, True, detail + " (write scopes show on the first sync: see GHL writes)"
    )


def _reply_message_on(settings: dict | None) -> bool:
    # Read with .get: a database saved before the action existed has no such section.
    actions = (settings or {}).get("actions") or {}
    return bool((actions.get("reply_message") or {}).get("enabled"))


def _ghl_conversations(
    ghl: GHLClient | None, db: sqlite_utils.Database | None, location: registry.Location | None
) -> Check:
    """The conversation scopes of the reply_message action: the two read scopes probed, the
    write scopes from the latest event dead-lettered for lacking one."""
    name = "GHL conversations"
    if ghl is None:
        return Check(name, None, "not checked: fix the GHL token and location first")
    probe = GHLConversations(ghl)
    readable: list[str] = []
    probing = "conversations.readonly"
    try:
        conversation_id = probe.any_conversation()
        readable.append(probing)
        if conversation_id:
            probing = "conversations/message.readonly"
            probe.list_messages(conversation_id, max_pages=1, page_size=1)
            readable.append(probing)
    except GHLError as exc:
        failing = f"failing: {probing} ({exc.status or 'network error'}: {exc.message})"
        fix = (
            _conversations_fix(f"the {probing} scope")
            if exc.status in (401, 403)
            else "GHL did not answer normally; run doctor again later, or check GHL_BASE_URL"
        )
        return Check(name, False, "".join(f"readable: {r}; " for r in readable) + failing, fix)
    detail = f"readable: {', '.join(readable)}"
    if not conversation_id:
        detail += " (conversations/message.readonly not probed: the location has no conversation)"
    dead = _scope_dead_letter(db, location)
    if dead:
        return Check(
            name,
            False,
            f"{detail}; event {dead['id']} dead-lettered at {dead['updated_at']}: "
            f"{dead['last_error']}",
            _conversations_fix("the scope it names"),
        )
    writes = " and ".join(CONVERSATION_WRITE_SCOPES)
    return Check(name, True, f"{detail}; {writes} show on the first reply (none refused yet)")


def _conversations_fix(what: str) -> str:
    return (
        f"edit the Private Integration in GHL (Settings → Private Integrations) to add {what}, "
        "update the location's token if GHL issued a new one, then run "
        "`instantly-ghl-bridge replay` to sync the dead-lettered replies again"
    )


def _scope_dead_letter(
    db: sqlite_utils.Database | None, location: registry.Location | None
) -> dict[str, Any] | None:
    """The location's latest event dead-lettered for a conversations scope its token lacks."""
    if db is None or location is None:
        return None
    rows = db.query(
        "SELECT id, updated_at, last_error FROM events WHERE location_id = ? AND status = 'dead'"
        " AND last_error LIKE '%scope%' AND last_error LIKE '%conversations%'"
        " ORDER BY updated_at DESC, id DESC LIMIT 1",
        [location.id],
    )
    return next(iter(rows), None)


def _ghl_writes(
    db: sqlite_utils.Database | None, location: registry.Location | None, config: Config
) -> Check:
    name = "GHL writes"
    if db is None:
        return Check(name, None, "not checked: fix the database first")
    pause = None
    if location is not None:
        pause = state.get(db, state.scoped(state.GHL_PAUSE, location.id))
        if pause is None and location.id == config.ghl_location_id:
            # Kept without a location until a worker adopts it (bridge/store/adopt.py).
            pause = state.get(db, state.GHL_PAUSE)
    if pause:
        return Check(
            name,
            False,
            f"paused since {pause.get('since', '?')}: {pause.get('reason', '')}",
            "give the token contacts.write and locations/tags.write; the worker resumes "
            "by itself within a minute of the fix",
        )
    return Check(name, True, "not paused")


def _field_map(
    settings: dict | None, custom_fields: list[dict[str, Any]] | None, ghl_ok: bool
) -> Check:
    name = "Field map custom fields"
    if settings is None:
        return Check(name, None, "not checked: fix the database first")
    wanted = sorted(
        {
            row["ghl"]
            for row in settings.get("field_map", [])
            if row["ghl"].startswith(CUSTOM_FIELD_PREFIX)
        }
    )
    if not wanted:
        return Check(name, True, "the field map uses standard fields only")
    if custom_fields is None:
        why = "fix GHL scopes first" if ghl_ok else "fix the GHL token and location first"
        return Check(name, None, f"not checked: {why}")
    have = {f.get("fieldKey") for f in custom_fields}
    missing = [key for key in wanted if key not in have]
    if missing:
        return Check(
            name,
            False,
            f"not in the GHL location: {', '.join(missing)}",
            "create them in GHL (Settings → Custom Fields) or change the field map on the "
            "settings page",
        )
    return Check(name, True, f"all {len(wanted)} exist: {', '.join(wanted)}")


def _action_ids(
    settings: dict | None, read: dict[str, list[dict[str, Any]]], ghl_ok: bool
) -> Check:
    """The workflow, pipeline and stage ids of the actions, against what GHL lists."""
    name = "Workflow, pipeline and stage ids"
    if settings is None:
        return Check(name, None, "not checked: fix the database first")
    lists = ghl_refs.lists_from(
        None,
        ghl_refs.workflow_items(read["workflows"]) if "workflows" in read else None,
        ghl_refs.pipeline_items(read["pipelines"]) if "pipelines" in read else None,
    )
    found = ghl_refs.check_actions(settings, lists)
    named = [path.removeprefix("actions.") for path, _ in ghl_refs.action_ids(settings)]
    if not named:
        return Check(name, True, "the settings name no workflow, pipeline or stage")
    if found.errors:
        return Check(
            name,
            False,
            "; ".join(f"{path}: {m}" for path, msgs in found.errors.items() for m in msgs),
            "choose them again on the settings page, which lists GHL's workflows, pipelines "
            "and stages (or create them in GHL)",
        )
    if found.unchecked:
        why = "fix GHL scopes first" if ghl_ok else "fix the GHL token and location first"
        return Check(name, None, f"not checked: {why}")
    detail = f"GHL lists every one set ({', '.join(named)})"
    if found.warnings:
        detail += "; " + "; ".join(
            f"{path}: {m}" for path, msgs in found.warnings.items() for m in msgs
        )
    return Check(name, True, detail)


def _instantly_key(
    workspace: registry.Workspace | None, instantly: InstantlyClient | None
) -> Check:
    name = "Instantly API key"
    source = workspace.key_source if workspace else "INSTANTLY_API_KEY"
    if workspace is None or instantly is None:
        return Check(
            name,
            False,
            workspace.problem if workspace and workspace.problem else f"{source} is not set",
            f"create an API key in Instantly (Settings → Integrations → API keys) and set {source}",
        )
    try:
        instantly.check_key()
    except InstantlyError as exc:
        fix = f"create a new API key in Instantly and set {source}"
        if exc.status == 403:
            fix = (
                "give the key the scopes campaigns:read and webhooks:all "
                "(or all:read plus webhooks:all)"
            )
        elif exc.status == 0:
            fix = "check the network and INSTANTLY_BASE_URL"
        return Check(name, False, str(exc), fix)
    return Check(name, True, "the key is accepted (GET /api/v2/campaigns)")


def _webhooks(
    config: Config,
    instantly: InstantlyClient | None,
    settings: dict | None,
    url: str | None,
    registered_url: str | None,
) -> Check:
    """Whether this workspace's webhooks deliver each enabled event type to `url` (its
    URL, with ?workspace= for a declared one); the fix registers at `registered_url`,
    which covers every workspace."""
    name = "Instantly webhooks"
    if instantly is None or settings is None:
        return Check(name, None, "not checked: fix the Instantly key and database first")
    try:
        hooks = instantly.webhooks()
    except InstantlyError as exc:
        return Check(
            name,
            False,
            f"GET /api/v2/webhooks: {exc}",
            "give the key the scope webhooks:read (or webhooks:all)",
        )
    event_types = subscriptions.enabled_event_types(settings)
    if not event_types:
        return Check(name, True, "no event type is enabled in settings, so none is needed")
    found = subscriptions.coverage(hooks, url, config.webhook_secret, event_types)
    where = url or f"any URL ending in {subscriptions.WEBHOOK_PATH}"
    parts = []
    if found.covered:
        parts.append(f"delivering: {', '.join(found.covered)}")
    if found.missing:
        parts.append(f"no webhook to {where} for: {', '.join(found.missing)}")
    if found.disabled:
        parts.append(f"disabled by Instantly after failed deliveries: {', '.join(found.disabled)}")
    if found.without_secret:
        parts.append(f"not sending our X-Bridge-Secret: {', '.join(found.without_secret)}")
    if found.unsubscribable:
        parts.append(
            f"no webhook exists for {', '.join(found.unsubscribable)} (reconciliation finds them)"
        )
    detail = "; ".join(parts)
    if found.ok:
        return Check(name, True, detail)
    command = f"instantly-ghl-bridge webhook register --url {registered_url or PLACEHOLDER_URL}"
    if found.disabled:
        command += " --resume"
    return Check(name, False, detail, f"run `{command}`")


# --- helpers -----------------------------------------------------------------------------


def _setting_values(value: Any, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every non-empty value in the settings by its key's name, to see which actions are on."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for key, inner in value.items():
            if isinstance(inner, dict | list):
                _setting_values(inner, out)
            elif inner not in (None, "", False):
                out.setdefault(str(key), inner)
    elif isinstance(value, list):
        for inner in value:
            _setting_values(inner, out)
    return out


def _redacted(check: Check, secrets: list[str]) -> Check:
    """APIs sometimes echo what they were sent; no secret leaves through a check."""
    detail, fix = check.detail, check.fix
    for secret in secrets:
        if len(secret) >= 4:
            detail = detail.replace(secret, MASK)
            fix = fix.replace(secret, MASK)
    return replace(check, detail=detail, fix=fix)

"""Instantly webhook subscriptions for this bridge: which are needed, which exist, fixing them.

Instantly names some events differently when subscribing and when delivering (subscribe
`email_link_clicked`, receive `link_clicked`); settings use the delivered names.
"""

from __future__ import annotations

import hmac
import ipaddress
import socket
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import sqlite_utils

from bridge import settings as settings_mod
from bridge.clients.instantly import InstantlyClient, InstantlyError
from bridge.config import Config
from bridge.events.types import synced_event_types
from bridge.events.webhook import SECRET_HEADER, WEBHOOK_PATH
from bridge.locations import registry
from bridge.locations.registry import Workspace
from bridge.store import state

# The URL last registered, so doctor knows which webhooks are this bridge's.
WEBHOOK_URL_STATE = "instantly_webhook_url"
# The query parameter naming a declared workspace in its webhooks' URL.
WORKSPACE = "workspace"


class SetupMissing(ValueError):
    """A setting registering needs is not set; the message names it."""


class UnsafeWebhookURL(ValueError):
    """The webhook URL leads to an address Instantly should not be sent to with the secret."""


@dataclass
class WorkspaceRegistration:
    """What registering did in one workspace: its actions, or why it could not."""

    workspace: Workspace
    url: str
    actions: list[Action] = field(default_factory=list)
    error: str | None = None
    exception: InstantlyError | None = field(default=None, repr=False)

    @property
    def failed(self) -> bool:
        return self.error is not None or any(a.what == "disabled" for a in self.actions)


def register_workspaces(
    db: sqlite_utils.Database,
    config: Config,
    url: str,
    resume: bool = False,
    allow_private: bool = False,
) -> list[WorkspaceRegistration]:
    """Register this bridge's webhooks in every workspace, each with its own key, and
    remember the URL for doctor. A declared workspace's webhooks deliver to the URL with
    `?workspace=<id>`, so each delivery says where it came from; INSTANTLY_API_KEY's
    undeclared workspace keeps the plain URL, so its existing webhooks are found again.
    One workspace failing does not stop the others: each result says what happened.

    Raises UnsafeWebhookURL for a URL leading to a private address (unless allowed here or
    by BRIDGE_ALLOW_PRIVATE_WEBHOOK_URL), SetupMissing for a missing setting.
    """
    if not (allow_private or config.allow_private_webhook_url):
        check_public(url)
    _, current = settings_mod.current(db)
    workspaces = registry.build(config, current, db).workspaces
    if not workspaces:
        raise SetupMissing("INSTANTLY_API_KEY is not set: the bridge cannot reach Instantly")
    if not config.webhook_secret:
        raise SetupMissing(
            "BRIDGE_WEBHOOK_SECRET is not set: run `instantly-ghl-bridge init-env` or set it"
        )
    event_types = enabled_event_types(current)
    results = []
    for workspace in workspaces:
        target = workspace_url(url, workspace.id)
        result = WorkspaceRegistration(workspace, target)
        results.append(result)
        if workspace.problem:
            result.error = workspace.problem
            continue
        client = InstantlyClient.for_setup(
            config.instantly_base_url, workspace.key, key_name=workspace.key_source
        )
        try:
            result.actions = register(
                client, target, config.webhook_secret, event_types, resume=resume
            )
        except InstantlyError as exc:
            result.error, result.exception = str(exc), exc
    if any(r.error is None for r in results):
        state.put(db, WEBHOOK_URL_STATE, url)
    return results


def register_for_bridge(
    db: sqlite_utils.Database,
    config: Config,
    url: str,
    resume: bool = False,
    allow_private: bool = False,
) -> list[Action]:
    """register_workspaces as one list of actions, for the dashboard's button: each named
    by its workspace when there are several. Raises what register_workspaces raises, and
    the InstantlyError of a workspace Instantly refused (after registering the others),
    naming that workspace when there are several.
    """
    results = register_workspaces(db, config, url, resume, allow_private)
    several = len(results) > 1 or any(r.workspace.id for r in results)
    for result in results:
        if result.error is None:
            continue
        if not several:
            raise result.exception or SetupMissing(result.error)
        exc = result.exception
        if exc is None:
            raise SetupMissing(result.error)  # the registry's reason names the workspace
        raise type(exc)(exc.status, f"workspace {result.workspace.label}: {exc.message}")
    if not several:
        return results[0].actions
    return [replace(a, workspace=r.workspace.label) for r in results for a in r.actions]


def workspace_url(url: str, workspace_id: str) -> str:
    """The webhook URL a workspace's webhooks deliver to: `url` with ?workspace=<id> for a
    declared workspace (other query parameters kept), `url` itself for ''."""
    if not workspace_id:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != WORKSPACE]
    query.append((WORKSPACE, workspace_id))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), ""))


ALL_EVENTS = "all_events"
DISABLED = -1
# The `event_type` values POST /api/v2/webhooks accepts (Instantly's OpenAPI enum).
SUBSCRIBABLE = frozenset(
    {
        ALL_EVENTS,
        "email_sent",
        "email_opened",
        "email_link_clicked",
        "reply_received",
        "email_bounced",
        "lead_unsubscribed",
        "campaign_completed",
        "account_error",
        "lead_neutral",
        "lead_interested",
        "lead_not_interested",
        "lead_meeting_booked",
        "lead_meeting_completed",
        "lead_closed",
        "lead_out_of_office",
        "lead_wrong_person",
        "lead_no_show",
        "supersearch_enrichment_completed",
    }
)
# Delivered event_type -> the name to subscribe with, where the two differ.
SUBSCRIBE_AS = {"link_clicked": "email_link_clicked"}
WEBHOOK_NAME = "instantly-ghl-bridge {event}"


def subscription_for(event_type: str) -> str | None:
    """The event_type to subscribe with for a delivered event type; None when none exists.

    None for `auto_reply_received` (it cannot be subscribed to on its own), for
    `lead_lost` (no webhook sends it) and for custom labels: reconciliation finds those.
    """
    name = SUBSCRIBE_AS.get(event_type, event_type)
    return name if name in SUBSCRIBABLE and name != ALL_EVENTS else None


def enabled_event_types(settings: dict) -> list[str]:
    """Delivered event types the settings sync (interest statuses too), in a stable order."""
    return synced_event_types(settings)


def normalise_url(url: str) -> str:
    """Compare URLs by scheme, host and path, ignoring case of the host and a trailing /."""
    parts = urlsplit(url.strip())
    return urlunsplit(
        (parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query, "")
    )


def webhook_url(raw: str) -> str:
    """The bridge's webhook URL from what an operator typed; ValueError saying what is wrong.

    A bare site address gets the webhook path added, since that is what people paste.
    """
    parts = urlsplit(raw.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{raw!r} is not an http(s) URL, e.g. https://bridge.example.com")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when asked
    except ValueError:
        raise ValueError(f"{raw!r} has a bad port") from None
    path = parts.path.rstrip("/")
    if path in ("", "/"):
        path = WEBHOOK_PATH
    if not path.endswith(WEBHOOK_PATH):
        raise ValueError(f"the webhook URL must end with {WEBHOOK_PATH}, got {raw!r}")
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def public_webhook_url(config: Config) -> str | None:
    """The webhook URL under BRIDGE_PUBLIC_URL (which may carry a path prefix, behind a
    proxy); None when it is not set."""
    base = config.public_url
    if not base:
        return None
    return base if base.endswith(WEBHOOK_PATH) else base + WEBHOOK_PATH


def check_public(url: str) -> None:
    """Refuse a URL whose host is, or resolves to, an address that is not public.

    Instantly could not deliver to a private address anyway; one there (a cloud metadata
    service, an internal admin page) is where someone would point the secret header.
    Every address the name resolves to is checked, since any of them may be used.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise UnsafeWebhookURL(
            f"cannot resolve {host}: {exc}; Instantly must be able to reach the webhook URL"
        ) from None
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        kind = non_public_kind(address)
        if kind:
            shown = host if host == str(address) else f"{host} resolves to {address}, which"
            raise UnsafeWebhookURL(
                f"{shown} is a {kind} address: Instantly cannot deliver there, and the"
                " X-Bridge-Secret header would be sent to it. Use the bridge's public URL,"
                " or set BRIDGE_ALLOW_PRIVATE_WEBHOOK_URL=1 (the command: --allow-private)"
                " if Instantly really reaches it"
            )


def non_public_kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of non-public address this is ("loopback", "private", ...); None if public."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    kinds = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("non-public", not address.is_global),
    )
    return next((kind for kind, found in kinds if found), None)


def ours(hook: dict[str, Any], url: str | None) -> bool:
    """Does this webhook deliver to this bridge (to `url`, or to any bridge's path)?

    A declared workspace's URL carries ?workspace=<id>: a webhook to the same address
    naming no workspace, or the same one, is ours too (it still delivers here), one
    naming another workspace is not.
    """
    target = normalise_url(str(hook.get("target_hook_url") or ""))
    if not url:
        return urlsplit(target).path.endswith(WEBHOOK_PATH)
    base, workspace = _without_workspace(target)
    wanted_base, wanted = _without_workspace(normalise_url(url))
    return base == wanted_base and (wanted is None or workspace in (None, wanted))


def _same_target(hook: dict[str, Any], url: str) -> bool:
    return normalise_url(str(hook.get("target_hook_url") or "")) == normalise_url(url)


def _without_workspace(url: str) -> tuple[str, str | None]:
    """A normalised URL without its ?workspace=, and the workspace it named (or None)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    named = [v for k, v in query if k == WORKSPACE]
    rest = urlencode([(k, v) for k, v in query if k != WORKSPACE])
    return urlunsplit(parts._replace(query=rest)), (named[-1] if named else None)


def has_secret(hook: dict[str, Any], secret: str) -> bool:
    """Does this webhook send our secret in the X-Bridge-Secret header?"""
    headers = hook.get("headers") or {}
    if not isinstance(headers, dict) or not secret:
        return False
    for name, value in headers.items():
        if str(name).lower() == SECRET_HEADER.lower() and isinstance(value, str):
            return hmac.compare_digest(value.encode(), secret.encode())
    return False


@dataclass
class Coverage:
    """How the existing webhooks serve the enabled event types."""

    covered: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unsubscribable: list[str] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)
    without_secret: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.disabled or self.without_secret)


def coverage(
    hooks: list[dict[str, Any]], url: str | None, secret: str, event_types: list[str]
) -> Coverage:
    """Check that a live webhook with our secret delivers each enabled event type here."""
    mine = [h for h in hooks if ours(h, url)]
    result = Coverage()
    for event_type in event_types:
        wanted = subscription_for(event_type)
        if wanted is None:
            result.unsubscribable.append(event_type)
            continue
        serving = [h for h in mine if h.get("event_type") in (wanted, ALL_EVENTS)]
        if not serving:
            result.missing.append(event_type)
            continue
        healthy = [h for h in serving if h.get("status") != DISABLED]
        if not healthy:
            result.disabled.append(event_type)
        elif not any(has_secret(h, secret) for h in healthy):
            result.without_secret.append(event_type)
        else:
            result.covered.append(event_type)
    return result


@dataclass(frozen=True)
class Action:
    """What `register` did (or found) for one subscription."""

    event_type: str
    what: str  # created | updated | resumed | unchanged | disabled | not subscribable | left alone
    webhook_id: str = ""
    detail: str = ""
    workspace: str = ""  # its workspace's label, when the bridge has several

    def line(self) -> str:
        hook = f" (webhook {self.webhook_id})" if self.webhook_id else ""
        where = f" in {self.workspace}" if self.workspace else ""
        tail = f": {self.detail}" if self.detail else ""
        return f"{self.what:<16} {self.event_type}{hook}{where}{tail}"


def register(
    client: InstantlyClient,
    url: str,
    secret: str,
    event_types: list[str],
    resume: bool = False,
) -> list[Action]:
    """Create or fix the webhooks delivering `event_types` to `url`. Never deletes one.

    An existing webhook for the same URL and event is reused: its headers are set to
    carry the secret (other headers kept), and with `resume` a disabled one is resumed.
    """
    if not secret:
        raise ValueError(
            "BRIDGE_WEBHOOK_SECRET is not set: run `instantly-ghl-bridge init-env` or set it"
        )
    mine = [h for h in client.webhooks() if ours(h, url)]
    # Only a webhook to this very URL is reused; one to the same address without the
    # workspace (registered before the workspace was declared) is reported below.
    hooks = [h for h in mine if _same_target(h, url)]
    actions: list[Action] = []
    wanted_names: set[str] = set()
    for event_type in event_types:
        wanted = subscription_for(event_type)
        if wanted is None:
            actions.append(
                Action(
                    event_type,
                    "not subscribable",
                    detail="Instantly has no webhook for it; reconciliation finds these",
                )
            )
            continue
        wanted_names.add(wanted)
        existing = [h for h in hooks if h.get("event_type") == wanted]
        if not existing:
            created = client.create_webhook(
                url, wanted, WEBHOOK_NAME.format(event=wanted), {SECRET_HEADER: secret}
            )
            actions.append(Action(wanted, "created", str(created.get("id", ""))))
            continue
        for hook in existing:
            actions.append(_fix(client, hook, wanted, secret, resume))
    for hook in mine:
        name = str(hook.get("event_type"))
        if not _same_target(hook, url):
            actions.append(
                Action(
                    name,
                    "left alone",
                    str(hook.get("id", "")),
                    f"delivers to {hook.get('target_hook_url')}, not to {url}: delete it "
                    "in Instantly once the webhook to the new URL delivers",
                )
            )
        elif name not in wanted_names:
            actions.append(
                Action(
                    name,
                    "left alone",
                    str(hook.get("id", "")),
                    "not enabled in settings; delete it in Instantly if you do not want it",
                )
            )
    return actions


def _fix(
    client: InstantlyClient, hook: dict[str, Any], event: str, secret: str, resume: bool
) -> Action:
    hook_id = str(hook.get("id", ""))
    done: list[str] = []
    if not has_secret(hook, secret):
        headers = {
            str(k): str(v)
            for k, v in (hook.get("headers") or {}).items()
            if str(k).lower() != SECRET_HEADER.lower()
        }
        headers[SECRET_HEADER] = secret
        client.update_webhook_headers(hook_id, headers)
        done.append("updated")
    if hook.get("status") == DISABLED:
        if not resume:
            return Action(
                event,
                "disabled",
                hook_id,
                ("headers updated; " if done else "")
                + "Instantly switched it off after failed deliveries: run again with --resume",
            )
        client.resume_webhook(hook_id)
        done.append("resumed")
    if not done:
        return Action(event, "unchanged", hook_id, "already delivers here with the secret")
    return Action(event, " and ".join(done), hook_id)

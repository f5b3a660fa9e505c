"""One reconciliation run in a process of its own, so its peak RSS is its alone.

    python -m bench.reconcile_run DATABASE INSTANTLY_URL

Prints one JSON line: the run's totals, Instantly calls and peak RSS. `reconcile_once` is
the one place that knows the reconciler's API (bridge.reconcile on the recon branch).
"""

from __future__ import annotations

import copy
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

API_KEY = "bench-instantly-key"


def reconcile_once(database: str, instantly_url: str) -> dict[str, Any]:
    """Run every pass once with the stored settings; the summary as a dict."""
    from bridge import settings as settings_mod
    from bridge.clients.instantly import InstantlyClient
    from bridge.reconcile.reconciler import Options, Reconciler
    from bridge.store import db as store

    db = store.connect(database)
    settings, enabled_here = with_interest_synced(settings_mod.current(db)[1])
    client = InstantlyClient(instantly_url, API_KEY)
    summary = Reconciler(db, client, settings).run(Options())
    out = summary.as_dict()
    out["client_calls"] = client.calls
    out["interest_enabled_by_bench"] = enabled_here
    db.close()
    return out


def with_interest_synced(settings: dict) -> tuple[dict, bool]:
    """Settings that sync the interest statuses, so the statuses pass reads every lead.

    Where the stored settings already sync one (the interest branch), they are used as
    they are; otherwise the interest events are switched on in this copy only, as the
    recon branch's tests/support/measure_reconcile.py does.
    """
    from bridge import settings as settings_mod
    from bridge.events.types import EVENT_BY_STATUS

    syncs = getattr(settings_mod, "syncs_event", None)
    if syncs is not None and any(syncs(settings, e) for e in EVENT_BY_STATUS.values()):
        return settings, False
    settings = copy.deepcopy(settings)
    for event_type in EVENT_BY_STATUS.values():
        settings["events"][event_type] = {"enabled": True, "tags": []}
    return settings, True


def peak_rss_kb() -> int:
    """This process's peak resident set (VmHWM). Not ru_maxrss: a child started by fork
    and exec can report its parent's peak there, which here grew with the seeded leads."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    database, url = sys.argv[1], sys.argv[2]
    started = time.monotonic()
    result = reconcile_once(database, url)
    result["seconds"] = time.monotonic() - started
    result["peak_rss_kb"] = peak_rss_kb()
    print(json.dumps(result))


if __name__ == "__main__":
    main()

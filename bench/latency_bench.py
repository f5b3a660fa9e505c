"""Row 4: webhook received -> contact written at the fake GHL. Deliveries go to gunicorn
(Procfile settings) at a steady rate; the worker (`instantly-ghl-bridge worker`) syncs
them to a fake GHL enforcing 100 requests / 10 s. Latency runs from each delivery's
scheduled send time to the moment the fake GHL accepted the call that completed the
contact (its tags)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from bench import loadgen, procs
from bench.payloads import SECRET, WEBHOOK_PATH, email_id, encode, lead_address, reply_body
from bench.stats import summary
from tests.support.ghl_fake import FakeGHL, RecordedCall
from tests.support.ghl_server import FakeGHLServer

BULK_TAGS = "/contacts/bulk/tags/update/add"

RUN = "lat"


def run(out: Path, rate: float = 2.0, seconds: float = 30.0) -> dict[str, Any]:
    """`rate` new contacts a second (2 GHL calls each: well under the 100 / 10 s ceiling)."""
    workdir = out / "latency"
    shutil.rmtree(workdir, ignore_errors=True)
    fake = FakeGHL(validate=True, rate_limit=(100, 10.0), clock=time.monotonic)
    with FakeGHLServer(fake) as server:
        port = procs.free_port()
        env = procs.bridge_env(workdir, ghl_url=server.url, port=port)
        procs.migrate(env)
        with procs.web(workdir, env, port), procs.worker(workdir, env):
            sent = loadgen.run(
                port,
                WEBHOOK_PATH,
                lambda i: encode(reply_body(email_id(RUN, i), lead_address(RUN, i))),
                {"Content-Type": "application/json", "X-Bridge-Secret": SECRET},
                rate,
                seconds,
                connections=4,
            )
            accepted = [s for s in sent.samples if s.status == 202]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and _written(fake, accepted) < len(accepted):
                time.sleep(0.1)
    latencies = []
    for sample in accepted:
        at = _tags_time(fake, lead_address(RUN, sample.index))
        if at is not None:
            latencies.append(at - sample.scheduled)
    return {
        "offered_rps": rate,
        "seconds": seconds,
        "sent": len(sent.samples),
        "accepted": len(accepted),
        "written": len(latencies),
        "send_errors": len(sent.errors) + sent.unsent,
        "rate_limited": sum(1 for c in fake.calls if c.status == 429),
        **{f"{k}_s" if k != "n" else k: v for k, v in summary(latencies).items()},
        "spec_errors": fake.spec_errors[:3],
    }


def _tags_time(fake: FakeGHL, email: str) -> float | None:
    """When the contact's tags were accepted: its own tags call, or a bulk one naming it
    (events due together share one)."""
    contact = fake.contact_by_email(email)
    if not contact:
        return None
    times = [c.at for c in fake.calls if contact["id"] in _tagged(c)]
    return min(times) if times else None


def _tagged(call: RecordedCall) -> list[str]:
    """The contact ids an accepted tags call added tags to."""
    if not 200 <= call.status < 300 or call.method != "POST":
        return []
    if call.path == BULK_TAGS:
        return list(call.json.get("contacts") or [])
    if call.path.startswith("/contacts/") and call.path.endswith("/tags"):
        return [call.path.split("/")[2]]
    return []


def _written(fake: FakeGHL, accepted: list[loadgen.Sample]) -> int:
    tagged = {contact_id for call in fake.calls for contact_id in _tagged(call)}
    return min(len(tagged), len(accepted))


if __name__ == "__main__":
    print(json.dumps(run(procs.OUT), indent=2))

"""The README's curl, as typed, against the real processes: with the reply message action on,
the reply lands once in the fake GHL's conversation for the lead, with its subject, words,
date and Unibox link (issue 18's "done when")."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from bridge import settings as settings_mod
from tests.faults.harness import Stack
from tests.faults.procs import wait_until

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_curl() -> str:
    """The shell block of the README that posts a reply with curl."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    (block,) = [b for b in blocks if "curl -s -X POST" in b and "reply_received" in b]
    return block


def sent_body(snippet: str) -> dict:
    return json.loads(re.search(r"-d '(.*?)'", snippet, re.S).group(1))


def test_the_readmes_curl_lands_once_in_the_leads_ghl_conversation(stack: Stack) -> None:
    stack.configure()
    db = stack.db()
    _, current = settings_mod.current(db)
    current["actions"]["reply_message"]["enabled"] = True
    settings_mod.save(db, current)
    stack.start_web()
    stack.start_worker()
    # The snippet reads the port and the secret from .env, as `make run` leaves them.
    (stack.workdir / ".env").write_text(
        f"PORT={stack.port}\nBRIDGE_WEBHOOK_SECRET={stack.secrets.webhook_secret}\n"
    )
    env = {k: v for k, v in stack.env().items() if k not in ("PORT", "BRIDGE_WEBHOOK_SECRET")}
    snippet = readme_curl()
    for _ in range(2):  # typed twice: the second is a duplicate and writes nothing
        run = subprocess.run(
            ["bash", "-c", snippet], cwd=stack.workdir, env=env,
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        assert json.loads(run.stdout)["status"] in ("accepted", "duplicate"), run.stdout
    assert json.loads(run.stdout)["status"] == "duplicate"

    body = sent_body(snippet)
    contact = wait_until(lambda: stack.fake.contact_by_email(body["lead_email"]), 30, "contact")
    conversations = stack.fake.default.conversations
    emails = wait_until(lambda: conversations.messages_for(contact["id"]), 30, "the email")
    stack.wait_all_final(1, timeout=30)
    (email,) = conversations.messages_for(contact["id"])
    assert email["conversationId"] == conversations.conversation_for(contact["id"])["id"]
    assert email["subject"] == body["reply_subject"]
    assert body["reply_text"] in email["message"] and body["reply_text"] in email["html"]
    assert email["dateAdded"] == body["timestamp"]
    assert email["altId"] == body["email_id"]
    assert body["unibox_url"] in email["message"]
    assert f'href="{body["unibox_url"]}"' in email["html"].replace("&amp;", "&")
    assert len(emails) == 1

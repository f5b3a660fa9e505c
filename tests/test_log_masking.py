"""Lead addresses in logs: masked (j***@example.com) unless BRIDGE_LOG_EMAILS=full, in every
line and traceback of the bridge's loggers, beside the secrets' redaction."""

from __future__ import annotations

import logging

import pytest

from bridge.config import ConfigError, load_config
from bridge.logs import MASK, configure_logging, mask_email
from bridge.sync.worker import Worker
from tests.helpers import WEBHOOK_SECRET, post_webhook, reply_payload


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("jordan.lead@example.com", "j***@example.com"),
        (
            "done: reply_received Jordan@Example.co.uk -> c1",
            "done: reply_received J***@Example.co.uk -> c1",
        ),
        ("<josé@exämple.com>, ann@x.org.", "<j***@exämple.com>, a***@x.org."),
        ("'a@b.io' and \"c@d.io\"", "'a***@b.io' and \"c***@d.io\""),
        ("no address here, nor an @ alone", "no address here, nor an @ alone"),
    ],
)
def test_mask_email_keeps_the_first_letter_and_the_domain(text, masked):
    assert mask_email(text) == masked


@pytest.fixture
def bridge_log(caplog):
    """Records of the bridge's loggers, after its own handler's filters ran."""
    caplog.set_level(logging.INFO, logger="bridge")
    return caplog


def test_the_worker_logs_a_synced_lead_masked_by_default(client, config, db, fake_ghl, bridge_log):
    configure_logging(config)
    post_webhook(client, reply_payload())
    assert Worker(config, db=db).run(drain=True) == 1
    done = [r.getMessage() for r in bridge_log.records if r.name == "bridge.worker"]
    assert any("reply_received j***@example.com -> " in line for line in done), done
    assert "jordan.lead@example.com" not in bridge_log.text


def test_full_addresses_when_asked(client, env, db, fake_ghl, bridge_log):
    config = load_config({**env, "BRIDGE_LOG_EMAILS": "full"})
    configure_logging(config)
    post_webhook(client, reply_payload())
    Worker(config, db=db).run(drain=True)
    assert "reply_received jordan.lead@example.com -> " in bridge_log.text


def test_a_traceback_is_masked_and_redacted_too(config, bridge_log):
    configure_logging(config)
    try:
        raise ValueError(f"GHL refused jordan.lead@example.com with {WEBHOOK_SECRET}")
    except ValueError:
        logging.getLogger("bridge.worker").exception("event 7: unexpected error")
    (record,) = bridge_log.records
    assert "ValueError: GHL refused j***@example.com with " + MASK in record.exc_text
    assert WEBHOOK_SECRET not in bridge_log.text


def test_an_unknown_choice_names_the_setting(env):
    with pytest.raises(ConfigError, match="BRIDGE_LOG_EMAILS: expected one of mask, full"):
        load_config({**env, "BRIDGE_LOG_EMAILS": "some"})

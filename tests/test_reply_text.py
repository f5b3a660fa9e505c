"""The lead's own words from a reply, and the note the bridge writes from them."""

from __future__ import annotations

import pytest

from bridge.events.webhook import from_webhook
from bridge.sync.reply_note import MAX_TEXT_CHARS, marker, note_body
from bridge.sync.reply_text import cut_quoted, html_to_text, reply_text
from tests.helpers import reply_payload, sample_payloads

SAMPLES = dict(sample_payloads())
needs_samples = pytest.mark.skipif(
    not SAMPLES, reason="../shared/specs/instantly/webhook-samples not found: sample tests need it"
)


@needs_samples
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("reply_received.GovClerk.2025-06.json", "Yes please, thanks!"),
        ("lead_interested.GovClerk.2025-06.json", "Yes please"),
        (
            "reply_received.equity-connect.2025-10-15.json",
            "What are the fees and costs for a reverse mortgage? Are there upfront charges?",
        ),
        (
            "reply_received.middleware-instantly-attio.2025-11-24.json",
            "Sure, how about 11/26 9am ET?\n\nJordan",
        ),
        ("reply_received.Instantly_apis.2024-10-15.json", ""),
    ],
)
def test_captured_replies_lose_their_quoted_thread(name, expected):
    assert reply_text(SAMPLES[name]) == expected


@needs_samples
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("reply_received.GovClerk.2025-06.json", "Yes please, thanks!"),
        (
            "reply_received.equity-connect.2025-10-15.json",
            "Hey sam yes I'm interested you can give me a call at 555-010-0199.",
        ),
        ("reply_received.Instantly_apis.2024-10-15.json", ""),
    ],
)
def test_captured_html_without_its_quote_containers(name, expected):
    assert cut_quoted(html_to_text(SAMPLES[name]["reply_html"])) == expected


def test_html_is_used_when_there_is_no_plain_text():
    html = (
        "<div>Thanks &amp; yes,<br>call me Tuesday.</div><p>Jordan</p>"
        '<div class="gmail_quote">On Mon, Sam wrote:<blockquote>old pitch</blockquote></div>'
    )
    assert reply_text({"reply_text": "  ", "reply_html": html}) == (
        "Thanks & yes,\ncall me Tuesday.\nJordan"
    )


def test_html_drops_styles_scripts_and_outlook_reply_headers():
    html = (
        "<html><head><style>p {color: red}</style></head><body><p>Sounds good</p>"
        "<script>alert(1)</script>"
        '<div id="divRplyFwdMsg"><b>From:</b> Sam<br><b>Sent:</b> Monday</div>'
        "<div>the pitch</div></body></html>"
    )
    assert html_to_text(html) == "Sounds good\nthe pitch"
    assert "From:" not in html_to_text(html)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes.\n\nOn Mon, Jun 9, 2025 at 3:33 PM Sam <s@x.co> wrote:\n> pitch", "Yes."),
        ("Yes.\n\nOn Mon, Jun 9, 2025, 15:33 Sam Sender <s@x.co>\nwrote:\n\n> pitch", "Yes."),
        ("Ja.\n\nAm Mo., 9. Juni 2025 um 15:33 schrieb Sam <s@x.co>:\n> pitch", "Ja."),
        ("Oui.\n\nLe lun. 9 juin 2025 à 15:33, Sam <s@x.co> a écrit :\n> pitch", "Oui."),
        ("Sure.\n\n-----Original Message-----\nFrom: Sam\nSent: Monday", "Sure."),
        ("Sure.\n\nFrom: Sam Sender <s@x.co>\nSent: Monday, June 9\nTo: Jordan", "Sure."),
        ("Fine by me\n\n> quoted\n> more\n", "Fine by me"),
        ("> Can you do Tuesday?\nYes, Tuesday works.\n> And 3pm?\nAlso fine.", "> Can you do Tuesday?\nYes, Tuesday works.\n> And 3pm?\nAlso fine."),
        ("Once upon a time\nsomeone wrote: a book", "Once upon a time\nsomeone wrote: a book"),
        ("line\r\n\r\n\r\n\r\nnext", "line\n\nnext"),
    ],
)  # fmt: skip
def test_quoted_thread_is_cut_only_where_reliably_marked(text, expected):
    assert cut_quoted(text) == expected


def test_the_snippet_is_the_last_resort():
    assert reply_text({"reply_text_snippet": "Call me"}) == "Call me"
    assert reply_text({"reply_text": None, "reply_html": None}) == ""


def test_the_note_carries_subject_text_campaign_step_link_and_marker():
    event = from_webhook(reply_payload())
    assert note_body(event) == (
        "Reply in Instantly: Re: Your thoughts?\n"
        "\n"
        "Sure, how about 11/26 9am ET?\n\nJordan\n"
        "\n"
        "Campaign: Trust Attorneys Q4 (step 1)\n"
        "Unibox: https://app.instantly.ai/app/unibox?thread_search=thread:abc\n"
        "[instantly-ghl-bridge reply:019ab465-0036-7b51-9914-3353686e7dc1]"
    )
    assert marker(event) in note_body(event)


def test_a_note_links_only_to_instantlys_unibox():
    for url in ("https://evil.example/unibox", "javascript:alert(1)", "http://[::1"):
        body = note_body(from_webhook(reply_payload(unibox_url=url)))
        assert "Unibox:" not in body and url not in body


def test_a_note_without_optional_fields_still_reads_well():
    event = from_webhook(
        reply_payload(reply_subject=None, unibox_url=None, campaign_name=None, campaign_id=None,
                      step=None, reply_text="", reply_html="<div><br></div>",
                      reply_text_snippet=None)
    )  # fmt: skip
    assert note_body(event) == (
        "Reply in Instantly\n"
        "\n"
        "(no text of its own: the reply only quoted the thread)\n"
        "\n"
        f"{marker(event)}"
    )


def test_a_long_reply_is_cut_and_says_so():
    event = from_webhook(reply_payload(reply_text="word " * 3000))
    body = note_body(event)
    assert "(cut short; the whole reply is in Instantly)" in body
    assert len(body) < MAX_TEXT_CHARS + 500
    assert body.endswith(marker(event)), "the marker survives the cut"

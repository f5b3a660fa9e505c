"""Webhook deliveries shaped and sized like Instantly's captured reply_received samples.

The real samples (../shared/specs/instantly/webhook-samples) run 1.1 to 3.2 KB: the lead's
fields top level in camelCase, custom variables beside them, the quoted thread in both
`reply_text` and `reply_html`. These are built here, never copied.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

WEBHOOK_PATH = "/webhooks/instantly"
BARE_PATH = "/bench/bare"
SECRET = "bench-webhook-secret-7d1c"
ID_MARK = "__ID__"  # replaced per request (wrk's Lua script does the same)

_QUOTE = (
    "On Mon, Nov 24, 2025 at 12:40 AM Sam Sender <sender@agency.example> wrote:\n\n"
    "> Hi {first},\n>\n"
    "> I noticed that many trust and estate attorneys face challenges with timely deed\n"
    "> preparation and recording. One of our clients, a law firm in California, reduced\n"
    "> their processing time by 30% using our services. This allowed them to focus more\n"
    "> on client relationships and less on paperwork.\n>\n"
    "> Can we schedule a quick call to discuss how we can help?\n>\n> Regards,\n> Sam\n"
)


def email_id(run: str, n: int) -> str:
    """A UUID-shaped email id, unique per (run, n), as Instantly's are per reply."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/{run}/{n}"))


def lead_address(run: str, n: int) -> str:
    return f"lead{n}.{run}@example.test"


def reply_body(
    ident: str,
    email: str,
    campaign_name: str = "Trust Attorneys Q4",
    first_name: str = "Jordan",
    event_type: str = "reply_received",
    timestamp: str = "2025-11-24T05:45:10.314Z",
) -> dict[str, Any]:
    """A reply_received delivery (about 2 KB) with this email_id and lead email."""
    reply = f"Sure, how about 11/26 9am ET?\n\n{first_name}\n\n" + _QUOTE.format(first=first_name)
    html = (
        f'<div dir="ltr">Sure, how about 11/26 9am ET?<br><br>{first_name}</div><br>'
        '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On Mon, Nov 24, 2025 at '
        '12:40 AM Sam Sender &lt;<a href="mailto:sender@agency.example">sender@agency.example'
        '</a>&gt; wrote:<br></div><blockquote class="gmail_quote" style="margin:0 0 0 .8ex;'
        'border-left:1px #ccc solid;padding-left:1ex"><div>Hi '
        f"{first_name},</div><div><br></div><div>Can we schedule a quick call?</div>"
        "</blockquote></div>\n"
    )
    return {
        "timestamp": timestamp,
        "event_type": event_type,
        "workspace": "086e295d-72ec-481b-8e54-260d8708afbf",
        "campaign_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"bench/campaign/{campaign_name}")),
        "campaign_name": campaign_name,
        "unibox_url": "https://app.instantly.ai/app/unibox?thread_search=thread:f1-hOO2qn_kLHAkEVk"
        "&selected_wks=086e295d-72ec-481b-8e54-260d8708afbf",
        "email_account": "sender@agency.example",
        "lead_email": email,
        "email": email,
        "firstName": first_name,
        "lastName": "Lead",
        "companyName": "Lead & Co",
        "phone": "+15555550123",
        "website": "https://lead.example",
        "personalization": "Saw your firm's note on deed recording times.",
        "property_city": "Springfield",
        "step": 1,
        "variant": 1,
        "email_id": ident,
        "is_first": True,
        "reply_subject": "Re: Your thoughts?",
        "reply_text": reply,
        "reply_text_snippet": f"Sure, how about 11/26 9am ET?\n{first_name}",
        "reply_html": html,
    }


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def template() -> str:
    """A delivery with ID_MARK where the email id and the lead's local part go (for wrk)."""
    return json.dumps(reply_body(ID_MARK, f"lead-{ID_MARK}@example.test"))

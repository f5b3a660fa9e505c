"""m044: what the reply-message action (bridge/sync/reply_message.py) keeps of GHL's
Conversations: each contact's conversation id, and per Instantly thread the GHL email a
later reply of that thread is threaded under."""

from sqlite_utils import Database

from . import migrations


@migrations()
def m044_conversations(db: Database) -> None:
    """The contact map remembers the contact's GHL conversation (NULL until the action first
    finds or makes it); `email_threads` holds, per location, contact and thread key
    (bridge/sync/reply_message.py thread_key), the emailMessageId GHL last answered for it.
    One row per thread of a contact: retention has nothing to prune here."""
    db["contacts"].add_column("conversation_id", str)
    db["email_threads"].create(
        {
            "location_id": str,
            "contact_id": str,
            "thread_key": str,
            "email_message_id": str,
            "at": str,
        },
        pk=("location_id", "contact_id", "thread_key"),
        not_null={"email_message_id"},
    )

"""A `Letter` as the sender would hand it to `shared.render`, for the unit tests of the e-mail."""

from __future__ import annotations

import uuid

from shared import tokens
from shared.render import Letter


def letter(**changes: object) -> Letter:
    """Jan of Client & Co, from Anna at out.example, with open tracking; `changes` replace any field."""
    message_id = str(uuid.uuid4())
    values: dict[str, object] = {
        "message_id": message_id,
        "domain": "out.example",
        "from_email": "anna@out.example",
        "from_name": "Anna de Vries",
        "to_email": "jan@client.example",
        "subject": "Hi {{ first_name }}",
        "body_html": "<html><body><p>Dear {{ first_name }} of {{ company }}</p></body></html>",
        "body_text": None,
        "variables": {"first_name": "Jan", "company": "<Client & Co>", "fields": {"city": "Delft"}},
        "tracker_url": "https://t.example",
        "open_token": tokens.sign_message("s", "open", message_id),
        "unsubscribe_token": tokens.sign_message("s", "unsubscribe", message_id),
        "smtp_message_id": f"<{message_id}.0@out.example>",
    }
    values.update(changes)
    return Letter(**values)  # type: ignore[arg-type]

"""Prints, as JSON, every message of a Maildir as a mail client shows it:
its headers decoded (To, From, Subject, Message-ID), the types of its parts,
and its plain-text and HTML bodies."""
import email
import email.policy
import json
import mailbox
import sys

messages = []
for message in mailbox.Maildir(sys.argv[1], factory=None, create=False):
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    plain = parsed.get_body(preferencelist=("plain",))
    html = parsed.get_body(preferencelist=("html",))
    messages.append({
        "to": str(parsed["To"]),
        "from": str(parsed["From"]),
        "subject": str(parsed["Subject"]),
        "message_id": str(parsed["Message-ID"]),
        "content_type": parsed.get_content_type(),
        "parts": [p.get_content_type() for p in parsed.walk()],
        "plain": plain.get_content() if plain else "",
        "html": html.get_content() if html else "",
    })
json.dump(messages, sys.stdout)

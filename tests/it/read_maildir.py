"""Reads every message in a Maildir and prints, as JSON, what the notify tests check:
headers, the MIME structure, and both parts decoded."""
import email
import email.policy
import json
import mailbox
import sys

out = []
for key, msg in sorted(mailbox.Maildir(sys.argv[1], factory=None).items()):
    m = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    parts = {p.get_content_type(): p.get_content() for p in m.walk() if not p.is_multipart()}
    out.append({
        "subject": str(m["subject"]),
        "date": str(m["date"]),
        "from": str(m["from"]),
        "to": str(m["to"]),
        "content_type": m.get_content_type(),
        "header_names": [k.lower() for k in m.keys()],
        "message_id": str(m["message-id"] or ""),
        "in_reply_to": str(m["in-reply-to"] or ""),
        "references": str(m["references"] or ""),
        "thread_topic": str(m["thread-topic"] or ""),
        "text": parts.get("text/plain", ""),
        "html": parts.get("text/html", ""),
    })
print(json.dumps(out))

"""Read the person's own writing out of emails: one .eml message, or every message of an .mbox.

Headers (From, Date, ...) are left out, since they are not the person's prose;
bodies prefer text/plain and fall back to HTML reduced to text. Parsing uses the
standard library's ``email`` package; decoding and the size limits are
:mod:`app.extract_text`'s, so an email body is held to the same rules as a
text file. The readers return ``(title, raw text)`` for :func:`app.ingest.extract`.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
from email.message import EmailMessage
from pathlib import Path

from .extract_text import MAX_TEXT_CHARS, IngestError, decode_text, html_to_text, read_bytes, too_much_text


def _message_subject(msg: EmailMessage) -> str:
    """Subject, tolerating headers the modern policy refuses to parse."""
    try:
        return str(msg.get("subject") or "")
    except Exception:
        raw = [value for name, value in msg.raw_items() if name.lower() == "subject"]
        return str(raw[0]) if raw else ""


def _message_body(msg: EmailMessage) -> str:
    """The person's writing: text/plain preferred, else HTML reduced to text.

    Headers (From, Date, ...) are deliberately left out.
    """
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:  # e.g. only text parts marked as attachments or odd types
        part = next(
            (p for p in msg.walk() if p.get_content_maintype() == "text"), None
        )
    if part is None:
        return ""
    content = _part_text(part)
    if part.get_content_subtype() == "html":
        return html_to_text(content)[1]
    return content


def _part_text(part: EmailMessage) -> str:
    """Decode a text part ourselves: get_content() raises on unknown charsets
    and turns non-ASCII into U+FFFD when the charset is missing."""
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset()
    if charset:
        try:
            return payload.decode(charset, errors="replace")
        except LookupError:  # unknown charset name: fall through to guessing
            pass
    return decode_text(payload) if payload else ""


def _parse_email(data: bytes) -> EmailMessage:
    if b"\x00" in data:
        raise IngestError("looks like binary data, not an email")
    msg = email.message_from_bytes(data, policy=email.policy.default)
    if not msg.keys():
        raise IngestError("not an email message: no headers found")
    return msg


def read_eml(path: Path) -> tuple[str, str]:
    msg = _parse_email(read_bytes(path))
    text = _message_body(msg)
    if not text.strip():
        raise IngestError("email has no readable text body")
    return _message_subject(msg), text


def read_mbox(path: Path) -> tuple[str, str]:
    """Every message body, in file order; unreadable messages are skipped."""
    box = mailbox.mbox(str(path), create=False)
    try:
        bodies, total, keys = [], 0, box.keys()
        for key in keys:
            try:
                body = _message_body(_parse_email(box.get_bytes(key)))
            except Exception:
                continue
            if body.strip():
                bodies.append(body)
                total += len(body)
                if total > MAX_TEXT_CHARS * 2:
                    too_much_text(total)
    finally:
        box.close()
    if not keys:
        raise IngestError("no messages found (an mbox file has lines starting with 'From ')")
    if not bodies:
        raise IngestError(f"none of the {len(keys)} message(s) has readable text")
    noun = "message" if len(bodies) == 1 else "messages"
    return f"{path.stem} ({len(bodies)} {noun})", "\n\n".join(bodies)

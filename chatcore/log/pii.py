"""Mask personal data in text: e-mail addresses, phone numbers, card-like numbers.

Used by the conversation browser and exports (a toggle) and, when enabled with
``CHAT_REDACT_PII=1``, by the Space before a turn is written.
Masking errs on the side of hiding: a false positive costs a digit string, a
false negative leaks a customer's data.
"""
from __future__ import annotations

import re

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13–19 digits, optionally grouped by spaces or dashes: payment cards and the like.
CARD = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")
# Phone numbers: optional +country, 7–15 digits with common separators and brackets.
PHONE = re.compile(r"(?<![\w+])(?:\+|00)?(?:\(?\d{1,4}\)?[ .\-]?){2,6}\d{2,4}(?![\w])")

MASKS = (("[card]", CARD), ("[email]", EMAIL), ("[phone]", PHONE))


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")  # matched whole


def _digits(s: str) -> int:
    return sum(c.isdigit() for c in s)


def _phone(match: re.Match) -> str:
    found = match.group(0)
    if _DATE.fullmatch(found.strip()) or not 7 <= _digits(found) <= 15:
        return found
    return "[phone]"


def mask_pii(text: str | None) -> str | None:
    """``text`` with e-mails, phone numbers and card-like numbers replaced by a tag."""
    if not text:
        return text
    text = CARD.sub("[card]", text)
    text = EMAIL.sub("[email]", text)
    # Only digit runs long enough to be a phone number (not "order 12", not a date).
    return PHONE.sub(_phone, text)


def mask_frame(frame, columns=("user_text", "response")):
    """A copy of a turns frame with PII masked in the text columns."""
    out = frame.copy()
    for col in columns:
        if col in out.columns:
            out[col] = out[col].map(mask_pii)
    return out

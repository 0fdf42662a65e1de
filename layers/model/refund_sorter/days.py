"""Days: exports and listings are per UTC day, named ``YYYY-MM-DD``."""

from __future__ import annotations

from datetime import date

from refund_sorter.errors import InvalidRequestError


def parse_day(text: str) -> str:
    """A calendar date in ISO form; anything else is the client's mistake."""
    try:
        return date.fromisoformat(text).isoformat() if len(text) == 10 else _bad_day(text)
    except ValueError:
        return _bad_day(text)


def _bad_day(text: str) -> str:
    raise InvalidRequestError(f"{text!r} is not a date of the form YYYY-MM-DD")

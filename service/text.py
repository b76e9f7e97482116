"""Text every store can keep: no NUL character (PostgreSQL's text and JSONB refuse it) and no
lone UTF-16 surrogate (not Unicode at all: UTF-8 cannot encode it, so SQLite's driver and
PostgreSQL's both fail on it). JSON can carry either (``"\\u0000"``, ``"\\ud800"``)."""

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored, or None when it can."""
    match = _UNSTORABLE.search(text)
    if match is None:
        return None
    char, where = match.group(), match.start()
    if char == "\x00":
        return f"must not contain a NUL character (\\u0000 at character {where})"
    return (f"must be valid Unicode: a lone surrogate \\u{ord(char):04x} at character {where} "
            "(an emoji or other character beyond U+FFFF is sent as a pair, or as UTF-8)")


def shown(text: str) -> str:
    """``text`` with each unstorable character written as its \\uXXXX escape (to name it in
    a message or an error's field path)."""
    return _UNSTORABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)

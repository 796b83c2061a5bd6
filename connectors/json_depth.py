"""JSON from senders, read with a limit on how deeply it nests.

Python's ``json`` parses nesting up to the interpreter's recursion limit, and everything
that walks the result afterwards (storing it, mapping it) recurses again: a body nested a few
hundred levels deep parses, then fails later with a RecursionError. No lead nests deeper than
a few levels, so a body past :data:`MAX_JSON_DEPTH` is refused where it is read, saying
where it went too deep.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

MAX_JSON_DEPTH = 64
# A page of a pulled API holds records a few levels down: it may nest this deep, and each of
# its records is held to MAX_JSON_DEPTH on its own (a deeper one is quarantined alone).
MAX_PAGE_DEPTH = 2 * MAX_JSON_DEPTH

# What the locating scan looks at: brackets, and what starts, ends or escapes inside a string.
_STRUCTURE = re.compile(r'[\[\]{}"\\]')


class JsonDepthError(ValueError):
    """JSON nested deeper than the limit; the message says where."""


def parse(text: str | bytes) -> Any:
    """The JSON value, as ``json.loads`` gives it, parsed by orjson (a third of the time,
    and bytes without a decoded copy). The few texts orjson refuses go to ``json.loads``:
    it takes some that orjson does not (``NaN``, lone surrogates, integers beyond 64 bits,
    nesting past 1024 levels) and words a syntax error as it always has."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def loads(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> Any:
    """:func:`parse` that raises :class:`JsonDepthError` (a ValueError) for JSON nested
    deeper than ``limit`` and ValueError for JSON that does not parse."""
    try:
        value = parse(text)
    except RecursionError:
        raise JsonDepthError(too_deep(text, limit)) from None
    if nests_deeper(value, limit):
        raise JsonDepthError(too_deep(text, limit))
    return value


def nests_deeper(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether a parsed value nests deeper than ``limit``: a walk with a stack of its own,
    so that the walk cannot recurse too deeply either."""
    if not isinstance(value, (dict, list)):
        return False
    # Only containers go on the stack: a page of 10,000 flat records is 10,000 entries, not
    # the 100,000 of its values.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return False


def too_deep(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> str:
    """The reason, with the line and column of the bracket that opens level ``limit + 1``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    depth = 0
    in_string = False
    escaped_at = -1  # the offset of the character a backslash in a string escapes
    for found in _STRUCTURE.finditer(text):
        char, at = found.group(), found.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == "\\":
                escaped_at = at + 1
            elif char == '"':
                in_string = False
            continue
        if char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > limit:
                line = text.count("\n", 0, at) + 1
                column = at - text.rfind("\n", 0, at)
                return f"JSON nested deeper than {limit} levels (line {line}, column {column})"
        elif char in "]}":
            depth -= 1
    return f"JSON nested deeper than {limit} levels"

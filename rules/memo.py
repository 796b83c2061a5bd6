"""Work derived once per loaded object (a rule set, a config) and reused while it is in use."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class PerObject(Generic[K, V]):
    """``build(obj)``, computed once per object by identity: loaded rules are immutable, and
    a reload brings a new object, which gets its own value. Keeps the last few objects."""

    def __init__(self, build: Callable[[K], V], keep: int = 8) -> None:
        self._build = build
        self._keep = keep
        self._values: dict[int, tuple[K, V]] = {}

    def __call__(self, obj: K) -> V:
        entry = self._values.get(id(obj))
        if entry is None or entry[0] is not obj:
            if len(self._values) > self._keep:
                self._values.clear()
            entry = self._values[id(obj)] = (obj, self._build(obj))
        return entry[1]

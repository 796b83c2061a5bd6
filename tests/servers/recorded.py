"""What a test server received, in order, with a blocking wait for the test to use."""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class Recorded(Generic[T]):
    """A thread-safe list of received items; ``noun`` names them in the timeout message."""

    def __init__(self, noun: str) -> None:
        self._items: list[T] = []
        self._condition = threading.Condition()
        self._noun = noun

    def add(self, item: T) -> None:
        with self._condition:
            self._items.append(item)
            self._condition.notify_all()

    def snapshot(self) -> list[T]:
        """The items received so far, oldest first."""
        with self._condition:
            return list(self._items)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[T]:
        """Block until at least ``count`` items arrived; TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._condition:
            while len(self._items) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {count} {self._noun}, got {len(self._items)} in {timeout}s"
                    )
                self._condition.wait(remaining)
            return list(self._items)

"""A Redis namespace of a test's own, removed afterwards: tests sharing one Redis never see
each other's queues, and leave nothing behind."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import redis


@contextmanager
def own_namespace(redis_url: str) -> Iterator[str]:
    """Yields a ``redis_namespace`` setting; its keys (``leadwerk-<namespace>:*``) are deleted
    on the way out."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    try:
        yield namespace
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"leadwerk-{namespace}:*"))
        if keys:
            client.delete(*keys)
        client.close()

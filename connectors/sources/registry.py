"""Source kinds: the ``kind:`` of an entry in ``config/sources.yaml`` → the class that
carries it (its config model, whether it is pulled, pushed or file-based, and what it does).

Adding a kind is one class (see :mod:`connectors.sources.base`) plus one
:func:`register_source` call; the loader, ``rules check``, the clock, ``run --once``, the
webhook receiver and the inboxes all find it here.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TypeVar

from connectors.sources.base import FileSource, PulledSource, PushedSource, Source, SourceConfig
from connectors.sources.http_json import HttpJsonSource
from connectors.sources.tradefair import TradefairFilesSource
from connectors.sources.typeform import TypeformSource
from connectors.sources.webhook import WebhookSource

S = TypeVar("S", bound=type[Source])
B = TypeVar("B", bound=Source)

_KINDS: dict[str, type[Source]] = {}

SOURCE_KINDS: Mapping[str, type[Source]] = MappingProxyType(_KINDS)
"""Every registered kind by its ``kind:`` name (a read-only view)."""


def register_source(cls: S) -> S:
    """Make ``cls`` the class of its ``kind``; usable as a class decorator."""
    kind = getattr(cls, "kind", "")
    if not kind:
        raise ValueError(f"{cls.__name__} names no kind")
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise TypeError(f"{cls.__name__} does not implement {missing}")
    if kind in _KINDS and _KINDS[kind] is not cls:
        raise ValueError(f"source kind '{kind}' is registered already ({_KINDS[kind].__name__})")
    _KINDS[kind] = cls
    return cls


def unregister_source(kind: str) -> None:
    """Forget a kind (a plugin unloaded, a test done with its kind)."""
    _KINDS.pop(kind, None)


def source_class(config: SourceConfig) -> type[Source]:
    """The class of a configured source (the loader accepted only registered kinds)."""
    return _KINDS[config.kind]


def is_pulled(config: SourceConfig) -> bool:
    """Whether the clock polls this source (rather than it pushing, or dropping files)."""
    return issubclass(source_class(config), PulledSource)


def is_file_based(config: SourceConfig) -> bool:
    """Whether this source takes export files from a folder (and ``leadwerk import``)."""
    return issubclass(source_class(config), FileSource)


def _build_as(config: SourceConfig, env: Mapping[str, str], base: type[B]) -> B | None:
    """The source, when its kind derives from ``base``; else None, and nothing is built
    (so a missing credential of a kind that is not asked for raises nothing)."""
    cls = source_class(config)
    if not issubclass(cls, base):
        return None
    return cls(config, env)


def pulled_source(config: SourceConfig, env: Mapping[str, str]) -> PulledSource | None:
    """The source to poll, or None when the kind is not pulled. Raises FatalError when an
    environment variable that the source names is not set."""
    return _build_as(config, env, PulledSource)


def pushed_source(config: SourceConfig, env: Mapping[str, str]) -> PushedSource | None:
    """The source to hand a webhook delivery, or None when the kind takes none."""
    return _build_as(config, env, PushedSource)


def file_source(config: SourceConfig, env: Mapping[str, str]) -> FileSource | None:
    """The source that reads export files, or None when the kind reads none."""
    return _build_as(config, env, FileSource)


for _builtin in (HttpJsonSource, TypeformSource, WebhookSource, TradefairFilesSource):
    register_source(_builtin)

"""Loading a library without the optional extras it would pull in at import time.

Some libraries import an optional package whenever it is installed, though Leadwerk never
uses what it adds: httpcore imports trio (Leadwerk's test tools bring it in), structlog's
console renderer imports rich (typer brings it in) for tracebacks Leadwerk formats plainly.
Each costs every process's start; hiding the extra while the library loads makes the library
take the path it takes where the extra is missing. The extra stays importable for anyone
else: it is hidden only inside :func:`hidden`.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_LOADING = threading.Lock()


@contextmanager
def hidden(*names: str) -> Iterator[None]:
    """Inside, importing any of ``names`` not yet loaded raises ImportError, as if it were
    not installed; one loaded already stays as it is."""
    with _LOADING:
        hide = [name for name in names if name not in sys.modules]
        for name in hide:
            sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
        try:
            yield
        finally:
            for name in hide:
                del sys.modules[name]

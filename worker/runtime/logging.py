"""Logging set-up: readable lines on a terminal, JSON lines in production. Personal data is
masked where it is logged (``rules.contact.mask_email``)."""

from __future__ import annotations

import logging
import sys
import traceback

from connectors.optional import hidden
from rules.contact import mask_emails_in

# structlog's console renderer would load rich for tracebacks (17 ms of every start), which
# Leadwerk formats plainly (``plain_traceback`` below).
with hidden("rich"):
    import structlog


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now, so a replaced (and closed) stream of an
    earlier command invocation is never written to."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


class _MaskEmails(logging.Filter):
    """Masks e-mail addresses in every line, whoever logged it: Leadwerk masks where it logs,
    but a driver's error can quote a value (PostgreSQL's detail of a unique violation names
    the duplicate key), and a library may log what it was given."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_emails_in(message)
        if record.exc_info and record.exc_info[1] is not None:
            trace = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            masked_trace = mask_emails_in(trace)
            if masked_trace != trace:  # the traceback goes into the line, masked
                masked = f"{masked}\n{masked_trace}"
                record.exc_info = record.exc_text = None
        if masked != message:
            record.msg, record.args = masked, None
        return True


def setup_logging(level: str = "INFO", fmt: str = "console") -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="%H:%M:%S" if fmt != "json" else "iso"),
        ],
    )
    handler = _CurrentStderr()
    handler.setFormatter(formatter)
    handler.addFilter(_MaskEmails())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in (
        "httpx",
        "httpcore",
        "apscheduler",
        "dramatiq",
        "alembic",
        "mail.log",
        "uvicorn.access",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)

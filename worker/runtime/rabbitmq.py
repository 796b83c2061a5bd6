"""RabbitMQ asked directly (pika): is it reachable, how deep are the queues. A module of its
own, so that a process without RabbitMQ never loads pika."""

from __future__ import annotations

import pika
import pika.exceptions
from dramatiq.common import dq_name, xq_name

from worker.runtime.broker import QUEUES

# What a connection to RabbitMQ that fails raises: pika's errors, or the socket's (a name
# that does not resolve).
RABBITMQ_ERRORS = (pika.exceptions.AMQPError, OSError)


def rabbitmq_error_text(exc: BaseException) -> str:
    """pika's errors say little in ``str()`` (often nothing); their repr names the cause."""
    if isinstance(exc, pika.exceptions.AMQPError):
        return repr(exc)
    return f"{type(exc).__name__}: {exc}"


def rabbitmq_problem(url: str, timeout: float = 3.0) -> str | None:
    """Why RabbitMQ at ``url`` takes no connection; None when it does."""
    try:
        rabbitmq_connection(url, timeout).close()
    except RABBITMQ_ERRORS as exc:
        return rabbitmq_error_text(exc)
    return None


def rabbitmq_connection(url: str, timeout: float = 3.0) -> pika.BlockingConnection:
    """One connection attempt to RabbitMQ, given up after ``timeout`` seconds."""
    parameters = pika.URLParameters(url)
    parameters.connection_attempts = 1
    parameters.socket_timeout = timeout
    parameters.stack_timeout = timeout
    parameters.blocked_connection_timeout = timeout
    return pika.BlockingConnection(parameters)


def rabbitmq_depths(url: str) -> dict[str, dict[str, int]]:
    """Messages waiting on each queue in RabbitMQ: ready, delayed (retries, in ``.DQ``) and
    dead (``.XQ``). Counted by passive declaration, so that asking creates nothing: a queue
    no process has declared yet holds no message. Raises one of RABBITMQ_ERRORS when
    RabbitMQ does not answer."""
    connection = rabbitmq_connection(url)
    try:
        channel = connection.channel()
        depths = {}
        for queue in QUEUES:
            counts = []
            for name in (queue, dq_name(queue), xq_name(queue)):
                try:
                    counts.append(channel.queue_declare(name, passive=True).method.message_count)
                except pika.exceptions.ChannelClosedByBroker:  # 404: not declared yet
                    counts.append(0)
                    channel = connection.channel()
            depths[queue] = dict(zip(("ready", "delayed", "dead"), counts, strict=True))
        return depths
    finally:
        connection.close()

"""The ``leadwerk`` command. Exit codes: 0 ok, 1 a failed check, 2 bad usage or config."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer

import config as config_package
from config.loader import Config, load_or_exit
from config.settings import Settings, load_settings

# -h works wherever --help does.
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    help="Leadwerk: leads from marketing tools, scored, routed and followed up.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings=HELP_OPTIONS,
)
rules_app = typer.Typer(
    help="Check, test and explain the rules in config/.",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
)
dlq_app = typer.Typer(
    help="Dead letters: work that failed for good.",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
)
quarantine_app = typer.Typer(
    help="Records that could not be taken in.", no_args_is_help=True, context_settings=HELP_OPTIONS
)
app.add_typer(rules_app, name="rules")
app.add_typer(dlq_app, name="dlq")
app.add_typer(quarantine_app, name="quarantine")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="The config directory (else LEADWERK_CONFIG_DIR, else ./config)."
    ),
]
HostOpt = typer.Option(help="Address to listen on (else LEADWERK_WEB_HOST, else 127.0.0.1).")
PortOpt = typer.Option(help="Port to listen on (else LEADWERK_WEB_PORT or PORT, else 8000).")
JsonOpt = typer.Option("--json", help="One JSON document instead of lines for people.")
_global: dict[str, Path | None] = {"config": None}
log = logging.getLogger("leadwerk.cli")


def _show_version(value: bool) -> None:
    if value:
        _echo(f"leadwerk {package_version('leadwerk')}")
        raise typer.Exit()


@app.callback()
def _main(
    config: ConfigOpt = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_show_version
        ),
    ] = False,
) -> None:
    _global["config"] = config


def _settings(config: Path | None, failed_check: int = 2) -> Settings:
    """The process settings, or the located errors and exit 2 (``failed_check`` for
    ``rules check``, where a bad config is the check's finding)."""
    from config.errors import ConfigErrors
    from config.settings import unknown_env_vars
    from worker.runtime.logging import setup_logging

    for warning in unknown_env_vars():
        _err(f"warning: {warning}")
    try:
        settings = load_settings(config or _global["config"])
    except ConfigErrors as exc:
        _err(exc.render())
        _err(f"{len(exc.issues)} error(s) in the settings")
        raise typer.Exit(failed_check) from None
    if not settings.config_dir.is_dir():
        _err(
            f"no config directory at {settings.config_dir}: name one with --config DIR or "
            "LEADWERK_CONFIG_DIR, or write an example with `leadwerk init`"
        )
        raise typer.Exit(2)
    setup_logging(settings.log_level, settings.log_format)
    _started()
    return settings


def _echo(text: str) -> None:
    typer.echo(text)


def _err(text: str) -> None:
    typer.echo(text, err=True)


def _config(settings: Settings, with_tests: bool = False) -> Config:
    return load_or_exit(settings, _err, with_tests=with_tests)


def _open(settings: Settings, config: Config, exit_code: int = 2) -> Any:
    """The process's App over its store: the one place the CLI opens the store. A store it
    cannot reach is one line in words and exit ``exit_code``."""
    from connectors.errors import FatalError
    from worker.runtime.app import init_app

    try:
        with _store_errors(exit_code):
            return init_app(settings, config=config)
    except FatalError as exc:
        _err(f"cannot start: {exc}")
        raise typer.Exit(2) from None


def _require_link_secret(settings: Settings) -> None:
    """A process that sends or serves links refuses to start in a shared deployment without
    its own signing key (exit 2, one line saying how to set one)."""
    from worker.web.accept import missing_secret

    problem = missing_secret(settings)
    if problem is not None:
        _err(f"cannot start: {problem}")
        raise typer.Exit(2)


def _app(config_dir: Path | None) -> Any:
    """Settings, config and store for a command that reads or changes the store."""
    settings = _settings(config_dir)
    return _open(settings, _config(settings))


def _boot(config_dir: Path | None, settings: Settings | None = None, links: bool = False) -> Any:
    """Config, store and broker for a command that runs the pipeline, on ``settings`` (read
    here when not given: once, so that a warning about them is said once); ``links``: the
    command sends or serves signed links (:func:`_require_link_secret`)."""
    from worker.runtime.broker import setup_broker

    settings = settings or _settings(config_dir)
    if links:
        _require_link_secret(settings)
    config = _config(settings)
    _check_redis(settings)
    _check_rabbitmq(settings)
    application = _open(settings, config)
    broker = setup_broker(settings)
    _started()
    return application, broker


def _started() -> None:
    """What start-up made so far (modules, the config, the schema) lives as long as the
    process: kept out of the garbage collector's passes, which would walk it again and again
    while a backlog allocates (a ninth of the CPU of ``run --once`` on 10,000 leads), and the
    collector, paused while the process started (``worker.__main__``), resumes. Not where a
    command runs inside another program (a test's runner): its objects are not ours to keep."""
    if _own_process:
        gc.freeze()
        gc.enable()


def _check_redis(settings: Settings) -> None:
    """With Redis set, a process starts only if Redis answers: one line and exit 2 if not.
    (Once running, dramatiq and the clock ride out a Redis restart.)"""
    if not settings.redis_url:
        return
    import redis

    from config.settings import mask_url

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        _err(f"cannot reach Redis at {mask_url(settings.redis_url)}: {exc}")
        raise typer.Exit(2) from None
    finally:
        client.close()


def _check_rabbitmq(settings: Settings) -> None:
    """With RabbitMQ set, a process starts only if RabbitMQ answers: one line and exit 2."""
    if not settings.broker_url:
        return
    from config.settings import mask_url
    from worker.runtime.rabbitmq import rabbitmq_problem

    problem = rabbitmq_problem(settings.broker_url)
    if problem is not None:
        _err(f"cannot reach RabbitMQ at {mask_url(settings.broker_url)}: {problem}")
        raise typer.Exit(2)


@contextmanager
def _store_errors(exit_code: int = 2) -> Iterator[None]:
    """A store that cannot be opened: one line saying which and why, then exit (2: nothing
    can start on that ``database_url``), never a traceback."""
    from worker.store.db import StoreUnavailable

    try:
        yield
    except StoreUnavailable as exc:
        _err(str(exc))
        raise typer.Exit(exit_code) from None


# --- init -----------------------------------------------------------------------------------


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Where config/ goes.")] = Path("."),
    config: ConfigOpt = None,
) -> None:
    """Write a working example config/ to start from (at --config DIR when given)."""
    source = Path(config_package.__file__).resolve().parent
    target = config or _global["config"] or directory / "config"
    if target.exists() and any(target.glob("*.yaml")):
        _err(f"{target} already holds a config; nothing written")
        raise typer.Exit(2)
    target.mkdir(parents=True, exist_ok=True)
    for path in source.rglob("*"):
        if path.suffix in (".yaml", ".j2") and "__pycache__" not in path.parts:
            dest = target / path.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest)
    _echo(
        f"wrote an example config to {target}; "
        f"check it with: leadwerk --config {target} rules check"
    )


# --- processes ------------------------------------------------------------------------------


@app.command()
def migrate(config: ConfigOpt = None) -> None:
    """Bring the store's schema up to date and print its revision: the release step.

    Safe to repeat, and safe beside starting processes: every process migrates at start
    too, and migrations take turns (an advisory lock on PostgreSQL), so processes started
    together on an empty database wait for the schema instead of racing for it."""
    from config.settings import mask_url
    from worker.store.db import Store

    settings = _settings(config)
    with _store_errors():
        store = Store(settings.database_url)
    store.close()
    _echo(f"the store at {mask_url(store.url)} is at schema revision {store.revision}")


@app.command()
def run(
    once: Annotated[bool, typer.Option(help="Poll and import once, drain, exit.")] = False,
    demo: Annotated[bool, typer.Option(help="Feed generated sample leads first.")] = False,
    demo_count: Annotated[int, typer.Option(help="How many demo leads.")] = 12,
    now: Annotated[
        str | None,
        typer.Option(help="With --once: run the pass as if the clock read this ISO 8601 time."),
    ] = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            help=f"With --once: list each lead even when there are more than {LISTED_LEADS}.",
        ),
    ] = False,
    host: Annotated[str | None, HostOpt] = None,
    port: Annotated[int | None, PortOpt] = None,
    config: ConfigOpt = None,
) -> None:
    """All of Leadwerk in one process (embedded defaults), or the group against Redis."""
    from worker.runtime.processes import Heartbeats, StopSignal, counted_worker
    from worker.runtime.reload import start_reloader

    settings = _settings(config)
    _require_link_secret(settings)
    at = None
    if now is not None:
        if not once:
            _err("--now only goes with --once: a running clock reads the real time")
            raise typer.Exit(2)
        at = _now_option(now)
    application, broker = _boot(config, settings)
    if settings.redis_url and not once:
        from worker.runtime.processes import run_group

        raise typer.Exit(run_group(settings, host, port))
    worker, tally = counted_worker(application, broker)
    reloader = None if once else start_reloader(application)
    try:
        if demo:
            from worker.commands.demo import feed_demo

            report = feed_demo(application, demo_count)
            _echo(f"demo: {report.accepted} sample leads fed, {report.quarantined} quarantined")
        if once:
            raise typer.Exit(_run_once(application, broker, worker, at, verbose))
        from worker.runtime.clock import start_clock
        from worker.web.app import serve

        stop = StopSignal()
        clock = start_clock(application, background=True)
        beats = Heartbeats(application, "web").start()
        try:
            serve(application, host or settings.web_host, port or settings.web_port, stop)
        finally:
            beats.stop()
            clock.shutdown()
    finally:
        if reloader is not None:
            reloader.stop()
        if once:
            from worker.runtime.embedded import stop_drained

            stop_drained(worker)
        else:
            worker.stop()
    # Work fetched but not started was in this process's memory only; the store still holds
    # it as pending, and the next start takes it up.
    log.info("leadwerk run stopped: %s, %s", stop.name, tally.summary())


def _run_once(
    application: Any,
    broker: Any,
    worker: Any,
    now: datetime | None = None,
    verbose: bool = False,
) -> int:
    from connectors.errors import ConnectorError
    from worker.pipeline.poll import import_inboxes, is_pulled, poll_source
    from worker.runtime import embedded as runtime

    failed = False
    for name, source in application.config.sources.items():
        if not is_pulled(source):
            continue
        try:
            report = poll_source(application.store, application.config, name)
            _echo(
                f"polled {name}: {report.accepted} new, {report.duplicates} known, "
                f"{report.quarantined} quarantined"
            )
        except ConnectorError as exc:
            failed = True
            _err(f"polling {name} failed: {exc}")
    for report in import_inboxes(application.store, application.config, wait=True):
        if report.error:
            failed = True
            _err(f"importing {report.file} for {report.source} failed: {report.error}")
            continue
        _echo(
            f"imported {report.source}: {report.received} rows, {report.accepted} new, "
            f"{report.duplicates} known, {report.quarantined} quarantined"
        )
    from worker.pipeline.actors import simulate_clock

    simulate_clock(now)
    try:
        runtime.drain(application, broker, worker, now=now)
    finally:
        simulate_clock(None)
    accounting = runtime.account(application)
    _print_results(application, verbose)
    _echo(
        f"accounted for {accounting.events} leads: {accounting.processed} processed, "
        f"{accounting.dead} dead-lettered, {accounting.pending} pending; "
        f"{accounting.quarantined} records quarantined; messages: {accounting.messages_sent} "
        f"sent, {accounting.messages_failed} failed, {accounting.messages_pending} pending"
    )
    if application.outbox_mode:
        _echo(f"e-mails and Slack messages were written to {application.settings.outbox_dir}")
    return 0 if accounting.complete and not failed else 1


# ``run --once`` lists each lead up to this many leads; past it, a summary (a backlog of
# thousands listed line by line is unreadable, and writing it costs more than scoring it).
LISTED_LEADS = 50


def _print_results(application: Any, verbose: bool) -> None:
    from sqlalchemy import func, select

    from rules.contact import mask_email
    from rules.scoring import r1
    from worker.store.models import Assignment, Contact

    with application.store.session() as session:
        stages = dict(
            session.execute(
                select(Contact.stage, func.count()).group_by(Contact.stage).order_by(Contact.stage)
            ).all()
        )
        if not verbose and sum(stages.values()) > LISTED_LEADS:
            reps = session.execute(
                select(Assignment.rep, func.count())
                .group_by(Assignment.rep)
                .order_by(Assignment.rep)
            ).all()
            counted = ", ".join(f"{count} {stage}" for stage, count in stages.items())
            routed = ", ".join(f"{rep or 'fallback: managers'} {count}" for rep, count in reps)
            _echo(f"{sum(stages.values())} leads: {counted}; routed: {routed or 'none'}")
            _echo("  (run --once --verbose lists each lead)")
            rows = []
        else:
            rows = session.execute(
                select(Contact, Assignment)
                .outerjoin(Assignment, Assignment.contact_id == Contact.id)
                .order_by(Contact.id)
            ).all()
    for contact, assignment in rows:
        score_text = f"{r1(contact.score or 0):>6}"
        line = f"  {mask_email(contact.email):28} score {score_text}  {contact.stage:12}"
        if assignment is not None:
            who = assignment.rep or "fallback: managers"
            sla = f", {assignment.sla_policy}" if assignment.sla_policy else ""
            line += f" → {who} ({assignment.rule}{sla})"
        _echo(line)
    from worker.pipeline.nurture import describe_enrolments

    for line in describe_enrolments(application.store, application.config):
        _echo(line)


@app.command()
def worker(config: ConfigOpt = None) -> None:
    """dramatiq worker process (needs LEADWERK_REDIS_URL)."""
    from worker.runtime.processes import run_worker
    from worker.runtime.reload import start_reloader

    settings = _settings(config)
    if not settings.redis_url:
        _err(
            "leadwerk worker needs LEADWERK_REDIS_URL (a Redis the web and clock share); "
            "without Redis, `leadwerk run` runs everything in one process"
        )
        raise typer.Exit(2)
    application, broker = _boot(config, links=True)
    start_reloader(application)
    raise typer.Exit(run_worker(application, broker))


@app.command()
def clock(config: ConfigOpt = None) -> None:
    """Scheduler process: polls, sweeps, SLA clocks. Several may run; one leads."""
    settings = _settings(config)
    if not settings.redis_url:
        _err("leadwerk clock needs LEADWERK_REDIS_URL; without Redis, use `leadwerk run`")
        raise typer.Exit(2)
    from worker.runtime.clock import start_clock
    from worker.runtime.processes import StopSignal
    from worker.runtime.reload import start_reloader

    stop = StopSignal()
    application, _broker = _boot(config, settings, links=True)
    start_reloader(application)
    scheduler = start_clock(application, background=True)
    stop.wait_forever()
    scheduler.shutdown()  # waits for a job that is running
    log.info("clock stopped: %s", stop.name)


@app.command()
def web(
    host: Annotated[str | None, HostOpt] = None,
    port: Annotated[int | None, PortOpt] = None,
    config: ConfigOpt = None,
) -> None:
    """HTTP: webhooks in, link pages, /healthz, /readyz, /metrics."""
    from worker.runtime.processes import Heartbeats, StopSignal
    from worker.runtime.reload import start_reloader
    from worker.web.app import serve

    stop = StopSignal()
    application, _broker = _boot(config, links=True)
    start_reloader(application)
    beats = Heartbeats(application, "web").start()
    serve(
        application,
        host or application.settings.web_host,
        port or application.settings.web_port,
        stop,
    )
    beats.stop()
    log.info("web stopped: %s, requests in progress answered", stop.name)


# --- rules ----------------------------------------------------------------------------------


@rules_app.command("check")
def rules_check(config: ConfigOpt = None) -> None:
    """Validate all of config/; errors as file:line:col: message."""
    from config.errors import ConfigErrors
    from config.loader import load_config
    from worker.pipeline.templates import check_templates, template_files

    settings = _settings(config, failed_check=1)
    issues = check_templates(settings.config_dir)
    loaded = None
    try:
        loaded = load_config(settings, with_tests=True)
    except ConfigErrors as exc:
        issues = [*exc.issues, *issues]
    if issues or loaded is None:
        errors = ConfigErrors(issues)
        _echo(errors.render())
        _echo(f"{len(errors.issues)} error(s)")
        raise typer.Exit(1)
    for warning in loaded.warnings:
        _err(f"warning: {warning.render()}")
    _echo(
        f"config ok: {len(loaded.ruleset.fit)} fit, {len(loaded.ruleset.engagement)} engagement, "
        f"{len(loaded.ruleset.disqualify)} disqualify rules (v{loaded.ruleset.version}, "
        f"{loaded.hash}); {len(loaded.routing)} routing rules; {len(loaded.sla)} SLA policies; "
        f"{len(loaded.sources)} sources; {len(loaded.tests)} rule tests; "
        f"{len(template_files(settings.config_dir))} templates"
    )


@rules_app.command("test")
def rules_test(
    now: Annotated[
        str | None,
        typer.Option(help="Run the cases as of this ISO 8601 time (a case's own now: wins)."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the cases in config/tests/; prints `N passed, N failed`."""
    from worker.commands.ruletests import run_rule_tests

    settings = _settings(config)
    at = _now_option(now)
    loaded = _config(settings, with_tests=True)
    passed, failed = run_rule_tests(loaded, _echo, at)
    _echo(f"{passed} passed, {failed} failed")
    raise typer.Exit(1 if failed else 0)


@rules_app.command("diff")
def rules_diff(
    against: Annotated[
        str, typer.Option("--against", help="A config directory or a git ref (main, HEAD~1).")
    ],
    since: Annotated[
        str | None, typer.Option(help="Only events received within this span, like 30d.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    now: Annotated[str | None, typer.Option(help="Replay as of this ISO 8601 time.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Replay stored history under both rule sets: who becomes or stops being an MQL, and how
    routing changes."""
    from config.errors import ConfigErrors
    from config.types import parse_duration
    from worker.commands.rulesdiff import DiffError, diff_rules, load_against
    from worker.store.db import Store

    settings = _settings(config)
    current = _config(settings)
    try:
        at = _parse_now(now)
        span = parse_duration(since) if since else None
    except ValueError as exc:
        _err(f"bad option: {exc}")
        raise typer.Exit(2) from None
    try:
        other = load_against(settings, against)
    except DiffError as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    except ConfigErrors as exc:
        _err(exc.render())
        _err(f"the rules at {against} do not load: {len(exc.issues)} error(s)")
        raise typer.Exit(2) from None
    with _store_errors():
        store = Store(settings.database_url)
    try:
        with _progress(shown=not as_json and sys.stdout.isatty()) as progress:
            replayed = progress.add_task("replaying the stored contacts", total=None)
            report = diff_rules(
                store,
                other,
                current,
                against=against,
                now=at,
                since=span,
                on_progress=lambda n: progress.update(replayed, completed=n),
            )
    finally:
        store.close()
    _echo(json.dumps(report.as_dict(), ensure_ascii=False) if as_json else report.render())


# --- score ----------------------------------------------------------------------------------


@app.command()
def score(
    file: Annotated[str, typer.Argument(help="JSON Lines file, or - for stdin.")] = "-",
    explain: Annotated[
        bool, typer.Option(help="Show every rule hit and the route's reasons.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    now: Annotated[str | None, typer.Option(help="Score as of this ISO 8601 time.")] = None,
    jobs: Annotated[
        int, typer.Option(min=0, help="Score in this many processes; 0: one per CPU.")
    ] = 1,
    config: ConfigOpt = None,
) -> None:
    """Score contacts with the rules as they are, touching nothing. Exits 1 when a line was
    refused."""
    from worker.commands.score import score_stream

    settings = _settings(config)
    loaded = _config(settings)
    at = _now_option(now)
    stream = _lines_of(file)
    # Results go to stdout; a bar on the terminal only when they go elsewhere (a file, a pipe).
    shown = stream is not sys.stdin and sys.stderr.isatty() and not sys.stdout.isatty()
    try:
        with _reading(stream, f"scoring {Path(file).name}", shown):
            refused = score_stream(
                loaded,
                stream,
                sys.stdout,
                at,
                as_json=as_json,
                explain=explain,
                jobs=jobs or os.cpu_count() or 1,
            )
    finally:
        if stream is not sys.stdin:
            stream.close()
    if refused:
        _err(f"{refused} line(s) refused")
        raise typer.Exit(1)


def _iso(value: Any) -> str:
    """Times in JSON output as ISO 8601, everything else as text."""
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _parse_now(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# --- preview --------------------------------------------------------------------------------


@app.command()
def preview(
    template: Annotated[str, typer.Argument(help="A template name, e.g. new_lead.")],
    contact: Annotated[
        Path,
        typer.Option(
            "--contact",
            exists=True,
            dir_okay=False,
            help='A JSON file like {"contact": {...}, "events": [...]}.',
        ),
    ],
    rep: Annotated[str | None, typer.Option(help="Render for this rep.")] = None,
    now: Annotated[str | None, typer.Option(help="As of this ISO 8601 time.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Render a message template for one contact, as the rep would receive it; sends nothing."""
    from rules.contact import FieldError
    from worker.pipeline.templates import PreviewError
    from worker.pipeline.templates import preview as render_preview

    settings = _settings(config)
    loaded = _config(settings)
    try:
        item = json.loads(contact.read_text(encoding="utf-8"))
        if not isinstance(item, dict):
            raise ValueError("expected a JSON object")
        at = _parse_now(now)
    except ValueError as exc:
        _err(f"{contact}: {exc}")
        raise typer.Exit(2) from None
    try:
        shown = render_preview(loaded, template, item, at, rep)
    except (PreviewError, FieldError) as exc:
        _err(str(exc))
        raise typer.Exit(2) from None
    for note in shown.notes:
        _err(f"note: {note}")
    _echo(f"To: {shown.recipient}")
    _echo(f"Subject: {shown.subject if shown.subject is not None else '(no subject template)'}")
    for label, body in (("text", shown.text), ("html", shown.html)):
        if body is not None:
            _echo(f"--- {label} ---")
            _echo(body.rstrip("\n"))


# --- import ---------------------------------------------------------------------------------


def _process_now(application: Any, broker: Any, events: list[int] | None = None) -> None:
    """New work in the store: processed here in single-process mode, handed to the workers
    (enqueued) when Redis is set: ``events``, the ones a command stored, else what the store
    holds as due.

    An import's own events are enqueued as they are: finding them again as due would mark
    each one enqueued (100,000 rows: 1.5 s of the import). Their time of receipt, the
    import's start, stands for that mark: the clock's sweep enqueues them again only if they
    are still pending a redelivery window after it."""
    from worker.pipeline.sweep import Pending, enqueue, find_pending
    from worker.runtime import embedded as runtime

    if application.settings.redis_url:
        if events is not None:
            enqueue(Pending(events=events, contacts=[], messages=[]))
            return
        lease = timedelta(seconds=application.settings.send_lease)
        enqueue(find_pending(application.store, datetime.now(UTC), send_lease=lease))
        return
    worker_ = runtime.start_worker(application, broker)
    try:
        runtime.drain(application, broker, worker_)
    finally:
        runtime.stop_drained(worker_)


@app.command("import")
def import_(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="The export file (CSV or Excel)."
        ),
    ],
    source: Annotated[str, typer.Option("--source", help="The source in sources.yaml.")],
    as_json: Annotated[bool, JsonOpt] = False,
    wait: Annotated[
        bool,
        typer.Option(help="With workers (Redis): wait until every lead is accounted for."),
    ] = False,
    timeout: Annotated[
        str, typer.Option(help="How long --wait waits at most, e.g. 90s or 10m.")
    ] = "10m",
    config: ConfigOpt = None,
) -> None:
    """One-off ingest of an export file through a source's mapping; then scored and routed
    (here without Redis; by the workers with Redis, waited for with --wait)."""
    from config.types import parse_duration
    from connectors.sources.files import ExportError
    from connectors.sources.registry import is_file_based
    from worker.commands.importstatus import import_outcome, wait_for_import
    from worker.pipeline.ingest import IngestReport
    from worker.pipeline.poll import import_file

    try:
        limit = parse_duration(timeout).total_seconds()
    except ValueError as exc:
        _err(f"--timeout: {exc}")
        raise typer.Exit(2) from None
    application, broker = _boot(config)
    if source not in application.config.sources:
        _err(
            f"unknown source '{source}'; sources.yaml has: "
            f"{', '.join(application.config.sources) or 'none'}"
        )
        raise typer.Exit(2)
    if not is_file_based(application.config.sources[source]):
        _err(
            f"source '{source}' is a {application.config.sources[source].kind} source; "
            "files are imported through a tradefair_files source"
        )
        raise typer.Exit(2)
    workers = bool(application.settings.redis_url)
    with _progress(shown=not as_json and sys.stdout.isatty()) as progress:
        rows = progress.add_task(f"importing {file.name}", total=None)
        try:
            report = import_file(
                application.store,
                application.config,
                application.config.sources[source],
                file,
                on_progress=lambda n: progress.update(rows, completed=n),
            )
        except ExportError as exc:
            if as_json:
                failed = IngestReport(source, file=file.name, error=str(exc))
                _echo(json.dumps(failed.as_dict(), ensure_ascii=False))
            _err(str(exc))
            raise typer.Exit(1) from None
        progress.update(rows, total=report.received, completed=report.received)
        leads = progress.add_task("scoring and routing", total=len(report.event_ids))
        _process_now(application, broker, report.event_ids)
        if workers and wait:
            outcome = wait_for_import(
                application.store,
                report.event_ids,
                limit,
                lambda seen: progress.update(leads, completed=seen.accounted),
            )
        else:
            outcome = import_outcome(application.store, report.event_ids)
        progress.update(leads, completed=outcome.accounted)
    if not workers:
        processing = "here"
        said = f"processed here: all {outcome.leads} new leads accounted for"
    elif outcome.complete:
        processing = "waited" if wait else "workers"
        said = f"{'waited: ' if wait else ''}all {outcome.leads} new leads accounted for"
    else:
        processing = "timed out" if wait else "workers"
        said = (
            f"{outcome.pending} of {outcome.leads} new leads still waiting; the workers go on "
            "with them (leadwerk status shows the queues)"
        )
        said = f"gave up waiting after {timeout}: {said}" if wait else f"handed on: {said}"
    if as_json:
        body = {**report.as_dict(), **outcome.as_dict(), "processing": processing}
        _echo(json.dumps(body, ensure_ascii=False))
    else:
        _echo(
            f"{file.name}: received {report.received}, accepted {report.accepted}, "
            f"duplicates {report.duplicates}, quarantined {report.quarantined}"
        )
        for problem in report.problems:
            _echo(f"  row {problem.row}: {problem.field}: {problem.reason}")
        for warning in report.warnings:
            _echo(f"  row {warning.row}: {warning.field}: {warning.reason} (lead kept)")
        told = f"MQLs {outcome.mqls}, routed {outcome.routed}, notified {outcome.notified}"
        if outcome.in_digest:
            told += f", {outcome.in_digest} to be told in a digest at the end of its window"
        _echo(told)
        _echo(said)
    raise typer.Exit(1 if wait and not outcome.complete else 0)


@contextmanager
def _reading(stream: TextIO, description: str, shown: bool) -> Iterator[None]:
    """A progress bar on stderr of how far ``stream`` (a file) has been read, for work that
    writes its results to stdout; the reading is looked at from a thread (the file's offset),
    so the work itself does not change. Without ``shown``, nothing (rich is not loaded)."""
    if not shown:
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn

    size = os.fstat(stream.fileno()).st_size
    done = threading.Event()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        console=Console(stderr=True),
        transient=True,
        redirect_stdout=False,  # stdout carries the results, not lines for the terminal
    ) as progress:
        task = progress.add_task(description, total=size)

        def follow() -> None:
            while not done.wait(0.1):
                progress.update(task, completed=os.lseek(stream.fileno(), 0, os.SEEK_CUR))

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        try:
            yield
        finally:
            done.set()
            follower.join()
            progress.update(task, completed=size)


def _progress(shown: bool) -> Any:
    """A progress bar (rich) for long work on a terminal; elsewhere (``--json``, a pipe) it
    takes the same calls and shows nothing, so that only the summary is printed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        disable=not shown,
        transient=True,
    )


# --- operations -----------------------------------------------------------------------------


@app.command()
def status(
    as_json: Annotated[bool, JsonOpt] = False,
    config: ConfigOpt = None,
) -> None:
    """Queue depths and ages, dead letters, quarantine, SLA clocks, sources, heartbeats,
    contacts and MQLs, the rules in force, the clock leader and the alerts. Exits 1 when
    unhealthy: the store does not answer, or (with Redis) Redis does not, or no worker or no
    clock is alive, or an alert of alerts.yaml holds."""
    from config.errors import ConfigErrors
    from config.loader import load_config
    from worker.commands.overview import overview, render_overview
    from worker.commands.status import render_status

    settings = _settings(config)
    try:
        loaded = load_config(settings)
    except ConfigErrors as exc:
        _err(exc.render())
        raise typer.Exit(_status_of_broken_rules(settings, exc, as_json)) from None
    application = _open(settings, loaded, exit_code=1)
    data = overview(application, datetime.now(UTC))
    if as_json:
        _echo(json.dumps(data, indent=2, default=_iso))
    else:
        _echo(render_status(data, render_overview(data)))
    raise typer.Exit(0 if data["healthy"] else 1)


def _status_of_broken_rules(settings: Settings, errors: Any, as_json: bool) -> int:
    """The files in config/ do not load: what the processes run meanwhile (they refused the
    change and keep their rules), from the store alone. Exit 1: a change is not in force."""
    from worker.commands.status import render_rules, rules_in_force
    from worker.store.db import Store

    with _store_errors(exit_code=1):
        store = Store(settings.database_url)
    try:
        facts = rules_in_force(store, datetime.now(UTC))
    finally:
        store.close()
    facts["rules"]["on_disk_errors"] = len(errors.issues)
    if as_json:
        _echo(json.dumps(facts, indent=2, default=_iso))
    else:
        _echo(f"the rules in {settings.config_dir} do not load: {len(errors.issues)} error(s)")
        _echo("\n".join(render_rules(facts["rules"])))
    return 1


@app.command()
def alerts(
    as_json: Annotated[bool, JsonOpt] = False,
    config: ConfigOpt = None,
) -> None:
    """The alerts of alerts.yaml: whether each holds now, and what the last check said."""
    from worker.commands.status import collect_status
    from worker.runtime.alerts import alert_metrics, alert_views

    application = _app(config)
    now = datetime.now(UTC)
    views = alert_views(
        application, alert_metrics(application, collect_status(application, now), now)
    )
    if as_json:
        _echo(json.dumps([v.as_dict() for v in views], indent=2, default=_iso))
        return
    if not views:
        _echo("no alerts: describe them in alerts.yaml")
    for v in views:
        state = "FIRING" if v.firing else "ok"
        since = f" since {_iso(v.since)}" if v.since else ""
        now_text = "holds now" if v.holds else "does not hold now"
        _echo(f"{state:6}  {v.name}: {v.when} ({now_text}){since}; tells {', '.join(v.notify)}")


@dlq_app.command("list")
def dlq_list(as_json: Annotated[bool, JsonOpt] = False, config: ConfigOpt = None) -> None:
    """Dead letters with their errors."""
    from worker.commands.operations import dead_letters

    application, _ = _boot(config)
    rows = dead_letters(application)
    if as_json:
        _echo(json.dumps(rows, default=_iso))
        return
    for row in rows:
        _echo(
            f"{row['id']:>5}  {row['status']:8} {row['actor']}{tuple(row['args'])}: {row['error']}"
        )
    _echo(f"{sum(1 for r in rows if r['status'] == 'open')} open dead letter(s)")


def _one_or_all(named: int | None, all_: bool, what: str) -> int | None:
    """What a replay command is to put back: the ID named, or None for ``--all``; neither
    is a usage error (exit 2)."""
    if named is None and not all_:
        _err(f"name {what} ID or --all")
        raise typer.Exit(2)
    return None if all_ else named


@dlq_app.command("replay")
def dlq_replay(
    letter: Annotated[
        int | None, typer.Argument(help="The dead letter's ID (see leadwerk dlq list).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every open dead letter.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Put dead-lettered work back on its queue once the cause is fixed."""
    from worker.commands.operations import replay_dead_letters

    chosen = _one_or_all(letter, all_, "a dead letter")
    application, broker = _boot(config)
    count = replay_dead_letters(application, broker, chosen)
    _echo(f"replayed {count} dead letter(s)")


@quarantine_app.command("list")
def quarantine_list(
    source: Annotated[str | None, typer.Option(help="Only this source's records.")] = None,
    as_json: Annotated[bool, JsonOpt] = False,
    config: ConfigOpt = None,
) -> None:
    """Quarantined records with source, row/record id, field and reason."""
    from worker.commands.operations import quarantined

    application, _ = _boot(config)
    rows = quarantined(application, source)
    if as_json:
        _echo(json.dumps(rows, default=_iso, ensure_ascii=False))
        return
    for row in rows:
        _echo(f"{row['id']:>5}  {_quarantined_line(row)}")
    _echo(f"{len(rows)} quarantined record(s)")


def _quarantined_line(row: dict[str, Any]) -> str:
    """``messe.csv row 6 (messe-hannover-2026, 2026-12-05 13:40 UTC): email: reason``."""
    if row["file"]:
        where = f"{row['file']} row {row['row']}" if row["row"] else row["file"]
    elif row["record_id"]:
        where = f"record {row['record_id']}"
    else:
        where = "a record without id"
    field = f"{row['field']}: " if row["field"] else ""
    when = f"{row['created_at']:%Y-%m-%d %H:%M %Z}".strip()
    return f"{where} ({row['source']}, {when}): {field}{row['reason']}"


@quarantine_app.command("retry")
def quarantine_retry(
    record: Annotated[
        int | None, typer.Argument(help="The record's ID (see leadwerk quarantine list).")
    ] = None,
    source: Annotated[str | None, typer.Option(help="Every open record of this source.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Take quarantined records in again with the mapping as it is now."""
    from worker.commands.operations import retry_quarantine

    application, broker = _boot(config)
    accepted, refused = retry_quarantine(application, record, source)
    _process_now(application, broker)
    for row in refused:
        _echo(f"{row['id']:>5}  still refused: {_quarantined_line(row)}")
    _echo(f"{accepted} record(s) taken in, {len(refused)} still quarantined")
    if record is not None and not accepted and not refused:
        _err(f"no open quarantined record {record}")
        raise typer.Exit(1)


@app.command()
def accept(
    lead: Annotated[str, typer.Argument(help="Lead id or e-mail.")],
    by: Annotated[
        str | None, typer.Option(help="The rep who accepts (else the rep who has the lead).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """The rep accepts the lead: the SLA clock stops."""
    from worker.commands.operations import accept_lead

    application, _ = _boot(config)
    if by is not None and by not in application.config.team.reps:
        _err(f"--by: no rep named '{by}' in team.yaml")
        raise typer.Exit(2)
    result = accept_lead(application, lead, by=by)
    if result is None:
        _err(f"no open assignment for lead {lead}")
        raise typer.Exit(1)
    _echo(result)


@app.command()
def assign(
    lead: Annotated[str, typer.Argument(help="Lead id or e-mail.")],
    rep: Annotated[str, typer.Argument(help="The rep of team.yaml who gets the lead.")],
    by: Annotated[str | None, typer.Option(help="The manager who decides (recorded).")] = None,
    config: ConfigOpt = None,
) -> None:
    """Give a lead to a rep: a new assignment with a fresh SLA clock; the rep is told."""
    from worker.commands.operations import AssignRefused, assign_lead

    application, broker = _boot(config)
    try:
        done = assign_lead(application, lead, rep, by, datetime.now(UTC))
    except AssignRefused as exc:
        _err(f"not assigned: {exc}")
        raise typer.Exit(1) from None
    _process_now(application, broker)
    _echo(done.text)


class _Stage(StrEnum):
    sql = "sql"
    recycled = "recycled"
    disqualified = "disqualified"


@app.command()
def stage(
    lead: Annotated[str, typer.Argument(help="Lead id or e-mail.")],
    to: Annotated[_Stage, typer.Argument(help="The new stage (SAL comes from accept).")],
    reason: Annotated[str | None, typer.Option(help="Why; stored with the change.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Move a lead on by hand: an SAL to sql, back to marketing (recycled), or disqualified."""
    from worker.commands.stage import StageError, change_stage

    application, _ = _boot(config)
    try:
        moved = change_stage(application.store, lead, to.value, reason, config=application.config)
    except StageError as exc:
        _err(str(exc))
        raise typer.Exit(1) from None
    _echo(moved.describe())


sla_app = typer.Typer(
    help="Response-time SLAs: how fast leads are accepted.",
    no_args_is_help=True,
    context_settings=HELP_OPTIONS,
)
app.add_typer(sla_app, name="sla")


@sla_app.command("report")
def sla_report(
    since: Annotated[str, typer.Option(help="How far back, e.g. 7d, 30d, 12w.")] = "30d",
    as_json: Annotated[bool, JsonOpt] = False,
    now: Annotated[str | None, typer.Option(help="Report as of this ISO 8601 time.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Per rep and team: time to accept, share within SLA, breaches, bands; the funnel."""
    from config.types import parse_duration
    from worker.commands.slareport import render_report
    from worker.commands.slareport import sla_report as build

    try:
        period, until = parse_duration(since), _parse_now(now)
    except ValueError as exc:
        _err(f"--since/--now: {exc}")
        raise typer.Exit(2) from None
    application = _app(config)
    data = build(application.store, application.config, until, period)
    _echo(json.dumps(data, indent=2, ensure_ascii=False) if as_json else render_report(data))


@app.command()
def forget(
    email: Annotated[str, typer.Argument(help="The person's e-mail address.")],
    config: ConfigOpt = None,
) -> None:
    """Erase a person: contact, events, messages, quarantined records, outbox copies."""
    from worker.commands.erasure import forget as erase

    application, _ = _boot(config)
    erased = erase(application, email)
    if not erased.contacts and not erased.quarantined:
        _err("nobody with that e-mail address is stored")
        raise typer.Exit(1)
    told = (
        "the CRM is told with the next sync"
        if erased.crm
        else "no CRM connector is configured, so no CRM was told"
    )
    _echo(
        f"erased {erased.contacts} contact, {erased.events} events, {erased.messages} messages, "
        f"{erased.quarantined} quarantined records, {erased.outbox_files} outbox files "
        f"({told})"
    )


crm_app = typer.Typer(
    help="The CRM: what waits to go there, what failed and why; sending it.",
    no_args_is_help=True,
)
app.add_typer(crm_app, name="crm")


@crm_app.command("status")
def crm_status(as_json: Annotated[bool, JsonOpt] = False, config: ConfigOpt = None) -> None:
    """Changes waiting for the CRM (by kind, the oldest's age), sent, dead with the CRM's
    answer, and the last sync."""
    from worker.pipeline.crm import crm_status as collect
    from worker.pipeline.crm import render_crm_status

    application = _app(config)
    data = collect(application.store, application.config, datetime.now(UTC))
    _echo(json.dumps(data, indent=2, default=_iso) if as_json else render_crm_status(data))


@crm_app.command("sync")
def crm_sync(
    once: Annotated[
        bool, typer.Option("--once", help="Send what is due now, read back once, and exit.")
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Send the CRM outbox; without --once, keep at it (the clock does the same)."""
    from worker.commands.crmsync import crm_tick, run_forever

    application = _app(config)
    if application.crm is None:
        _err("no CRM is configured: write config/crm.yaml")
        raise typer.Exit(2)
    if not once:
        run_forever(application)
        return
    done = crm_tick(application, read_back=True)
    _echo(done.describe())
    if done.result.stopped or done.errors:
        raise typer.Exit(1)


@crm_app.command("replay")
def crm_replay(
    change: Annotated[
        int | None, typer.Argument(help="The dead change's ID (see leadwerk crm status).")
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every dead change.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Put dead CRM changes back to be sent, once the cause is fixed.

    The next sync sends them; one that a later change of its lead has overtaken stays dead."""
    from worker.pipeline.crm import replay_dead

    chosen = _one_or_all(change, all_, "a dead CRM change's")
    application = _app(config)
    replayed = replay_dead(application.store, chosen)
    if replayed is None:
        _err(f"no dead CRM change {change} (leadwerk crm status lists them)")
        raise typer.Exit(1)
    for change_id, kind, lead in replayed.stale:
        _echo(f"left dead {change_id}: {kind} of {lead}, a later change of this lead was sent")
    _echo(
        f"replayed {len(replayed.revived)} dead CRM change(s); the next sync sends them"
        " (leadwerk crm sync --once, or the clock)"
    )


nurture_app = typer.Typer(
    help="Nurture: single-channel follow-up sequences from nurture.yaml.", no_args_is_help=True
)
app.add_typer(nurture_app, name="nurture")


@nurture_app.command("plan")
def nurture_plan(
    file: Annotated[
        str, typer.Argument(help="JSON Lines as `score` takes them, plus `active`; - for stdin.")
    ] = "-",
    now: Annotated[
        str | None, typer.Option(help="Plan as if the newest event arrived at this ISO 8601 time.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    config: ConfigOpt = None,
) -> None:
    """What nurture would do with each contact, dated, or why it is refused; touches nothing."""
    from worker.commands.nurture import describe, nurture_rules, plan_line

    settings = _settings(config)
    loaded = _config(settings)
    at = _now_option(now)
    stream = _lines_of(file)
    rules = nurture_rules(loaded, settings.timezone)
    refused = 0
    try:
        for line in stream:
            if not line.strip():
                continue
            plan = plan_line(loaded, rules, line, at)
            refused += "error" in plan
            _echo(json.dumps(plan, ensure_ascii=False) if as_json else describe(plan))
    finally:
        if stream is not sys.stdin:
            stream.close()
    if refused:
        raise typer.Exit(1)


@nurture_app.command("status")
def nurture_status(as_json: Annotated[bool, JsonOpt] = False, config: ConfigOpt = None) -> None:
    """Per sequence: active, finished, exited by reason, e-mails sent, call tasks, refusals."""
    from worker.pipeline.nurture import describe_status, status

    application, _broker = _boot(config)
    report = status(application.store, application.config)
    if as_json:
        _echo(json.dumps(report, ensure_ascii=False))
        return
    for line in describe_status(report):
        _echo(line)


@nurture_app.command("pause")
def nurture_pause(
    sequence: Annotated[str, typer.Argument(help="A sequence of nurture.yaml.")],
    config: ConfigOpt = None,
) -> None:
    """Freeze a sequence: its contacts get no step until it is resumed."""
    from worker.pipeline.nurture import pause

    application = _nurture_app(config, sequence)
    frozen = pause(application.store, sequence, datetime.now(UTC))
    _echo(f"{sequence} paused: {frozen} contacts frozen")


@nurture_app.command("resume")
def nurture_resume(
    sequence: Annotated[str, typer.Argument(help="A paused sequence of nurture.yaml.")],
    config: ConfigOpt = None,
) -> None:
    """Go on with a paused sequence; each contact's dates move on by the time it was paused."""
    from worker.pipeline.nurture import resume

    application = _nurture_app(config, sequence)
    moved = resume(application.store, sequence, datetime.now(UTC))
    if moved is None:
        _err(f"{sequence} is not paused")
        raise typer.Exit(1)
    _echo(f"{sequence} resumed: {moved} contacts go on, their dates moved by the pause")


def _nurture_app(config: Path | None, sequence: str) -> Any:
    application, _broker = _boot(config)
    names = [s.name for s in application.config.sequences]
    if sequence not in names:
        _err(f"no sequence named '{sequence}'; nurture.yaml has: {', '.join(names) or 'none'}")
        raise typer.Exit(2)
    return application


hygiene_app = typer.Typer(
    help="List hygiene: bounces, list health, suppressed addresses.", no_args_is_help=True
)
app.add_typer(hygiene_app, name="hygiene")


@hygiene_app.command("import-bounces")
def hygiene_import(
    path: Annotated[Path, typer.Argument(help="A Maildir or a folder of .eml files.")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False,
    now: Annotated[str | None, typer.Option(help="Record as of this ISO 8601 time.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Read the DSNs waiting in PATH once; each is moved to PATH/done/ when recorded."""
    from worker.commands.hygiene import describe_import
    from worker.pipeline.hygiene import import_bounces, waiting_dsn_files

    if not path.is_dir():
        _err(f"{path} is not a folder (a Maildir or a folder of .eml files)")
        raise typer.Exit(2)
    at = _now_option(now)
    application = _app(config)
    shown = not as_json and sys.stdout.isatty()
    with _progress(shown) as progress:
        waiting = sum(1 for _ in waiting_dsn_files(path)) if shown else None
        files = progress.add_task(f"reading {path.name}", total=waiting)
        result = import_bounces(
            application.store,
            application.config,
            path,
            at,
            on_progress=lambda n: progress.update(files, completed=n),
        )
    _echo(json.dumps(result.as_dict()) if as_json else describe_import(str(path), result))


@hygiene_app.command("report")
def hygiene_report(
    as_json: Annotated[bool, typer.Option("--json", help="A JSON list, worst first.")] = False,
    now: Annotated[str | None, typer.Option(help="As of this ISO 8601 time.")] = None,
    config: ConfigOpt = None,
) -> None:
    """Per list (source, and source/YYYY-MM): size, age, expected decay, bounces, status."""
    from worker.commands.hygiene import render_report, report_json
    from worker.pipeline.hygiene import list_figures

    at = _now_option(now)
    application = _app(config)
    figures = list_figures(application.store, application.config, at)
    _echo(json.dumps(report_json(figures), indent=2) if as_json else render_report(figures))


@hygiene_app.command("restore")
def hygiene_restore(
    email: Annotated[str, typer.Argument(help="The address to take as deliverable again.")],
    config: ConfigOpt = None,
) -> None:
    """Reverse an address's bounce classification; its history is kept and shown."""
    import getpass

    from worker.commands.hygiene import change_line
    from worker.pipeline.hygiene import restore

    application = _app(config)
    history = restore(
        application.store, email.strip().lower(), datetime.now(UTC), getpass.getuser()
    )
    if history is None:
        _err("nobody with that e-mail address is stored")
        raise typer.Exit(1)
    for change in history:
        _echo(change_line(change))
    _echo(f"{email.strip().lower()} is ok: nurture e-mail may reach it again")


@hygiene_app.command("resume")
def hygiene_resume(
    name: Annotated[str, typer.Argument(help="A suspended list: source or source/YYYY-MM.")],
    config: ConfigOpt = None,
) -> None:
    """Mail a suspended list again; its bounce rate counts from now on."""
    import getpass

    from worker.pipeline.hygiene import resume_list

    application = _app(config)
    if not resume_list(application.store, name, datetime.now(UTC), getpass.getuser()):
        _err(f"list '{name}' is not suspended (leadwerk hygiene report shows every list)")
        raise typer.Exit(1)
    _echo(f"{name} resumed: nurture e-mail to it goes out again")


def _lines_of(file: str) -> TextIO:
    """A JSON Lines input: the file, or stdin for ``-``; one that cannot be read is exit 2."""
    try:
        return sys.stdin if file == "-" else open(file, encoding="utf-8")
    except OSError as exc:
        _err(f"cannot read {file}: {exc.strerror}")
        raise typer.Exit(2) from None


def _now_option(value: str | None) -> datetime:
    try:
        return _parse_now(value)
    except ValueError as exc:
        _err(f"--now: {exc}")
        raise typer.Exit(2) from None


# Set by :func:`main`: the process is a ``leadwerk`` command's own.
_own_process = False


def main() -> None:
    global _own_process
    _own_process = True
    app()

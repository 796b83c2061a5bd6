"""The ``leadwerk`` command. Exit codes: 0 ok, 1 a failed check, 2 bad usage or config."""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy.exc import ArgumentError, DBAPIError

import config as config_package
from config.loader import Config, load_or_exit
from config.settings import Settings, load_settings

app = typer.Typer(
    help="Leadwerk: leads from marketing tools, scored, routed and followed up.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
rules_app = typer.Typer(help="Check, test and explain the rules in config/.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: work that failed for good.", no_args_is_help=True)
quarantine_app = typer.Typer(help="Records that could not be taken in.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(dlq_app, name="dlq")
app.add_typer(quarantine_app, name="quarantine")

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", help="The config directory (else LEADWERK_CONFIG_DIR, else ./config)."
    ),
]
_global: dict[str, Path | None] = {"config": None}


@app.callback()
def _main(config: ConfigOpt = None) -> None:
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
    return settings


def _echo(text: str) -> None:
    typer.echo(text)


def _err(text: str) -> None:
    typer.echo(text, err=True)


def _config(settings: Settings, with_tests: bool = False) -> Config:
    return load_or_exit(settings, _err, with_tests=with_tests)


def _open(settings: Settings, config: Config) -> Any:
    """The process's App over its store: the one place the CLI opens the store. A store it
    cannot reach is one line in words and exit 2."""
    from connectors.errors import FatalError
    from worker.runtime.app import init_app
    from worker.store.db import unreachable

    try:
        return init_app(settings, config=config)
    except (ArgumentError, DBAPIError, OSError) as exc:
        _err(unreachable(settings.database_url, exc))
        raise typer.Exit(2) from None
    except FatalError as exc:
        _err(f"cannot start: {exc}")
        raise typer.Exit(2) from None


def _boot(config_dir: Path | None) -> Any:
    """Settings, config, store and broker for a command that runs the pipeline."""
    from worker.runtime.broker import setup_broker

    settings = _settings(config_dir)
    application = _open(settings, _config(settings))
    broker = setup_broker(settings)
    return application, broker


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
def run(
    once: Annotated[bool, typer.Option(help="Poll and import once, drain, exit.")] = False,
    demo: Annotated[bool, typer.Option(help="Feed generated sample leads first.")] = False,
    demo_count: Annotated[int, typer.Option(help="How many demo leads.")] = 12,
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    config: ConfigOpt = None,
) -> None:
    """All of Leadwerk in one process (embedded defaults), or the group against Redis."""
    from worker.runtime import embedded as runtime
    from worker.runtime.reload import start_reloader

    application, broker = _boot(config)
    settings = application.settings
    if settings.redis_url and not once:
        from worker.runtime.processes import run_group

        raise typer.Exit(run_group(settings, host, port))
    worker = runtime.start_worker(application, broker)
    reloader = None if once else start_reloader(application)
    try:
        if demo:
            from worker.commands.demo import feed_demo

            report = feed_demo(application, demo_count)
            _echo(f"demo: {report.accepted} sample leads fed, {report.quarantined} quarantined")
        if once:
            raise typer.Exit(_run_once(application, broker, worker))
        from worker.runtime.clock import start_clock
        from worker.web.app import serve

        clock = start_clock(application, background=True)
        try:
            serve(application, host or settings.web_host, port or settings.web_port)
        finally:
            clock.shutdown(wait=False)
    finally:
        if reloader is not None:
            reloader.stop()
        worker.stop()


def _run_once(application: Any, broker: Any, worker: Any) -> int:
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
    runtime.drain(application, broker, worker)
    accounting = runtime.account(application)
    _print_results(application)
    _echo(
        f"accounted for {accounting.events} leads: {accounting.processed} processed, "
        f"{accounting.dead} dead-lettered, {accounting.pending} pending; "
        f"{accounting.quarantined} records quarantined; messages: {accounting.messages_sent} "
        f"sent, {accounting.messages_failed} failed, {accounting.messages_pending} pending"
    )
    if application.outbox_mode:
        _echo(f"e-mails and Slack messages were written to {application.settings.outbox_dir}")
    return 0 if accounting.complete and not failed else 1


def _print_results(application: Any) -> None:
    from sqlalchemy import select

    from rules.contact import mask_email
    from rules.scoring import r1
    from worker.store.models import Assignment, Contact

    with application.store.session() as session:
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
    application, broker = _boot(config)
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
    from worker.runtime.reload import start_reloader

    application, _broker = _boot(config)
    start_reloader(application)
    start_clock(application, background=False)


@app.command()
def web(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
    config: ConfigOpt = None,
) -> None:
    """HTTP: webhooks in, accept links, /healthz, /metrics."""
    from worker.runtime.reload import start_reloader
    from worker.web.app import serve

    application, _broker = _boot(config)
    start_reloader(application)
    serve(application, host or application.settings.web_host, port or application.settings.web_port)


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
def rules_test(config: ConfigOpt = None) -> None:
    """Run the cases in config/tests/; prints `N passed, N failed`."""
    from worker.commands.ruletests import run_rule_tests

    settings = _settings(config)
    loaded = _config(settings, with_tests=True)
    passed, failed = run_rule_tests(loaded, _echo)
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
    store = _open(settings, current).store
    try:
        report = diff_rules(store, other, current, against=against, now=at, since=span)
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
    """Score contacts with the rules as they are, touching nothing."""
    from worker.commands.score import score_stream

    settings = _settings(config)
    loaded = _config(settings)
    try:
        at = _parse_now(now)
    except ValueError as exc:
        _err(f"--now: {exc}")
        raise typer.Exit(2) from None
    try:
        stream = sys.stdin if file == "-" else open(file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        _err(f"cannot read {file}: {exc.strerror}")
        raise typer.Exit(2) from None
    try:
        score_stream(
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


def _process_now(application: Any, broker: Any) -> None:
    """New work in the store: processed here in single-process mode, handed to the workers
    (enqueued) when Redis is set."""
    from worker.pipeline.sweep import enqueue, find_pending
    from worker.runtime import embedded as runtime

    if application.settings.redis_url:
        lease = timedelta(seconds=application.settings.send_lease)
        enqueue(find_pending(application.store, datetime.now(UTC), send_lease=lease))
        return
    worker_ = runtime.start_worker(application, broker)
    try:
        runtime.drain(application, broker, worker_)
    finally:
        worker_.stop()


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    source: Annotated[str, typer.Option("--source", help="The source in sources.yaml.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOpt = None,
) -> None:
    """One-off ingest of an export file through a source's mapping; then scored and routed."""
    from connectors.sources.files import ExportError
    from connectors.sources.registry import is_file_based
    from worker.pipeline.ingest import IngestReport
    from worker.pipeline.poll import import_file

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
    try:
        report = import_file(
            application.store, application.config, application.config.sources[source], file
        )
    except ExportError as exc:
        if as_json:
            failed = IngestReport(source, file=file.name, error=str(exc))
            _echo(json.dumps(failed.as_dict(), ensure_ascii=False))
        _err(str(exc))
        raise typer.Exit(1) from None
    _process_now(application, broker)
    if as_json:
        _echo(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        _echo(
            f"{file.name}: received {report.received}, accepted {report.accepted}, "
            f"duplicates {report.duplicates}, quarantined {report.quarantined}"
        )
        for problem in report.problems:
            _echo(f"  row {problem.row}: {problem.field}: {problem.reason}")
    raise typer.Exit(0)


# --- operations -----------------------------------------------------------------------------


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json")] = False,
    config: ConfigOpt = None,
) -> None:
    """Queue depths and ages, dead letters, quarantine, SLA clocks, sources, heartbeats."""
    from worker.commands.status import collect_status, render_status

    settings = _settings(config)
    application = _open(settings, _config(settings))
    data = collect_status(application)
    _echo(json.dumps(data, indent=2, default=_iso) if as_json else render_status(data))


@dlq_app.command("list")
def dlq_list(
    as_json: Annotated[bool, typer.Option("--json")] = False, config: ConfigOpt = None
) -> None:
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


@dlq_app.command("replay")
def dlq_replay(
    letter: Annotated[int | None, typer.Argument()] = None,
    all_: Annotated[bool, typer.Option("--all")] = False,
    config: ConfigOpt = None,
) -> None:
    """Put dead-lettered work back on its queue once the cause is fixed."""
    from worker.commands.operations import replay_dead_letters

    if letter is None and not all_:
        _err("name a dead letter ID or --all")
        raise typer.Exit(2)
    application, broker = _boot(config)
    count = replay_dead_letters(application, broker, None if all_ else letter)
    _echo(f"replayed {count} dead letter(s)")


@quarantine_app.command("list")
def quarantine_list(
    source: Annotated[str | None, typer.Option()] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
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
        where = f"row {row['row']}" if row["row"] else f"record {row['record_id']}"
        _echo(
            f"{row['id']:>5}  {row['source']} {where} {row['file'] or ''}: "
            f"{row['field']}: {row['reason']}"
        )
    _echo(f"{len(rows)} quarantined record(s)")


@quarantine_app.command("retry")
def quarantine_retry(
    record: Annotated[int | None, typer.Argument()] = None,
    source: Annotated[str | None, typer.Option()] = None,
    config: ConfigOpt = None,
) -> None:
    """Take quarantined records in again with the mapping as it is now."""
    from worker.commands.operations import retry_quarantine

    application, broker = _boot(config)
    accepted, still = retry_quarantine(application, record, source)
    _process_now(application, broker)
    _echo(f"{accepted} record(s) taken in, {still} still quarantined")


@app.command()
def accept(
    lead: Annotated[str, typer.Argument(help="Lead id or e-mail.")], config: ConfigOpt = None
) -> None:
    """The rep accepts the lead: the SLA clock stops."""
    from worker.commands.operations import accept_lead

    application, _ = _boot(config)
    result = accept_lead(application, lead)
    if result is None:
        _err(f"no open assignment for lead {lead}")
        raise typer.Exit(1)
    _echo(result)


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


sla_app = typer.Typer(help="Response-time SLAs: how fast leads are accepted.", no_args_is_help=True)
app.add_typer(sla_app, name="sla")


@sla_app.command("report")
def sla_report(
    since: Annotated[str, typer.Option(help="How far back, e.g. 7d, 30d, 12w.")] = "30d",
    as_json: Annotated[bool, typer.Option("--json")] = False,
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
    settings = _settings(config)
    application = _open(settings, _config(settings))
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
def crm_status(
    as_json: Annotated[bool, typer.Option("--json")] = False, config: ConfigOpt = None
) -> None:
    """Changes waiting for the CRM (by kind, the oldest's age), sent, dead with the CRM's
    answer, and the last sync."""
    from worker.pipeline.crm import crm_status as collect
    from worker.pipeline.crm import render_crm_status

    settings = _settings(config)
    application = _open(settings, _config(settings))
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

    settings = _settings(config)
    application = _open(settings, _config(settings))
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
    try:
        at = _parse_now(now)
    except ValueError as exc:
        _err(f"--now: {exc}")
        raise typer.Exit(2) from None
    try:
        stream = sys.stdin if file == "-" else open(file, encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        _err(f"cannot read {file}: {exc.strerror}")
        raise typer.Exit(2) from None
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


def main() -> None:
    app()

"""Hygiene step: bounce reports recorded against their contact and message, addresses moved
through ok → soft → hard, lists measured against their decay and suspended before the
sender's reputation pays, stale contacts flagged.

Every report is stored once (its key is unique: the same DSN file imported twice, or an ESP
retrying a webhook, counts once); a report for an address no contact has is stored too and
counted as unmatched. The list check runs on the clock (``lists.check_every``) and after
each batch of reports; owners hear of a warning or a suspension once, through the outbox.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, and_, case, exists, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from config.loader import Config
from config.models import ImapBounces, MaildirBounces, Stale
from config.settings import env_secret
from connectors.bounces.base import BounceReport
from connectors.bounces.dsn import dsn_reports
from connectors.bounces.imap import imap_folder
from rules.contact import mask_email
from rules.hygiene import (
    BOUNCE_KINDS,
    DELIVERED,
    HARD,
    LIST_SEVERITY,
    OK,
    SOFT,
    SUSPENDED,
    UNPARSEABLE,
    WARN,
    bounce_rate,
    expected_bad,
    list_status,
    lists_of,
    months_between,
    next_state,
)
from worker.pipeline.notify import message_id_domain
from worker.store.bulk import among
from worker.store.db import Store
from worker.store.models import (
    ADDRESS_STATES,
    AddressChange,
    AddressState,
    BounceEvent,
    Contact,
    Event,
    ListState,
    Message,
)
from worker.web.unsubscribe import NURTURE

log = logging.getLogger("leadwerk.hygiene")

DONE_FOLDER = "done"
FILES_PER_BATCH = 200
REPORTS_PER_STATEMENT = 500


@dataclass
class ImportResult:
    """What a batch of reports did: ``read`` DSN files, classified reports of known contacts,
    ``unmatched`` reports, ``duplicates`` already taken in, and each unparseable file with
    the reason."""

    read: int = 0
    hard: int = 0
    soft: int = 0
    policy: int = 0
    delivered: int = 0
    unmatched: int = 0
    duplicates: int = 0
    unparseable_files: list[dict[str, str | None]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "read": self.read,
            "hard": self.hard,
            "soft": self.soft,
            "policy": self.policy,
            "delivered": self.delivered,
            "unmatched": self.unmatched,
            "duplicates": self.duplicates,
            "unparseable": len(self.unparseable_files),
            "unparseable_files": self.unparseable_files,
        }


# --- recording reports ----------------------------------------------------------------------


def _insert(store: Store) -> Any:
    return postgresql.insert if store.dialect == "postgresql" else sqlite.insert


def _utc(moment: datetime | None, now: datetime) -> datetime:
    if moment is None:
        return now
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def record_reports(
    store: Store, config: Config, reports: Iterable[BounceReport], now: datetime
) -> ImportResult:
    """Store each report once, move its address along, and count what happened. One
    transaction for all of them: a batch is taken in whole or not at all. Reports are matched
    and inserted a chunk at a time (two lookups and one insert per chunk, not per report)."""
    result = ImportResult()
    pending = list(reports)
    with store.session() as session:
        for start in range(0, len(pending), REPORTS_PER_STATEMENT):
            chunk = pending[start : start + REPORTS_PER_STATEMENT]
            _record_chunk(session, store, config, chunk, now, result)
    return result


def _record_chunk(
    session: Session,
    store: Store,
    config: Config,
    reports: list[BounceReport],
    now: datetime,
    result: ImportResult,
) -> None:
    matches = _match(session, reports)
    rows = [
        {
            "key": report.key[:300],
            "origin": report.origin,
            "kind": report.kind,
            "status_code": report.status,
            "recipient": report.recipient,
            "contact_id": contact_id,
            "message_id": outbox_id,
            "file": report.file,
            "detail": (report.detail or "")[:2000] or None,
            "occurred_at": _utc(report.occurred_at, now),
            "received_at": now,
        }
        for report, (contact_id, outbox_id) in zip(reports, matches, strict=True)
    ]
    inserted = dict(
        session.execute(
            _insert(store)(BounceEvent)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(BounceEvent.key, BounceEvent.id)
        ).all()
    )
    states = _address_states(session, {r["contact_id"] for r in rows if r["contact_id"]}, now)
    for report, row in zip(reports, rows, strict=True):
        event_id = inserted.pop(row["key"], None)  # a key twice in one chunk counts once
        if event_id is None:
            result.duplicates += 1
        elif report.kind == UNPARSEABLE:
            result.unparseable_files.append({"file": report.file, "reason": report.detail})
            log.warning("unparseable bounce %s: %s", report.file or report.key, report.detail)
        elif row["contact_id"] is None:
            result.unmatched += 1
            log.info("bounce for an address no contact has: %s", mask_email(report.recipient))
        else:
            setattr(result, report.kind, getattr(result, report.kind) + 1)
            _move_address(session, config, states[row["contact_id"]], report, event_id, now)


def _match(session: Session, reports: list[BounceReport]) -> list[tuple[int | None, int | None]]:
    """The contact and outbox message each report is about: the message by the Message-ID
    the report quotes, the contact by that message or else by the address."""
    ids = {r.message_id for r in reports if r.message_id}
    outbox = (
        {
            row.message_id: row
            for row in session.execute(
                select(Message.message_id, Message.id, Message.contact_id, Message.recipient).where(
                    Message.message_id.in_(ids)
                )
            )
        }
        if ids
        else {}
    )
    emails = {r.recipient for r in reports if r.recipient}
    contacts = (
        dict(
            session.execute(
                select(Contact.email, Contact.id).where(Contact.email.in_(emails))
            ).all()
        )
        if emails
        else {}
    )
    matches: list[tuple[int | None, int | None]] = []
    for report in reports:
        sent = outbox.get(report.message_id) if report.message_id else None
        if (
            sent is not None
            and sent.contact_id is not None
            and (report.recipient is None or sent.recipient.lower() == report.recipient)
        ):
            matches.append((sent.contact_id, sent.id))
        else:
            contact = contacts.get(report.recipient) if report.recipient else None
            matches.append((contact, sent.id if sent is not None else None))
    return matches


def _address_states(
    session: Session, contact_ids: set[int], now: datetime
) -> dict[int, AddressState]:
    """The address states of these contacts, locked (in id order, as every writer takes
    them), with a fresh ``ok`` state for a contact that has none yet."""
    if not contact_ids:
        return {}
    states = {
        state.contact_id: state
        for state in session.scalars(
            select(AddressState)
            .where(AddressState.contact_id.in_(sorted(contact_ids)))
            .order_by(AddressState.contact_id)
            .with_for_update()
        )
    }
    for contact_id in sorted(contact_ids - set(states)):
        states[contact_id] = AddressState(
            contact_id=contact_id, state=OK, soft_in_row=0, changed_at=now
        )
        session.add(states[contact_id])
    return states


def _move_address(
    session: Session,
    config: Config,
    state: AddressState,
    report: BounceReport,
    event_id: int,
    now: datetime,
) -> None:
    if report.kind == SOFT and report.message_id:
        if report.message_id == state.last_soft_for:
            return  # another "still delayed" notice for the same message
        state.last_soft_for = report.message_id
    elif report.kind in (HARD, DELIVERED):
        state.last_soft_for = None
    step = next_state(
        state.state,
        state.soft_in_row,
        report.kind,
        report.status,
        config.hygiene.bounces.soft_to_hard_after,
    )
    if step.cause is not None:
        session.add(
            AddressChange(
                contact_id=state.contact_id,
                from_state=state.state,
                to_state=step.state,
                cause=f"{step.cause} ({report.origin})",
                event_id=event_id,
                at=now,
            )
        )
        state.changed_at = now
    state.state, state.soft_in_row = step.state, step.soft_in_row


# --- Maildir --------------------------------------------------------------------------------


def waiting_dsn_files(folder: Path) -> Iterator[Path]:
    """The mails waiting in a Maildir (``new/`` and ``cur/``) or a folder of ``.eml`` files,
    oldest name first; ``done/`` holds the ones already read."""
    if (folder / "new").is_dir() or (folder / "cur").is_dir():
        for sub in ("new", "cur"):
            directory = folder / sub
            if directory.is_dir():
                yield from sorted(p for p in directory.iterdir() if p.is_file())
        return
    yield from sorted(p for p in folder.glob("*.eml") if p.is_file())


def import_bounces(
    store: Store,
    config: Config,
    folder: Path,
    now: datetime,
    on_progress: Callable[[int], None] | None = None,
) -> ImportResult:
    """Read every DSN waiting in ``folder`` once: record it, then move it to ``done/``.

    Files are recorded in batches of :data:`FILES_PER_BATCH`, one transaction each, and moved
    once their batch is committed; a crash in between leaves them to be read again, and their
    keys make the second reading count nothing. ``on_progress(n)`` is told after each batch
    how many files have been read."""
    total = ImportResult()
    done = folder / DONE_FOLDER
    batch: list[Path] = []
    reports: list[BounceReport] = []

    def flush() -> None:
        _add(total, record_reports(store, config, reports, now))
        done.mkdir(exist_ok=True)
        for path in batch:
            os.replace(path, done / path.name.split(":", 1)[0])
        total.read += len(batch)
        batch.clear()
        reports.clear()
        if on_progress is not None:
            on_progress(total.read)

    for path in waiting_dsn_files(folder):
        try:
            raw = path.read_bytes()
        except OSError as exc:
            log.warning("cannot read %s: %s", path, exc.strerror)
            continue
        reports.extend(dsn_reports(raw, "maildir", path.name))
        batch.append(path)
        if len(batch) >= FILES_PER_BATCH:
            flush()
    if batch:
        flush()
    if total.read:
        check_lists(store, config, now)
    return total


def import_imap(store: Store, config: Config, source: ImapBounces, now: datetime) -> ImportResult:
    """Read the unflagged DSNs of an IMAP folder once: record each, then flag it."""
    total = ImportResult()
    user, password = env_secret(source.user_env), env_secret(source.password_env)
    if not user or not password:
        log.error(
            "bounces from IMAP %s: set %s and %s", source.host, source.user_env, source.password_env
        )
        return total
    with imap_folder(source, user, password) as folder:
        for uid in folder.unread():
            raw = folder.fetch(uid)
            if raw is None:
                continue
            name = f"imap://{source.host}/{source.folder}/{uid.decode()}"
            _add(total, record_reports(store, config, dsn_reports(raw, "imap", name), now))
            total.read += 1
            folder.flag(uid)
    if total.read:
        check_lists(store, config, now)
    return total


def import_bounce_sources(store: Store, config: Config, now: datetime) -> ImportResult:
    """The clock's job: every Maildir and IMAP folder of ``bounce_sources``, once."""
    total = ImportResult()
    for source in config.hygiene.bounce_sources:
        if isinstance(source, MaildirBounces):
            folder = config.directory.parent / source.path
            if folder.is_dir():
                part = import_bounces(store, config, folder, now)
            else:
                log.warning("bounce folder %s does not exist", folder)
                continue
        elif isinstance(source, ImapBounces):
            part = import_imap(store, config, source, now)
        else:
            continue
        _add(total, part)
        total.read += part.read
    return total


def _add(total: ImportResult, part: ImportResult) -> None:
    for name in ("hard", "soft", "policy", "delivered", "unmatched", "duplicates"):
        setattr(total, name, getattr(total, name) + getattr(part, name))
    total.unparseable_files.extend(part.unparseable_files)


# --- suppression ----------------------------------------------------------------------------


def suppressed(conn: Connection | Session, contact_id: int) -> str | None:
    """Why no nurture e-mail may go to this contact (``hard bounce``, ``unsubscribed``), or
    None. Rep notifications are not affected."""
    if hard_bounced(conn, contact_id):
        return "hard bounce"
    unsubscribed = conn.execute(
        select(Contact.unsubscribed_at).where(Contact.id == contact_id)
    ).scalar()
    return "unsubscribed" if unsubscribed is not None else None


def hard_bounced(conn: Connection | Session, contact_id: int) -> bool:
    """Whether list hygiene holds the contact's address hard-bounced."""
    return bool(hard_bounced_among(conn, [contact_id]))


def hard_bounced_among(conn: Connection | Session, contact_ids: Sequence[int]) -> set[int]:
    """Those of the contacts whose address list hygiene holds hard-bounced."""
    if not contact_ids:
        return set()
    dialect = conn.get_bind().dialect if isinstance(conn, Session) else conn.dialect
    return set(
        conn.execute(
            select(AddressState.contact_id).where(
                among(dialect.name, ADDRESS_STATES.c.contact_id, contact_ids),
                AddressState.state == HARD,
            )
        ).scalars()
    )


def list_suspended(conn: Connection | Session, contact_id: int) -> bool:
    """Whether a list this contact belongs to is suspended: its nurture e-mail stops at once."""
    row = conn.execute(
        select(Contact.source, Contact.created_at).where(Contact.id == contact_id)
    ).first()
    if row is None:
        return False
    names = lists_of(row.source, _utc(row.created_at, row.created_at))
    found = conn.execute(
        select(ListState.name).where(ListState.name.in_(names), ListState.status == SUSPENDED)
    ).first()
    return found is not None


# --- restore and resume ---------------------------------------------------------------------


def restore(store: Store, email: str, now: datetime, by: str) -> list[AddressChange] | None:
    """Reverse an address's classification (back to ok, soft count reset); the change joins
    its history. None when no contact has the address."""
    with store.session() as session:
        contact_id = session.scalar(select(Contact.id).where(Contact.email == email))
        if contact_id is None:
            return None
        state = session.get(AddressState, contact_id, with_for_update=True)
        if state is not None and (state.state != OK or state.soft_in_row):
            session.add(
                AddressChange(
                    contact_id=contact_id,
                    from_state=state.state,
                    to_state=OK,
                    cause=f"restored by {by}",
                    at=now,
                )
            )
            state.state, state.soft_in_row, state.changed_at = OK, 0, now
        session.flush()
        history = list(
            session.scalars(
                select(AddressChange)
                .where(AddressChange.contact_id == contact_id)
                .order_by(AddressChange.id)
            )
        )
        session.expunge_all()
        return history


def resume_list(store: Store, name: str, now: datetime, by: str) -> bool:
    """An admin's decision: the list is mailed again and its rate counts from now on."""
    with store.session() as session:
        state = session.get(ListState, name, with_for_update=True)
        if state is None or state.status != SUSPENDED:
            return False
        state.status, state.changed_at, state.counts_from = OK, now, now
        state.told, state.resumed_by = None, by
    return True


# --- stale contacts -------------------------------------------------------------------------


def _no_jit(session: Session, store: Store) -> None:
    """PostgreSQL compiles a query it estimates as costly (these scan every contact) before
    running it: at 200k contacts the compiling alone took 213 ms of the stale sweep's 672 ms
    (EXPLAIN ANALYZE), for a plan that is a hash lookup per row. The sweep runs without."""
    if store.dialect == "postgresql":
        session.execute(text("SET LOCAL jit = off"))


def stale_condition(cutoff: datetime) -> Any:
    """No engagement since ``cutoff``: arrived before it and no event since."""
    recent = exists().where(Event.contact_id == Contact.id, Event.occurred_at >= cutoff)
    return and_(Contact.created_at < cutoff, ~recent)


def sweep_stale(store: Store, config: Config, now: datetime) -> int:
    """Flag contacts with no engagement for ``stale.no_engagement_for``, clear those that
    engaged again: one set-based statement that touches only the rows that change."""
    stale = config.hygiene.stale
    if stale is None:
        return 0
    is_stale = stale_condition(now - stale.no_engagement_for)
    with store.session() as session:
        _no_jit(session, store)
        changed = session.execute(
            update(Contact)
            .where(
                or_(
                    and_(Contact.stale_since.is_(None), is_stale),
                    and_(Contact.stale_since.is_not(None), ~is_stale),
                )
            )
            .values(stale_since=case((Contact.stale_since.is_(None), now), else_=None))
            .execution_options(synchronize_session=False)
        ).rowcount
    return changed or 0


# --- lists ----------------------------------------------------------------------------------


@dataclass
class ListFigures:
    """One list's figures as ``leadwerk hygiene report`` shows them."""

    name: str
    size: int = 0
    age_months: float = 0.0
    expected_bad: float = 0.0
    sent: int = 0
    hard: int = 0
    soft: int = 0
    policy: int = 0
    bounce_rate: float = 0.0
    status: str = OK
    stale: int = 0
    last_mailed: datetime | None = None
    cold: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "list": self.name,
            "size": self.size,
            "age_months": self.age_months,
            "expected_bad": round(self.expected_bad, 4),
            "sent": self.sent,
            "hard": self.hard,
            "soft": self.soft,
            "policy": self.policy,
            "bounce_rate": round(self.bounce_rate, 4),
            "status": self.status,
            "stale": self.stale,
            "last_mailed": self.last_mailed.isoformat() if self.last_mailed else None,
            "cold": self.cold,
        }


def _month(store: Store, column: Any) -> Any:
    if store.dialect == "postgresql":
        return func.to_char(func.timezone("UTC", column), "YYYY-MM")
    return func.strftime("%Y-%m", column)


def _is_nurture() -> Any:
    """:func:`worker.web.unsubscribe.is_nurture` as SQL: the e-mails that mail a list."""
    return or_(Message.purpose == NURTURE, Message.purpose.like(f"{NURTURE}:%"))


def _monthly_counts(
    session: Session, store: Store, since: datetime, until: datetime
) -> dict[str, dict[str, int]]:
    """Per monthly list: nurture e-mails sent and bounces of each kind in [since, until)."""
    month = _month(store, Contact.created_at)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    sent = session.execute(
        select(Contact.source, month, func.count())
        .join(Message, Message.contact_id == Contact.id)
        .where(
            Message.channel == "email",
            Message.sent_at >= since,
            Message.sent_at < until,
            _is_nurture(),
        )
        .group_by(Contact.source, month)
    )
    for source, ym, count in sent:
        counts[f"{source}/{ym}"]["sent"] += count
    bounces = session.execute(
        select(Contact.source, month, BounceEvent.kind, func.count())
        .join(BounceEvent, BounceEvent.contact_id == Contact.id)
        .where(
            BounceEvent.kind.in_(BOUNCE_KINDS),
            BounceEvent.occurred_at >= since,
            BounceEvent.occurred_at < until,
        )
        .group_by(Contact.source, month, BounceEvent.kind)
    )
    for source, ym, kind, count in bounces:
        counts[f"{source}/{ym}"][kind] += count
    return counts


def list_figures(store: Store, config: Config, now: datetime) -> list[ListFigures]:
    """Every list (each source, and each source and month of arrival) with its figures and
    the status its rate calls for, worst first. Reads only."""
    lists_cfg = config.hygiene.lists
    stale = config.hygiene.stale
    decay = (
        stale.expected_decay_per_month
        if stale
        else Stale.model_fields["expected_decay_per_month"].default
    )
    window_start = now - lists_cfg.window
    month = _month(store, Contact.created_at)
    with store.session() as session:
        _no_jit(session, store)
        states = {s.name: s for s in session.scalars(select(ListState))}
        sizes = session.execute(
            select(Contact.source, month, func.count(), func.count(Contact.stale_since))
            .where(Contact.created_at <= now)
            .group_by(Contact.source, month)
        ).all()
        mailed = dict(
            (
                (f"{source}/{ym}", last)
                for source, ym, last in session.execute(
                    select(Contact.source, month, func.max(Message.sent_at))
                    .join(Message, Message.contact_id == Contact.id)
                    .where(Message.channel == "email", Message.sent_at <= now, _is_nurture())
                    .group_by(Contact.source, month)
                )
            )
        )
        counts = _monthly_counts(session, store, window_start, now)
        # A resumed list counts from its resume only (resumes are rare: a query each).
        late = {
            name: _monthly_counts(session, store, state.counts_from, now)
            for name, state in states.items()
            if state.counts_from is not None and state.counts_from > window_start
        }
    figures: dict[str, ListFigures] = {}
    ages: dict[str, float] = defaultdict(float)
    for source, ym, size, stale in sizes:
        year, mon = (int(part) for part in ym.split("-"))
        name = f"{source}/{ym}"
        monthly = figures[name] = ListFigures(name, size=size, stale=stale)
        monthly.age_months = float(months_between(year, mon, now))
        parent = figures.setdefault(source, ListFigures(source))
        parent.size += size
        parent.stale += stale
        ages[source] += monthly.age_months * size
        last = _utc(mailed[name], now) if mailed.get(name) else None
        for target in (monthly, parent):
            if last is not None and (target.last_mailed is None or last > target.last_mailed):
                target.last_mailed = last
    for source in ages:
        parent = figures[source]
        parent.age_months = round(ages[source] / parent.size, 1) if parent.size else 0.0
    for name, figure in figures.items():
        for kind in ("sent", *BOUNCE_KINDS):
            setattr(figure, kind, _count(name, name in ages, kind, late.get(name, counts)))
        figure.expected_bad = expected_bad(decay, figure.age_months)
        figure.bounce_rate = bounce_rate(figure.hard, figure.sent)
        stored = states[name].status if name in states else OK
        figure.status = list_status(
            stored, figure.bounce_rate, lists_cfg.warn_bounce_rate, lists_cfg.suspend_bounce_rate
        )
        figure.cold = figure.last_mailed is None or now - figure.last_mailed > lists_cfg.touch_every
    return sorted(
        figures.values(),
        key=lambda f: (-LIST_SEVERITY[f.status], -f.bounce_rate, -f.expected_bad, f.name),
    )


def _count(name: str, is_source: bool, kind: str, table: dict[str, dict[str, int]]) -> int:
    """A list's count of ``kind``: a source list's is the sum of its monthly lists'."""
    if not is_source:
        return table.get(name, {}).get(kind, 0)
    return sum(v.get(kind, 0) for k, v in table.items() if k.rsplit("/", 1)[0] == name)


def check_lists(store: Store, config: Config, now: datetime) -> list[ListFigures]:
    """Store each list's status as its rate calls for; its owner is told of a warning or a
    suspension once (through the outbox), when the list enters it."""
    figures = list_figures(store, config, now)
    owner = config.hygiene.lists.owner
    with store.session() as session:
        states = {s.name: s for s in session.scalars(select(ListState).with_for_update())}
        for figure in figures:
            state = states.get(figure.name)
            if state is None:
                if figure.status == OK:
                    continue
                state = ListState(name=figure.name, status=OK, changed_at=now)
                session.add(state)
            if state.status != figure.status:
                log.warning(
                    "list %s: %s → %s (bounce rate %.1f%%, %d hard of %d sent)",
                    figure.name,
                    state.status,
                    figure.status,
                    figure.bounce_rate * 100,
                    figure.hard,
                    figure.sent,
                )
                state.status, state.changed_at = figure.status, now
            if figure.status in (WARN, SUSPENDED) and state.told != figure.status:
                if owner is not None:
                    session.add(owner_message(config, owner, figure, now))
                state.told = figure.status
            elif figure.status == OK:
                state.told = None
    return figures


def owner_message(config: Config, owner: str, figure: ListFigures, now: datetime) -> Message:
    """The outbox e-mail telling a list's owner it was warned or suspended: one per entry into
    the status (the list's ``told`` keeps it from being repeated), keyed by its moment."""
    rep = config.team.reps[owner]
    rate = f"{figure.bounce_rate * 100:.1f}%"
    lists_cfg = config.hygiene.lists
    if figure.status == SUSPENDED:
        subject = f"List {figure.name} suspended: {rate} hard bounces"
        what = (
            f"Nurture e-mail to {figure.name} has stopped: its hard-bounce rate is {rate}, above "
            f"{lists_cfg.suspend_bounce_rate * 100:g}%. Clean the list, then resume it with\n"
            f"  leadwerk hygiene resume {figure.name}\n"
        )
    else:
        subject = f"List {figure.name}: {rate} hard bounces"
        what = (
            f"{figure.name} bounces more than it should: {rate} hard bounces, above "
            f"{lists_cfg.warn_bounce_rate * 100:g}%. At "
            f"{lists_cfg.suspend_bounce_rate * 100:g}% it is suspended.\n"
        )
    body = (
        f"Hello {rep.name},\n\n{what}\n"
        f"In the last {lists_cfg.window.days} days: {figure.sent} sent, {figure.hard} hard, "
        f"{figure.soft} soft, {figure.policy} refused by policy.\n"
        f"The list is {figure.age_months:g} months old; about "
        f"{figure.expected_bad * 100:.0f}% of such a list is expected to have gone bad.\n\n"
        "leadwerk hygiene report shows every list.\n"
    )
    day = now.strftime("%Y%m%dT%H%M%S.%f")
    safe = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in figure.name)
    return Message(
        key=f"hygiene:{figure.name}:{figure.status}:{day}",
        contact_id=None,
        purpose=f"list_{figure.status}",
        channel="email",
        recipient=rep.email,
        recipient_name=rep.name,
        rep=owner,
        subject=subject,
        body_text=body,
        message_id=f"<hygiene-{safe}.{figure.status}.{day}@{message_id_domain(config)}>",
        status="pending",
        created_at=now,
    )


def run_checks(store: Store, config: Config, now: datetime | None = None) -> list[ListFigures]:
    """The clock's job: stale contacts flagged, then every list checked."""
    now = now or datetime.now(UTC)
    sweep_stale(store, config, now)
    return check_lists(store, config, now)


def check_interval(config: Config) -> timedelta:
    return config.hygiene.lists.check_every or timedelta(days=1)

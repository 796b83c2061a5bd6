"""CRM sync: every MQL in the CRM once, owned by its rep's CRM user, with its stage.

Each change for the CRM is a row of ``crm_changes`` written in the transaction of the change
itself (routing's hand-over, and a reassignment's, which is the same upsert with the new rep;
a stage move; a call task; an erasure), so nothing that happened can miss the CRM and
nothing is sent for a change that rolled back. :func:`sync`
drains the rows: a lead's changes in the order they were made, new leads in batches, a
passing fault retried with backoff (``Retry-After`` when the CRM says), a refusal or too many
attempts dead with the CRM's answer. Upserts are keyed by e-mail, so a change sent twice (a
crash between the CRM's answer and the commit) changes nothing in the CRM.

Read back: :func:`poll_first_activity` stops the SLA clock on the rep's first activity the
CRM shows; :func:`refresh_account_owners` keeps the CRM's account owners of recent leads'
domains in ``crm_accounts``, where routing reads ``account.owner``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, func, insert, select, text
from sqlalchemy.orm import Session

from config.loader import Config
from connectors.crm.base import CrmConnector, CrmLead
from connectors.errors import ConnectorError, SkippableError
from rules.contact import mask_email
from worker.store.db import Store
from worker.store.models import (
    CRM_CHANGES,
    Assignment,
    Contact,
    CrmAccount,
    CrmChange,
    CrmLink,
    SourceState,
)

log = logging.getLogger("leadwerk.crm")

# The fields a lead carries to the CRM, by Leadwerk's names; ``map:`` says what the CRM calls
# them, and a field the map leaves out stays home.
LEAD_FIELDS = ("first_name", "last_name", "company", "title", "phone", "country", "score")
BACKOFF_FIRST = timedelta(seconds=30)
BACKOFF_MAX = timedelta(minutes=15)
SYNC_STATE = "crm:sync"
ACTIVITY_STATE = "crm:first_activity"
# Domains of leads younger than this have their account owner kept fresh.
RECENT_LEADS = timedelta(days=30)


# --- recording ---------------------------------------------------------------------------


def lead_fields(fields: Mapping[str, Any], score: float | None) -> dict[str, Any]:
    values = {key: fields[key] for key in LEAD_FIELDS if fields.get(key) not in (None, "")}
    if score is not None:
        values["score"] = score
    return values


def change_row(
    contact_id: int | None, email: str, change: str, payload: dict[str, Any], now: datetime
) -> dict[str, Any]:
    """The values of one ``crm_changes`` row, for an insert in the caller's transaction."""
    return {
        "contact_id": contact_id,
        "lead": email.lower(),
        "change": change,
        "payload": payload,
        "status": "pending",
        "attempts": 0,
        "created_at": now,
    }


def new_mql_changes(
    config: Config, contact: Contact, rep: str | None, score: float | None, now: datetime
) -> list[dict[str, Any]]:
    """The hand-over's CRM change: the MQL with its owner and stage (none without a CRM)."""
    if config.crm is None:
        return []
    payload = {"fields": lead_fields(contact.fields, score), "rep": rep, "stage": "mql"}
    return [change_row(contact.id, contact.email, "upsert", payload, now)]


def record(
    connection: Connection,
    config: Config,
    contact: Contact,
    change: str,
    payload: dict[str, Any],
    now: datetime,
) -> None:
    """A change for the CRM in the caller's transaction; nothing without a CRM."""
    if config.crm is not None:
        row = change_row(contact.id, contact.email, change, payload, now)
        connection.execute(insert(CRM_CHANGES), row)


def record_erasure(session: Session, config: Config, contact: Contact, now: datetime) -> bool:
    """Before a contact is erased: a ``delete`` is queued, carrying the CRM id when it is
    known. The contact's other changes go with the contact (the foreign key cascades), so
    none that is still waiting recreates the lead. True when the CRM will be told."""
    if config.crm is None:
        return False
    link = session.get(CrmLink, contact.id)
    payload = {"crm_id": link.crm_id if link else None}
    session.add(CrmChange(**change_row(None, contact.email, "delete", payload, now)))
    return True


# --- sending -----------------------------------------------------------------------------


@dataclass
class SyncResult:
    sent: int = 0
    retried: int = 0
    dead: int = 0
    stopped: str | None = None  # why the round stopped early (the CRM is unreachable)

    def describe(self) -> str:
        line = f"{self.sent} sent, {self.retried} to retry, {self.dead} dead"
        return line + (f"; stopped: {self.stopped}" if self.stopped else "")


@dataclass
class _Round:
    store: Store
    config: Config
    connector: CrmConnector
    now: datetime
    result: SyncResult = field(default_factory=SyncResult)
    blocked: set[str] = field(default_factory=set)  # leads with a change that must wait
    attempted: int = 0

    @property
    def max_attempts(self) -> int:
        assert self.config.crm is not None
        return self.config.crm.max_attempts

    def done(self, row: CrmChange, note: str | None = None) -> None:
        row.status, row.sent_at, row.error = "sent", self.now, note
        row.attempts += 1
        self.attempted += 1
        if row.change == "delete":  # the CRM has forgotten the person: so does the outbox
            row.lead, row.payload = "erased", {}
        self.result.sent += 1

    def failed(self, row: CrmChange, error: ConnectorError) -> None:
        row.attempts += 1
        row.error = str(error)
        self.blocked.add(row.lead)
        self.attempted += 1
        if isinstance(error, SkippableError) or row.attempts >= self.max_attempts:
            row.status = "dead"
            self.result.dead += 1
            log.warning(
                "CRM change %s (%s of %s) dead after %d attempt(s): %s",
                row.id,
                row.change,
                mask_email(row.lead),
                row.attempts,
                error,
            )
            return
        wait = min(BACKOFF_FIRST * 2 ** (row.attempts - 1), BACKOFF_MAX)
        asked = getattr(error, "retry_after", None)
        if asked:
            wait = max(wait, timedelta(seconds=asked))
        row.retry_at = self.now + wait
        self.result.retried += 1


def sync(
    store: Store, config: Config, connector: CrmConnector, now: datetime, limit: int = 1000
) -> SyncResult:
    """One round over the pending changes (at most ``limit``); see the module docstring.

    One round runs at a time: on PostgreSQL a second caller (the clock and ``leadwerk crm
    sync`` together) finds the advisory lock taken and returns at once, sending nothing."""
    assert config.crm is not None
    work = _Round(store, config, connector, now)
    with store.session() as session:
        if not _sole_sender(session):
            work.result.stopped = "another sync round is running"
            return work.result
        rows = session.scalars(
            select(CrmChange)
            .where(CrmChange.status == "pending")
            .order_by(CrmChange.id)
            .limit(limit)
        ).all()
        try:
            _send(session, work, rows)
        finally:
            if work.attempted:  # a round with nothing due says nothing about the CRM
                _note_round(session, SYNC_STATE, now, work.result.stopped)
    return work.result


def _sole_sender(session: Session) -> bool:
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(8317001)")).scalar())


def _send(session: Session, work: _Round, rows: Sequence[CrmChange]) -> None:
    upserts: list[CrmChange] = []
    assert work.config.crm is not None
    batch_size = work.config.crm.batch_size
    for row in rows:
        if row.lead in work.blocked:
            continue
        if row.retry_at is not None and row.retry_at > work.now:
            work.blocked.add(row.lead)
            continue
        if row.change == "upsert" and not any(u.lead == row.lead for u in upserts):
            upserts.append(row)
            if len(upserts) >= batch_size and not _flush(session, work, upserts):
                return
            continue
        # A lead's later change waits for its upsert in the batch.
        if not _flush(session, work, upserts):
            return
        if row.lead in work.blocked:
            continue
        try:
            _one(session, work, row)
        except ConnectorError as exc:
            work.failed(row, exc)
            if not isinstance(exc, SkippableError):
                work.result.stopped = str(exc)
                return
    _flush(session, work, upserts)


def _flush(session: Session, work: _Round, rows: list[CrmChange]) -> bool:
    """Send the gathered upserts as one batch; False when the CRM is unreachable."""
    if not rows:
        return True
    batch, rows[:] = list(rows), []
    try:
        leads = [_crm_lead(session, work, row) for row in batch]
        results = work.connector.upsert_leads(leads)
    except ConnectorError as exc:
        for row in batch:
            work.failed(row, exc)
        work.result.stopped = str(exc)
        return False
    for row, lead, outcome in zip(batch, leads, results, strict=True):
        if outcome.error is not None:
            work.failed(row, outcome.error)
            continue
        assert outcome.crm_id is not None
        if row.contact_id is not None:
            _link(session, row.contact_id, outcome.crm_id, work.now)
        note = None
        if row.payload.get("rep") and lead.owner is None:
            note = f"sent without an owner: rep '{row.payload['rep']}' has no CRM user"
        work.done(row, note)
    return True


def _crm_lead(session: Session, work: _Round, row: CrmChange) -> CrmLead:
    rep = row.payload.get("rep")
    link = session.get(CrmLink, row.contact_id) if row.contact_id is not None else None
    return CrmLead(
        email=row.lead,
        fields=dict(row.payload.get("fields") or {}),
        owner=_owner(work, rep) if rep else None,
        stage=row.payload.get("stage"),
        crm_id=link.crm_id if link else None,
    )


def _owner(work: _Round, rep: str) -> str | None:
    person = work.config.team.reps.get(rep)
    return work.connector.owner_id(rep, person.email if person else "")


def _one(session: Session, work: _Round, row: CrmChange) -> None:
    """A stage, task or delete change."""
    crm_id = row.payload.get("crm_id") or _crm_id(session, work, row)
    if crm_id is None:
        if row.change == "delete":  # never reached the CRM: nothing there to erase
            work.done(row, "not in the CRM")
            return
        raise SkippableError(f"{work.connector.label}: the lead is not in the CRM")
    if row.change == "stage":
        work.connector.set_stage(crm_id, row.payload["stage"])
    elif row.change == "task":
        rep = row.payload.get("rep")
        due = datetime.fromisoformat(row.payload["due"])
        owner = _owner(work, rep) if rep else None
        work.connector.create_task(crm_id, owner, row.payload["subject"], due)
    elif row.change == "delete":
        work.connector.delete(crm_id)
    work.done(row)


def _crm_id(session: Session, work: _Round, row: CrmChange) -> str | None:
    if row.contact_id is not None:
        link = session.get(CrmLink, row.contact_id)
        if link is not None:
            return link.crm_id
    return work.connector.find_lead(row.lead)


def _link(session: Session, contact_id: int, crm_id: str, now: datetime) -> None:
    link = session.get(CrmLink, contact_id)
    if link is None:
        session.add(CrmLink(contact_id=contact_id, crm_id=crm_id, synced_at=now))
    else:
        link.crm_id, link.synced_at = crm_id, now


def _note_round(session: Session, name: str, now: datetime, error: str | None) -> None:
    state = session.get(SourceState, name) or SourceState(source=name)
    state.last_run_at = now
    state.runs = (state.runs or 0) + 1
    if error:
        state.failures = (state.failures or 0) + 1
        state.consecutive_failures = (state.consecutive_failures or 0) + 1
        state.last_error = error
    else:
        state.last_success_at, state.consecutive_failures = now, 0
    session.merge(state)


# --- reading back ------------------------------------------------------------------------


def poll_first_activity(
    store: Store, config: Config, connector: CrmConnector, now: datetime
) -> int:
    """Stop the SLA clock of every open assignment whose lead the CRM shows a first activity
    on since the last poll; returns how many stopped."""
    from worker.commands.operations import accept_assignment

    assert config.crm is not None
    with store.session() as session:
        state = session.get(SourceState, ACTIVITY_STATE)
        since_text = (state.cursor or {}).get("since") if state else None
        since = datetime.fromisoformat(since_text) if since_text else now - timedelta(days=1)
    activities = connector.first_activity(since)
    stopped = 0
    with store.session() as session:
        for activity in activities:
            contact = session.scalars(
                select(Contact)
                .join(CrmLink, CrmLink.contact_id == Contact.id)
                .where(CrmLink.crm_id == activity.crm_id)
                .with_for_update()
            ).first()
            if contact is None:
                continue
            assignment = session.scalars(
                select(Assignment).where(
                    Assignment.contact_id == contact.id, Assignment.status == "open"
                )
            ).first()
            if assignment is None:
                continue
            at = max(activity.at, assignment.created_at)
            cause = "first activity in the CRM"
            accept_assignment(session, config, assignment, contact, at, cause)
            stopped += 1
        # The next poll looks back over this one's window too: a CRM's clock may lag ours.
        state = session.get(SourceState, ACTIVITY_STATE) or SourceState(source=ACTIVITY_STATE)
        state.cursor = {"since": (now - config.crm.poll_every).isoformat()}
        session.merge(state)
        _note_round(session, ACTIVITY_STATE, now, None)
    return stopped


def refresh_account_owners(
    store: Store, config: Config, connector: CrmConnector, now: datetime, limit: int = 200
) -> int:
    """Ask the CRM who owns the companies of recent leads whose answer is older than
    ``account_owner_ttl`` (or missing); returns how many domains were asked."""
    assert config.crm is not None
    stale = now - config.crm.account_owner_ttl
    free_mail = list(config.lists.get("free_mail", ()))
    with store.session() as session:
        domains = list(
            session.scalars(
                select(Contact.email_domain)
                .outerjoin(CrmAccount, CrmAccount.domain == Contact.email_domain)
                .where(
                    Contact.created_at >= now - RECENT_LEADS,
                    Contact.email_domain.not_in(free_mail),
                    (CrmAccount.domain.is_(None)) | (CrmAccount.fetched_at < stale),
                )
                .group_by(Contact.email_domain)
                .order_by(func.max(Contact.created_at).desc())
                .limit(limit)
            )
        )
    reps = _reps_by_owner(config, connector)
    for domain in domains:
        owner = connector.account_owner(domain)
        with store.session() as session:
            session.merge(CrmAccount(domain=domain, owner=reps.get(owner or ""), fetched_at=now))
    return len(domains)


def _reps_by_owner(config: Config, connector: CrmConnector) -> dict[str, str]:
    """CRM user id -> rep, for the reps the CRM has a user for."""
    found = {}
    for rep, person in config.team.reps.items():
        owner = connector.owner_id(rep, person.email)
        if owner:
            found[owner] = rep
    return found


# --- replaying ----------------------------------------------------------------------------

# Changes that set the lead's owner or stage in the CRM: a later one that has reached it
# makes an earlier dead one stale.
_SETS_OWNER_OR_STAGE = ("upsert", "stage")


@dataclass
class Replayed:
    """What :func:`replay_dead` did: the changes put back to wait for the next round, and
    those left dead because a later change of the lead has reached the CRM (id, change,
    masked lead)."""

    revived: list[int] = field(default_factory=list)
    stale: list[tuple[int, str, str]] = field(default_factory=list)


def replay_dead(store: Store, change_id: int | None = None) -> Replayed | None:
    """Dead CRM changes (``change_id``, or all) back into the outbox once what killed them is
    fixed (a field the CRM lacked, a user missing there): each waits for the next sync round,
    with its attempts counted afresh. A dead upsert or stage change stays dead when a later
    upsert or stage change of the same lead has reached the CRM: sent now, it would put back
    the older owner or stage. None when ``change_id`` names no dead change."""
    replayed = Replayed()
    with store.session() as session:
        query = select(CrmChange).where(CrmChange.status == "dead").order_by(CrmChange.id)
        if change_id is not None:
            query = query.where(CrmChange.id == change_id)
        rows = session.scalars(query).all()
        if change_id is not None and not rows:
            return None
        for row in rows:
            if row.change in _SETS_OWNER_OR_STAGE and _later_sent(session, row):
                replayed.stale.append((row.id, row.change, mask_email(row.lead)))
                continue
            row.status, row.attempts, row.retry_at, row.error = "pending", 0, None, None
            replayed.revived.append(row.id)
    if replayed.revived:
        log.info("%d dead CRM change(s) put back to be sent", len(replayed.revived))
    return replayed


def _later_sent(session: Session, row: CrmChange) -> bool:
    return (
        session.scalar(
            select(func.count())
            .select_from(CrmChange)
            .where(
                CrmChange.lead == row.lead,
                CrmChange.change.in_(_SETS_OWNER_OR_STAGE),
                CrmChange.status == "sent",
                CrmChange.id > row.id,
            )
        )
        > 0
    )


# --- looking on --------------------------------------------------------------------------


def crm_status(store: Store, config: Config, now: datetime, dead_limit: int = 50) -> dict[str, Any]:
    """What waits to go to the CRM, what failed and why: for ``leadwerk crm status`` and
    ``leadwerk status``. Leads are shown masked."""
    with store.session() as session:
        counts = dict(
            session.execute(select(CrmChange.status, func.count()).group_by(CrmChange.status)).all()
        )
        pending_by_change = dict(
            session.execute(
                select(CrmChange.change, func.count())
                .where(CrmChange.status == "pending")
                .group_by(CrmChange.change)
            ).all()
        )
        oldest, retrying = session.execute(
            select(
                func.min(CrmChange.created_at),
                func.sum(case((CrmChange.attempts > 0, 1), else_=0)),
            ).where(CrmChange.status == "pending")
        ).one()
        dead = session.scalars(
            select(CrmChange)
            .where(CrmChange.status == "dead")
            .order_by(CrmChange.id.desc())
            .limit(dead_limit)
        ).all()
        states = {
            s.source: s
            for s in session.scalars(
                select(SourceState).where(SourceState.source.in_([SYNC_STATE, ACTIVITY_STATE]))
            )
        }
    sync_state = states.get(SYNC_STATE)
    return {
        "kind": config.crm.kind if config.crm else None,
        "pending": counts.get("pending", 0),
        "pending_by_change": pending_by_change,
        "retrying": int(retrying or 0),
        "oldest_pending_age_s": (now - oldest).total_seconds() if oldest else None,
        "sent": counts.get("sent", 0),
        "dead": counts.get("dead", 0),
        "dead_changes": [
            {
                "id": row.id,
                "change": row.change,
                "lead": mask_email(row.lead),
                "attempts": row.attempts,
                "error": row.error,
            }
            for row in dead
        ],
        "last_sync_at": sync_state.last_run_at if sync_state else None,
        "last_success_at": sync_state.last_success_at if sync_state else None,
        "last_error": sync_state.last_error
        if sync_state and sync_state.consecutive_failures
        else None,
    }


def render_crm_status(data: dict[str, Any]) -> str:
    if data["kind"] is None:
        return "no CRM configured (config/crm.yaml): the store is the only record"
    age = data["oldest_pending_age_s"]
    waits = ", ".join(f"{n} {c}" for c, n in sorted(data["pending_by_change"].items()))
    lines = [
        f"CRM {data['kind']}: {data['pending']} waiting"
        + (f" ({waits}; oldest {age:.0f} s, {data['retrying']} being retried)" if age else "")
        + f", {data['sent']} sent, {data['dead']} dead",
        f"last sync {_when(data['last_sync_at'])}, last success {_when(data['last_success_at'])}",
    ]
    if data["last_error"]:
        lines.append(f"last error: {data['last_error']}")
    for row in data["dead_changes"]:
        lines.append(
            f"  dead {row['id']:>5}  {row['change']:7} {row['lead']} "
            f"after {row['attempts']} attempt(s): {row['error']}"
        )
    return "\n".join(lines)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat(timespec="seconds") if value else "never"

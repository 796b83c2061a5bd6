"""Routing a backlog's MQLs under one lock of the team's counters, written set-wise.

The per-lead path (:func:`~worker.pipeline.route.route_locked`) asks the store everything
afresh for each MQL: is it assigned, who owns its company, the team's counters (locked) and
today's counts, then writes the assignment, the contact, the counter and the messages one by
one: seven round trips a lead. A batch of a backlog is one transaction that holds the
counters locked from its first MQL to its commit anyway, so here they are read once and kept
in memory: each pick updates the counts the next pick reads, exactly as the sequential path
would find them in the store (lifetime count and last pick per team, today's count per rep in
any team; the account's owner and open leads per e-mail domain, within a run). The writes of
a run of MQLs go out set-wise: assignments, contacts, timers, messages, CRM changes, and the
counters once per batch. tests/test_backlog.py holds both paths to the same end state.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Executable, Row, bindparam, func, select, update

from config.loader import Config
from rules import decision
from rules.assign import RepState
from rules.calendar import WorkCalendar
from worker.pipeline.crm import new_mql_changes
from worker.pipeline.digest import HELD
from worker.pipeline.route import (
    Known,
    Routing,
    account_of,
    assignment_values,
    free_mail,
    lead_view,
    message_values,
    outbox_messages,
    owner_changes,
    sla_timers,
    team_states,
)
from worker.pipeline.score import event_facts, update_contacts
from worker.store.bulk import insert_ids, insert_rows, listed
from worker.store.models import (
    ASSIGNMENTS,
    CONTACTS,
    COUNTERS,
    CRM_ACCOUNTS,
    CRM_CHANGES,
    MESSAGES,
    TIMERS,
    Assignment,
    Contact,
    Message,
)

log = logging.getLogger("leadwerk.route")


@dataclass(frozen=True)
class _Reads:
    """A run's reads, each taking a list: which of its contacts are assigned (:contact_ids),
    and its companies by e-mail domain (:domains): the CRM's owners, the open assignments and
    the latest lead with an owner (ordered as route._OWNER_OF_DOMAIN orders them)."""

    open: Executable
    crm_owners: Executable
    open_leads: Executable
    latest_owned: Executable


@functools.lru_cache(maxsize=2)
def _reads(dialect: str) -> _Reads:
    owned = (
        select(
            CONTACTS.c.email_domain,
            CONTACTS.c.updated_at,
            CONTACTS.c.id,
            CONTACTS.c.owner,
            func.row_number()
            .over(
                partition_by=CONTACTS.c.email_domain,
                order_by=(CONTACTS.c.updated_at.desc(), CONTACTS.c.id.desc()),
            )
            .label("rank"),
        )
        .where(listed(dialect, CONTACTS.c.email_domain, "domains"), CONTACTS.c.owner.is_not(None))
        .subquery()
    )
    return _Reads(
        open=select(ASSIGNMENTS.c.contact_id)
        .where(
            listed(dialect, ASSIGNMENTS.c.contact_id, "contact_ids"),
            ASSIGNMENTS.c.status == "open",
        )
        .distinct(),
        crm_owners=select(CRM_ACCOUNTS.c.domain, CRM_ACCOUNTS.c.owner).where(
            listed(dialect, CRM_ACCOUNTS.c.domain, "domains")
        ),
        open_leads=select(CONTACTS.c.email_domain, func.count(ASSIGNMENTS.c.id))
        .join_from(ASSIGNMENTS, CONTACTS, CONTACTS.c.id == ASSIGNMENTS.c.contact_id)
        .where(listed(dialect, CONTACTS.c.email_domain, "domains"), ASSIGNMENTS.c.status == "open")
        .group_by(CONTACTS.c.email_domain),
        latest_owned=select(
            owned.c.email_domain, owned.c.updated_at, owned.c.id, owned.c.owner
        ).where(owned.c.rank == 1),
    )


_COUNT_ASSIGNMENTS = (
    update(COUNTERS)
    .where(COUNTERS.c.team == bindparam("counter_team"), COUNTERS.c.rep == bindparam("counter_rep"))
    .values(
        assigned_total=COUNTERS.c.assigned_total + bindparam("added"),
        last_assigned_at=bindparam("now"),
    )
)


@dataclass
class _Company:
    """What routing reads of an e-mail domain: the CRM's owner, the latest owned lead
    (updated_at, id, owner) and the open assignments."""

    crm_owner: str | None
    latest: tuple[datetime, int, str] | None
    open_leads: int

    def facts(self) -> dict[str, Any]:
        owner = self.crm_owner or (self.latest[2] if self.latest else None)
        return account_of(owner, self.open_leads)


class BatchRouter:
    """The routing state of one batch transaction; :meth:`flush` before the commit."""

    def __init__(self, connection: Connection, config: Config, now: datetime) -> None:
        self._connection = connection
        self._config = config
        self._now = now
        self._teams: dict[str, list[RepState]] = {}
        self._counters: dict[str, dict[str, Row[Any]]] = {}
        self._added: Counter[tuple[str, str]] = Counter()  # (team, rep): picks not yet written
        self._companies: dict[str, _Company] = {}

    def route(self, items: Sequence[tuple[Contact, Known]]) -> list[Message]:
        """Route a run of MQLs (distinct contacts, locked, scored) in order; returns the
        claimed messages to send after the commit."""
        connection, config, now = self._connection, self._config, self._now
        if not self._teams:
            self._lock_teams()
        # Scoring this run moved other contacts' ``updated_at``: companies are read afresh.
        self._read_companies([contact for contact, _ in items])
        ids = [contact.id for contact, _ in items]
        reads = _reads(connection.dialect.name)
        assigned = set(connection.execute(reads.open, {"contact_ids": ids}).scalars())
        decided: list[tuple[Contact, Known, Routing, dict[str, Any]]] = []
        unrouted: list[dict[str, Any]] = []
        for contact, known in items:
            if contact.id in assigned:
                unrouted.append({"contact_id": contact.id, **known.contact_changes})
                continue
            routing = self._decide(contact, known)
            values = assignment_values(config, contact, routing, now)
            decided.append((contact, known, routing, values))
        _update_contacts(connection, unrouted)
        if not decided:
            return []
        assignment_ids = insert_ids(connection, ASSIGNMENTS, [values for *_, values in decided])
        # A digest counts the messages already in the store: with digests on, each lead's
        # messages are written before the next lead's are held or not.
        one_by_one = bool(config.settings.digest_after)
        messages: list[Message] = []
        timers: list[dict[str, Any]] = []
        contacts: list[dict[str, Any]] = []
        crm_changes: list[dict[str, Any]] = []
        for (contact, known, routing, values), assignment_id in zip(
            decided, assignment_ids, strict=True
        ):
            assignment = Assignment(id=assignment_id, **values)
            rep = routing.decision.rep
            made = outbox_messages(
                connection, config, contact, routing, assignment, known.score, now, claim=True
            )
            if one_by_one:
                _insert_messages(connection, made)
            messages.extend(made)
            timers.extend(
                {"assignment_id": assignment_id, "kind": kind, "fire_at": fire_at}
                for kind, fire_at in sla_timers(config, routing, now)
            )
            contacts.append({"contact_id": contact.id, **owner_changes(contact, rep, known)})
            crm_changes.extend(new_mql_changes(config, contact, rep, known.score.score, now))
            log.debug("routed lead %s: %s", contact.id, routing.explanation)
        if not one_by_one:
            _insert_messages(connection, messages)
        _update_contacts(connection, contacts)
        insert_rows(connection, TIMERS, timers)
        insert_rows(connection, CRM_CHANGES, crm_changes)
        picks = Counter(routing.decision.rep or "(fallback)" for _, _, routing, _ in decided)
        log.info(
            "routed %d leads: %s",
            len(decided),
            ", ".join(f"{rep} {count}" for rep, count in sorted(picks.items())),
        )
        return [message for message in messages if message.status != HELD]

    def flush(self) -> None:
        """The teams' lifetime counters, once for the batch's picks."""
        if self._added:
            self._connection.execute(
                _COUNT_ASSIGNMENTS,
                [
                    {"counter_team": team, "counter_rep": rep, "added": added, "now": self._now}
                    for (team, rep), added in sorted(self._added.items())
                ],
            )
            self._added.clear()

    def _decide(self, contact: Contact, known: Known) -> Routing:
        company = self._companies.get(contact.email_domain)
        account = company.facts() if company is not None else {}
        made = decision.decide(
            self._config,
            lead_view(contact),
            event_facts(known.event),
            _Snapshot(self, account),
            self._now,
            seed=decision.seed_for(contact.email),
        )
        routing = Routing(
            known.event, made.route, made.policy, made.due, self._counters, made.explanation
        )
        self._picked(contact, routing)
        return routing

    def _picked(self, contact: Contact, routing: Routing) -> None:
        """What the store would show the next pick: the counts, the company's owner and
        open leads."""
        team, rep = routing.decision.team, routing.decision.rep
        if rep:
            for members in self._teams.values():
                for index, state in enumerate(members):
                    if state.name != rep:
                        continue
                    changes: dict[str, Any] = {"assigned_today": state.assigned_today + 1}
                    if team is not None and members is self._teams.get(team):
                        changes["assigned_total"] = state.assigned_total + 1
                        changes["last_assigned_at"] = self._now
                        self._added[(team, rep)] += 1
                    members[index] = replace(state, **changes)
        company = self._companies.get(contact.email_domain)
        if company is not None:
            company.open_leads += 1
            if rep and (company.latest is None or company.latest[:2] < (self._now, contact.id)):
                company.latest = (self._now, contact.id, rep)

    def calendar(self, rep: str) -> WorkCalendar | None:
        return self._config.calendars.get(rep)

    def _lock_teams(self) -> None:
        """Every team's counters and today's counts, before the batch's first pick, in name
        order: two batches side by side then never hold one team each while waiting for the
        other's, and no pick of the batch is missing from the counts read."""
        for name in sorted(self._config.team.teams):
            self._teams[name], self._counters[name] = team_states(
                self._connection, self._config, name, self._now
            )

    def members(self, team: str) -> list[RepState]:
        return self._teams.get(team, [])

    def _read_companies(self, contacts: Sequence[Contact]) -> None:
        """The companies of a run's leads (free-mail domains are none), in three queries."""
        domains = sorted(
            {c.email_domain for c in contacts if c.email_domain and not free_mail(self._config, c)}
        )
        self._companies = {domain: _Company(None, None, 0) for domain in domains}
        if not domains:
            return
        params = {"domains": domains}
        reads = _reads(self._connection.dialect.name)
        for domain, owner in self._connection.execute(reads.crm_owners, params):
            self._companies[domain].crm_owner = owner
        for domain, count in self._connection.execute(reads.open_leads, params):
            self._companies[domain].open_leads = count
        for domain, updated_at, contact_id, owner in self._connection.execute(
            reads.latest_owned, params
        ):
            self._companies[domain].latest = (updated_at, contact_id, owner)


class _Snapshot:
    """One lead's view of the batch's state (:class:`rules.decision.TeamSnapshot`)."""

    def __init__(self, router: BatchRouter, account: dict[str, Any]) -> None:
        self._router = router
        self.account = account

    def members(self, team: str) -> list[RepState]:
        return self._router.members(team)

    def calendar(self, rep: str) -> WorkCalendar | None:
        return self._router.calendar(rep)


def _insert_messages(connection: Connection, messages: list[Message]) -> None:
    """The messages, their ids set; rows of one shape go out in one statement."""
    shapes: dict[tuple[str, ...], list[int]] = defaultdict(list)
    rows = [message_values(message) for message in messages]
    for index, row in enumerate(rows):
        shapes[tuple(row)].append(index)
    for indices in shapes.values():
        ids = insert_ids(connection, MESSAGES, [rows[i] for i in indices])
        for index, message_id in zip(indices, ids, strict=True):
            messages[index].id = message_id


def _update_contacts(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Contacts' changed columns, one statement per set of columns."""
    shapes: dict[frozenset[str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        shapes[frozenset(row)].append(row)
    for same in shapes.values():
        update_contacts(connection, same)

"""``leadwerk rules diff``: what a rule change would do to the leads already stored.

The stored contacts and their events are replayed under two rule sets at the same ``now``:
the rules as they are (``new``) and the ones named by ``--against`` (``old``), a directory or
a git ref. Nothing is written. Routing is compared by rule and team (the rep within a team
depends on live counts and is left out), and the SLA policy by name and time to respond.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from config.loader import Config, load_config
from config.settings import Settings
from rules.contact import mask_email
from rules.scoring import r1
from worker.commands.evaluate import judge
from worker.pipeline.route import account_facts
from worker.pipeline.score import event_facts
from worker.pipeline.sla import span
from worker.store.db import Store
from worker.store.models import Contact, Event

_BATCH = 500


class DiffError(Exception):
    """The rule set to compare against cannot be found."""


@dataclass(frozen=True)
class Outcome:
    """One contact under one rule set."""

    score: float
    mql: bool
    disqualified: str | None
    points: dict[str, float]
    route: tuple[str, str | None] | None  # (rule, team) when routed
    policy: tuple[str, str] | None = None  # (SLA policy, its time to respond) when routed

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": r1(self.score),
            "mql": self.mql,
            "disqualified": self.disqualified,
            "route": None if self.route is None else {"rule": self.route[0], "team": self.route[1]},
            "sla": None
            if self.policy is None
            else {"policy": self.policy[0], "respond_within": self.policy[1]},
        }


@dataclass(frozen=True)
class ContactDiff:
    contact_id: int
    email: str  # masked
    old: Outcome
    new: Outcome

    @property
    def shift(self) -> float:
        return self.new.score - self.old.score

    @property
    def by_rule(self) -> dict[str, float]:
        """Score shift per rule: points under the new rules minus points under the old."""
        names = list(self.old.points) + [n for n in self.new.points if n not in self.old.points]
        shifts = {n: self.new.points.get(n, 0.0) - self.old.points.get(n, 0.0) for n in names}
        return {n: s for n, s in shifts.items() if abs(s) > 1e-9}

    @property
    def gained(self) -> bool:
        return self.new.mql and not self.old.mql

    @property
    def lost(self) -> bool:
        return self.old.mql and not self.new.mql

    @property
    def route_changed(self) -> bool:
        """The route differs for a contact that is an MQL under both rule sets."""
        return self.old.mql and self.new.mql and self.old.route != self.new.route

    @property
    def policy_changed(self) -> bool:
        """The SLA policy differs for a contact that is an MQL under both rule sets."""
        return self.old.mql and self.new.mql and self.old.policy != self.new.policy

    @property
    def changed(self) -> bool:
        return bool(
            self.gained
            or self.lost
            or self.route_changed
            or self.policy_changed
            or self.by_rule
            or self.old.disqualified != self.new.disqualified
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.contact_id,
            "email": self.email,
            "old": self.old.as_dict(),
            "new": self.new.as_dict(),
            "score_shift": r1(self.shift),
            "by_rule": {name: r1(shift) for name, shift in self.by_rule.items()},
            "mql_change": "gain" if self.gained else "lose" if self.lost else None,
            "route_changed": self.route_changed,
            "policy_changed": self.policy_changed,
        }


@dataclass
class DiffReport:
    against: str
    old_ruleset: dict[str, str]
    new_ruleset: dict[str, str]
    now: datetime
    since: timedelta | None
    compared: int = 0
    shift_total: float = 0.0
    changes: list[ContactDiff] = field(default_factory=list)

    @property
    def gain(self) -> int:
        return sum(1 for c in self.changes if c.gained)

    @property
    def lose(self) -> int:
        return sum(1 for c in self.changes if c.lost)

    @property
    def route_changes(self) -> int:
        return sum(1 for c in self.changes if c.route_changed)

    @property
    def policy_changes(self) -> int:
        return sum(1 for c in self.changes if c.policy_changed)

    @property
    def mean_shift(self) -> float:
        return self.shift_total / self.compared if self.compared else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "contacts_compared": self.compared,
            "gain_mql": self.gain,
            "lose_mql": self.lose,
            "route_changes": self.route_changes,
            "policy_changes": self.policy_changes,
            "mean_score_shift": r1(self.mean_shift),
            "contacts_changed": len(self.changes),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "against": self.against,
            "old": self.old_ruleset,
            "new": self.new_ruleset,
            "now": self.now.isoformat(),
            "since": None if self.since is None else _span(self),
            "contacts": [c.as_dict() for c in self.changes],
        }

    def render(self) -> str:
        window = "all stored events" if self.since is None else f"events of the last {_span(self)}"
        lines = [
            f"rules v{self.new_ruleset['version']} ({self.new_ruleset['hash']}) against "
            f"{self.against} v{self.old_ruleset['version']} ({self.old_ruleset['hash']}), "
            f"{window}, as of {self.now.isoformat(timespec='seconds')}",
            f"contacts compared: {self.compared}, gain MQL: {self.gain}, lose MQL: {self.lose}, "
            f"route changes: {self.route_changes}, SLA policy changes: {self.policy_changes}, "
            f"mean score shift: {self.mean_shift:+.1f}",
        ]
        for change in self.changes:
            lines.append(_render_change(change))
        if not self.compared:
            lines.append(
                "the store holds no contacts to replay"
                if self.since is None
                else f"the store holds no contacts with events in the last {_span(self)}"
            )
        elif not self.changes:
            lines.append("no contact scores, routes or gets an SLA differently")
        return "\n".join(lines)


def _span(report: DiffReport) -> str:
    assert report.since is not None
    seconds = report.since.total_seconds()
    if seconds % 86400 == 0:
        return f"{int(seconds // 86400)}d"
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds)}s"


def _render_change(change: ContactDiff) -> str:
    old, new = change.old, change.new
    text = (
        f"{change.email}: score {r1(old.score)} → {r1(new.score)} ({change.shift:+.1f}), "
        f"MQL {_yes(old.mql)} → {_yes(new.mql)}"
    )
    if old.disqualified != new.disqualified:
        text += f", disqualified: {old.disqualified or '-'} → {new.disqualified or '-'}"
    for name, shift in change.by_rule.items():
        text += f"\n    {name}: {shift:+.1f}"
    if old.route != new.route and (old.mql or new.mql):
        text += f"\n    route: {_route(old.route)} → {_route(new.route)}"
    if old.policy != new.policy and (old.mql or new.mql):
        text += f"\n    SLA: {_policy(old.policy)} → {_policy(new.policy)}"
    return text


def _policy(policy: tuple[str, str] | None) -> str:
    return "-" if policy is None else f"{policy[0]} ({policy[1]})"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _route(route: tuple[str, str | None] | None) -> str:
    if route is None:
        return "-"
    rule, team = route
    return f"{rule} ({team})" if team else rule


# --- the other rule set -----------------------------------------------------------------------


def load_against(settings: Settings, against: str) -> Config:
    """The rule set to compare with: a config directory (or a project holding ``config/``),
    else a git ref of the repository that holds the config directory."""
    path = Path(against).expanduser()
    if path.is_dir():
        if not (path / "scoring.yaml").exists() and (path / "config" / "scoring.yaml").exists():
            path = path / "config"
        return load_config(settings.model_copy(update={"config_dir": path.resolve()}))
    with tempfile.TemporaryDirectory(prefix="leadwerk-diff-") as tmp:
        export_from_git(settings.config_dir, against, Path(tmp))
        return load_config(settings.model_copy(update={"config_dir": Path(tmp)}))


def export_from_git(config_dir: Path, ref: str, target: Path) -> None:
    """Write the config directory as it was at ``ref`` into ``target`` (``git show``)."""

    def git(*args: str) -> bytes:
        try:
            done = subprocess.run(
                ["git", "-C", str(config_dir), *args], capture_output=True, check=True
            )
        except FileNotFoundError:
            raise DiffError(f"'{ref}' is not a directory, and git is not installed") from None
        except subprocess.CalledProcessError as exc:
            problem = exc.stderr.decode(errors="replace").strip().splitlines()
            raise DiffError(
                f"'{ref}' is neither a directory nor a git ref of {config_dir}"
                + (f": {problem[-1]}" if problem else "")
            ) from None
        return done.stdout

    prefix = git("rev-parse", "--show-prefix").decode().strip()
    tree = f"{ref}:{prefix}"
    names = [
        n
        for n in git("ls-tree", "--full-tree", "-r", "-z", "--name-only", tree).decode().split("\0")
        if n
    ]
    if "scoring.yaml" not in names:
        raise DiffError(f"{ref} has no {prefix}scoring.yaml")
    for name in names:
        if not name.endswith((".yaml", ".yml")):
            continue
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(git("show", f"{tree}{name}"))


# --- replay -----------------------------------------------------------------------------------


def diff_rules(
    store: Store,
    old: Config,
    new: Config,
    *,
    against: str,
    now: datetime,
    since: timedelta | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> DiffReport:
    """Replay every contact with events received within ``since`` (all, when None) under both
    rule sets at ``now``; ``on_progress`` hears how many contacts are done so far."""
    report = DiffReport(
        against=against,
        old_ruleset={"version": old.ruleset.version, "hash": old.ruleset.hash},
        new_ruleset={"version": new.ruleset.version, "hash": new.ruleset.hash},
        now=now,
        since=since,
    )
    cutoff = None if since is None else now - since
    free_old = frozenset(old.lists.get("free_mail", ()))
    free_new = frozenset(new.lists.get("free_mail", ()))
    with store.session() as session:
        for contact, events in _history(session, cutoff):
            facts = [event_facts(e) for e in events]
            new_account = account_facts(session.connection(), new, contact)
            # Free-mail domains match no account; only a changed free-mail list tells apart
            # the account as the old rules see it.
            domain = contact.email_domain
            old_account = (
                new_account
                if (domain in free_old) == (domain in free_new)
                else account_facts(session.connection(), old, contact)
            )
            new_side = _outcome(new, contact, facts, now, new_account)
            old_side = _outcome(old, contact, facts, now, old_account)
            change = ContactDiff(contact.id, mask_email(contact.email), old_side, new_side)
            report.compared += 1
            report.shift_total += change.shift
            if change.changed:
                report.changes.append(change)
            if on_progress is not None:
                on_progress(report.compared)
    report.changes.sort(
        key=lambda c: (
            not c.gained,
            not c.lost,
            not c.route_changed,
            not c.policy_changed,
            -abs(c.shift),
            c.email,
        )
    )
    return report


def _history(session: Session, cutoff: datetime | None) -> Iterator[tuple[Contact, list[Event]]]:
    """Contacts with events received since ``cutoff``, each with those events, in batches."""
    recent = Event.received_at >= cutoff if cutoff is not None else None
    query = select(Event.contact_id).distinct().order_by(Event.contact_id)
    ids: Sequence[int] = session.scalars(query if recent is None else query.where(recent)).all()
    for start in range(0, len(ids), _BATCH):
        chunk = ids[start : start + _BATCH]
        events_query = (
            select(Event)
            .where(Event.contact_id.in_(chunk))
            .order_by(Event.contact_id, Event.occurred_at, Event.id)
        )
        if recent is not None:
            events_query = events_query.where(recent)
        by_contact: dict[int, list[Event]] = {}
        for event in session.scalars(events_query):
            by_contact.setdefault(event.contact_id, []).append(event)
        for contact in session.scalars(
            select(Contact).where(Contact.id.in_(chunk)).order_by(Contact.id)
        ):
            yield contact, by_contact.get(contact.id, [])
        session.expunge_all()


def _outcome(
    config: Config,
    contact: Contact,
    events: list[dict[str, Any]],
    now: datetime,
    account: dict[str, Any],
) -> Outcome:
    # As the score step reads it: the stored contact was normalised when it was taken in.
    result, made = judge(config, contact.fields, events, now, account)
    points: dict[str, float] = {}
    for hit in result.hits:
        points[hit.rule] = points.get(hit.rule, 0.0) + hit.points
    policy = made.policy if made is not None else None
    return Outcome(
        score=result.score,
        mql=result.mql,
        disqualified=result.disqualified,
        points=points,
        route=(made.route.rule, made.route.team) if made is not None else None,
        policy=None if policy is None else (policy.name, span(policy.policy.respond_within)),
    )

"""Load and validate all of ``config/`` in one pass, collecting every error before failing.

YAML item → pydantic model → compiled rule. Errors read ``file:line:col: message`` with the
offending line and a caret; unknown keys and fields suggest the near name.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from config.errors import ConfigErrors, ConfigIssue
from config.models import Alert as AlertModel
from config.models import (
    AlertsFile,
    CrmFile,
    CrmSettings,
    Fallback,
    FieldsFile,
    HygieneFile,
    NurtureFile,
    RoutingFile,
    RuleTestCase,
    ScoringFile,
    SlaFile,
    SlaPolicy,
    TeamFile,
)
from config.models import DisqualifyRule as DisqualifyRuleModel
from config.models import EngagementRule as EngagementRuleModel
from config.models import FitRule as FitRuleModel
from config.models import Rep as RepModel
from config.models import RoutingRule as RoutingRuleModel
from config.models import Sequence as SequenceModel
from config.models import Team as TeamModel
from config.settings import Settings
from config.yamlload import YamlDoc, YamlSyntaxError, load_yaml
from connectors.sources.base import SourceConfig
from connectors.sources.registry import SOURCE_KINDS
from rules.alerts import ALERT_METRICS
from rules.calendar import WorkCalendar, parse_hours
from rules.contact import (
    ACCOUNT_FIELDS,
    DERIVED_FIELDS,
    EVENT_FIELDS,
    NURTURE_FIELDS,
    SCORE_FIELDS,
    STANDARD_FIELDS,
    TYPE_NAMES,
)
from rules.expr import Expr, ExprErrors, FieldType, Origin, Schema, compile_expr
from rules.lifecycle import STAGES as LIFECYCLE_STAGES
from rules.scoring import DisqualifyRule, EngagementRule, FitRule, Ruleset

M = TypeVar("M", bound=BaseModel)

RULE_FILES = (
    "scoring.yaml",
    "fields.yaml",
    "team.yaml",
    "routing.yaml",
    "sla.yaml",
    "nurture.yaml",
    "hygiene.yaml",
)


@dataclass(frozen=True)
class RoutingRule:
    name: str
    when: Expr | None
    assign: str | None
    team: str | None
    strategy: str


@dataclass(frozen=True)
class CompiledSla:
    policy: SlaPolicy
    when: Expr | None

    @property
    def name(self) -> str:
        return self.policy.name


@dataclass(frozen=True)
class CompiledSequence:
    name: str
    model: SequenceModel
    enroll_when: Expr
    exit_when: Expr | None


@dataclass(frozen=True)
class CompiledAlert:
    name: str
    when: Expr
    notify: list[str]


@dataclass(frozen=True)
class RuleTest:
    file: str
    line: int
    case: RuleTestCase


@dataclass
class Config:
    """Everything in ``config/``, validated and compiled."""

    directory: Path
    settings: Settings
    hash: str
    ruleset: Ruleset
    custom_fields: dict[str, FieldType]
    lists: dict[str, list[str]]
    team: TeamFile
    calendars: dict[str, WorkCalendar]
    routing: list[RoutingRule]
    fallback: list[str]
    sla: list[CompiledSla]
    nurture: NurtureFile
    sequences: list[CompiledSequence]
    hygiene: HygieneFile
    sources: dict[str, SourceConfig]
    tests: list[RuleTest] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)
    alerts: list[CompiledAlert] = field(default_factory=list)
    crm: CrmSettings | None = None  # crm.yaml; None: the store is the only record

    def team_of(self, rep: str) -> str | None:
        for name, team in self.team.teams.items():
            if rep in team.members:
                return name
        return None

    def manager_of(self, rep: str) -> str | None:
        for team in self.team.teams.values():
            if rep in team.members and team.manager:
                return team.manager
        return None


class _Collector:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.issues: list[ConfigIssue] = []
        self.warnings: list[ConfigIssue] = []

    def display(self, path: Path) -> str:
        try:
            return os.path.relpath(path)
        except ValueError:
            return str(path)

    def read(self, name: str, required: bool = False) -> YamlDoc | None:
        path = self.directory / name
        if not path.exists():
            if required:
                self.issues.append(ConfigIssue(self.display(path), 1, 1, f"{name} is missing"))
            return None
        try:
            return load_yaml(path, self.display(path))
        except YamlSyntaxError as exc:
            self.issues.append(exc.issue)
            return None

    def model(self, doc: YamlDoc | None, model: type[M], default: M | None = None) -> M | None:
        data = {} if doc is None or doc.data is None else doc.data
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            assert doc is not None
            errors = exc.errors()
            # `pionts: 15` is an unknown key and a missing `points`: report the typo only.
            meant = {_meant_key(doc, model, e) for e in errors} - {None}
            for error in errors:
                if error["type"] == "missing" and _loc(error) in meant:
                    continue
                self.issues.append(_pydantic_issue(doc, model, error))
            return default

    def expr(self, doc: YamlDoc, path: tuple[str | int, ...], text: str, schema: Schema) -> Expr:
        line, col = doc.where(path)
        indent = 0
        block = doc.block_scalar(line, col)
        if block is not None:
            # A `when: >` or `|` block: compile the lines as they stand in the file, so an
            # error points at its own line and column (newlines are blanks in expressions).
            text, line, indent = block
            col = indent + 1
        origin = Origin(doc.file, line, col, doc.line_text(line))
        try:
            return compile_expr(str(text), schema, origin)
        except ExprErrors as exc:
            for err in exc.errors:
                at_col = err.col + indent if err.line > line else err.col
                self.issues.append(
                    ConfigIssue(err.file, err.line, at_col, err.message, doc.line_text(err.line))
                )
            return compile_expr("false", schema, origin)

    def add(
        self, doc: YamlDoc, path: tuple[str | int, ...], message: str, key: bool = False
    ) -> None:
        self.issues.append(doc.issue(path, message, key))


def _loc(error: Any) -> tuple[Any, ...]:
    """An error's path in the file (without pydantic's union-member tags)."""
    return tuple(part for part in error["loc"] if not (isinstance(part, str) and "[" in part))


def _meant_key(doc: YamlDoc, model: type[BaseModel], error: Any) -> tuple[Any, ...] | None:
    """For an unknown key that looks like a typo, the path of the key that was meant."""
    if error["type"] != "extra_forbidden":
        return None
    loc = _loc(error)
    hint = difflib.get_close_matches(str(loc[-1]), _allowed_keys(model, loc[:-1], doc), n=1)
    return (*loc[:-1], hint[0]) if hint else None


def _pydantic_issue(
    doc: YamlDoc, model: type[BaseModel], error: Any, at: tuple[Any, ...] = ()
) -> ConfigIssue:
    """The issue of one validation error of ``model``, which was read at ``at`` in ``doc``."""
    loc = _loc(error)
    kind = error["type"]
    if kind == "extra_forbidden":
        name = str(loc[-1])
        allowed = _allowed_keys(model, loc[:-1], doc)
        hint = difflib.get_close_matches(name, allowed, n=1)
        message = f"unknown key '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
        if not hint and allowed:
            message += f"; allowed: {', '.join(sorted(allowed))}"
        return doc.issue((*at, *loc), message, key=True)
    if kind == "missing":
        return doc.issue((*at, *loc[:-1]), f"missing key '{loc[-1]}'")
    where = ".".join(str(p) for p in loc)
    return doc.issue((*at, *loc), f"{where}: {_error_message(error)}")


def _error_message(error: Any) -> str:
    """pydantic's message, in words for a value of the wrong kind: ``threshold: "60"`` is
    "a number, not the text "60"", since a quoted number is text in YAML."""
    if error["type"] in ("float_type", "int_type"):
        kind = "a whole number" if error["type"] == "int_type" else "a number"
        value = error["input"]
        if isinstance(value, str):
            return f'{kind}, not the text "{value}" (write it without quotes)'
        if isinstance(value, bool):
            return f"{kind}, not {str(value).lower()}"
    return str(error["msg"])


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...], doc: YamlDoc) -> list[str]:
    """The keys a model accepts at ``loc``, for did-you-mean on an unknown key."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is not None:  # else ``part`` is a key of a mapping of this model
                current = _inner_model(info.annotation)
        else:
            current = None
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _inner_model(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def rules_hash(directory: Path) -> str:
    digest = hashlib.sha256()
    for name in RULE_FILES:
        path = directory / name
        if path.exists():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def load_config(settings: Settings, with_tests: bool = False) -> Config:
    """Load all of ``settings.config_dir``; raises :class:`ConfigErrors` listing every issue."""
    directory = settings.config_dir
    c = _Collector(directory)

    scoring_doc = c.read("scoring.yaml", required=True)
    fields_doc = c.read("fields.yaml")
    team_doc = c.read("team.yaml")
    routing_doc = c.read("routing.yaml")
    sla_doc = c.read("sla.yaml")
    nurture_doc = c.read("nurture.yaml")
    hygiene_doc = c.read("hygiene.yaml")
    sources_doc = c.read("sources.yaml")
    alerts_doc = c.read("alerts.yaml")
    crm_doc = c.read("crm.yaml")

    fields_data = fields_doc.data if fields_doc and fields_doc.data is not None else {}
    if isinstance(fields_data, dict) and "fields" not in fields_data:
        fields_data = {"fields": fields_data}  # the short form: `budget: number` at top level
    fields_model = FieldsFile()
    if fields_doc is not None:
        try:
            fields_model = FieldsFile.model_validate(fields_data)
        except ValidationError as exc:
            for error in exc.errors():
                loc = (
                    error["loc"][1:]
                    if fields_doc.data and "fields" not in fields_doc.data
                    else error["loc"]
                )
                c.add(fields_doc, tuple(loc), f"{'.'.join(map(str, loc))}: {_error_message(error)}")
    custom_fields = {name: TYPE_NAMES[t] for name, t in fields_model.fields.items()}
    for name in custom_fields:
        if name in STANDARD_FIELDS or name in DERIVED_FIELDS or name in SCORE_FIELDS:
            assert fields_doc is not None
            c.add(
                fields_doc, (name,), f"'{name}' is a standard field and cannot be redeclared", True
            )

    scoring = c.model(scoring_doc, ScoringFile) if scoring_doc else None
    lists = dict(scoring.lists) if scoring else _raw_lists(scoring_doc)

    sources = _load_sources(c, sources_doc)
    event_fields = dict(EVENT_FIELDS)
    contact_names = set(STANDARD_FIELDS) | set(custom_fields)
    for source in sources.values():
        for key in source.event:
            event_fields.setdefault(f"event.{key}", FieldType.STRING)
        for key in source.map:
            if key not in contact_names:
                event_fields.setdefault(f"event.{key}", FieldType.STRING)

    contact_schema = {**STANDARD_FIELDS, **DERIVED_FIELDS, **custom_fields}
    with_account = {**contact_schema, **ACCOUNT_FIELDS}
    fit_schema = Schema(with_account, lists)
    engagement_schema = Schema({**with_account, **event_fields}, lists)
    decided_schema = Schema({**with_account, **SCORE_FIELDS, **event_fields}, lists)
    nurture_schema = Schema(
        {**with_account, **SCORE_FIELDS, **NURTURE_FIELDS, **event_fields}, lists
    )

    ruleset = _compile_scoring(c, scoring_doc, scoring, fit_schema, engagement_schema, directory)
    team = (c.model(team_doc, TeamFile) if team_doc else None) or TeamFile.model_construct(
        teams=_valid_entries(team_doc, "teams", TeamModel),
        reps=_valid_entries(team_doc, "reps", RepModel),
    )
    calendars = _check_team(c, team_doc, team, settings.timezone)
    routing_model = (c.model(routing_doc, RoutingFile) if routing_doc else None) or (
        RoutingFile.model_construct(
            rules=_valid_items(routing_doc, "rules", RoutingRuleModel), fallback=Fallback()
        )
    )
    routing = _compile_routing(c, routing_doc, routing_model, team, decided_schema)
    sla_model = (c.model(sla_doc, SlaFile) if sla_doc else None) or SlaFile.model_construct(
        policies=_valid_items(sla_doc, "policies", SlaPolicy)
    )
    sla = _compile_sla(c, sla_doc, sla_model, decided_schema)
    nurture = (c.model(nurture_doc, NurtureFile) if nurture_doc else None) or NurtureFile()
    sequences = _compile_nurture(c, nurture_doc, nurture, nurture_schema)
    hygiene = (c.model(hygiene_doc, HygieneFile) if hygiene_doc else None) or HygieneFile()
    if hygiene_doc is not None:
        _check_hygiene(c, hygiene_doc, hygiene, team)

    alerts = _compile_alerts(c, alerts_doc, team)
    crm = _load_crm(c, crm_doc, team)
    tests = _load_tests(c, directory / "tests") if with_tests else []

    if c.issues:
        raise ConfigErrors(c.issues)
    assert ruleset is not None
    return Config(
        directory=directory,
        settings=settings,
        hash=ruleset.hash,
        ruleset=ruleset,
        custom_fields=custom_fields,
        lists=lists,
        team=team,
        calendars=calendars,
        routing=routing,
        fallback=list(routing_model.fallback.notify),
        sla=sla,
        nurture=nurture,
        sequences=sequences,
        hygiene=hygiene,
        sources=sources,
        tests=tests,
        warnings=c.warnings,
        alerts=alerts,
        crm=crm,
    )


_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


def _load_crm(c: _Collector, doc: YamlDoc | None, team: TeamFile) -> CrmSettings | None:
    """crm.yaml: the kind's environment variables named (and set, else a warning), the
    owners map naming reps of team.yaml, stages naming Leadwerk's stages."""
    if doc is None:
        return None
    from connectors.crm import REQUIRED_ENV  # here: the CRM connectors load only with a CRM

    model = c.model(doc, CrmFile)
    if model is None:
        return None
    crm = model.crm
    if not crm.base_url.startswith(("http://", "https://")):
        c.add(doc, ("crm", "base_url"), "crm.base_url: write the URL with http:// or https://")
    for key in REQUIRED_ENV[crm.kind]:
        name = getattr(crm, key)
        if not name:
            c.add(
                doc,
                ("crm", "kind"),
                f"crm.{key}: a {crm.kind} CRM needs the name of the environment variable "
                "that holds its secret",
            )
        elif not _ENV_NAME.match(name):
            c.add(
                doc,
                ("crm", key),
                f"crm.{key}: '{name}' is not an environment variable name "
                "(write it like CRM_TOKEN)",
            )
        elif not os.environ.get(name):
            c.warnings.append(
                doc.issue(
                    ("crm", key),
                    f"crm.{key}: {name} is not set here; the CRM sync waits until it is",
                )
            )
    if isinstance(crm.owners, dict):
        for rep in crm.owners:
            _rep_reference(c, doc, ("crm", "owners", rep), rep, team, key=True)
        for rep in sorted(set(team.reps) - set(crm.owners)):
            c.warnings.append(
                doc.issue(
                    ("crm", "owners"),
                    f"crm.owners: rep '{rep}' has no CRM user; their leads reach the CRM "
                    "without an owner",
                )
            )
    for stage in crm.stages:
        if stage not in LIFECYCLE_STAGES:
            c.add(
                doc,
                ("crm", "stages", stage),
                f"crm.stages: '{stage}' is not a stage ({', '.join(LIFECYCLE_STAGES)})",
                key=True,
            )
    return crm


def _unique_names(c: _Collector, doc: YamlDoc, items: list[Any], prefix: tuple[Any, ...]) -> None:
    seen: set[str] = set()
    for index, item in enumerate(items):
        if item is None:
            continue
        if item.name in seen:
            c.add(doc, (*prefix, index, "name"), f"duplicate rule name '{item.name}'")
        seen.add(item.name)


def _compile_scoring(
    c: _Collector,
    doc: YamlDoc | None,
    model: ScoringFile | None,
    fit_schema: Schema,
    engagement_schema: Schema,
    directory: Path,
) -> Ruleset | None:
    if doc is None:
        return None
    if model is None:  # still check the rules that are well-formed, to report every error
        model = ScoringFile.model_construct(
            fit=_valid_items(doc, "fit", FitRuleModel),
            engagement=_valid_items(doc, "engagement", EngagementRuleModel),
            disqualify=_valid_items(doc, "disqualify", DisqualifyRuleModel),
        )
    _unique_names(c, doc, model.fit, ("fit",))
    _unique_names(c, doc, model.engagement, ("engagement",))
    _unique_names(c, doc, model.disqualify, ("disqualify",))

    def compile_fit_like(section: str, index: int, text: str) -> Expr:
        path = (section, index, "when")
        expr = c.expr(doc, path, text, engagement_schema)
        events = sorted(f for f in expr.fields if f.startswith("event."))
        if events:
            c.add(
                doc,
                path,
                f"'{events[0]}' cannot be used in a {section} rule: {section} rules look at who "
                "the contact is; put what they did in an engagement rule",
            )
        return expr

    fit = [
        FitRule(r.name, compile_fit_like("fit", i, r.when), r.points)
        for i, r in enumerate(model.fit)
        if r is not None
    ]
    engagement = [
        EngagementRule(
            r.name,
            c.expr(doc, ("engagement", i, "when"), r.when, engagement_schema),
            r.points,
            r.cap,
        )
        for i, r in enumerate(model.engagement)
        if r is not None
    ]
    disqualify = [
        DisqualifyRule(r.name, compile_fit_like("disqualify", i, r.when))
        for i, r in enumerate(model.disqualify)
        if r is not None
    ]
    if c.issues:
        return None
    return Ruleset(
        version=model.version,
        hash=rules_hash(directory),
        threshold=model.mql.threshold,
        requires=dict(model.mql.requires),
        half_life=model.decay.engagement_half_life if model.decay else None,
        fit=fit,
        engagement=engagement,
        disqualify=disqualify,
    )


def _valid_items(doc: YamlDoc | None, section: str, item_model: type[M]) -> list[M | None]:
    """The items of a list section that validate on their own, ``None`` in place of the
    others so that positions in the file stay right."""
    data = doc.data.get(section) if doc is not None and isinstance(doc.data, dict) else None
    items: list[M | None] = []
    for item in data if isinstance(data, list) else []:
        try:
            items.append(item_model.model_validate(item))
        except ValidationError:
            items.append(None)
    return items


def _valid_entries(doc: YamlDoc | None, section: str, model: type[M]) -> dict[str, M | None]:
    """Like :func:`_valid_items` for a mapping section: every name is kept, so references to
    an entry with an error of its own are not reported as unknown names too."""
    data = doc.data.get(section) if doc is not None and isinstance(doc.data, dict) else None
    entries: dict[str, M | None] = {}
    for name, item in data.items() if isinstance(data, dict) else ():
        try:
            entries[str(name)] = model.model_validate(item)
        except ValidationError:
            entries[str(name)] = None
    return entries


def _raw_lists(doc: YamlDoc | None) -> dict[str, list[str]]:
    """The named lists of a scoring.yaml that failed to validate elsewhere, so that rules
    using them are still checked (and not reported as using unknown lists)."""
    data = doc.data.get("lists") if doc is not None and isinstance(doc.data, dict) else None
    if not isinstance(data, dict):
        return {}
    return {str(k): [str(v) for v in vs] for k, vs in data.items() if isinstance(vs, list)}


def _check_team(
    c: _Collector, doc: YamlDoc | None, team: TeamFile, default_tz: str
) -> dict[str, WorkCalendar]:
    calendars: dict[str, WorkCalendar] = {}
    if doc is None:
        return calendars
    for name, t in team.teams.items():
        if t is None:  # invalid on its own: already reported
            continue
        for index, member in enumerate(t.members):
            _rep_reference(c, doc, ("teams", name, "members", index), member, team)
        if t.manager:
            _rep_reference(c, doc, ("teams", name, "manager"), t.manager, team)
    for rep_id, rep in team.reps.items():
        if rep is None:
            continue
        tz = rep.timezone or default_tz
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            c.add(doc, ("reps", rep_id, "timezone"), f"unknown time zone '{tz}'")
            continue
        try:
            hours = parse_hours(rep.hours) if rep.hours else None
        except ValueError as exc:
            c.add(doc, ("reps", rep_id, "hours"), str(exc))
            continue
        try:
            calendars[rep_id] = WorkCalendar(
                tz, hours, rep.holidays, [(a.start, a.end) for a in rep.away]
            )
        except ValueError as exc:
            c.add(doc, ("reps", rep_id, "holidays"), str(exc))
        if rep.notify == "slack" and not rep.slack:
            c.add(doc, ("reps", rep_id, "notify"), "notify: slack needs the rep's slack user id")
    return calendars


def _rep_reference(
    c: _Collector,
    doc: YamlDoc,
    path: tuple[str | int, ...],
    name: str,
    team: TeamFile,
    key: bool = False,
) -> None:
    """A rep named in a team, as its manager or in the fallback must be described under
    ``reps:``: there is no address to reach anyone else at, and a lead sent there would reach
    nobody."""
    if name in team.reps:
        return
    hint = difflib.get_close_matches(name, list(team.reps), n=1)
    c.add(
        doc,
        path,
        f"unknown rep '{name}'"
        + (f" (did you mean '{hint[0]}'?)" if hint else " (describe it under reps: in team.yaml)"),
        key,
    )


def _compile_routing(
    c: _Collector, doc: YamlDoc | None, model: RoutingFile, team: TeamFile, schema: Schema
) -> list[RoutingRule]:
    if doc is None:
        return []
    _unique_names(c, doc, model.rules, ("rules",))
    rules: list[RoutingRule] = []
    for index, rule in enumerate(model.rules):
        if rule is None:  # invalid on its own: already reported
            continue
        if (rule.assign is None) == (rule.team is None):
            c.add(
                doc, ("rules", index), f"rule '{rule.name}' needs exactly one of assign: or team:"
            )
        if rule.team is not None and rule.team not in team.teams:
            hint = difflib.get_close_matches(rule.team, list(team.teams), n=1)
            c.add(
                doc,
                ("rules", index, "team"),
                f"unknown team '{rule.team}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""),
            )
        when = c.expr(doc, ("rules", index, "when"), rule.when, schema) if rule.when else None
        rules.append(RoutingRule(rule.name, when, rule.assign, rule.team, rule.strategy))
    for index, name in enumerate(model.fallback.notify):
        _rep_reference(c, doc, ("fallback", "notify", index), name, team)
    return rules


def _compile_sla(
    c: _Collector, doc: YamlDoc | None, model: SlaFile, schema: Schema
) -> list[CompiledSla]:
    if doc is None:
        return []
    _unique_names(c, doc, model.policies, ("policies",))
    return [
        CompiledSla(p, c.expr(doc, ("policies", i, "when"), p.when, schema) if p.when else None)
        for i, p in enumerate(model.policies)
        if p is not None
    ]


def _compile_alerts(c: _Collector, doc: YamlDoc | None, team: TeamFile) -> list[CompiledAlert]:
    """alerts.yaml: every `when:` over the metrics of :data:`rules.alerts.ALERT_METRICS`, and
    everyone in a `notify:` a rep or manager of team.yaml."""
    if doc is None:
        return []
    data = doc.data if isinstance(doc.data, dict) else {}
    notify = data.get("notify")
    model = c.model(doc, AlertsFile) or AlertsFile.model_construct(
        notify=[str(n) for n in notify] if isinstance(notify, list) else [],
        alerts=_valid_items(doc, "alerts", AlertModel),
    )
    schema = Schema(ALERT_METRICS)
    _unique_names(c, doc, model.alerts, ("alerts",))
    for index, name in enumerate(model.notify):
        _rep_reference(c, doc, ("notify", index), name, team)
    compiled = []
    for index, alert in enumerate(model.alerts):
        if alert is None:
            continue
        for n, name in enumerate(alert.notify or []):
            _rep_reference(c, doc, ("alerts", index, "notify", n), name, team)
        when = c.expr(doc, ("alerts", index, "when"), alert.when, schema)
        notify = list(alert.notify) if alert.notify is not None else list(model.notify)
        if not notify:
            c.add(doc, ("alerts", index), f"alert '{alert.name}' tells nobody: add notify:")
        compiled.append(CompiledAlert(alert.name, when, notify))
    return compiled


def _compile_nurture(
    c: _Collector, doc: YamlDoc | None, model: NurtureFile, schema: Schema
) -> list[CompiledSequence]:
    if doc is None:
        return []
    sequences = []
    for name, seq in model.sequences.items():
        for index, step in enumerate(seq.steps):
            path = ("sequences", name, "steps", index)
            if seq.channel == "email" and not step.template:
                c.add(doc, path, "an e-mail step needs template:")
            if seq.channel == "phone" and not step.task:
                c.add(doc, path, "a phone step needs task: (it becomes a call task)")
            if step.template and step.task:
                c.add(doc, path, "a step is either an e-mail (template:) or a call (task:)")
            missing = _missing_template_parts(c.directory, step.template)
            if missing:
                c.add(
                    doc,
                    (*path, "template"),
                    f"template '{step.template}' does not exist: write "
                    + " and ".join(f"templates/{step.template}.{part}.j2" for part in missing),
                )
        enroll = c.expr(doc, ("sequences", name, "enroll_when"), seq.enroll_when, schema)
        exit_when = (
            c.expr(doc, ("sequences", name, "exit_when"), seq.exit_when, schema)
            if seq.exit_when
            else None
        )
        sequences.append(CompiledSequence(name, seq, enroll, exit_when))
    return sequences


def _missing_template_parts(directory: Path, template: str | None) -> list[str]:
    """The parts an e-mail needs (subject and text) that neither ``config/templates/`` nor
    the defaults shipped with Leadwerk have."""
    if not template:
        return []
    folders = (directory / "templates", Path(__file__).parent / "templates")
    return [
        part
        for part in ("subject", "txt")
        if not any((folder / f"{template}.{part}.j2").is_file() for folder in folders)
    ]


def _check_hygiene(c: _Collector, doc: YamlDoc, model: HygieneFile, team: TeamFile) -> None:
    """The list owner must be a rep (the one told on warn and suspend); a webhook that is
    signed with a secret must name the variable holding it."""
    lists = model.lists
    if lists.owner is not None:
        _rep_reference(c, doc, ("lists", "owner"), lists.owner, team)
    if lists.suspend_bounce_rate < lists.warn_bounce_rate:
        c.add(
            doc,
            ("lists", "suspend_bounce_rate"),
            "suspend_bounce_rate is below warn_bounce_rate: a list would be suspended unwarned",
        )
    seen: set[str] = set()
    for index, source in enumerate(model.bounce_sources):
        if source.kind != "webhook":
            continue
        if source.provider in seen:
            c.add(doc, ("bounce_sources", index, "provider"), f"{source.provider} named twice")
        seen.add(source.provider)
        if source.provider != "ses" and not source.secret_env:
            c.add(
                doc,
                ("bounce_sources", index),
                f"a {source.provider} webhook needs secret_env: (the variable holding its "
                "signing secret); unsigned events are never taken",
            )


def _load_sources(c: _Collector, doc: YamlDoc | None) -> dict[str, SourceConfig]:
    if doc is None or doc.data is None:
        return {}
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("sources", []), list):
        c.add(doc, (), "sources.yaml must hold `sources:` with a list of sources")
        return {}
    extra = [k for k in data if k != "sources"]
    for key in extra:
        c.add(doc, (key,), f"unknown key '{key}'", key=True)
    result: dict[str, SourceConfig] = {}
    for index, item in enumerate(data.get("sources") or []):
        kind = item.get("kind") if isinstance(item, dict) else None
        kind_class = SOURCE_KINDS.get(str(kind))
        if kind_class is None:
            hint = difflib.get_close_matches(str(kind), list(SOURCE_KINDS), n=1)
            c.add(
                doc,
                ("sources", index, "kind"),
                f"unknown source kind '{kind}'"
                + (
                    f" (did you mean '{hint[0]}'?)"
                    if hint
                    else f"; known kinds: {', '.join(sorted(SOURCE_KINDS))}"
                ),
            )
            continue
        model = kind_class.config_model
        try:
            source = TypeAdapter(model).validate_python(item)
        except ValidationError as exc:
            for error in exc.errors():
                error = dict(error, loc=("sources", index, *error["loc"]))
                c.issues.append(_pydantic_issue(doc, _SourcesWrapper.for_kind(model), error))
            continue
        if source.name in result:
            c.add(doc, ("sources", index, "name"), f"duplicate source name '{source.name}'")
        result[source.name] = source
    return result


class _SourcesWrapper:
    """Lets did-you-mean find the keys of one source kind's model."""

    @staticmethod
    def for_kind(model: type[BaseModel]) -> type[BaseModel]:
        from pydantic import create_model

        return create_model("SourcesFile", sources=(list[model], ...))  # type: ignore[valid-type]


def _load_tests(c: _Collector, directory: Path) -> list[RuleTest]:
    tests: list[RuleTest] = []
    if not directory.is_dir():
        return tests
    for path in sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml")):
        doc = c.read(str(path.relative_to(c.directory)))
        if doc is None or doc.data is None:
            continue
        items = (
            doc.data
            if isinstance(doc.data, list)
            else doc.data.get("tests")
            if isinstance(doc.data, dict)
            else None
        )
        if not isinstance(items, list):
            c.add(doc, (), "a rule test file holds a list of cases")
            continue
        prefix: tuple[Any, ...] = () if isinstance(doc.data, list) else ("tests",)
        for index, item in enumerate(items):
            try:
                case = RuleTestCase.model_validate(item)
            except ValidationError as exc:
                for error in exc.errors():
                    c.issues.append(_pydantic_issue(doc, RuleTestCase, error, (*prefix, index)))
                continue
            line, _ = doc.where((*prefix, index))
            tests.append(RuleTest(doc.file, line, case))
    return tests


def load_or_exit(
    settings: Settings, echo: Callable[[str], None], with_tests: bool = False
) -> Config:
    """For the CLI: the config, or the located errors and exit code 2."""
    try:
        return load_config(settings, with_tests=with_tests)
    except ConfigErrors as exc:
        echo(exc.render())
        echo(f"{len(exc.issues)} error(s) in {settings.config_dir}")
        raise SystemExit(2) from None

"""The notification templates in ``config/templates/``: checked like rules, previewed like mail.

Marketing ops edit these Jinja2 files. ``leadwerk rules check`` finds what would break or
silently print nothing: syntax errors, unknown filters, missing included templates, variables
outside the documented set and misspelt fields of them (``lead.compnay``), each as
``file:line:col: message``. ``leadwerk preview`` renders a template for one contact with the
rules as they are, as a rep would receive it, touching no store.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from jinja2 import Environment, TemplateError, TemplateNotFound, TemplateSyntaxError, meta, nodes

from config.errors import ConfigIssue
from config.loader import Config
from rules.routing import RouteDecision
from worker.commands.evaluate import evaluate
from worker.pipeline.notify import lead_facts, template_env
from worker.store.models import Assignment, Contact, Event, Score

Variables = dict[str, frozenset[str] | None]

# What a template may use: the documented set (what lead_facts gives), each with its fields
# where it is a record with a fixed shape. ``event`` holds whatever the source maps, so any
# field goes.
TEMPLATE_VARIABLES: Variables = {
    "lead": frozenset(
        {"id", "name", "email", "company", "title", "phone", "country", "company_size", "source"}
    ),
    "score": frozenset({"total", "fit", "engagement", "ruleset"}),
    "reasons": None,
    "event": None,
    "route": frozenset({"rule", "team", "reason"}),
    "rep": frozenset({"id", "name"}),
    "sla": frozenset({"policy", "due"}),
    "accept_url": None,
    "assign_url": None,
    "unassigned": None,
}

# Messages rendered with other facts (worker/pipeline/sla.py), by template name (the part of
# the file name before .subject/.txt/.html). Any other template is checked against the
# documented set.
_SLA_LEAD = frozenset({"id", "name", "email", "company", "phone"})
_PERSON = frozenset({"id", "name"})
_SLA = frozenset({"policy", "due", "within"})
FAMILY_VARIABLES: dict[str, Variables] = {
    "new_lead": TEMPLATE_VARIABLES,
    "sla_reminder": {
        "lead": _SLA_LEAD,
        "rep": _PERSON,
        "sla": _SLA | {"used"},
        "accept_url": None,
    },
    "sla_escalation": {
        "lead": _SLA_LEAD,
        "rep": _PERSON,
        "sla": _SLA,
        "accept_url": None,
        "manager": _PERSON,
        "reassigned_to": _PERSON,
        "reassign_reason": None,
        "assign_url": None,
    },
    # worker/pipeline/digest.py: the leads a digest holds, each as lead_facts there gives it.
    "digest": {"rep": _PERSON, "leads": None, "count": None, "page_url": None},
    "digest_page": {"rep": _PERSON, "leads": None, "count": None},
}
# Nurture e-mails (any template a sequence names) and the call tasks of phone steps.
NURTURE_VARIABLES: Variables = {
    "contact": frozenset(
        {"id", "name", "first_name", "last_name", "email", "company", "title", "country"}
    ),
    "event": None,
    "sequence": None,
    "step": None,
    "unsubscribe_url": None,
}
FAMILY_VARIABLES["call_task"] = {
    "lead": frozenset({"id", "name", "email", "company", "phone"}),
    "rep": _PERSON,
    "task": None,
    "sequence": None,
    "step": None,
    "local_time": None,
    "history": None,
}
_DICT_METHODS = frozenset({"get", "items", "keys", "values"})
# A message is these parts of one template name: new_lead.subject.j2, new_lead.txt.j2, ...
PARTS = ("subject", "txt", "html")


def template_files(config_dir: Path) -> list[Path]:
    """Every template in ``config/templates/``: the ``*.j2`` files, in sub-folders too."""
    folder = config_dir / "templates"
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.rglob("*.j2")
        if path.is_file() and not any(part.startswith(".") for part in path.parts)
    )


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def check_templates(config_dir: Path) -> list[ConfigIssue]:
    """Every problem in every template, so they are all fixed in one round. Templates that a
    sequence of ``nurture.yaml`` names are checked against nurture's variables."""
    nurture = _nurture_templates(config_dir)
    env = template_env(config_dir)
    folder = config_dir / "templates"
    issues: list[ConfigIssue] = []
    for path in template_files(config_dir):
        name = path.relative_to(folder).as_posix()
        variables = (
            NURTURE_VARIABLES
            if template_base(name) in nurture
            else FAMILY_VARIABLES.get(template_base(name), TEMPLATE_VARIABLES)
        )
        issues.extend(_check_one(env, path, name, variables))
    return issues


def _nurture_templates(config_dir: Path) -> set[str]:
    """The templates ``nurture.yaml`` names; a file that does not read names none (the config
    check reports it)."""
    try:
        data = yaml.safe_load((config_dir / "nurture.yaml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return set()
    sequences = data.get("sequences") if isinstance(data, dict) else None
    if not isinstance(sequences, dict):
        return set()
    return {
        str(step["template"])
        for sequence in sequences.values()
        if isinstance(sequence, dict) and isinstance(sequence.get("steps"), list)
        for step in sequence["steps"]
        if isinstance(step, dict) and step.get("template")
    }


def _check_one(env: Environment, path: Path, name: str, variables: Variables) -> list[ConfigIssue]:
    file = _display(path)
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return [ConfigIssue(file, 1, 1, f"not UTF-8 text (byte {exc.start}); save it as UTF-8")]
    lines = source.splitlines()

    def issue(line: int, message: str, word: str | None = None) -> ConfigIssue:
        text = lines[line - 1] if 0 < line <= len(lines) else None
        return ConfigIssue(file, line, _column(text, word), message, text)

    try:
        tree = env.parse(source, name, str(path))
        # Compiling finds what parsing does not: unknown filters and tests.
        env.compile(source, name, str(path))
    except TemplateSyntaxError as exc:
        message = exc.message or "syntax error"
        named = re.search(r"'([^']+)'", message)  # "No filter named 'x'." points at x
        return [issue(exc.lineno or 1, message, named.group(1) if named else None)]

    found: list[ConfigIssue] = []
    for included in meta.find_referenced_templates(tree):
        if included is None:
            continue
        try:
            env.get_template(included)
        except TemplateNotFound:
            line = _line_of(tree, included)
            message = f"the included template '{included}' does not exist"
            found.append(issue(line, message, included))

    for unsafe, line in _internals_used(tree):
        found.append(
            issue(
                line,
                f"'{unsafe}' is not available in a template: templates see only the facts of "
                "the message, not Python's internals",
                unsafe,
            )
        )
    allowed = set(variables) | set(env.globals)
    unknown = meta.find_undeclared_variables(tree) - allowed
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    for node in tree.find_all(nodes.Name):
        if node.ctx == "load" and node.name in unknown:
            found.append(
                issue(
                    node.lineno,
                    f"unknown variable '{node.name}'{_hint(node.name, allowed)}; this "
                    f"template may use: {', '.join(sorted(variables))}",
                    node.name,
                )
            )
    for record, field, line in _fields_used(tree):
        keys = variables.get(record)
        if keys is None or record in assigned or field in keys or field in _DICT_METHODS:
            continue
        if field.startswith("_"):  # reported above
            continue
        hint = difflib.get_close_matches(field, sorted(keys), n=1)
        found.append(
            issue(
                line,
                f"unknown field '{record}.{field}'"
                + (f" (did you mean '{record}.{hint[0]}'?)" if hint else "")
                + f"; {record} has: {', '.join(sorted(keys))}",
                field,
            )
        )
    return sorted(set(found), key=lambda i: (i.line, i.col, i.message))


def _fields_used(tree: nodes.Template) -> Iterator[tuple[str, str, int]]:
    """(variable, field, line) for ``lead.company`` and ``lead['company']``."""
    for node in tree.find_all(nodes.Getattr):
        if isinstance(node.node, nodes.Name) and node.node.ctx == "load":
            yield node.node.name, node.attr, node.lineno
    for item in tree.find_all(nodes.Getitem):
        if (
            isinstance(item.node, nodes.Name)
            and item.node.ctx == "load"
            and isinstance(item.arg, nodes.Const)
            and isinstance(item.arg.value, str)
        ):
            yield item.node.name, item.arg.value, item.lineno


def _internals_used(tree: nodes.Template) -> Iterator[tuple[str, int]]:
    """(name, line) for ``x.__class__`` or ``x['_secret']``: what the sandbox refuses to
    reach (any name starting with ``_``), found before a message is rendered."""
    for node in tree.find_all(nodes.Getattr):
        if node.attr.startswith("_"):
            yield node.attr, node.lineno
    for item in tree.find_all(nodes.Getitem):
        if (
            isinstance(item.arg, nodes.Const)
            and isinstance(item.arg.value, str)
            and item.arg.value.startswith("_")
        ):
            yield item.arg.value, item.lineno


def _hint(name: str, allowed: set[str]) -> str:
    match = difflib.get_close_matches(name, sorted(allowed), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _line_of(tree: nodes.Template, template_name: str) -> int:
    for node in tree.find_all(nodes.Const):
        if node.value == template_name:
            return node.lineno
    return 1


def _column(text: str | None, word: str | None) -> int:
    """Where ``word`` first stands as a whole word in the line (1-based), else 1: Jinja's
    syntax tree knows lines, not columns."""
    if not text or not word:
        return 1
    match = re.search(rf"(?<![\w.]){re.escape(word)}\b", text) or re.search(
        rf"\b{re.escape(word)}\b", text
    )
    return match.start() + 1 if match else 1


# --- preview --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    """A rendered message: the parts the template has (``None`` for a missing one)."""

    recipient: str
    subject: str | None
    text: str | None
    html: str | None
    notes: tuple[str, ...]


class PreviewError(ValueError):
    """The contact file or the template name cannot be used."""


def template_base(name: str) -> str:
    """``new_lead``, ``new_lead.txt.j2`` or ``templates/new_lead.html.j2`` → ``new_lead``."""
    base = Path(name).name.removesuffix(".j2")
    for part in PARTS:
        base = base.removesuffix(f".{part}")
    return base


def preview(
    config: Config,
    template: str,
    item: Mapping[str, Any],
    now: datetime,
    rep: str | None = None,
) -> Preview:
    """Render ``template`` for the contact in ``item`` (``{"contact": {...}, "events": [...]}``
    as ``leadwerk score`` reads it), for a fictional assignment decided by the rules as they
    are. ``rep`` picks the recipient; by default whoever the rules would pick."""
    contact_in = item.get("contact")
    events = item.get("events") or []
    if not isinstance(contact_in, dict):
        raise PreviewError('expected an object like {"contact": {...}, "events": [...]}')
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise PreviewError("events must be a list of objects")
    if rep is not None and rep not in config.team.reps:
        raise PreviewError(f"unknown rep '{rep}'{_hint(rep, set(config.team.reps))}")
    base = template_base(template)
    env = template_env(config.directory)
    names = {part: f"{base}.{part}.j2" for part in PARTS}
    available = {part: _exists(env, name) for part, name in names.items()}
    if not any(available.values()):
        raise PreviewError(
            f"no template named '{base}': expected {', '.join(names.values())} "
            f"in {config.directory / 'templates'}"
        )
    account = item.get("account") if isinstance(item.get("account"), dict) else None
    result, route, sla, contact = evaluate(config, contact_in, events, now, account)
    notes: list[str] = []
    if route is None:
        notes.append(
            f"with the rules as they are this contact is not an MQL (score {result.score:.1f}); "
            "a rep would get no message. Shown as if the lead had nobody to go to."
        )
        route = RouteDecision(
            rule="(preview)",
            team=None,
            rep=None,
            strategy=None,
            reason="not an MQL, shown for preview",
            fallback=tuple(config.fallback),
        )
    recipient = rep or route.rep or next(iter(route.fallback), None)
    if recipient is None:
        raise PreviewError("nobody would receive this lead: routing.yaml names no fallback")
    facts = lead_facts(
        config,
        _contact(contact, result),
        _event(events),
        _assignment(route, sla),
        route,
        Score(hits=[hit.as_dict() for hit in result.hits]),
        recipient,
    )
    rendered: dict[str, str | None] = {}
    for part, name in names.items():
        if not available[part]:
            notes.append(f"there is no {name}")
            rendered[part] = None
            continue
        part_env = env.overlay(autoescape=True) if part == "html" else env
        try:
            rendered[part] = part_env.get_template(name).render(facts)
        except TemplateSyntaxError as exc:
            where = f"{exc.filename or name}:{exc.lineno}"
            raise PreviewError(f"{where}: {exc.message}; see leadwerk rules check") from None
        except TemplateError as exc:
            raise PreviewError(f"{name}: {exc}") from None
    subject = rendered["subject"]
    return Preview(
        recipient=recipient,
        subject=subject.strip() if subject is not None else None,
        text=rendered["txt"],
        html=rendered["html"],
        notes=tuple(notes),
    )


def _exists(env: Environment, name: str) -> bool:
    try:
        env.get_template(name)
    except TemplateNotFound:
        return False
    except TemplateError:
        return True  # it exists; rendering reports the error
    return True


def _contact(fields: dict[str, Any], result: Any) -> Contact:
    return Contact(
        id=0,
        email=fields["email"],
        fields=fields,
        source="preview",
        score=result.score,
        fit=result.fit,
        engagement=result.engagement,
    )


def _event(events: Sequence[Mapping[str, Any]]) -> Event | None:
    if not events:
        return None
    last = {k: v for k, v in events[-1].items() if k != "at"}
    return Event(type=str(last.pop("type", "")), attrs=last)


def _assignment(route: RouteDecision, sla: dict[str, Any] | None) -> Assignment:
    due = datetime.fromisoformat(sla["due"]) if sla else None
    return Assignment(
        id=0,
        rep=route.rep,
        team=route.team,
        rule=route.rule,
        reason=route.reason,
        sla_policy=sla["policy"] if sla else None,
        due_at=due,
    )

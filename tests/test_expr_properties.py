"""Properties of the `when:` compiler: it fails only with located errors, never runs anything
it is given, and agrees with a plain interpreter on well-typed expressions."""

from __future__ import annotations

import builtins
import itertools
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.expr import Context, Expr, ExprErrors, FieldType, Origin, Schema, compile_expr

NUMBER, STRING, BOOL, DATETIME, LIST, ANY = (
    FieldType.NUMBER,
    FieldType.STRING,
    FieldType.BOOL,
    FieldType.DATETIME,
    FieldType.LIST,
    FieldType.ANY,
)
FIELDS = {
    "n": NUMBER,
    "s": STRING,
    "b": BOOL,
    "d": DATETIME,
    "tags": LIST,
    "x": ANY,
    "event.n": NUMBER,
    "event.t": STRING,
    "event.at": DATETIME,
    "account.o": STRING,
}
DOMAINS = ["acme.de", "web.de", "Ä.de"]
SCHEMA = Schema(FIELDS, {"domains": DOMAINS})
ORIGIN = Origin("config/routing.yaml", 7, 9, "  - when: ...")
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
PLUS_TWO = timezone(timedelta(hours=2))


def compile_or_none(text: str) -> Expr | None:
    """The compiled expression, or None after checking that every error is located."""
    try:
        return compile_expr(text, SCHEMA, ORIGIN)
    except ExprErrors as exc:
        assert exc.errors
        for error in exc.errors:
            assert error.file == ORIGIN.file
            assert error.line >= ORIGIN.line and error.col >= 1
            assert error.message
        return None


# --- values found in contacts, events and accounts ------------------------------------------


def moment(hours: int, zone: tzinfo | None) -> datetime:
    """``hours`` before NOW, aware in ``zone``, or naive (which means UTC) without one."""
    at = NOW - timedelta(hours=hours)
    return at.replace(tzinfo=None) if zone is None else at.astimezone(zone)


# Values sit near the literals used below, so comparisons land on both sides of a boundary.
WORDS = ["DE", "de", "acme.de", "Ä.de", "vp", "VP Sales", "GESCHÄFTSFÜHRER", "", 'q"t', "a\\b"]
POOLS: dict[FieldType, list[Any]] = {
    NUMBER: [-1, 0, 2, 2.5, True, "2", " 2 ", "2.5", "abc", "", "nan", math.nan, math.inf],
    STRING: [*WORDS, 5],
    BOOL: [True, False, "true", 1, 0],
    DATETIME: [
        *(moment(hours, zone) for hours in (-25, 23, 24, 25, 48) for zone in (None, UTC, PLUS_TWO)),
        "2024-05-31T12:00:00Z",
        "2024-05-30 12:00",
        date(2024, 5, 31),
        "soon",
        17,
    ],
    LIST: [["vp"], ("vp", "DE"), [], "vp", {"vp": 1}, ["DE", 2]],
}
POOLS[ANY] = [*POOLS[NUMBER], *POOLS[STRING], *POOLS[BOOL], ["DE"], {"a": 1}]

FOUND = {kind: st.sampled_from(pool) for kind, pool in POOLS.items()}
FOUND[NUMBER] |= st.floats() | st.integers() | st.text(max_size=3)
FOUND[STRING] |= st.text(max_size=3)
FOUND[DATETIME] |= st.builds(moment, st.integers(-100, 100), st.sampled_from([None, UTC]))
ABSENT = object()


def part(prefix: str) -> st.SearchStrategy[dict[str, Any]]:
    """A mapping of the fields under ``prefix``, each some value, None or absent.

    Values come first so that Hypothesis, which favours the first choice, mostly draws them.
    """
    values = {
        name.removeprefix(prefix): st.one_of(FOUND[kind], st.none(), st.just(ABSENT))
        for name, kind in FIELDS.items()
        if name.startswith(prefix) and (prefix or "." not in name)
    }
    return st.fixed_dictionaries(values).map(
        lambda drawn: {key: value for key, value in drawn.items() if value is not ABSENT}
    )


contexts = st.builds(
    Context,
    contact=part(""),
    event=st.one_of(part("event."), st.none()),
    account=st.one_of(part("account."), st.none()),
    now=st.just(NOW),
)


# --- 1. the compiler fails only with located errors ----------------------------------------

WORD_SOUP = ["lists.domains", "lists.nope", "and", "or", "not", "in", "is", "none", "None"]
WORD_SOUP += ["true", "False", "matches", "days_since", "lambda", "for", "if", "__import__"]
SIGN_SOUP = ["(", ")", "[", "]", ",", ".", "-", "==", "!=", "<", "<=", ">", ">=", "=", "&&", "@"]
SIGN_SOUP += [":", "#", "*", "{", "}", "\\", "ä", "AND", "Is", "\n", "\t"]
VALUE_SOUP = ['"DE"', "'a'", '"(?i)x"', '"("', '"\\', '"', "0", "5", "2.5", "1e3", "1__0"]
SOUP = [*FIELDS, *WORD_SOUP, *SIGN_SOUP, *VALUE_SOUP]
soups = st.tuples(st.lists(st.sampled_from(SOUP), max_size=14), st.sampled_from([" ", ""])).map(
    lambda parts: parts[1].join(parts[0])
)


@settings(max_examples=400, deadline=None)
@given(text=st.one_of(st.text(), soups), ctx=contexts)
def test_the_compiler_only_ever_fails_with_located_errors(text: str, ctx: Context) -> None:
    expr = compile_or_none(text)
    if expr is not None:
        assert expr.fields <= FIELDS.keys()
        assert isinstance(expr(ctx), bool)


def test_very_deep_nesting_is_a_located_error() -> None:
    for text in ["(" * 500 + "b" + ")" * 500, "not " * 20000 + "b", ".".join(["n"] * 20000)]:
        assert compile_or_none(text) is None


# --- 2. nothing is ever executed -----------------------------------------------------------

PAYLOADS = [
    "boom()",
    "__import__('builtins').boom()",
    "open('/etc/passwd').read() == ''",
    "().__class__.__bases__[0].__subclasses__()",
    "n.__class__",
    "lambda: boom()",
    "(lambda: boom())()",
    "[boom() for t in tags]",
    "{boom()}",
    "f'{boom()}' == ''",
    "globals()['boom']()",
    "getattr(n, 'real')",
    "eval('boom()')",
    "exec('boom()')",
    "breakpoint()",
    "n if boom() else b",
    "(y := boom())",
    "s.format(boom()) == ''",
    "*tags",
    "days_since(boom()) > 1",
    "days_since(d).real > 1",
    "b and boom",
    "s matches boom()",
    "n in boom()",
    's == "a" "b"',
    "tags[0] == 'x'",
    "x.__dict__",
    "n + 1 > 2",
]


class Sentinel:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> bool:
        self.calls += 1
        return True


@contextmanager
def sentinel_in_builtins() -> Iterator[Sentinel]:
    """A ``boom`` that any executed Python code could reach and that counts its calls."""
    boom = Sentinel()
    with patch.object(builtins, "boom", boom, create=True):
        yield boom


@pytest.mark.parametrize("payload", PAYLOADS)
def test_python_payloads_are_rejected_without_running(payload: str) -> None:
    with sentinel_in_builtins() as boom:
        assert compile_or_none(payload) is None
    assert boom.calls == 0


class ReadLog(dict[str, Any]):
    """A mapping that records every key read from it."""

    def __init__(self, data: Mapping[str, Any], log: set[str], prefix: str) -> None:
        super().__init__(data)
        self.log, self.prefix = log, prefix

    def get(self, key: str, default: Any = None) -> Any:
        self.log.add(self.prefix + key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.log.add(self.prefix + key)
        return super().__getitem__(key)


fragments = st.lists(st.sampled_from(PAYLOADS + SOUP), min_size=1, max_size=6).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(text=st.one_of(fragments, soups), ctx=contexts)
def test_random_text_never_runs_code_and_reads_only_its_declared_fields(
    text: str, ctx: Context
) -> None:
    with sentinel_in_builtins() as boom:
        expr = compile_or_none(text)
        if expr is not None:
            reads: set[str] = set()
            logged = Context(
                ReadLog(ctx.contact, reads, ""),
                None if ctx.event is None else ReadLog(ctx.event, reads, "event."),
                None if ctx.account is None else ReadLog(ctx.account, reads, "account."),
                NOW,
            )
            expr(logged)
            assert reads <= expr.fields
    assert boom.calls == 0


# --- 3. agreement with a plain interpreter -------------------------------------------------


@dataclass(frozen=True)
class Lit:
    value: Any
    text: str
    kind: FieldType


@dataclass(frozen=True)
class Node:
    """One node of a generated expression; what ``parts`` holds depends on ``op``."""

    op: str
    parts: tuple[Any, ...]
    paren: bool = False


def quoted(value: str, quote: str) -> str:
    return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def number(value: float) -> Lit:
    return Lit(value, repr(value), NUMBER)


def string(value: str, quote: str = '"') -> Lit:
    return Lit(value, quoted(value, quote), STRING)


LITERALS = {
    NUMBER: [number(v) for v in (-1, 0, 2, 2.5)],
    STRING: [string("DE"), string("de", "'"), string('q"t'), string("it's"), string("a\\b", "'")],
    BOOL: [Lit(True, "true", BOOL), Lit(False, "False", BOOL)],
}
PATTERNS = ["^D", "(?i)de", "ä|Ä", "\\d", "x*", "", "[a-c]", "(?i)geschäftsführer", "\\bvp\\b"]
FIELD_PAIRS = [("n", "event.n"), ("s", "event.t"), ("account.o", "s"), ("d", "event.at")]
ORDER = ["==", "!=", "<", "<=", ">", ">="]
MIRROR = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
OPS = {
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def named(*kinds: FieldType) -> list[str]:
    return [name for name, kind in FIELDS.items() if kind in kinds]


def literal_kinds(field: str) -> list[FieldType]:
    kind = FIELDS[field]
    return [NUMBER, STRING, BOOL] if kind is ANY else [kind]


def every_atom() -> Iterator[Node]:
    """Every comparison shape the language has, over the fields and literals above."""
    for field in named(NUMBER, STRING, BOOL, ANY):
        for kind in literal_kinds(field):
            for lit, op, flipped in itertools.product(
                LITERALS[kind], ["==", "!="] if kind is BOOL else ORDER, [False, True]
            ):
                yield Node("compare", (field, op, lit, kind, flipped))
    for pair, op in itertools.product(FIELD_PAIRS, ORDER):
        yield Node("fields", (*pair, op))
    for field, negate in itertools.product(named(NUMBER, STRING, ANY), [False, True]):
        if FIELDS[field] is not NUMBER:
            yield Node("in_named", (field, negate))
        for kind in literal_kinds(field):
            yield Node("in_list", (field, tuple(LITERALS[kind]), negate))
        yield Node("in_list", (field, (), negate))
    for lit, negate in itertools.product(LITERALS[STRING], [False, True]):
        yield Node("in_tags", (lit, negate))
    for field, pattern in itertools.product(named(STRING, ANY), PATTERNS):
        yield Node("matches", (field, pattern, quoted(pattern, '"')))
    for field, negate in itertools.product(FIELDS, [False, True]):
        yield Node("is_none", (field, negate))
    for field in named(BOOL, ANY):
        yield Node("bare", (field,))
    for field, op, lit in itertools.product(named(DATETIME, ANY), ORDER, LITERALS[NUMBER]):
        yield Node("days", (field, op, lit))
    for lit in LITERALS[BOOL]:
        yield Node("const", (lit,))


ATOMS = list(every_atom())
atoms = st.sampled_from(ATOMS)


def combine(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    several = st.lists(children, min_size=2, max_size=3).map(tuple)
    return st.one_of(
        st.builds(lambda c, p: Node("not", (c,), p), children, st.booleans()),
        st.builds(lambda cs, p: Node("and", cs, p), several, st.booleans()),
        st.builds(lambda cs, p: Node("or", cs, p), several, st.booleans()),
    )


trees = st.recursive(atoms, combine, max_leaves=8)

# How tightly each node binds; an operand that binds less tightly needs parentheses.
BINDING = {"or": 1, "and": 2, "not": 3}


def render(node: Node, sep: str = " ", needed: int = 0) -> str:
    op, p = node.op, node.parts
    if op in ("and", "or"):
        text = f"{sep}{op}{sep}".join(render(c, sep, BINDING[op]) for c in p)
    elif op == "not":
        text = f"not{sep}{render(p[0], sep, BINDING[op])}"
    elif op == "compare":
        field, symbol, lit, _, flipped = p
        text = sep.join([lit.text, MIRROR[symbol], field] if flipped else [field, symbol, lit.text])
    elif op == "fields":
        text = sep.join([p[0], p[2], p[1]])
    elif op == "in_named":
        text = sep.join([p[0], "not in" if p[1] else "in", "lists.domains"])
    elif op == "in_list":
        items = f"[{', '.join(item.text for item in p[1])}]"
        text = sep.join([p[0], "not in" if p[2] else "in", items])
    elif op == "in_tags":
        text = sep.join([p[0].text, "not in" if p[1] else "in", "tags"])
    elif op == "matches":
        text = sep.join([p[0], "matches", p[2]])
    elif op == "is_none":
        text = sep.join([p[0], "is not none" if p[1] else "is none"])
    elif op == "days":
        text = sep.join([f"days_since({p[0]})", p[1], p[2].text])
    elif op == "bare":
        text = p[0]
    else:
        text = p[0].text
    if node.paren or BINDING.get(op, 4) < needed:
        text = f"({text})"
    return text


def read(field: str, ctx: Context) -> Any:
    source, _, key = field.rpartition(".")
    mapping = {"": ctx.contact, "event": ctx.event, "account": ctx.account}[source]
    return None if mapping is None else mapping.get(key)


def as_kind(kind: FieldType, value: Any) -> Any:
    """A run-time value as ``kind``, or None where the language treats it as missing."""
    if value is None or kind is ANY:
        return value
    if kind is NUMBER:
        if isinstance(value, bool):
            return None
        try:
            number = value if isinstance(value, int | float) else float(value)
        except (TypeError, ValueError):
            return None
        return None if math.isnan(number) else number
    if kind is STRING:
        return value if isinstance(value, str) else None
    if kind is BOOL:
        return value if isinstance(value, bool) else None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def reference(node: Node, ctx: Context) -> bool:
    """What the expression means, spelled out one construct at a time."""
    op, p = node.op, node.parts
    if op == "and":
        return all(reference(c, ctx) for c in p)
    if op == "or":
        return any(reference(c, ctx) for c in p)
    if op == "not":
        return not reference(p[0], ctx)
    if op == "compare":
        field, symbol, lit, kind, _ = p
        value = as_kind(kind, read(field, ctx))
        return value is not None and OPS[symbol](value, lit.value)
    if op == "fields":
        kind = FIELDS[p[0]]
        a, b = as_kind(kind, read(p[0], ctx)), as_kind(kind, read(p[1], ctx))
        return a is not None and b is not None and OPS[p[2]](a, b)
    if op in ("in_named", "in_list"):
        field, negate = p[0], p[-1]
        items = DOMAINS if op == "in_named" else [item.value for item in p[1]]
        kinds = {STRING} if op == "in_named" else {item.kind for item in p[1]}
        kind = FIELDS[field] if FIELDS[field] is not ANY or len(kinds) != 1 else kinds.pop()
        value = as_kind(kind, read(field, ctx))
        return value is not None and (value in items) != negate
    if op == "in_tags":
        tags = read("tags", ctx)
        return isinstance(tags, list | tuple) and (p[0].value in tags) != p[1]
    if op == "matches":
        value = read(p[0], ctx)
        return isinstance(value, str) and re.search(p[1], value) is not None
    if op == "is_none":
        return (read(p[0], ctx) is None) != p[1]
    if op == "days":
        moment = as_kind(DATETIME, read(p[0], ctx))
        if moment is None:
            return False
        return OPS[p[1]]((ctx.now - moment).total_seconds() / 86400, p[2].value)
    if op == "bare":
        return read(p[0], ctx) is True
    return bool(p[0].value)


def fields_of(node: Node) -> set[str]:
    if node.op in ("and", "or", "not"):
        return set().union(*(fields_of(c) for c in node.parts))
    if node.op == "fields":
        return {node.parts[0], node.parts[1]}
    if node.op == "in_tags":
        return {"tags"}
    if node.op == "const":
        return set()
    return {node.parts[0]}


NO_PARENT = object()  # the whole event or account is missing


def every_context(fields: set[str]) -> Iterator[Context]:
    """Every combination of pooled values, None, absence and a missing parent for ``fields``."""
    names = sorted(fields)
    choices = []
    for name in names:
        extra = [NO_PARENT] if "." in name else []
        choices.append([*POOLS[FIELDS[name]], None, ABSENT, *extra])
    for values in itertools.product(*choices):
        parts: dict[str, dict[str, Any] | None] = {"": {}, "event": {}, "account": {}}
        for name, value in zip(names, values, strict=True):
            source, _, key = name.rpartition(".")
            target = parts[source]
            if value is NO_PARENT:
                parts[source] = None
            elif value is not ABSENT and target is not None:
                target[key] = value
        yield Context(parts[""] or {}, parts["event"], parts["account"], NOW)


def test_every_comparison_agrees_with_a_plain_interpreter_on_every_pooled_value() -> None:
    disagreements = []
    for atom in ATOMS:
        text = render(atom)
        expr = compile_expr(text, SCHEMA, ORIGIN)
        assert expr.fields == fields_of(atom), text
        for ctx in every_context(fields_of(atom)):
            if expr(ctx) is not reference(atom, ctx):
                disagreements.append((text, ctx))
    assert disagreements == []


@settings(max_examples=300, deadline=None)
@given(
    tree=trees,
    sep=st.sampled_from([" ", "  ", " \n "]),
    ctxs=st.lists(contexts, min_size=1, max_size=8),
)
def test_random_expressions_agree_with_a_plain_interpreter(
    tree: Node, sep: str, ctxs: list[Context]
) -> None:
    text = render(tree, sep)
    expr = compile_expr(text, SCHEMA, ORIGIN)
    assert expr.fields == fields_of(tree)
    for ctx in ctxs:
        assert expr(ctx) is reference(tree, ctx), (text, ctx)

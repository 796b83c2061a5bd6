"""Properties of the `when:` compiler: it fails only with located errors, never runs anything
it is given, and agrees with a plain interpreter on random well-typed expressions."""

from __future__ import annotations

import builtins
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

# Values are drawn from small ranges near the literals below, so that comparisons often land
# on either side of a boundary rather than always far from it.
WORDS = [
    "DE",
    "de",
    "AT",
    "acme.de",
    "Ä.de",
    "vp",
    "VP Sales",
    "geschäftsführer",
    "",
    'q"t',
    "it's",
]
WORDS += ["back\\slash", "a\\b"]
numbers_found = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([2.5, -0.5, float("nan"), float("inf")]),
    st.sampled_from(["2", " 1 ", "abc", "", "nan", "1e0", "-2.5", "1_0"]),
    st.booleans(),
    st.floats(),
    st.text(max_size=2),
)
strings_found = st.one_of(st.sampled_from(WORDS), st.text(max_size=2), st.integers(-3, 3))
bools_found = st.sampled_from([True, False, "true", 1, 0])


def moment(hours: int, zone: tzinfo | None) -> datetime:
    """``hours`` before NOW, aware in ``zone``, or naive (which means UTC) without one."""
    at = NOW - timedelta(hours=hours)
    return at.replace(tzinfo=None) if zone is None else at.astimezone(zone)


moments = st.builds(
    moment,
    st.integers(-80, 80),
    st.sampled_from([None, UTC, timezone(timedelta(hours=2))]),
)
datetimes_found = st.one_of(
    moments,
    moments.map(datetime.isoformat),
    st.integers(-3, 3).map(lambda days: (NOW - timedelta(days=days)).date()),
    st.sampled_from(["soon", "", 17]),
)
lists_found = st.one_of(
    st.lists(st.sampled_from(WORDS), max_size=3),
    st.lists(st.sampled_from(WORDS), max_size=3).map(tuple),
    st.sampled_from(["vp", {"vp": 1}]),
)
anything_found = st.one_of(
    numbers_found, strings_found, bools_found, st.lists(st.integers(), max_size=2)
)
FOUND = {
    NUMBER: numbers_found,
    STRING: strings_found,
    BOOL: bools_found,
    DATETIME: datetimes_found,
    LIST: lists_found,
    ANY: anything_found,
}


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

SOUP = [
    *FIELDS,
    "lists.domains",
    "lists.nope",
    "and",
    "or",
    "not",
    "in",
    "is",
    "none",
    "None",
    "true",
    "False",
    "matches",
    "days_since",
    "(",
    ")",
    "[",
    "]",
    ",",
    ".",
    "-",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    '"DE"',
    "'a'",
    '"(?i)x"',
    '"("',
    '"\\',
    "0",
    "5",
    "2.5",
    "1e3",
    "1__0",
    "=",
    "&&",
    "@",
    ":",
    "lambda",
    "for",
    "if",
    "__import__",
    '"',
    "\\",
    "#",
    "*",
    "{",
    "}",
    "\n",
    "\t",
    "ä",
    "AND",
    "Is",
]
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
    """One node of a generated expression; ``parts`` depend on ``op``."""

    op: str
    parts: tuple[Any, ...]
    paren: bool = False


def quoted(value: str, quote: str) -> str:
    return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


def string_literals() -> st.SearchStrategy[Lit]:
    any_text = st.text(st.characters(exclude_characters="\n"), max_size=3)
    values = st.one_of(st.sampled_from(WORDS), any_text)
    return st.builds(lambda v, q: Lit(v, quoted(v, q), STRING), values, st.sampled_from(['"', "'"]))


number_literals = st.one_of(
    st.integers(-3, 3),
    st.sampled_from([2.5, -0.5, 0.0, 10]),
    st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False),
).map(lambda v: Lit(v, repr(v), NUMBER))
bool_literals = st.sampled_from(["true", "True", "false", "False"]).map(
    lambda t: Lit(t.lower() == "true", t, BOOL)
)
LITERALS = {NUMBER: number_literals, STRING: string_literals(), BOOL: bool_literals}
PATTERNS = ["^D", "(?i)de", "ä|Ä", "\\d", "x*", "", "[a-c]", "(?i)GESCHÄFTSFÜHRER", "\\bvp\\b"]
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


def named(kinds: set[FieldType]) -> list[str]:
    return [name for name, kind in FIELDS.items() if kind in kinds]


@st.composite
def comparisons(draw: st.DrawFn) -> Node:
    field = draw(st.sampled_from(named({NUMBER, STRING, BOOL, ANY})))
    kind = FIELDS[field]
    if kind is ANY:
        kind = draw(st.sampled_from([NUMBER, STRING, BOOL]))
    literal = draw(LITERALS[kind])
    op = draw(st.sampled_from(["==", "!="] if kind is BOOL else ORDER))
    return Node("compare", (field, op, literal, kind, draw(st.booleans())))


field_pairs = st.sampled_from(
    [("n", "event.n"), ("s", "event.t"), ("account.o", "s"), ("d", "event.at"), ("event.at", "d")]
)


@st.composite
def memberships(draw: st.DrawFn) -> Node:
    field = draw(st.sampled_from(named({NUMBER, STRING, ANY})))
    negate = draw(st.booleans())
    if FIELDS[field] is not NUMBER and draw(st.booleans()):
        return Node("in_named", (field, negate))
    kinds = [FIELDS[field]] if FIELDS[field] is not ANY else [NUMBER, STRING, BOOL]
    items = draw(st.lists(st.sampled_from(kinds).flatmap(LITERALS.__getitem__), max_size=4))
    return Node("in_list", (field, tuple(items), negate))


atoms = st.one_of(
    comparisons(),
    st.builds(lambda pair, op: Node("fields", (*pair, op)), field_pairs, st.sampled_from(ORDER)),
    memberships(),
    st.builds(lambda lit, negate: Node("in_tags", (lit, negate)), string_literals(), st.booleans()),
    st.builds(
        lambda field, pattern, quote: Node("matches", (field, pattern, quoted(pattern, quote))),
        st.sampled_from(named({STRING, ANY})),
        st.sampled_from(PATTERNS),
        st.sampled_from(['"', "'"]),
    ),
    st.builds(
        lambda field, negate: Node("is_none", (field, negate)),
        st.sampled_from(list(FIELDS)),
        st.booleans(),
    ),
    st.builds(lambda field: Node("bare", (field,)), st.sampled_from(named({BOOL, ANY}))),
    st.builds(
        lambda field, op, lit: Node("days", (field, op, lit)),
        st.sampled_from(named({DATETIME, ANY})),
        st.sampled_from(ORDER),
        number_literals,
    ),
    st.builds(lambda lit: Node("const", (lit,)), bool_literals),
)


def combine(children: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    return st.one_of(
        st.builds(lambda c, p: Node("not", (c,), p), children, st.booleans()),
        st.builds(
            lambda cs, p: Node("and", tuple(cs), p),
            st.lists(children, min_size=2, max_size=3),
            st.booleans(),
        ),
        st.builds(
            lambda cs, p: Node("or", tuple(cs), p),
            st.lists(children, min_size=2, max_size=3),
            st.booleans(),
        ),
    )


trees = st.recursive(atoms, combine, max_leaves=8)

# How tightly each node binds, and how tightly its operands must bind to need no parentheses.
BINDING = {"or": 1, "and": 2, "not": 3}
OPERANDS = {"or": 1, "and": 2, "not": 3}


def render(node: Node, sep: str, needed: int = 0) -> str:
    op, p = node.op, node.parts
    if op in ("and", "or"):
        text = f"{sep}{op}{sep}".join(render(c, sep, OPERANDS[op]) for c in p)
    elif op == "not":
        text = f"not{sep}{render(p[0], sep, OPERANDS[op])}"
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
        if not isinstance(tags, list | tuple):
            return False
        return (p[0].value in tags) != p[1]
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


def agrees(tree: Node, sep: str, ctxs: list[Context]) -> None:
    text = render(tree, sep)
    expr = compile_expr(text, SCHEMA, ORIGIN)
    assert expr.fields == fields_of(tree)
    for ctx in ctxs:
        assert expr(ctx) is reference(tree, ctx), (text, ctx)


@settings(max_examples=300, deadline=None)
@given(tree=atoms, ctxs=st.lists(contexts, min_size=10, max_size=20))
def test_random_comparisons_agree_with_a_plain_interpreter(tree: Node, ctxs: list[Context]) -> None:
    agrees(tree, " ", ctxs)


@settings(max_examples=300, deadline=None)
@given(
    tree=trees,
    sep=st.sampled_from([" ", "  ", " \n "]),
    ctxs=st.lists(contexts, min_size=1, max_size=8),
)
def test_random_expressions_agree_with_a_plain_interpreter(
    tree: Node, sep: str, ctxs: list[Context]
) -> None:
    agrees(tree, sep, ctxs)

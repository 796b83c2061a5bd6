"""The expression language of ``when:`` keys in rule files.

One small, safe language everywhere: fields of the contact, the event and its account;
``and or not``, ``== != < <= > >=``, ``in`` / ``not in`` with a list ``["DE", "AT"]``, a named
list ``lists.NAME`` or a list field, ``matches`` (a regex search in RE2 syntax, see below;
case-insensitive with ``(?i)``), ``is none`` / ``is not none`` and ``days_since(field)``.
Literals are strings in double or single quotes, ints, floats, ``true``/``false`` (also
``True``/``False``) and ``none``; durations (``90s``, ``5m``, ``4h``, ``30d``, ``2w``) and
percentages (``20%``) compare with fields of their own type only, so ``queue_age > 5m`` reads
seconds and ``rate > 20%`` a share.

An expression is parsed and type-checked once, when the rule file loads, and compiled into
Python closures that are evaluated for every contact and event. Nothing in an expression is
ever executed as Python: the text is split into tokens, every name, string and number is
replaced by a placeholder, and Python's parser only sees keywords, operators and those
placeholders. It serves as a precedence parser; the resulting tree is walked with a whitelist.

Run-time rules: a comparison involving a missing value (``None`` or an absent key) is false,
``is none`` is how to ask for one. Number fields accept numbers that arrive as text (``"5000"``
from a spreadsheet); text that is not a number makes the comparison false. String comparisons,
``in`` included, are exact; only ``matches`` can ignore case.

Patterns of ``matches`` run on RE2, whose search time grows linearly with the text, so no
pattern a rule author writes (``(a+)+$``) can hang a worker. RE2 has no backreferences and no
lookaround; such patterns are refused when the rule file loads. ``\\b``, ``\\d`` and ``\\w``
are ASCII in RE2; ``(?i)`` folds case in all of Unicode.

In string literals a backslash only escapes a quote or a backslash; any other backslash is kept
as written, so regex escapes such as ``"\\bvp\\b"`` or ``"\\d+"`` reach the pattern unchanged.
"""

from __future__ import annotations

import ast
import bisect
import difflib
import enum
import operator
import re
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Final, NoReturn, Protocol, Self

import re2

__all__ = [
    "DURATION_UNITS",
    "Context",
    "EvalContext",
    "Expr",
    "ExprError",
    "ExprErrors",
    "FieldType",
    "Origin",
    "Schema",
    "compile_expr",
]


class FieldType(enum.Enum):
    """The type of a field; decides which comparisons are allowed on it at load time."""

    STRING = "string"
    NUMBER = "number"
    BOOL = "bool"
    DATETIME = "datetime"
    LIST = "list"
    ANY = "any"
    DURATION = "duration"  # seconds, written with a unit: 90s, 5m, 4h, 30d, 2w
    PERCENT = "percent"  # a share, written as a percentage: 20% is 0.2


# Seconds per unit of a duration literal; ``%`` divides by a hundred.
DURATION_UNITS: Final[dict[str, float]] = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
}
_NUMBERS: Final = frozenset({FieldType.NUMBER, FieldType.DURATION, FieldType.PERCENT})


@dataclass(frozen=True)
class Schema:
    """What an expression may read.

    ``fields`` maps dotted names to types: a bare name (``company_size``) is a contact field,
    ``event.NAME`` an attribute of the event and ``account.NAME`` one of the account.
    ``lists`` are the named lists from config that ``lists.NAME`` refers to.
    """

    fields: Mapping[str, FieldType]
    lists: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Origin:
    """Where the expression text starts in its file.

    ``line`` and ``col`` are 1-based and point at the first character of the expression;
    ``source_line`` is the full text of that file line, for the caret display. On the later
    lines of a multi-line expression, columns count from the start of the expression's line.
    """

    file: str
    line: int
    col: int
    source_line: str | None = None


@dataclass
class ExprError(Exception):
    """One problem in an expression, located in its file."""

    file: str
    line: int
    col: int
    message: str
    source_line: str | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"

    def render(self) -> str:
        """The message, the source line and a caret under the offending column."""
        if self.source_line is None:
            return str(self)
        text = self.source_line.rstrip("\r\n")
        # Keep tabs so that the caret lines up under the same column as in the source line.
        pad = "".join(ch if ch == "\t" else " " for ch in text[: self.col - 1])
        pad += " " * (self.col - 1 - len(text))
        return f"{self}\n    {text}\n    {pad}^"


class ExprErrors(ExceptionGroup[ExprError]):
    """Every error found in one expression; ``str()`` gives one located line per error."""

    def __new__(cls, errors: Sequence[ExprError]) -> Self:
        return super().__new__(cls, _summary(errors), list(errors))

    def __init__(self, errors: Sequence[ExprError]) -> None:
        super().__init__(_summary(errors), list(errors))

    @property
    def errors(self) -> list[ExprError]:
        return list(self.exceptions)

    def derive(self, excs: Sequence[ExprError]) -> ExprErrors:
        return ExprErrors(excs)

    def __str__(self) -> str:
        return self.message

    def render(self) -> str:
        return "\n".join(error.render() for error in self.exceptions)


def _summary(errors: Sequence[ExprError]) -> str:
    return "\n".join(str(error) for error in errors)


class EvalContext(Protocol):
    """What compiled expressions read at run time.

    ``contact`` holds the contact's fields and the derived ones (``email_domain``, ``score``,
    ``mql``, ...); ``event`` the event's attributes and ``account`` the account's, each
    ``None`` when there is none. ``now`` is timezone-aware.
    """

    contact: Mapping[str, Any]
    event: Mapping[str, Any] | None
    account: Mapping[str, Any] | None
    now: datetime


@dataclass(slots=True)
class Context:
    """A plain :class:`EvalContext`."""

    contact: Mapping[str, Any]
    event: Mapping[str, Any] | None = None
    account: Mapping[str, Any] | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))


Getter = Callable[[EvalContext], Any]
Test = Callable[[EvalContext], bool]


class Expr:
    """A compiled expression: call it with an :class:`EvalContext` to get a bool."""

    __slots__ = ("_test", "fields", "source")

    def __init__(self, source: str, fields: frozenset[str], test: Test) -> None:
        self.source = source
        self.fields = fields
        self._test = test

    def __call__(self, ctx: EvalContext) -> bool:
        return self._test(ctx)

    @property
    def test(self) -> Test:
        """The compiled closure itself: the same answer as calling the expression, one call
        less where a hot loop asks it millions of times."""
        return self._test

    def __repr__(self) -> str:
        return f"Expr({self.source!r})"


def compile_expr(source: str, schema: Schema, origin: Origin) -> Expr:
    """Parse, type-check and compile ``source``; raises :class:`ExprErrors` on any problem."""
    compiler = _Compiler(source, schema, origin)
    test = compiler.compile()
    if compiler.errors:
        raise ExprErrors(compiler.errors)
    assert test is not None
    return Expr(source, frozenset(compiler.fields), test)


# --- run-time helpers ---------------------------------------------------------------------


def _to_number(value: Any) -> int | float | None:
    """A number field's value as a number, or None if it is missing or not a number."""
    if value is None or isinstance(value, bool):
        return None
    if not isinstance(value, int | float):
        try:
            value = float(value)
        except (TypeError, ValueError, OverflowError):
            return None
    return None if value != value else value  # NaN, as spreadsheets and frames write "empty"


def _as_string(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _as_bool(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _to_datetime(value: Any) -> datetime | None:
    """A datetime, a date or an ISO-8601 string as an aware datetime (naive means UTC)."""
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
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _identity(value: Any) -> Any:
    return value


# How each type's values are brought into comparable form at run time; None means "missing".
_NORMALIZE: Final[dict[FieldType, Callable[[Any], Any]]] = {
    FieldType.STRING: _as_string,
    FieldType.NUMBER: _to_number,
    FieldType.BOOL: _as_bool,
    FieldType.DATETIME: _to_datetime,
    FieldType.ANY: _identity,
    FieldType.DURATION: _to_number,
    FieldType.PERCENT: _to_number,
}

_SECONDS_PER_DAY: Final = 86400.0


# What a getter made by _field_getter reads, as (scope, key) with scope "contact", "event" or
# "account": the tests below read such a field themselves instead of calling the getter, one
# call less per evaluation.
_READS: weakref.WeakKeyDictionary[Callable[..., Any], tuple[str, str]] = weakref.WeakKeyDictionary()
# The tests ``field == "text"`` as (scope, key, constant), which ``and`` fuses into one closure.
_EQUALS: weakref.WeakKeyDictionary[Callable[..., Any], tuple[str, str, str]] = (
    weakref.WeakKeyDictionary()
)


def _field_getter(name: str) -> Getter:
    """Read a dotted field name; the split is done here, once, not per evaluation."""
    if name.startswith("event."):
        event_key = name[len("event.") :]

        def get_event(ctx: EvalContext) -> Any:
            event = ctx.event
            return None if event is None else event.get(event_key)

        _READS[get_event] = ("event", event_key)
        return get_event
    if name.startswith("account."):
        account_key = name[len("account.") :]

        def get_account(ctx: EvalContext) -> Any:
            account = ctx.account
            return None if account is None else account.get(account_key)

        _READS[get_account] = ("account", account_key)
        return get_account

    def get_contact(ctx: EvalContext) -> Any:
        return ctx.contact.get(name)

    _READS[get_contact] = ("contact", name)
    return get_contact


def _scope_reader(scope: str) -> Callable[[EvalContext], Mapping[str, Any] | None]:
    """The mapping a scope's fields live in (``None``: no event or account)."""
    if scope == "event":
        return operator.attrgetter("event")
    if scope == "account":
        return operator.attrgetter("account")
    return operator.attrgetter("contact")


def _days_since(get: Getter) -> Getter:
    def days_since(ctx: EvalContext) -> float | None:
        moment = _to_datetime(get(ctx))
        if moment is None:
            return None
        now = ctx.now
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        return (now - moment).total_seconds() / _SECONDS_PER_DAY

    return days_since


# Tests that can only be true where one field equals a text, as (scope, key, constant): the
# ``and`` of tests that include ``field == "text"``. The scoring loop asks only the engagement
# rules that an event's type can satisfy (see required_equal).
_NEEDS: weakref.WeakKeyDictionary[Callable[..., Any], tuple[str, str, str]] = (
    weakref.WeakKeyDictionary()
)


def required_equal(test: Callable[..., Any]) -> tuple[str, str, str] | None:
    """``(scope, key, text)`` when ``test`` is never true unless the field ``key`` of
    ``scope`` (``"contact"``, ``"event"`` or ``"account"``) equals ``text``; else None."""
    return _EQUALS.get(test) or _NEEDS.get(test)


# The ``and`` of ``field == "text"`` with other tests, as ((scope, key, text), the others).
_REST: weakref.WeakKeyDictionary[Callable[..., Any], tuple[tuple[str, str, str], Test]] = (
    weakref.WeakKeyDictionary()
)


def given_equal(test: Test, need: tuple[str, str, str]) -> Test | None:
    """What is left of ``test`` to ask where the field of ``need`` (as :func:`required_equal`
    gives it) is known to equal its text: None when that alone makes ``test`` true, the rest
    of an ``and`` when one of its parts is that comparison, else ``test`` itself. The rest is
    true exactly where ``test`` is, for every contact and event with that field value."""
    if _EQUALS.get(test) == need:
        return None
    rest = _REST.get(test)
    if rest is not None and rest[0] == need:
        return rest[1]
    return test


# --- closures -----------------------------------------------------------------------------


def _all(tests: Sequence[Test]) -> Test:
    """``and`` over the tests, as a balanced tree of two-way closures (shallow, no loop)."""
    if len(tests) == 1:
        return tests[0]
    fused = _all_equal(tests)
    if fused is not None:
        return fused
    middle = len(tests) // 2
    first, second = _all(tests[:middle]), _all(tests[middle:])

    def both_parts(ctx: EvalContext) -> Any:
        return first(ctx) and second(ctx)

    need = required_equal(first) or required_equal(second)
    if need is not None:
        _NEEDS[both_parts] = need
    for equal, other in ((first, second), (second, first)):
        spec = _EQUALS.get(equal)
        if spec is not None:
            _REST[both_parts] = (spec, other)
            break
    return both_parts


def _all_equal(tests: Sequence[Test]) -> Test | None:
    """``a == "x" and b == "y"`` over fields of one scope as one closure, with the value
    ``and`` gives (the first false result, else the last); ``None`` for other tests."""
    specs = [_EQUALS.get(test) for test in tests]
    scopes = {spec[0] if spec else "" for spec in specs}
    if len(scopes) != 1 or scopes & {"", "contact"}:  # contact fields are read as they are
        return None
    pairs = tuple((spec[1], spec[2]) for spec in specs if spec is not None)
    scope = scopes.pop()
    mapping = _scope_reader(scope)
    if len(pairs) == 2:
        (key1, constant1), (key2, constant2) = pairs

        def both(ctx: EvalContext) -> bool:
            fields = mapping(ctx)
            if fields is None:
                return False
            return fields.get(key1) == constant1 and fields.get(key2) == constant2

        def second(ctx: EvalContext) -> bool:
            fields = mapping(ctx)
            return False if fields is None else fields.get(key2) == constant2

        _NEEDS[both] = (scope, key1, constant1)
        _REST[both] = ((scope, key1, constant1), second)
        return both

    def every(ctx: EvalContext) -> bool:
        fields = mapping(ctx)
        if fields is None:
            return False
        result = True
        for key, constant in pairs:
            result = fields.get(key) == constant
            if not result:
                return result
        return result

    _NEEDS[every] = (scope, *pairs[0])
    return every


def _any(tests: Sequence[Test]) -> Test:
    """``or`` over the tests, as a balanced tree of two-way closures (shallow, no loop)."""
    if len(tests) == 1:
        return tests[0]
    middle = len(tests) // 2
    first, second = _any(tests[:middle]), _any(tests[middle:])
    return lambda ctx: first(ctx) or second(ctx)


def _not(test: Test) -> Test:
    return lambda ctx: not test(ctx)


def _constant(result: bool) -> Test:
    return lambda ctx: result


def _is_true(get: Getter) -> Test:
    reads = _READS.get(get)
    if reads is not None and reads[0] == "contact":  # the field read here, one call less
        key = reads[1]
        return lambda ctx: ctx.contact.get(key) is True
    return lambda ctx: get(ctx) is True


def _is_none(get: Getter, negate: bool) -> Test:
    reads = _READS.get(get)
    if reads is not None and reads[0] == "contact":  # the field read here, one call less
        key = reads[1]
        if negate:
            return lambda ctx: ctx.contact.get(key) is not None
        return lambda ctx: ctx.contact.get(key) is None
    if negate:
        return lambda ctx: get(ctx) is not None
    return lambda ctx: get(ctx) is None


def _number_vs_constant(get: Getter, op: Callable[[Any, Any], bool], constant: Any) -> Test:
    reads = _READS.get(get)
    if reads is not None and reads[0] == "contact":
        key = reads[1]

        def contact_test(ctx: EvalContext) -> bool:
            value = ctx.contact.get(key)
            if value.__class__ is not int:  # as in `test` below
                value = _to_number(value)
                if value is None:
                    return False
            return op(value, constant)

        return contact_test

    def test(ctx: EvalContext) -> bool:
        value = get(ctx)
        if value.__class__ is not int:  # the common case skips a call; NaN counts as missing
            value = _to_number(value)
            if value is None:
                return False
        return op(value, constant)

    return test


def _string_equals(get: Getter, constant: str, negate: bool) -> Test:
    if negate:

        def differs(ctx: EvalContext) -> bool:
            value = get(ctx)
            return isinstance(value, str) and value != constant

        return differs
    reads = _READS.get(get)
    if reads is None:
        return lambda ctx: get(ctx) == constant
    scope, key = reads
    if scope == "contact":

        def equals(ctx: EvalContext) -> bool:
            return ctx.contact.get(key) == constant

    else:
        mapping = _scope_reader(scope)

        def equals(ctx: EvalContext) -> bool:
            fields = mapping(ctx)
            return False if fields is None else fields.get(key) == constant

    _EQUALS[equals] = (scope, key, constant)
    return equals


def _normalized_vs_constant(
    get: Getter, normalize: Callable[[Any], Any], op: Callable[[Any, Any], bool], constant: Any
) -> Test:
    def test(ctx: EvalContext) -> bool:
        value = normalize(get(ctx))
        return value is not None and op(value, constant)

    return test


def _values(
    left: Getter, right: Getter, normalize: Callable[[Any], Any], op: Callable[[Any, Any], bool]
) -> Test:
    """The general case: two run-time values, for instance two fields."""

    def test(ctx: EvalContext) -> bool:
        a = normalize(left(ctx))
        if a is None:
            return False
        b = normalize(right(ctx))
        if b is None:
            return False
        try:
            return bool(op(a, b))
        except TypeError:  # two `any` fields holding values that cannot be ordered
            return False

    return test


def _member(
    get: Getter, normalize: Callable[[Any], Any], items: frozenset[Any], negate: bool
) -> Test:
    reads = _READS.get(get)
    if reads is not None and normalize is _as_string:
        return _text_member(*reads, items, negate)
    if reads is not None and reads[0] == "contact":
        key = reads[1]

        def contact_test(ctx: EvalContext) -> bool:
            value = normalize(ctx.contact.get(key))
            if value is None:
                return False
            try:
                return (value not in items) if negate else (value in items)
            except TypeError:  # as in `test` below
                return negate

        return contact_test

    def test(ctx: EvalContext) -> bool:
        value = normalize(get(ctx))
        if value is None:
            return False
        try:
            return (value not in items) if negate else (value in items)
        except TypeError:  # an unhashable value (a list in an `any` field) equals no item
            return negate

    return test


def _text_member(scope: str, key: str, items: frozenset[Any], negate: bool) -> Test:
    """:func:`_member` of a string field, read here without a getter or normaliser: a value
    that is not text counts as missing, so the test is false for it, ``not in`` as well."""
    if scope == "contact":
        if negate:
            return lambda ctx: isinstance(value := ctx.contact.get(key), str) and value not in items
        return lambda ctx: isinstance(value := ctx.contact.get(key), str) and value in items
    mapping = _scope_reader(scope)

    def test(ctx: EvalContext) -> bool:
        fields = mapping(ctx)
        if fields is None:
            return False
        value = fields.get(key)
        return isinstance(value, str) and (value not in items if negate else value in items)

    return test


def _member_of_field(
    get: Getter, normalize: Callable[[Any], Any], container: Getter, negate: bool
) -> Test:
    def test(ctx: EvalContext) -> bool:
        value = normalize(get(ctx))
        items = container(ctx)
        if value is None or not isinstance(items, list | tuple | set | frozenset):
            return False
        try:
            return (value not in items) if negate else (value in items)
        except TypeError:  # an unhashable value looked up in a set
            return negate

    return test


def _search(get: Getter, search: Callable[[str], object]) -> Test:
    """``search(text)`` is not None when the pattern occurs in ``text``.

    The answers are kept per distinct text: a rule set asks the same few hundred titles,
    domains and URLs again and again, and a dict lookup costs a tenth of a search. The store
    is bounded (cleared when full), so a run over a million distinct values stays small.
    """
    found: dict[str, bool] = {}

    def occurs(value: str) -> bool:
        answer = found.get(value)
        if answer is None:
            if len(found) >= _SEARCHES_KEPT:
                found.clear()
            answer = found[value] = search(value) is not None
        return answer

    reads = _READS.get(get)
    if reads is not None and reads[0] == "contact":
        key = reads[1]

        def contact_test(ctx: EvalContext) -> bool:
            value = ctx.contact.get(key)
            answer = found.get(value) if value.__class__ is str else None  # the usual case
            if answer is None:
                return isinstance(value, str) and occurs(value)
            return answer

        return contact_test

    if reads is not None:  # an event's or account's field, read as above
        mapping, key = _scope_reader(reads[0]), reads[1]

        def scope_test(ctx: EvalContext) -> bool:
            fields = mapping(ctx)
            value = None if fields is None else fields.get(key)
            answer = found.get(value) if value.__class__ is str else None
            if answer is None:
                return isinstance(value, str) and occurs(value)
            return answer

        return scope_test

    def test(ctx: EvalContext) -> bool:
        value = get(ctx)
        return isinstance(value, str) and occurs(value)

    return test


# Answers kept per ``matches`` test (see _search); values are at most a few KiB of text.
_SEARCHES_KEPT: Final = 4096


# --- patterns of matches ------------------------------------------------------------------


@dataclass(frozen=True)
class _Refused:
    """Why a pattern cannot run, and the fragment of it to point the caret at."""

    message: str
    fragment: re.Pattern[str] | None = None

    def where(self, written: str) -> int:
        """The offset of the fragment in the string literal as written (else its start)."""
        found = self.fragment.search(written) if self.fragment else None
        return found.start() if found else 0


# Why RE2 refuses a pattern that Python's ``re`` takes, what to write instead, and where.
_NOT_IN_RE2: Final = [
    (
        re.compile(r"\(\?<?[=!]"),
        "lookahead and lookbehind ((?=, (?!, (?<=, (?<!) are not supported, so that matching "
        "stays linear in the length of the text; write two conditions instead, "
        'e.g. \'title matches "a" and not title matches "b"\'',
    ),
    (
        re.compile(r"\\[1-9]|\(\?P="),
        "backreferences (\\1, (?P=name)) are not supported, so that matching stays linear in "
        "the length of the text; spell out the repeated text, or compare two fields with ==",
    ),
    (re.compile(r"\\Z"), "\\Z is not supported; write \\z for the end of the text"),
]


def _options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # the refusal is reported at the rule, not on stderr
    options.never_capture = True  # only "is it there" is asked: no groups to track
    return options


def _compile_pattern(pattern: str) -> Callable[[str], object] | _Refused:
    """A search function for ``pattern`` on RE2, or why the pattern cannot run.

    The search is a one-pattern RE2 set: it answers whether the pattern occurs without
    building a match object, about as fast as Python's ``re`` on the short fields rules read
    (the binding's ``search`` is four times slower).
    """
    options = _options()
    try:
        re2.compile(pattern, options)
    except re2.error as exc:
        return _refusal(pattern, exc)
    patterns = re2.Set.SearchSet(options)
    patterns.Add(pattern)
    patterns.Compile()
    return patterns.Match


def _refusal(pattern: str, exc: re2.error) -> _Refused:
    try:
        re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as python_exc:
        return _Refused(f"invalid regular expression: {python_exc}")
    for fragment, message in _NOT_IN_RE2:
        if fragment.search(pattern):
            return _Refused(message, fragment)
    reason = exc.args[0] if exc.args else exc
    if isinstance(reason, bytes):
        reason = reason.decode("utf-8", "replace")
    return _Refused(f"invalid regular expression: {reason}")


# --- tokens -------------------------------------------------------------------------------

_TOKEN: Final = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    | (?P<quantity>(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:ms|s|m|h|d|w|%)(?![\w%]))
    | (?P<number>(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?)
    | (?P<name>[^\W\d]\w*)
    | (?P<op>==|!=|<=|>=|[<>()\[\],.-])
    | (?P<bad>&&?|\|\|?|=|!|["'])
    """,
    re.VERBOSE,
)

# Language keywords and what Python's parser is shown instead.
_KEYWORDS: Final = {
    "and": "and",
    "or": "or",
    "not": "not",
    "in": "in",
    "is": "is",
    "matches": "@",
    "true": "True",
    "True": "True",
    "false": "False",
    "False": "False",
    "none": "None",
    "None": "None",
}
_LITERAL_KEYWORDS: Final = frozenset({"true", "True", "false", "False", "none", "None"})
_LOWER_KEYWORDS: Final = frozenset(k for k in _KEYWORDS if k.islower())

_BAD_HINTS: Final = {
    "&": "'&' is not an operator; write 'and'",
    "&&": "'&&' is not an operator; write 'and'",
    "|": "'|' is not an operator; write 'or'",
    "||": "'||' is not an operator; write 'or'",
    "=": "'=' is not an operator; write '==' to compare",
    "!": "'!' is not an operator; write 'not' (or '!=' to compare)",
    '"': "unterminated string",
    "'": "unterminated string",
}

_MAX_NESTING: Final = 40
_FUNCTIONS: Final = ("days_since",)
_LIST_PREFIX: Final = "lists"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "name", "string", "number", "quantity", "keyword" or "op"
    text: str  # as written
    start: int  # offset in the source
    value: Any = None  # the decoded string or number; a quantity's (number, FieldType)

    @property
    def ends_value(self) -> bool:
        if self.kind == "keyword":
            return self.text in _LITERAL_KEYWORDS
        return self.kind != "op" or self.text in (")", "]")


def _decode_string(text: str) -> str:
    return re.sub(r"\\([\\\"'])", r"\1", text[1:-1])


def _decode_number(text: str) -> int | float:
    if any(ch in text for ch in ".eE"):
        return float(text)
    return int(text)


def _decode_quantity(text: str) -> tuple[float, FieldType]:
    """``5m`` as (300.0 seconds, DURATION); ``20%`` as (0.2, PERCENT)."""
    if text.endswith("%"):
        return _decode_number(text[:-1]) / 100, FieldType.PERCENT
    unit = text.lstrip("0123456789._")
    return _decode_number(text[: -len(unit)]) * DURATION_UNITS[unit], FieldType.DURATION


class _Rejected(Exception):
    """Abandons the current part of the expression once its error has been recorded."""


@dataclass(frozen=True, slots=True)
class _Value:
    """A part of an expression that stands for a value: a field, a literal, a call or a list."""

    kind: str  # "field", "literal", "call", "list" (a list literal) or "named_list"
    type: FieldType | None  # None for the literal none; for lists the item type (ANY if mixed)
    node: ast.expr
    label: str  # how messages name it
    get: Getter | None = None  # fields and calls
    constant: Any = None  # literals; the items of a named list
    items: tuple[_Value, ...] = ()  # the items of a list literal


_COMPARE_OPS: Final[dict[type[ast.cmpop], str]] = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
}
_OPERATORS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_MIRRORED: Final = {"==": "==", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_UNSUPPORTED: Final[dict[type[ast.expr], str]] = {
    ast.Subscript: "subscripts like x[0] are not part of the expression language",
    ast.Tuple: '\',\' only separates list items; write a list in brackets: ["a", "b"]',
    ast.BinOp: "arithmetic is not part of the expression language",
}


class _Compiler:
    """Tokenizes, rewrites for Python's parser, and walks the tree into closures.

    Every name, string and number becomes a placeholder ``_N`` (N = its token index), so
    Python's parser sees pure ASCII made of placeholders, keywords and operators. ``starts``
    holds where each token begins in that text, which maps parser positions back to tokens.
    """

    def __init__(self, source: str, schema: Schema, origin: Origin) -> None:
        self.source = source
        self.schema = schema
        self.origin = origin
        self.errors: list[ExprError] = []
        self.fields: set[str] = set()
        self.tokens: list[_Token] = []
        self.starts: list[int] = []
        self.python = ""

    # errors and positions

    def report(self, offset: int, message: str) -> None:
        line_index = self.source.count("\n", 0, offset)
        if line_index == 0:
            line, col, text = self.origin.line, self.origin.col + offset, self.origin.source_line
        else:
            line_start = self.source.rfind("\n", 0, offset) + 1
            line_end = self.source.find("\n", offset)
            text = self.source[line_start : line_end if line_end >= 0 else len(self.source)]
            line, col = self.origin.line + line_index, offset - line_start + 1
        error = ExprError(self.origin.file, line, col, message, text)
        if error not in self.errors:
            self.errors.append(error)

    def fail(self, where: ast.expr | _Token, message: str) -> NoReturn:
        token = where if isinstance(where, _Token) else self.token_at(where)
        self.report(token.start, message)
        raise _Rejected

    def token_at(self, node: ast.expr) -> _Token:
        return self.tokens[bisect.bisect_right(self.starts, node.col_offset) - 1]

    def operator_after(self, node: ast.expr) -> _Token:
        """The operator that follows ``node``, past any closing parentheses."""
        index = bisect.bisect_left(self.starts, node.end_col_offset or 0)
        while index < len(self.tokens) - 1 and self.tokens[index].text == ")":
            index += 1
        return self.tokens[min(index, len(self.tokens) - 1)]

    def text_of(self, node: ast.expr) -> str:
        first = self.token_at(node)
        last = self.tokens[bisect.bisect_right(self.starts, (node.end_col_offset or 1) - 1) - 1]
        return self.source[first.start : last.start + len(last.text)]

    # the stages

    def compile(self) -> Test | None:
        if not self.tokenize() or not self.check_order():
            return None
        pieces = [self.python_text(index, token) for index, token in enumerate(self.tokens)]
        position = 0
        for piece in pieces:
            self.starts.append(position)
            position += len(piece) + 1
        self.python = " ".join(pieces)
        try:
            tree = ast.parse(self.python, mode="eval")
        except SyntaxError as exc:
            self.syntax_error(exc)
            return None
        except (RecursionError, MemoryError):
            self.report(0, "the expression is nested too deeply")
            return None
        try:
            return self.condition(tree.body, 0)
        except _Rejected:
            return None

    def tokenize(self) -> bool:
        source, position = self.source, 0
        nesting: list[_Token] = []
        while position < len(source):
            match = _TOKEN.match(source, position)
            if match is None:
                self.report(position, f"unexpected character {source[position]!r}")
                position += 1
                continue
            kind, text = match.lastgroup or "", match.group()
            start, position = position, match.end()
            if kind == "space":
                continue
            if kind == "bad":
                self.report(start, _BAD_HINTS[text])
                if text in "\"'":
                    return False  # the rest of the line is the string's text, not tokens
                continue
            token = self.make_token(kind, text, start)
            if token is None:
                continue
            if token.text in ("(", "["):
                nesting.append(token)
                if len(nesting) > _MAX_NESTING:
                    self.report(start, "the expression is nested too deeply")
                    return False
            elif token.text in (")", "]"):
                if not nesting:
                    self.report(start, f"unmatched '{token.text}'")
                elif (nesting.pop().text == "(") != (token.text == ")"):
                    self.report(start, f"'{token.text}' does not close the bracket before it")
            self.tokens.append(token)
        for opener in nesting:
            self.report(opener.start, f"'{opener.text}' is never closed")
        if not self.tokens and not self.errors:
            self.report(0, "the expression is empty")
        return not self.errors

    def make_token(self, kind: str, text: str, start: int) -> _Token | None:
        if kind == "string":
            return _Token(kind, text, start, _decode_string(text))
        if kind == "number":
            try:
                return _Token(kind, text, start, _decode_number(text))
            except ValueError:
                self.report(start, f"'{text}' is not a number")
                return None
        if kind == "quantity":
            return _Token(kind, text, start, _decode_quantity(text))
        if kind == "op":
            return _Token(kind, text, start)
        # A word after a dot is always part of a field name, so `event.type` or `event.in`
        # never turn into keywords.
        if not (self.tokens and self.tokens[-1].text == "."):
            if text in _KEYWORDS:
                return _Token("keyword", text, start)
            if text.lower() in _LOWER_KEYWORDS:
                self.report(start, f"keywords are lower-case: write '{text.lower()}'")
                return None
        if text.startswith("__"):
            self.report(start, f"'{text}': names starting with '__' are not allowed")
            return None
        return _Token(kind, text, start)

    def check_order(self) -> bool:
        """Report two values in a row (``a b``, ``1 2``, ``"a" "b"``) at the second one.

        Python's parser would locate some of these at the first, and join adjacent strings.
        """
        tokens = self.tokens
        for index in range(1, len(tokens)):
            before, token = tokens[index - 1], tokens[index]
            if not before.ends_value or (token.text == "(" and before.kind == "name"):
                continue  # `name(` is a call; the walker checks the function
            following = tokens[index + 1].text if index + 1 < len(tokens) else ""
            if token.text == "not" and following != "in":
                self.report(token.start, "expected 'in' after 'not' (or 'and not', 'or not')")
                return False
            if token.text == "(" or (token.ends_value and token.text not in (")", "]")):
                self.report(token.start, "expected an operator or the end of the expression")
                return False
        return True

    def python_text(self, index: int, token: _Token) -> str:
        if token.kind in ("name", "string", "number", "quantity"):
            return f"_{index}"
        if token.kind == "keyword":
            return _KEYWORDS[token.text]
        return token.text

    def syntax_error(self, exc: SyntaxError) -> None:
        offset = (exc.offset or 0) - 1  # Python reports the end of the text as offset 0
        if 0 <= offset < len(self.python):
            index = bisect.bisect_right(self.starts, offset) - 1
            where = self.tokens[index].start
        else:
            index, where = len(self.tokens), len(self.source.rstrip())
        before = self.tokens[index - 1] if index > 0 else None
        earlier = self.tokens[index - 2].text if index > 1 else ""
        if before is None:
            message = f"expected a value before '{self.tokens[0].text}'"
        elif before.text == ".":
            message = "expected a field name after '.'"
        elif before.text == "is":
            message = "expected 'none' after 'is'"
        elif before.text == "not" and earlier == "is":
            message = "expected 'none' after 'is not'"
        elif before.ends_value:
            message = "expected an operator or the end of the expression"
        else:
            message = f"expected a value after '{before.text}'"
        self.report(where, message)

    # conditions

    def condition(self, node: ast.expr, depth: int) -> Test:
        if depth > _MAX_NESTING:
            self.fail(node, "the expression is nested too deeply")
        if isinstance(node, ast.BoolOp):
            tests = self.each(node.values, lambda part: self.condition(part, depth + 1))
            return _all(tests) if isinstance(node.op, ast.And) else _any(tests)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return _not(self.condition(node.operand, depth + 1))
        if isinstance(node, ast.Compare):
            return self.comparison(node)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
            return self.matches(node)
        value = self.value(node)
        if value.kind == "literal" and isinstance(value.constant, bool):
            return _constant(value.constant)
        if value.kind == "field" and value.type in (FieldType.BOOL, FieldType.ANY):
            assert value.get is not None
            return _is_true(value.get)
        if value.kind == "field":
            self.fail(
                node,
                f"{value.label} is a {_type_name(value.type)} field, not a condition; "
                "compare it with a value",
            )
        if value.type is None:
            self.fail(node, "none is not a condition; ask 'field is none'")
        self.fail(node, f"{value.label} is not a condition")

    def each(self, nodes: Sequence[ast.expr], compile_one: Callable[[ast.expr], Any]) -> list[Any]:
        """Compile every part even after one fails, so that all errors are reported at once."""
        results, failed = [], False
        for node in nodes:
            try:
                results.append(compile_one(node))
            except _Rejected:
                failed = True
        if failed:
            raise _Rejected
        return results

    def comparison(self, node: ast.Compare) -> Test:
        if len(node.ops) > 1:
            self.fail(
                self.operator_after(node.comparators[0]),
                "chained comparisons are not supported; join them with 'and'",
            )
        op, right_node = node.ops[0], node.comparators[0]
        if isinstance(op, ast.Is | ast.IsNot):
            return self.is_none(node.left, isinstance(op, ast.IsNot), right_node)
        left, right = self.each([node.left, right_node], self.value)
        if isinstance(op, ast.In | ast.NotIn):
            return self.membership(left, right, isinstance(op, ast.NotIn))
        symbol = _COMPARE_OPS[type(op)]
        for side in (left, right):
            if side.kind in ("list", "named_list"):
                self.fail(side.node, "a list can only follow 'in' or 'not in'")
            if side.type is None:
                self.fail(side.node, "a comparison with none is always false; write 'is none'")
            if side.type is FieldType.LIST:
                self.fail(side.node, f"{side.label} is a list; test membership with 'in'")
        assert left.type is not None and right.type is not None
        common = _unify(left.type, right.type)
        if common is None:
            self.mismatch(left, right)
        if common is FieldType.BOOL and symbol not in ("==", "!="):
            self.fail(
                self.operator_after(node.left),
                f"'{symbol}' does not apply to bool values; use == or !=",
            )
        if left.kind == "literal" and right.kind != "literal":
            left, right, symbol = right, left, _MIRRORED[symbol]  # `200 <= x` is `x >= 200`
        return _comparison(left, right, common, symbol)

    def mismatch(self, left: _Value, right: _Value) -> NoReturn:
        blame = left if left.kind == "literal" and right.kind != "literal" else right
        message = (
            f"cannot compare {left.label} ({_type_name(left.type)}) "
            f"with {right.label} ({_type_name(right.type)})"
        )
        if FieldType.DATETIME in (left.type, right.type):
            message += "; compare days_since(field) with a number of days"
        elif (left if blame is right else right).type is FieldType.DURATION:
            message += "; write a duration with its unit, like 90s, 5m or 4h"
        elif (left if blame is right else right).type is FieldType.PERCENT:
            message += "; write a share as a percentage, like 20%"
        self.fail(blame.node, message)

    def is_none(self, left_node: ast.expr, negate: bool, right_node: ast.expr) -> Test:
        word = "is not" if negate else "is"
        if not (isinstance(right_node, ast.Constant) and right_node.value is None):
            self.each([left_node], self.value)
            self.fail(right_node, f"'{word}' only tests for a missing value: write '{word} none'")
        left = self.value(left_node)
        if left.kind not in ("field", "call"):
            self.fail(left_node, f"'{word} none' needs a field, not {left.label}")
        assert left.get is not None
        return _is_none(left.get, negate)

    def membership(self, left: _Value, right: _Value, negate: bool) -> Test:
        word = "not in" if negate else "in"
        if left.kind in ("list", "named_list") or left.type is FieldType.LIST:
            self.fail(left.node, f"{left.label} is a list; a list can only follow '{word}'")
        if left.type is None:
            self.fail(left.node, "none is never in a list; write 'is none'")
        if right.kind == "field" and right.type in (FieldType.LIST, FieldType.ANY):
            assert right.get is not None
            return _member_of_field(_getter(left), _NORMALIZE[left.type], right.get, negate)
        if right.kind not in ("list", "named_list"):
            self.fail(
                right.node,
                f'\'{word}\' needs a list (like ["DE", "AT"]), lists.NAME or a list field, '
                f"not {right.label}",
            )
        for item in right.items:
            if item.type is not None and _unify(left.type, item.type) is None:
                self.mismatch(left, item)
        if right.kind == "named_list" and _unify(left.type, FieldType.STRING) is None:
            self.fail(
                right.node,
                f"cannot look up {left.label} ({_type_name(left.type)}) "
                f"in {right.label}, a list of strings",
            )
        assert right.type is not None
        common = _unify(left.type, right.type) or FieldType.ANY
        normalize = _NORMALIZE[common]
        items = frozenset(normalize(item) for item in right.constant)
        if left.kind == "literal":
            value = normalize(left.constant)
            return _constant(value is not None and (value in items) != negate)
        assert left.get is not None
        return _member(left.get, normalize, items, negate)

    def matches(self, node: ast.BinOp) -> Test:
        keyword = self.operator_after(node.left)
        left, right = self.each([node.left, node.right], self.value)
        if left.kind != "field":
            self.fail(left.node, f"'matches' needs a field on its left, not {left.label}")
        if left.type not in (FieldType.STRING, FieldType.ANY):
            self.fail(
                keyword,
                f"'matches' needs a string field, but {left.label} is a {_type_name(left.type)}",
            )
        if right.kind != "literal" or right.type is not FieldType.STRING:
            self.fail(right.node, "the pattern after 'matches' must be a string literal")
        token = self.token_at(right.node)
        search = _compile_pattern(right.constant)
        if isinstance(search, _Refused):
            self.report(token.start + search.where(token.text), search.message)
            raise _Rejected
        assert left.get is not None
        return _search(left.get, search)

    # values

    def value(self, node: ast.expr) -> _Value:
        if isinstance(node, ast.Name):
            token = self.placeholder(node.id)
            if token.kind == "name":
                return self.name([token], node)
            if token.kind == "quantity":
                number, kind = token.value
                return _Value("literal", kind, node, token.text, constant=number)
            kind = FieldType.STRING if token.kind == "string" else FieldType.NUMBER
            return _Value("literal", kind, node, token.text, constant=token.value)
        if isinstance(node, ast.Constant):
            kind = None if node.value is None else FieldType.BOOL
            return _Value("literal", kind, node, self.token_at(node).text, constant=node.value)
        if isinstance(node, ast.Attribute):
            return self.name(self.dotted(node), node)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            operand = node.operand
            if isinstance(operand, ast.Name) and self.placeholder(operand.id).kind == "number":
                number = -self.placeholder(operand.id).value
                return _Value(
                    "literal", FieldType.NUMBER, node, self.text_of(node), constant=number
                )
            self.fail(node, "'-' is only allowed in front of a number")
        if isinstance(node, ast.List):
            return self.list_literal(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if _is_condition(node):
            self.fail(node, "a condition is not a value; combine conditions with and/or/not")
        message = _UNSUPPORTED.get(type(node), "this is not part of the expression language")
        self.fail(node, message)

    def placeholder(self, name: str) -> _Token:
        return self.tokens[int(name[1:])]

    def dotted(self, node: ast.Attribute) -> list[_Token]:
        parts: list[_Token] = []
        current: ast.expr = node
        while isinstance(current, ast.Attribute):
            parts.append(self.placeholder(current.attr))
            current = current.value
        if not (isinstance(current, ast.Name) and self.placeholder(current.id).kind == "name"):
            self.fail(node, "'.' is only allowed between the parts of a field name")
        parts.append(self.placeholder(current.id))
        parts.reverse()
        return parts

    def name(self, parts: list[_Token], node: ast.expr) -> _Value:
        name = ".".join(part.text for part in parts)
        if parts[0].text == _LIST_PREFIX:
            return self.named_list(name, node)
        kind = self.schema.fields.get(name)
        if kind is None:
            self.fail(node, f"unknown field '{name}'{_suggest_field(name, self.schema.fields)}")
        self.fields.add(name)
        return _Value("field", kind, node, f"'{name}'", get=_field_getter(name))

    def named_list(self, name: str, node: ast.expr) -> _Value:
        key = name[len(_LIST_PREFIX) + 1 :]
        if not key or "." in key:
            self.fail(node, "a named list is written lists.NAME")
        if key not in self.schema.lists:
            known = [f"{_LIST_PREFIX}.{k}" for k in self.schema.lists]
            self.fail(node, f"unknown list '{name}'{_suggest(name, known)}")
        items = frozenset(self.schema.lists[key])
        return _Value("named_list", FieldType.STRING, node, name, constant=items)

    def list_literal(self, node: ast.List) -> _Value:
        items: list[_Value] = self.each(node.elts, self.value)
        for item in items:
            if item.kind != "literal" or item.type is None:
                self.fail(item.node, "list items must be strings, numbers, true or false")
        kinds = {item.type for item in items}
        kind = kinds.pop() if len(kinds) == 1 else FieldType.ANY
        constants = [item.constant for item in items]
        return _Value(
            "list", kind, node, self.text_of(node), constant=constants, items=tuple(items)
        )

    def call(self, node: ast.Call) -> _Value:
        function = node.func
        if isinstance(function, ast.Attribute):
            name = ".".join(part.text for part in self.dotted(function))
        elif isinstance(function, ast.Name) and self.placeholder(function.id).kind == "name":
            name = self.placeholder(function.id).text
        else:
            self.fail(node, "only days_since(field) can be called")
        if name not in _FUNCTIONS:
            hint = _suggest(name, _FUNCTIONS) or "; the only function is days_since(field)"
            self.fail(function, f"unknown function '{name}'{hint}")
        if len(node.args) != 1 or node.keywords:
            self.fail(node, "days_since takes exactly one field, like days_since(created_at)")
        argument = self.value(node.args[0])
        if argument.kind != "field":
            self.fail(argument.node, f"days_since needs a field, not {argument.label}")
        if argument.type not in (FieldType.DATETIME, FieldType.ANY):
            self.fail(
                argument.node,
                f"days_since needs a datetime field, but {argument.label} "
                f"is a {_type_name(argument.type)}",
            )
        assert argument.get is not None
        label = self.text_of(node)
        return _Value("call", FieldType.NUMBER, node, label, get=_days_since(argument.get))


def _comparison(left: _Value, right: _Value, common: FieldType, symbol: str) -> Test:
    """The closure for ``left symbol right``, specialised for the frequent shapes."""
    normalize, compare = _NORMALIZE[common], _OPERATORS[symbol]
    if right.kind == "literal":
        constant = normalize(right.constant)
        if left.kind == "literal":
            value = normalize(left.constant)
            return _constant(
                value is not None and constant is not None and compare(value, constant)
            )
        assert left.get is not None
        if common in _NUMBERS:
            return _number_vs_constant(left.get, compare, constant)
        if common is FieldType.STRING and symbol in ("==", "!="):
            return _string_equals(left.get, constant, negate=symbol == "!=")
        return _normalized_vs_constant(left.get, normalize, compare, constant)
    assert left.get is not None and right.get is not None
    return _values(left.get, right.get, normalize, compare)


def _is_condition(node: ast.expr) -> bool:
    if isinstance(node, ast.BoolOp | ast.Compare):
        return True
    if isinstance(node, ast.UnaryOp):
        return isinstance(node.op, ast.Not)
    return isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult)


def _getter(value: _Value) -> Getter:
    if value.get is not None:
        return value.get
    constant = value.constant
    return lambda ctx: constant


def _unify(a: FieldType, b: FieldType) -> FieldType | None:
    """The type two sides are compared as: an ``any`` side takes the other side's type."""
    if a is FieldType.ANY:
        return b
    if b is FieldType.ANY or a is b:
        return a
    return None


def _type_name(kind: FieldType | None) -> str:
    return "none" if kind is None else kind.value


def _suggest(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _suggest_field(name: str, fields: Iterable[str]) -> str:
    """Did-you-mean over the whole dotted names, else over their last parts, so that a bare
    ``form`` suggests ``event.form``."""
    names = list(fields)
    hint = _suggest(name, names)
    if hint:
        return hint
    tails: dict[str, str] = {}
    for known in names:
        tails.setdefault(known.rpartition(".")[2], known)
    close = difflib.get_close_matches(name.rpartition(".")[2], list(tails), n=1)
    return f" (did you mean '{tails[close[0]]}'?)" if close else ""

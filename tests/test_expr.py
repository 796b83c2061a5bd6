"""The `when:` expression language: what compiles, how it evaluates, and how it complains."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from rules.expr import (
    Context,
    ExprError,
    ExprErrors,
    FieldType,
    Origin,
    Schema,
    compile_expr,
)

SCHEMA = Schema(
    fields={
        "company_size": FieldType.NUMBER,
        "score": FieldType.NUMBER,
        "title": FieldType.STRING,
        "country": FieldType.STRING,
        "email_domain": FieldType.STRING,
        "created_at": FieldType.DATETIME,
        "mql": FieldType.BOOL,
        "replied": FieldType.BOOL,
        "unsubscribed": FieldType.BOOL,
        "bounced": FieldType.BOOL,
        "tags": FieldType.LIST,
        "custom": FieldType.ANY,
        "event.type": FieldType.STRING,
        "event.form": FieldType.STRING,
        "event.rating": FieldType.STRING,
        "event.at": FieldType.DATETIME,
        "account.owner": FieldType.STRING,
        "account.open_leads": FieldType.NUMBER,
    },
    lists={"free_mail": ["gmail.com", "web.de", "gmx.de"], "competitors": ["rival.example"]},
)

FILE = "config/scoring.yaml"
PREFIX = "    when: "  # every expression below starts at line 14, column 11 of the file
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def origin(source: str) -> Origin:
    return Origin(FILE, 14, len(PREFIX) + 1, PREFIX + source.split("\n")[0])


def compiled(source: str) -> Any:
    return compile_expr(source, SCHEMA, origin(source))


def evaluate(
    source: str,
    contact: dict[str, Any] | None = None,
    event: dict[str, Any] | None = None,
    account: dict[str, Any] | None = None,
) -> bool:
    return compiled(source)(Context(contact or {}, event, account, NOW))


def errors(source: str) -> list[ExprError]:
    with pytest.raises(ExprErrors) as caught:
        compiled(source)
    return caught.value.errors


def error(source: str) -> str:
    """The one error ``source`` has, as ``file:line:col: message``."""
    found = errors(source)
    assert len(found) == 1, found
    return str(found[0])


# --- what compiles -------------------------------------------------------------------------

DOCUMENTED_EXAMPLES = [
    "company_size >= 200",
    'title matches "(?i)head|director|vp|chief|leiter|geschäftsführer"',
    'country in ["DE", "AT", "CH"]',
    "email_domain in lists.free_mail",
    'event.type == "form" and event.form == "demo-request"',
    'event.type == "tradefair" and event.rating == "hot"',
    "account.owner is not none",
    'country in ["DE", "AT", "CH"] and company_size >= 1000',
    'score >= 90 or event.form == "demo-request"',
    'event.type == "ebook" and not mql',
    "mql or replied or unsubscribed or bounced",
    "days_since(created_at) > 30",
    "email_domain not in lists.competitors",
]


@pytest.mark.parametrize("source", DOCUMENTED_EXAMPLES)
def test_every_documented_example_compiles(source: str) -> None:
    expr = compiled(source)
    assert expr.source == source
    assert isinstance(expr(Context({}, None, None, NOW)), bool)


def test_a_compiled_expression_lists_the_fields_it_reads_but_not_the_named_lists() -> None:
    expr = compiled(
        'email_domain in lists.free_mail and event.type == "form" or days_since(created_at) > 3'
    )
    assert expr.fields == {"email_domain", "event.type", "created_at"}


def test_a_compiled_expression_shows_its_source_in_its_repr() -> None:
    assert repr(compiled("mql")) == "Expr('mql')"


# --- comparisons ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("company_size >= 200", True),
        ("company_size > 200", False),
        ("company_size == 200", True),
        ("company_size != 200", False),
        ("company_size <= 200", True),
        ("company_size < 200", False),
        ("company_size < 200.5", True),
        ("company_size > -5", True),
        ("200 <= company_size", True),
        ("201 <= company_size", False),
        ("100 < company_size", True),
    ],
)
def test_every_comparison_operator_compares_numbers(source: str, expected: bool) -> None:
    assert evaluate(source, {"company_size": 200}) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5000", True), (" 5000 ", True), ("1e4", True), ("150", False), (5000.0, True)],
)
def test_numbers_that_arrive_as_text_are_compared_as_numbers(value: Any, expected: bool) -> None:
    assert evaluate("company_size >= 200", {"company_size": value}) is expected


@pytest.mark.parametrize("value", ["groß", "", "5.000,00", True, float("nan"), [200]])
def test_a_value_that_is_not_a_number_makes_a_number_comparison_false(value: Any) -> None:
    assert evaluate("company_size >= 200", {"company_size": value}) is False
    assert evaluate("company_size != 200", {"company_size": value}) is False


def test_number_lists_accept_numbers_that_arrive_as_text() -> None:
    assert evaluate("company_size in [50, 200]", {"company_size": "200"}) is True
    assert evaluate("company_size not in [50, 200]", {"company_size": "201"}) is True


def test_string_equality_is_exact_and_case_sensitive() -> None:
    assert evaluate('country == "DE"', {"country": "DE"}) is True
    assert evaluate('country == "DE"', {"country": "de"}) is False
    assert evaluate('country != "DE"', {"country": "de"}) is True
    assert evaluate("country == 'DE'", {"country": "DE"}) is True


def test_strings_are_ordered_by_their_text() -> None:
    assert evaluate('country < "M"', {"country": "DE"}) is True
    assert evaluate('country < "M"', {"country": "US"}) is False


def test_a_string_field_holding_a_number_is_not_equal_to_the_same_digits() -> None:
    assert evaluate('country == "49"', {"country": 49}) is False


def test_bool_fields_compare_with_true_and_false_in_either_spelling() -> None:
    assert evaluate("mql == true", {"mql": True}) is True
    assert evaluate("mql == True", {"mql": True}) is True
    assert evaluate("mql == false", {"mql": True}) is False
    assert evaluate("mql != False", {"mql": True}) is True


def test_two_fields_of_the_same_type_can_be_compared() -> None:
    contact = {"company_size": 10, "created_at": "2024-01-01"}
    account = {"open_leads": "12"}
    assert evaluate("account.open_leads > company_size", contact, account=account) is True
    assert evaluate("event.at > created_at", contact, {"at": "2024-02-01T08:00:00Z"}) is True


# --- in / not in -----------------------------------------------------------------------------


def test_in_looks_a_value_up_in_a_list_exactly() -> None:
    assert evaluate('country in ["DE", "AT", "CH"]', {"country": "AT"}) is True
    assert evaluate('country in ["DE", "AT", "CH"]', {"country": "at"}) is False
    assert evaluate('country not in ["DE", "AT", "CH"]', {"country": "FR"}) is True
    assert evaluate('country not in ["DE", "AT", "CH"]', {"country": "DE"}) is False


def test_in_looks_a_value_up_in_a_named_list_from_config() -> None:
    assert evaluate("email_domain in lists.free_mail", {"email_domain": "web.de"}) is True
    assert evaluate("email_domain in lists.free_mail", {"email_domain": "acme.de"}) is False
    assert evaluate("email_domain not in lists.competitors", {"email_domain": "acme.de"}) is True
    assert evaluate("email_domain not in lists.competitors", {"email_domain": "rival.example"}) is (
        False
    )


def test_in_looks_a_value_up_in_a_list_field() -> None:
    assert evaluate('"vip" in tags', {"tags": ["vip", "partner"]}) is True
    assert evaluate('"vip" in tags', {"tags": ["partner"]}) is False
    assert evaluate('"vip" not in tags', {"tags": ["partner"]}) is True
    assert evaluate('"vip" in tags', {"tags": "vip"}) is False  # a string is not a list


def test_an_empty_list_contains_nothing() -> None:
    assert evaluate("country in []", {"country": "DE"}) is False


# --- matches ---------------------------------------------------------------------------------


def test_matches_searches_anywhere_in_the_text() -> None:
    assert evaluate('title matches "Sales"', {"title": "Head of Sales"}) is True
    assert evaluate('title matches "^Sales"', {"title": "Head of Sales"}) is False


def test_matches_is_case_sensitive_unless_the_pattern_says_otherwise() -> None:
    assert evaluate('title matches "head"', {"title": "Head of Sales"}) is False
    assert evaluate('title matches "(?i)head"', {"title": "Head of Sales"}) is True


def test_matches_ignores_case_in_unicode_text() -> None:
    source = 'title matches "(?i)head|director|vp|chief|leiter|geschäftsführer"'
    assert evaluate(source, {"title": "GESCHÄFTSFÜHRER"}) is True
    assert evaluate(source, {"title": "Werkstudentin"}) is False


def test_regex_escapes_reach_the_pattern_unchanged() -> None:
    source = 'title matches "(?i)\\bvp\\b"'
    assert evaluate(source, {"title": "VP Marketing"}) is True
    assert evaluate(source, {"title": "MVP engineer"}) is False
    assert evaluate('title matches "^\\d+$"', {"title": "2024"}) is True


def test_a_backslash_escapes_a_quote_inside_a_string() -> None:
    assert evaluate('title == "say \\"hi\\""', {"title": 'say "hi"'}) is True
    assert evaluate("title == 'it\\'s'", {"title": "it's"}) is True
    assert evaluate('title == "a\\\\b"', {"title": "a\\b"}) is True


def test_matches_on_a_value_that_is_not_text_is_false() -> None:
    assert evaluate('custom matches "1"', {"custom": 1}) is False


# --- missing values ------------------------------------------------------------------------

EVERY_KIND_OF_COMPARISON = [
    "company_size >= 200",
    "company_size < 200",
    "company_size == 200",
    "company_size != 200",
    'country == "DE"',
    'country != "DE"',
    'country in ["DE"]',
    'country not in ["DE"]',
    "email_domain not in lists.competitors",
    'title matches ""',
    "days_since(created_at) > 30",
    "days_since(created_at) <= 30",
    "mql == false",
    "mql != true",
    'event.type != "form"',
    'account.owner != "anna"',
    '"vip" not in tags',
]


@pytest.mark.parametrize("source", EVERY_KIND_OF_COMPARISON)
@pytest.mark.parametrize("contact", [{}, dict.fromkeys(SCHEMA.fields)], ids=["absent", "none"])
def test_a_comparison_with_a_missing_value_is_false(source: str, contact: dict[str, Any]) -> None:
    assert evaluate(source, contact) is False


def test_not_is_the_plain_negation_of_a_comparison_with_a_missing_value() -> None:
    assert evaluate("not company_size >= 200") is True
    assert evaluate("not company_size < 200") is True


def test_is_none_asks_for_a_missing_value() -> None:
    assert evaluate("account.owner is none", account={}) is True
    assert evaluate("account.owner is none", account={"owner": None}) is True
    assert evaluate("account.owner is none") is True  # no account at all
    assert evaluate("account.owner is none", account={"owner": "anna"}) is False
    assert evaluate("account.owner is not none", account={"owner": "anna"}) is True
    assert evaluate("account.owner is not None", account={}) is False


def test_an_empty_string_is_present_not_missing() -> None:
    assert evaluate("title is not none", {"title": ""}) is True


def test_event_fields_are_missing_when_there_is_no_event() -> None:
    assert evaluate('event.type == "form"', event=None) is False
    assert evaluate("event.type is none", event=None) is True
    assert evaluate('event.type == "form"', event={"type": "form"}) is True


def test_a_bare_bool_field_is_true_only_when_it_holds_true() -> None:
    assert evaluate("mql", {"mql": True}) is True
    assert evaluate("mql", {"mql": False}) is False
    assert evaluate("mql", {}) is False
    assert evaluate("mql", {"mql": "true"}) is False
    assert evaluate("not mql", {}) is True


# --- and / or / not --------------------------------------------------------------------------


def test_and_binds_tighter_than_or() -> None:
    source = 'score >= 90 or event.form == "demo-request" and mql'
    assert evaluate(source, {"score": 95}) is True
    assert evaluate(source, {"score": 10, "mql": True}, {"form": "demo-request"}) is True
    assert evaluate(source, {"score": 10}, {"form": "demo-request"}) is False


def test_parentheses_group_conditions() -> None:
    source = '(score >= 90 or event.form == "demo-request") and mql'
    assert evaluate(source, {"score": 95}) is False
    assert evaluate(source, {"score": 95, "mql": True}) is True


def test_not_binds_looser_than_a_comparison() -> None:
    assert evaluate('event.type == "ebook" and not mql', {"mql": False}, {"type": "ebook"}) is True
    assert evaluate('not event.type == "ebook"', {}, {"type": "ebook"}) is False


def test_long_chains_of_or_are_evaluated_completely() -> None:
    source = " or ".join(f"company_size == {n}" for n in range(500))
    assert evaluate(source, {"company_size": 499}) is True
    assert evaluate(source, {"company_size": 500}) is False


def test_true_and_false_are_conditions_of_their_own() -> None:
    assert evaluate("true") is True
    assert evaluate("False") is False
    assert evaluate("mql or true") is True


# --- days_since ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "created_at",
    [
        NOW - timedelta(days=1, hours=12),
        (NOW - timedelta(days=1, hours=12)).replace(tzinfo=None),  # naive means UTC
        "2024-05-31T00:00:00Z",
        "2024-05-31T02:00:00+02:00",
        "2024-05-31 00:00:00",
    ],
)
def test_days_since_counts_days_including_fractions(created_at: Any) -> None:
    assert evaluate("days_since(created_at) == 1.5", {"created_at": created_at}) is True


def test_days_since_accepts_a_date() -> None:
    assert evaluate("days_since(created_at) == 1.5", {"created_at": date(2024, 5, 31)}) is True


@pytest.mark.parametrize("created_at", ["last tuesday", 1717200000, None])
def test_days_since_of_an_unreadable_or_missing_date_makes_the_comparison_false(
    created_at: Any,
) -> None:
    assert evaluate("days_since(created_at) > 30", {"created_at": created_at}) is False
    assert evaluate("days_since(created_at) <= 30", {"created_at": created_at}) is False


def test_days_since_works_on_event_fields() -> None:
    assert evaluate("days_since(event.at) < 1", event={"at": NOW - timedelta(hours=2)}) is True


# --- fields typed any ------------------------------------------------------------------------


def test_a_field_typed_any_takes_the_type_of_what_it_is_compared_with() -> None:
    assert evaluate("custom > 5", {"custom": "7"}) is True
    assert evaluate('custom == "a"', {"custom": "a"}) is True
    assert evaluate('custom matches "^a"', {"custom": "abc"}) is True
    assert evaluate("custom", {"custom": True}) is True
    assert evaluate("days_since(custom) > 1", {"custom": "2024-01-01"}) is True


def test_a_field_typed_any_never_fails_at_run_time_on_odd_values() -> None:
    for value in [["a"], {"a": 1}, object(), b"a"]:
        assert evaluate('custom == "a"', {"custom": value}) is False
        assert evaluate("custom > 5", {"custom": value}) is False
        assert evaluate('custom in ["a", 1]', {"custom": value}) is False


# --- load-time errors ------------------------------------------------------------------------


def test_a_typo_in_a_field_name_suggests_the_near_name() -> None:
    assert error("compnay_size >= 200") == (
        f"{FILE}:14:11: unknown field 'compnay_size' (did you mean 'company_size'?)"
    )


def test_a_typo_in_a_dotted_field_name_suggests_the_near_dotted_name() -> None:
    assert error('event.formm == "demo-request"') == (
        f"{FILE}:14:11: unknown field 'event.formm' (did you mean 'event.form'?)"
    )


def test_a_bare_event_attribute_suggests_the_event_field() -> None:
    assert error('form == "demo-request"') == (
        f"{FILE}:14:11: unknown field 'form' (did you mean 'event.form'?)"
    )


def test_an_unknown_field_with_no_near_name_suggests_nothing() -> None:
    assert error("zzz == 1") == f"{FILE}:14:11: unknown field 'zzz'"


def test_attribute_access_beyond_field_names_is_an_unknown_field() -> None:
    assert error('title.upper == "X"') == (
        f"{FILE}:14:11: unknown field 'title.upper' (did you mean 'title'?)"
    )


def test_an_unknown_named_list_suggests_the_near_list() -> None:
    assert error("email_domain in lists.free_mial") == (
        f"{FILE}:14:27: unknown list 'lists.free_mial' (did you mean 'lists.free_mail'?)"
    )


def test_a_typo_in_the_function_name_suggests_days_since() -> None:
    assert error("days_sinse(created_at) > 30") == (
        f"{FILE}:14:11: unknown function 'days_sinse' (did you mean 'days_since'?)"
    )


def test_any_other_function_is_unknown() -> None:
    assert error('open("/etc/passwd")') == (
        f"{FILE}:14:11: unknown function 'open'; the only function is days_since(field)"
    )


def test_days_since_takes_exactly_one_field() -> None:
    assert error("days_since() > 1") == (
        f"{FILE}:14:11: days_since takes exactly one field, like days_since(created_at)"
    )


def test_comparing_a_number_field_with_a_string_is_an_error_at_the_string() -> None:
    assert error('company_size >= "groß"') == (
        f"{FILE}:14:27: cannot compare 'company_size' (number) with \"groß\" (string)"
    )


def test_comparing_a_string_field_with_a_number_is_an_error_at_the_number() -> None:
    assert (
        error("country == 5") == f"{FILE}:14:22: cannot compare 'country' (string) with 5 (number)"
    )


def test_a_list_item_of_the_wrong_type_is_an_error_at_the_item() -> None:
    assert error('country in ["DE", 5]') == (
        f"{FILE}:14:29: cannot compare 'country' (string) with 5 (number)"
    )


def test_a_number_field_cannot_be_looked_up_in_a_named_list_of_strings() -> None:
    assert error("company_size in lists.free_mail") == (
        f"{FILE}:14:27: cannot look up 'company_size' (number) in lists.free_mail, "
        "a list of strings"
    )


def test_in_needs_a_list() -> None:
    assert error('"vip" in title') == (
        f'{FILE}:14:20: \'in\' needs a list (like ["DE", "AT"]), lists.NAME or a list field, '
        "not 'title'"
    )


def test_comparing_a_date_with_a_string_points_to_days_since() -> None:
    assert error('created_at > "2024-01-01"') == (
        f"{FILE}:14:24: cannot compare 'created_at' (datetime) with \"2024-01-01\" (string); "
        "compare days_since(field) with a number of days"
    )


def test_ordering_bools_is_an_error_at_the_operator() -> None:
    assert error("mql > true") == (f"{FILE}:14:15: '>' does not apply to bool values; use == or !=")


def test_matches_on_a_number_field_is_an_error_at_matches() -> None:
    assert error('company_size matches "1"') == (
        f"{FILE}:14:24: 'matches' needs a string field, but 'company_size' is a number"
    )


def test_the_pattern_of_matches_must_be_a_string_literal() -> None:
    assert error("title matches title") == (
        f"{FILE}:14:25: the pattern after 'matches' must be a string literal"
    )


def test_a_bad_regular_expression_is_an_error_at_load() -> None:
    assert error('title matches "(vp"') == (
        f"{FILE}:14:25: invalid regular expression: "
        "missing ), unterminated subpattern at position 0"
    )


def test_a_lookahead_is_refused_at_load_with_the_caret_under_it() -> None:
    assert error('title matches "^vp(?!.*intern)"') == (
        f"{FILE}:14:29: lookahead and lookbehind ((?=, (?!, (?<=, (?<!) are not supported, "
        "so that matching stays linear in the length of the text; write two conditions "
        'instead, e.g. \'title matches "a" and not title matches "b"\''
    )
    assert errors('title matches "(?<=Head )of"')[0].col == 26


def test_a_backreference_is_refused_at_load_with_the_caret_under_it() -> None:
    found = error('title matches "(\\w+) \\1"')
    assert found.startswith(f"{FILE}:14:32: backreferences (\\1, (?P=name)) are not supported")
    assert "spell out the repeated text" in found
    named = error('title matches "(?P<word>x)(?P=word)"')
    assert named.startswith(f"{FILE}:14:37: backreferences")


def test_the_caret_of_a_refused_pattern_sits_under_the_construct() -> None:
    caught = errors('title matches "a(?=b)"')[0]
    assert str(caught).startswith(f"{FILE}:14:27: lookahead")
    source_line, caret = caught.render().splitlines()[-2:]
    assert caret.index("^") == source_line.index("(?=b)")


def test_backslash_capital_z_is_refused_with_what_to_write_instead() -> None:
    assert error('title matches "GmbH\\Z"') == (
        f"{FILE}:14:30: \\Z is not supported; write \\z for the end of the text"
    )
    assert evaluate('title matches "GmbH\\z"', {"title": "Kälte GmbH"}) is True


def test_a_repetition_past_what_re2_allows_is_an_error_at_load() -> None:
    assert error('title matches "a{1001}"') == (
        f"{FILE}:14:25: invalid regular expression: invalid repetition size: {{1001}}"
    )


def test_nested_quantifiers_finish_on_long_text() -> None:
    """``(a+)+$`` takes exponential time in a backtracking engine; on RE2 it is linear."""
    assert evaluate('title matches "(a+)+$"', {"title": "a" * 5000 + "!"}) is False
    assert evaluate('title matches "(x+x+)+y"', {"title": "x" * 5000}) is False
    assert evaluate('title matches "(x+x+)+y"', {"title": "x" * 5000 + "y"}) is True


def test_named_groups_and_unicode_classes_are_accepted() -> None:
    assert evaluate('title matches "(?P<role>Leiter) \\p{Lu}"', {"title": "Leiter Einkauf"})
    assert evaluate('title matches "(?i)^ÖZ"', {"title": "özlem"}) is True


def test_days_since_on_a_field_that_is_not_a_date_is_an_error_at_the_field() -> None:
    assert error("days_since(title) > 30") == (
        f"{FILE}:14:22: days_since needs a datetime field, but 'title' is a string"
    )


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("title", "'title' is a string field, not a condition; compare it with a value"),
        (
            "company_size",
            "'company_size' is a number field, not a condition; compare it with a value",
        ),
        ("days_since(created_at)", "days_since(created_at) is not a condition"),
        ('"yes"', '"yes" is not a condition'),
        ("none", "none is not a condition; ask 'field is none'"),
    ],
)
def test_a_value_that_is_not_a_bool_is_not_a_condition(source: str, message: str) -> None:
    assert error(source) == f"{FILE}:14:11: {message}"


def test_comparing_with_none_asks_for_is_none() -> None:
    assert error("title == none") == (
        f"{FILE}:14:20: a comparison with none is always false; write 'is none'"
    )


def test_is_only_tests_for_none() -> None:
    assert error('title is "x"') == (
        f"{FILE}:14:20: 'is' only tests for a missing value: write 'is none'"
    )


def test_chained_comparisons_are_an_error_at_the_second_operator() -> None:
    assert error("0 < company_size < 100") == (
        f"{FILE}:14:28: chained comparisons are not supported; join them with 'and'"
    )


def test_every_error_in_one_expression_is_reported() -> None:
    assert [str(e) for e in errors('compnay_size >= 200 and titel matches "x"')] == [
        f"{FILE}:14:11: unknown field 'compnay_size' (did you mean 'company_size'?)",
        f"{FILE}:14:35: unknown field 'titel' (did you mean 'title'?)",
    ]


def test_columns_count_characters_not_bytes() -> None:
    assert error('title == "geschäftsführer" and zzz') == f"{FILE}:14:42: unknown field 'zzz'"


def test_an_error_on_a_later_line_is_located_on_that_line() -> None:
    found = errors("mql\nand compnay_size > 1")
    assert [(e.line, e.col, e.source_line) for e in found] == [(15, 5, "and compnay_size > 1")]


# --- syntax errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "located"),
    [
        ("company_size >= 200 200", "14:31: expected an operator or the end of the expression"),
        ('title == "a" "b"', "14:24: expected an operator or the end of the expression"),
        ("mql replied", "14:15: expected an operator or the end of the expression"),
        ("mql and", "14:18: expected a value after 'and'"),
        ("== 200", "14:11: expected a value before '=='"),
        ("mql and or replied", "14:19: expected a value after 'and'"),
        ("title is", "14:19: expected 'none' after 'is'"),
        ("title is not", "14:23: expected 'none' after 'is not'"),
        ('country not "DE"', "14:19: expected 'in' after 'not' (or 'and not', 'or not')"),
        ("event.", "14:17: expected a field name after '.'"),
        ("(mql or replied", "14:11: '(' is never closed"),
        ("mql or replied)", "14:25: unmatched ')'"),
        ('country in ["DE")', "14:27: ')' does not close the bracket before it"),
        ("company_size = 200", "14:24: '=' is not an operator; write '==' to compare"),
        ("mql && replied", "14:15: '&&' is not an operator; write 'and'"),
        ("mql || replied", "14:15: '||' is not an operator; write 'or'"),
        ('title == "vp', "14:20: unterminated string"),
        ("mql AND replied", "14:15: keywords are lower-case: write 'and'"),
        ("score + 10 > 90", "14:17: unexpected character '+'"),
        ("", "14:11: the expression is empty"),
    ],
)
def test_a_syntax_error_is_explained_and_located(source: str, located: str) -> None:
    assert error(source) == f"{FILE}:{located}"


@pytest.mark.parametrize(
    ("source", "located"),
    [
        ('__import__("os")', "14:11: '__import__': names starting with '__' are not allowed"),
        ("title.__class__", "14:17: '__class__': names starting with '__' are not allowed"),
        ("lambda: true", "14:17: unexpected character ':'"),
        ("[t for t in tags]", "14:14: expected an operator or the end of the expression"),
        ('f"{title}" == "x"', "14:12: expected an operator or the end of the expression"),
        ('title[0] == "V"', "14:11: subscripts like x[0] are not part of the expression language"),
        ('"abc".upper', "14:11: '.' is only allowed between the parts of a field name"),
        ("-company_size < 0", "14:11: '-' is only allowed in front of a number"),
        (
            'country in ("DE", "AT")',
            '14:22: \',\' only separates list items; write a list in brackets: ["a", "b"]',
        ),
        (
            "(mql == true) == true",
            "14:12: a condition is not a value; combine conditions with and/or/not",
        ),
        ("mql if replied else bounced", "14:15: expected an operator or the end of the expression"),
        ("mql; replied", "14:14: unexpected character ';'"),
        ("score @ 1", "14:17: unexpected character '@'"),
        ("score - 10 > 80", "14:11: arithmetic is not part of the expression language"),
    ],
)
def test_python_that_is_not_part_of_the_language_is_rejected(source: str, located: str) -> None:
    assert error(source) == f"{FILE}:{located}"


# --- error display -------------------------------------------------------------------------


def test_an_error_renders_with_its_source_line_and_a_caret() -> None:
    (found,) = errors("company_size >= 200 and compnay_size < 5")
    assert found.render() == (
        f"{FILE}:14:35: unknown field 'compnay_size' (did you mean 'company_size'?)\n"
        "        when: company_size >= 200 and compnay_size < 5\n"
        "                                      ^"
    )


def test_the_caret_keeps_tabs_of_the_source_line() -> None:
    found = ExprError(FILE, 3, 8, "unknown field 'x'", "\twhen: x")
    assert found.render().splitlines()[1:] == ["    \twhen: x", "    \t      ^"]


def test_an_error_without_a_source_line_renders_as_its_message() -> None:
    found = ExprError(FILE, 3, 8, "unknown field 'x'")
    assert found.render() == f"{FILE}:3:8: unknown field 'x'"


def test_all_errors_of_an_expression_read_one_per_line() -> None:
    with pytest.raises(ExprErrors) as caught:
        compiled("zzz or yyy")
    assert str(caught.value) == (
        f"{FILE}:14:11: unknown field 'zzz'\n{FILE}:14:18: unknown field 'yyy'"
    )
    assert caught.value.render().count("^") == 2


def test_the_errors_can_be_caught_one_by_one_as_an_exception_group() -> None:
    try:
        compiled("zzz or yyy")
    except* ExprError as group:
        columns = [error.col for error in group.exceptions if isinstance(error, ExprError)]
    assert columns == [11, 18]

"""`leadwerk score`: JSON Lines in, one result per line out, and the contract's scoring
semantics to the decimal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.lead_helpers import restore_logging  # noqa: F401
from tests.terminal import on_terminal
from worker.commands.cli import app

runner = CliRunner()
NOW = "2026-11-24T12:00:00+00:00"
COMMAND = [sys.executable, "-m", "worker"]
KEYS = ["score", "fit", "engagement", "mql", "disqualified", "hits", "route", "sla", "ruleset"]

# A small rule set whose numbers are easy to follow by hand.
SEMANTICS = """\
version: semantics-1
mql:
  threshold: 60
  requires: {fit: 10}
decay:
  engagement_half_life: 10d
fit:
  - name: big company
    when: company_size >= 100
    points: 20
  - name: nearly there
    when: industry == "nearly"
    points: 39.96
  - name: free-mail
    when: email_domain in lists.free_mail
    points: -15
engagement:
  - name: webinar
    when: event.type == "webinar"
    points: 10
    cap: 25
  - name: demo request
    when: event.type == "form"
    points: 40
disqualify:
  - name: competitor
    when: email_domain == "rival.de"
lists:
  free_mail: [gmail.com]
"""


def line(contact: dict[str, Any], *events: dict[str, Any]) -> str:
    return json.dumps({"contact": contact, "events": list(events)})


def days_ago(days: float, **event: Any) -> dict[str, Any]:
    from datetime import datetime, timedelta

    at = datetime.fromisoformat(NOW) - timedelta(days=days)
    return {**event, "at": at.isoformat()}


def score(
    config_dir: Path,
    *lines: str,
    now: str = NOW,
    flags: tuple[str, ...] = ("--json",),
    exit_code: int = 0,
):
    result = runner.invoke(
        app,
        ["--config", str(config_dir), "score", "-", "--now", now, *flags],
        input="\n".join(lines) + "\n",
    )
    assert result.exit_code == exit_code, result.output
    if "--json" not in flags:
        return result.stdout
    return [json.loads(text) for text in result.stdout.splitlines()]


@pytest.fixture
def rules(config_dir: Path) -> Path:
    (config_dir / "scoring.yaml").write_text(SEMANTICS, encoding="utf-8")
    return config_dir


BIG = {"email": "eva@bigcorp.de", "company_size": 5000}


# --- the output contract ----------------------------------------------------------------------


def test_each_input_line_gives_one_object_in_input_order_with_every_key(config_dir: Path) -> None:
    # Given: three contacts as JSON Lines, fed to the real command on stdin
    lines = [
        line(
            {
                "email": "eva@bigcorp.de",
                "company_size": 5000,
                "country": "DE",
                "title": "Head of IT",
            },
            {"type": "form", "form": "demo-request", "at": NOW},
        ),
        line({"email": "reader@kleinteil.de", "country": "DE"}, {"type": "ebook", "at": NOW}),
        line({"email": "spy@rival-gmbh.de", "company_size": 5000}),
    ]
    done = subprocess.run(
        [*COMMAND, "--config", str(config_dir), "score", "--json", "--now", NOW],
        input="\n".join(lines),
        capture_output=True,
        text=True,
    )
    # Then: one object per line, in order, each with the contract's keys
    assert done.returncode == 0, done.stderr
    out = [json.loads(text) for text in done.stdout.splitlines()]
    assert [o["line"] for o in out] == [1, 2, 3]
    for result in out:
        assert [k for k in result if k != "line"] == KEYS
    eva, reader, spy = out
    assert (eva["score"], eva["fit"], eva["engagement"], eva["mql"]) == (95.0, 45.0, 50.0, True)
    assert eva["route"]["team"] == "enterprise-dach" and eva["route"]["rule"] == "enterprise DACH"
    assert eva["route"]["rep"] in ("jonas", "lea")
    assert eva["sla"] == {"policy": "hot", "due": "2026-11-24T12:05:00+00:00"}
    assert eva["ruleset"]["version"] == 3 and len(eva["ruleset"]["hash"]) == 12
    assert {"rule": "demo request", "kind": "engagement", "points": 50.0, "events": 1} in eva[
        "hits"
    ]
    assert (reader["score"], reader["mql"], reader["route"], reader["sla"]) == (
        20.0,
        False,
        None,
        None,
    )
    assert spy["disqualified"] == "competitor" and spy["mql"] is False


def test_a_bad_line_yields_an_error_object_and_the_others_go_on(config_dir: Path) -> None:
    out = score(
        config_dir,
        line({"email": "eva@bigcorp.de"}),
        "{not json",
        json.dumps({"contact": {"email": "no-at-sign"}}),
        json.dumps({"events": []}),
        json.dumps({"contact": {"email": "ok@bigcorp.de", "company_size": "viele"}}),
        line({"email": "tom@bigcorp.de"}),
        exit_code=1,
    )
    assert [o["line"] for o in out] == [1, 2, 3, 4, 5, 6]
    assert "score" in out[0] and "score" in out[5]
    for bad in out[1:5]:
        assert "error" in bad and "score" not in bad
    assert out[1]["error"].startswith("not JSON")
    assert out[2]["field"] == "email"
    assert out[4]["field"] == "company_size"


def test_now_moves_the_decay(rules: Path) -> None:
    contact = line(BIG, {"type": "form", "at": "2026-11-14T12:00:00+00:00"})
    at_event = score(rules, contact, now="2026-11-14T12:00:00+00:00")[0]
    ten_days_on = score(rules, contact, now="2026-11-24T12:00:00Z")[0]
    assert at_event["engagement"] == 40.0
    assert ten_days_on["engagement"] == 20.0


def test_explain_lists_every_hit_and_the_route(config_dir: Path) -> None:
    text = score(
        config_dir,
        line(
            {
                "email": "eva@bigcorp.de",
                "company_size": 5000,
                "country": "DE",
                "title": "Head of IT",
            },
            {"type": "form", "form": "demo-request", "at": NOW},
        ),
        flags=("--explain",),
    )
    lines = text.splitlines()
    assert lines[0].startswith("line 1: score 95.0 (fit 45.0, engagement 50.0): MQL → ")
    assert lines[1:5] == [
        "    fit         large company: +20",
        "    fit         decision maker: +15",
        "    fit         DACH: +10",
        "    engagement  demo request: +50",
    ]
    assert lines[5].startswith("    route: rule 'enterprise DACH': ")


def test_a_refused_line_makes_the_command_exit_1_after_scoring_the_others(
    config_dir: Path,
) -> None:
    good = line({"email": "eva@bigcorp.de"})
    done = subprocess.run(
        [*COMMAND, "--config", str(config_dir), "score", "--now", NOW],
        input="\n".join([good, "{not json", good]),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert [text.split(":")[0] for text in done.stdout.splitlines()] == [
        "line 1",
        "line 2",
        "line 3",
    ]
    assert "1 line(s) refused" in done.stderr


def test_explain_says_how_far_a_contact_is_from_the_threshold(rules: Path) -> None:
    # Given: 20 fit and webinars worth 10 + 5 + 2.5 after decay: 37.5 of 60
    webinars = [days_ago(age, type="webinar") for age in (0, 10, 20)]
    text = score(rules, line(BIG, *webinars), flags=("--explain",))
    assert text.splitlines()[0].endswith("score 37.5 (fit 20.0, engagement 17.5): not an MQL")
    assert "    not an MQL: 22.5 points short of 60" in text.splitlines()


def test_explain_names_an_unmet_minimum_of_requires(rules: Path) -> None:
    # Given: two demo requests (80) but a free-mail address: fit 20 - 15 = 5, below 10
    contact = line(
        {"email": "eva@gmail.com", "company_size": 500},
        {"type": "form", "at": NOW},
        {"type": "form", "at": NOW},
    )
    text = score(rules, contact, flags=("--explain",))
    assert "    not an MQL: requires fit >= 10, has 5" in text.splitlines()


def test_json_gives_the_fallback_managers_as_a_field(config_dir: Path) -> None:
    # Given: a team whose only member is away
    (config_dir / "team.yaml").write_text(
        """
teams:
  enterprise-dach: {manager: anna, members: [jonas]}
  inside-sales: {manager: anna, members: [jonas]}
reps:
  anna: {name: Anna Schulz, email: anna@example.com}
  jonas:
    name: Jonas Weber
    email: jonas@example.com
    away: [{from: 2026-11-01, to: 2026-11-30}]
""",
        encoding="utf-8",
    )
    contact = {"email": "eva@bigcorp.de", "company_size": 5000, "country": "DE"}
    out = score(config_dir, line(contact, {"type": "form", "form": "demo-request", "at": NOW}))
    route = out[0]["route"]
    assert route["rep"] is None and route["fallback"] == ["anna"]
    assert route["skipped"] == [{"rep": "jonas", "reason": "away until 2026-11-30"}]


# --- scoring semantics, exactly as the contract states ----------------------------------------


def test_fit_rules_count_once_however_many_events(rules: Path) -> None:
    events = [{"type": "page", "at": NOW}] * 5
    result = score(rules, line(BIG, *events))[0]
    assert result["fit"] == 20.0
    assert result["hits"] == [{"rule": "big company", "kind": "fit", "points": 20.0}]


def test_engagement_counts_every_matching_event(rules: Path) -> None:
    result = score(rules, line(BIG, {"type": "form", "at": NOW}, {"type": "form", "at": NOW}))[0]
    assert result["engagement"] == 80.0
    assert {"rule": "demo request", "kind": "engagement", "points": 80.0, "events": 2} in result[
        "hits"
    ]


def test_a_cap_limits_what_one_rule_gives_one_contact(rules: Path) -> None:
    result = score(rules, line(BIG, *[{"type": "webinar", "at": NOW}] * 4))[0]
    assert result["engagement"] == 25.0


def test_the_cap_applies_to_the_decayed_sum(rules: Path) -> None:
    # four webinars ten days ago: 4 x 10 x 0.5 = 20, under the cap of 25
    result = score(rules, line(BIG, *[days_ago(10, type="webinar")] * 4))[0]
    assert result["engagement"] == 20.0


def test_engagement_halves_every_half_life(rules: Path) -> None:
    out = score(
        rules,
        line(BIG, days_ago(0, type="form")),
        line(BIG, days_ago(10, type="form")),
        line(BIG, days_ago(20, type="form")),
        line(BIG, days_ago(5, type="form")),
    )
    assert [o["engagement"] for o in out] == [40.0, 20.0, 10.0, 28.3]  # 40 * 0.5 ** 0.5


def test_without_a_decay_section_nothing_decays(rules: Path) -> None:
    text = (rules / "scoring.yaml").read_text()
    (rules / "scoring.yaml").write_text(text.replace("decay:\n  engagement_half_life: 10d\n", ""))
    result = score(rules, line(BIG, days_ago(365, type="form")))[0]
    assert result["engagement"] == 40.0


def test_negative_points_lower_the_score(rules: Path) -> None:
    result = score(rules, line({"email": "eva@gmail.com", "company_size": 5000}))[0]
    assert (result["fit"], result["score"]) == (5.0, 5.0)
    alone = score(rules, line({"email": "eva@gmail.com"}))[0]
    assert alone["score"] == -15.0


def test_a_disqualified_contact_is_never_an_mql_whatever_the_score(rules: Path) -> None:
    result = score(
        rules, line({"email": "x@rival.de", "company_size": 5000}, days_ago(0, type="form"))
    )[0]
    assert result["score"] == 60.0
    assert (result["mql"], result["disqualified"]) == (False, "competitor")


def test_a_score_at_the_threshold_is_an_mql(rules: Path) -> None:
    result = score(rules, line(BIG, days_ago(0, type="form")))[0]
    assert (result["score"], result["mql"]) == (60.0, True)


def test_every_minimum_in_requires_must_hold(rules: Path) -> None:
    # fit 0 misses `requires: {fit: 10}`, though the score of 80 clears the threshold
    no_fit = score(rules, line({"email": "a@small.de"}, *[days_ago(0, type="form")] * 2))[0]
    assert (no_fit["score"], no_fit["fit"], no_fit["mql"]) == (80.0, 0.0, False)


def test_figures_are_rounded_but_the_threshold_compares_the_unrounded_score(rules: Path) -> None:
    # 20 + 39.96 = 59.96: reported as 60.0, and still short of the threshold of 60
    contact = {"email": "eva@bigcorp.de", "company_size": 5000, "industry": "nearly"}
    result = score(rules, line(contact))[0]
    assert result["score"] == 60.0
    assert result["mql"] is False


def test_scoring_in_several_processes_gives_the_same_lines_in_the_same_order(
    config_dir: Path, tmp_path: Path
) -> None:
    # Given: 1,500 contacts, every 700th line broken: two chunks of work
    lines = []
    for i in range(1500):
        if i % 700 == 699:
            lines.append("{broken")
            continue
        contact = {"email": f"lead{i}@firma{i % 50}.de", "company_size": i, "country": "DE"}
        lines.append(line(contact, {"type": "form", "form": "demo-request", "at": NOW}))
    source = tmp_path / "export.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def run(*extra: str) -> str:
        command = [*COMMAND, "--config", str(config_dir), "score", str(source), "--json"]
        done = subprocess.run(
            [*command, "--now", NOW, *extra],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 1, done.stderr  # the broken lines were refused
        return done.stdout

    # When: scored in one process and in two
    one, two = run(), run("--jobs", "2")
    # Then: byte for byte the same, one line out per line in, in input order
    assert two == one
    out = [json.loads(text) for text in two.splitlines()]
    assert [o["line"] for o in out] == list(range(1, 1501))
    assert [o["line"] for o in out if "error" in o] == [700, 1400]


def test_a_file_scored_into_a_file_shows_a_bar_on_the_terminal_and_writes_the_same_lines(
    config_dir: Path, tmp_path: Path
) -> None:
    # Given a CRM export of 20,000 contacts
    source = tmp_path / "crm-export.jsonl"
    with source.open("w", encoding="utf-8") as export:
        for i in range(20_000):
            contact = {"email": f"lead{i}@firma{i % 90}.de", "company_size": i % 4000}
            export.write(line(contact, {"type": "form", "form": "demo-request", "at": NOW}) + "\n")
    command = [*COMMAND, "--config", str(config_dir), "score", str(source), "--now", NOW]

    # When it is scored into a file from a terminal, and once more from a pipe
    scored, piped = tmp_path / "scored.txt", tmp_path / "piped.txt"
    with scored.open("wb") as out:
        code, shown = on_terminal(command, "stderr", out)
    with piped.open("wb") as out:
        quiet = subprocess.run(command, stdout=out, stderr=subprocess.PIPE, timeout=120)

    # Then the terminal showed how far the file was read, the results are the same lines
    # as from a pipe, and the pipe's run said nothing on stderr
    assert code == quiet.returncode == 0
    assert b"scoring crm-export.jsonl" in shown and b"MB" in shown
    assert scored.read_bytes() == piped.read_bytes()
    assert len(scored.read_text(encoding="utf-8").splitlines()) == 20_000
    assert quiet.stderr == b""


# --- rules that name an event type, and rules that do not --------------------------------------

MIXED_TYPES = """\
version: mixed-1
mql:
  threshold: 1000
engagement:
  - name: pricing page
    when: event.type == "web" and event.url matches "/pricing"
    points: 8
  - name: any page with a campaign
    when: event.campaign is not none
    points: 1
  - name: demo or webinar
    when: event.type == "form" or event.type == "webinar"
    points: 10
  - name: newsletter form
    when: event.form == "newsletter" and event.type == "form"
    points: 5
  - name: not a web visit
    when: not event.type == "web"
    points: 2
"""


def test_rules_that_name_no_event_type_count_events_of_every_type(config_dir: Path) -> None:
    # Given: rules naming a type alongside rules that name none, or name one only in an `or`
    (config_dir / "scoring.yaml").write_text(MIXED_TYPES, encoding="utf-8")
    events = [
        {"type": "web", "url": "https://x.de/pricing", "campaign": "q4", "at": NOW},
        {"type": "form", "form": "newsletter", "campaign": "q4", "at": NOW},
        {"type": "webinar", "at": NOW},
        {"type": "ebook", "campaign": "q4", "at": NOW},
        {"form": "newsletter", "at": NOW},  # no type at all
        {"type": ["web"], "at": NOW},  # a type that is no text
    ]
    # When: one contact with one event of each is scored
    result = score(config_dir, line({"email": "eva@bigcorp.de"}, *events))[0]
    # Then: every rule counts exactly the events it describes, whatever their type
    counts = {hit["rule"]: hit["events"] for hit in result["hits"]}
    assert counts == {
        "pricing page": 1,
        "any page with a campaign": 3,
        "demo or webinar": 2,
        "newsletter form": 1,
        "not a web visit": 5,
    }
    assert result["engagement"] == 8 + 3 + 20 + 5 + 10


TYPE_AND_MORE = """\
version: typed-1
mql:
  threshold: 1000
engagement:
  - name: pricing page
    when: event.type == "web" and event.url matches "/pricing"
    points: 1
  - name: docs page
    when: event.url matches "/docs" and event.type == "web"
    points: 1
  - name: hot at the fair
    when: event.type == "tradefair" and event.rating == "hot"
    points: 1
  - name: demo with a campaign
    when: event.type == "form" and event.form in ["demo", "trial"] and event.campaign is not none
    points: 1
  - name: any e-book
    when: event.type == "ebook"
    points: 1
  - name: not a hot web visit
    when: event.type == "web" and not event.rating == "hot"
    points: 1
"""


def test_a_rule_naming_a_type_and_more_counts_only_events_meeting_all_of_it(
    config_dir: Path,
) -> None:
    # Given: rules that name an event type together with other conditions, in several shapes
    (config_dir / "scoring.yaml").write_text(TYPE_AND_MORE, encoding="utf-8")
    events = [
        {"type": "web", "url": "https://x.de/pricing", "rating": "hot"},
        {"type": "web", "url": "https://x.de/docs/api"},
        {"type": "ebook", "url": "https://x.de/pricing/docs", "rating": "hot"},
        {"type": "tradefair", "rating": "hot", "url": "https://x.de/docs"},
        {"type": "tradefair", "rating": "warm"},
        {"type": "form", "form": "demo", "campaign": "q4"},
        {"type": "form", "form": "demo"},
        {"type": "webinar", "form": "trial", "campaign": "q4"},
        {"url": "https://x.de/pricing", "rating": "hot", "form": "demo", "campaign": "q4"},
    ]
    # When: one contact with all of them is scored
    result = score(config_dir, line({"email": "eva@bigcorp.de"}, *events))[0]
    # Then: each rule counts the events that meet every part of it, and no others
    counts = {hit["rule"]: hit["events"] for hit in result["hits"]}
    assert counts == {
        "pricing page": 1,
        "docs page": 1,
        "hot at the fair": 1,
        "demo with a campaign": 1,
        "any e-book": 1,
        "not a hot web visit": 1,
    }


def test_event_times_count_alike_however_they_are_written(rules: Path) -> None:
    # Given: a form sent ten days ago (one half-life), its time written in eight ways
    times = [
        "2026-11-14T12:00:00+00:00",
        "2026-11-14T12:00:00Z",
        "2026-11-14T13:00:00+01:00",
        "2026-11-14T12:00:00",  # no offset: UTC
        " 2026-11-14T12:00:00Z ",
        "2026-11-14 12:00:00+00:00",
        "2026-11-14",  # midnight, UTC: ten days and twelve hours
        "14.11.2026",
    ]
    # When: each is scored
    out = score(rules, *[line(BIG, {"type": "form", "at": at}) for at in times])
    # Then: each weighs half (40 x 0.5), the two dates a little less (40 x 0.5 ** 1.05)
    assert [o["engagement"] for o in out] == [20.0] * 6 + [19.3] * 2


def test_a_rule_reading_the_event_time_sees_it_read_whatever_its_spelling(
    config_dir: Path,
) -> None:
    # Given: a rule on the event's age, with no decay
    (config_dir / "scoring.yaml").write_text(
        "version: t-1\nmql: {threshold: 1000}\nengagement:\n  - name: recent form\n"
        '    when: event.type == "form" and days_since(event.at) <= 7\n    points: 10\n',
        encoding="utf-8",
    )
    # When: forms four, ten and one and a half days old are scored, in three spellings
    events = [
        {"type": "form", "at": "20.11.2026"},
        {"type": "form", "at": "2026-11-14T12:00:00Z"},
        {"type": "form", "at": "2026-11-23"},
    ]
    result = score(config_dir, line({"email": "eva@bigcorp.de"}, *events))[0]
    # Then: the two within seven days count
    assert result["hits"] == [
        {"rule": "recent form", "kind": "engagement", "points": 20.0, "events": 2}
    ]


def test_an_event_time_that_is_no_time_refuses_the_line(rules: Path) -> None:
    # Given: event times that cannot be read, one in an event that no rule counts
    lines = [
        line(BIG, {"type": "form", "at": "2026-11-14T25:00:00Z"}),
        line(BIG, {"type": "page", "at": "2026-11-14Tnoon"}),
        line(BIG, {"type": "form", "at": "2026-11-14Z12:00:00"}),
    ]
    # When: they are scored
    out = score(rules, *lines, exit_code=1)
    # Then: every line is refused, naming the event's time
    assert [o.get("field") for o in out] == ["event.at"] * 3


def test_a_title_pattern_answers_alike_for_more_distinct_titles_than_are_remembered(
    rules: Path,
) -> None:
    # Given: a pattern rule and 5,000 contacts, each with a title of its own
    text = (rules / "scoring.yaml").read_text()
    decision_maker = '  - name: head\n    when: title matches "(?i)^head of"\n    points: 15\n'
    (rules / "scoring.yaml").write_text(text.replace("fit:\n", "fit:\n" + decision_maker, 1))
    titles = [f"{'Head' if i % 3 == 0 else 'Assistant'} of Unit {i}" for i in range(5000)]
    # When: all are scored, then the first ones again in the same run
    lines = [line({"email": f"p{i}@firma.de", "title": t}) for i, t in enumerate(titles)]
    out = score(rules, *lines, *lines[:10])
    # Then: the rule matched exactly the heads, the repeats as the first time
    matched = ["head" in [h["rule"] for h in o["hits"]] for o in out]
    assert matched == [i % 3 == 0 for i in range(5000)] + [i % 3 == 0 for i in range(10)]


def test_json_that_only_the_standard_parser_takes_is_still_read(rules: Path) -> None:
    # Given: lines with NaN, an integer beyond 64 bits and a lone surrogate in a name
    lines = [
        '{"contact": {"email": "eva@bigcorp.de", "company_size": NaN}}',
        '{"contact": {"email": "tom@bigcorp.de", "company_size": 123456789012345678901234}}',
        '{"contact": {"email": "ute@bigcorp.de", "first_name": "\\ud800", "company_size": 100}}',
        '{"contact": {"email": "leo@bigcorp.de", "company_size": 100},}',
    ]
    out = score(rules, *lines, exit_code=1)  # one line refused: exit 1, the rest scored
    # Then: the first three are scored as before (NaN counts as missing), the last is refused
    # with the parser's own words
    assert [o.get("fit") for o in out[:3]] == [0.0, 20.0, 20.0]
    refused = "not JSON: Expecting property name enclosed in double quotes at column 62"
    assert out[3]["error"] == refused

"""An outside audit of the product contract (PRODUCT.md), run as a user would run Leadwerk:
the real CLI in a subprocess, a config directory of our own (our own scoring rules, team,
sources, trade-fair exports, JSON Lines and webhook deliveries), nothing from the example data.

Tests marked ``xfail(strict=True)`` pin behaviour that breaks the contract today; once it is
fixed they pass, fail as XPASS, and the marker comes off.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import hmac
import json
import math
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from config.errors import ConfigErrors
from config.loader import load_config
from config.settings import load_settings
from rules.scoring import score_contact

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime.fromisoformat("2026-11-24T12:00:00+00:00")
DAY = timedelta(days=1)

# The YAML examples of PRODUCT.md, verbatim (a trailing backslash only wraps a long line here).
CONTRACT_YAML = {
    "sources.yaml": """\
sources:
  - name: website-forms
    kind: http_json                 # any paginated JSON API
    url: https://forms.example.com/api/submissions
    auth: {bearer_env: FORMS_TOKEN}
    poll_every: 60s
    cursor: {param: since, field: submitted_at}
    records: data                   # where the list is in the response
    event: {type: form, form: "$.form_id"}
    map: {email: "$.fields.email", first_name: "$.fields.first_name", company: "$.fields.c\
ompany"}
  - name: typeform-demo
    kind: typeform                  # Typeform Responses API and its signed webhooks
    form_id: abc123
    token_env: TYPEFORM_TOKEN
    # base_url: https://api.eu.typeform.com   # every SaaS connector takes base_url (EU re\
gion, proxies, tests)
    map: {email: "ref:work_email", first_name: "ref:first_name", company: "ref:company"}  \
# answers by field ref
    # start_at: 2026-11-01           # a new source backfills all that the API still retur\
ns, unless set
    event: {type: form, form: demo-request}
  - name: messe-hannover-2026
    kind: tradefair_files           # CSV / XLSX / vCard exports of badge scanner apps
    path: inbox/tradefair/
    event: {type: tradefair, fair: "Hannover Messe 2026"}
    map: {email: "E-Mail", first_name: "Vorname", last_name: "Nachname", company: "Firma",
          title: "Position", phone: "Telefon", country: "Land", rating: "Bewertung", notes\
: "Notiz"}
  - name: ebooks
    kind: webhook                   # pushed: POST /hooks/ebooks, HMAC-SHA256 signed
    secret_env: EBOOK_HOOK_SECRET
    signature: {header: X-Signature-256, prefix: "sha256=", encoding: hex}   # HMAC-SHA256\
 of the raw body
    # timestamp: {header: X-Timestamp, tolerance: 300s}  # then "<timestamp>.<raw body>" i\
s signed; replays refused
    event: {type: ebook, asset: "$.asset"}
    map: {email: "$.email", first_name: "$.first_name", company: "$.company"}
""",
    "scoring.yaml": """\
version: 3                          # recorded with every score; bump on change
mql:
  threshold: 60                     # total = fit + engagement
  requires: {fit: 15}               # optional minimums per part
decay:
  engagement_half_life: 30d         # engagement points halve every 30 days
fit:                                # who they are; each rule counts once
  - name: large company
    when: company_size >= 200
    points: 20
  - name: decision maker
    when: title matches "(?i)head|director|vp|chief|leiter|geschäftsführer"
    points: 15
  - name: DACH
    when: country in ["DE", "AT", "CH"]
    points: 10
  - name: free-mail address
    when: email_domain in lists.free_mail
    points: -30
engagement:                         # what they did; counts per matching event
  - name: demo request
    when: event.type == "form" and event.form == "demo-request"
    points: 50
  - name: e-book download
    when: event.type == "ebook"
    points: 10
    cap: 30                         # at most 30 points from this rule per contact
  - name: hot at the fair
    when: event.type == "tradefair" and event.rating == "hot"
    points: 40
disqualify:                         # any match: never an MQL, whatever the score
  - name: competitor
    when: email_domain in lists.competitors
  - name: student
    when: title matches "(?i)student|praktikant|werkstudent"
lists:
  free_mail: [gmail.com, googlemail.com, web.de, gmx.de, gmx.net, t-online.de, yahoo.com, \
outlook.com, hotmail.com]
  competitors: [rival-gmbh.de]
""",
    "team.yaml": """\
teams:
  enterprise-dach: {manager: anna, members: [jonas, lea]}
  inside-sales: {manager: anna, members: [mehmet, sophie, tom]}
reps:
  jonas:
    name: Jonas Weber
    email: jonas.weber@example.com
    slack: U024BE7LH
    notify: slack                   # slack | email
    timezone: Europe/Berlin
    hours: {mon-fri: "08:00-17:00"}
    holidays: DE-NI                 # public holidays of a country/region
    capacity: {per_day: 20}
    weight: 2                       # for weighted round robin
    away: [{from: 2026-12-23, to: 2027-01-02}]
""",
    "routing.yaml": """\
rules:                              # first match wins; the decision is recorded with its reason
  - name: account owner
    when: account.owner is not none # the rep who already owns the company (by e-mail domain)
    assign: account_owner
  - name: enterprise DACH
    when: country in ["DE", "AT", "CH"] and company_size >= 1000
    team: enterprise-dach
    strategy: round_robin           # round_robin | weighted | least_loaded
  - name: everyone else
    team: inside-sales
    strategy: weighted
fallback: {notify: [anna]}          # nobody available: managers get it, nothing is dropped
""",
    "sla.yaml": """\
policies:                           # first match wins
  - name: hot
    when: score >= 90 or event.form == "demo-request"
    respond_within: 5m
    clock: business_hours           # the rep's hours, time zone and holidays; or: calendar
    remind_at: [50%, 80%]
    on_breach: [escalate, reassign]
  - name: standard
    respond_within: 4h
    clock: business_hours
    on_breach: [escalate]
""",
    "nurture.yaml": """\
send_window: {days: mon-fri, hours: "09:00-17:00", timezone: contact}
limits: {per_domain_per_day: 3, per_minute: 60}
sequences:
  ebook-followup:
    enroll_when: event.type == "ebook" and not mql
    channel: email                  # one channel per sequence
    steps:
      - {after: 1d, template: ebook_thanks}
      - {after: 3d, template: case_study}
      - {after: 7d, template: webinar_invite}
    exit_when: mql or replied or unsubscribed or bounced
  fair-warm-calls:
    enroll_when: event.type == "tradefair" and event.rating == "warm"
    channel: phone                  # steps become call tasks for the owner
    steps:
      - {after: 1d, task: "Call about the conversation at the fair"}
      - {after: 7d, task: "Second call: decision timeline"}
    exit_when: mql or replied
""",
    "hygiene.yaml": """\
bounces: {soft_to_hard_after: 3}
stale:
  no_engagement_for: 540d           # 18 months
  expected_decay_per_month: 2.1%    # used to estimate how much of a list has gone bad
lists:                              # a list = contacts from one source (or source + month)
  warn_bounce_rate: 2%
  suspend_bounce_rate: 5%           # stop mailing that list, tell its owner
  check_every: 1d
""",
    "tests/contract.yaml": """\
- name: demo request from a big DACH company is a hot MQL for enterprise
  contact: {email: eva@bigcorp.de, company_size: 5000, country: DE, title: Head of IT}
  events: [{type: form, form: demo-request}]
  expect: {mql: true, score: 95, route: {team: enterprise-dach}, sla: hot}
""",
}

# The contract's teams name reps its team.yaml example leaves out; these fill them in.
OTHER_REPS = """\
  anna: {name: Anna A, email: anna@audit.example, notify: email, timezone: Europe/Berlin,
         hours: {mon-fri: "08:00-18:00"}}
  lea: {name: Lea L, email: lea@audit.example, notify: email, timezone: Europe/Vienna,
        hours: {mon-fri: "08:00-17:00"}}
  mehmet: {name: Mehmet M, email: mehmet@audit.example, notify: email, timezone: Europe/Berlin,
           hours: {mon-fri: "09:00-18:00"}}
  sophie: {name: Sophie S, email: sophie@audit.example, notify: email, timezone: Europe/Berlin,
           hours: {mon-fri: "08:00-16:30"}}
  tom: {name: Tom T, email: tom@audit.example, notify: email, timezone: Europe/Berlin,
        hours: {mon-fri: "10:00-19:00"}}
"""

# Our own project: nothing here comes from the example config.
OWN_CONFIG = {
    "fields.yaml": "budget: number\ninterest: string\nnewsletter: bool\n",
    "team.yaml": """\
teams:
  north: {manager: greta, members: [hakon, ines]}
reps:
  greta: {name: Greta Lind, email: greta@seller.example, notify: email, timezone: UTC,
          hours: {mon-sun: "00:00-24:00"}}
  hakon: {name: Hakon Berg, email: hakon@seller.example, notify: email, timezone: UTC,
          hours: {mon-sun: "00:00-24:00"}}
  ines: {name: Ines Roth, email: ines@seller.example, notify: email, timezone: UTC,
         hours: {mon-sun: "00:00-24:00"}}
""",
    "routing.yaml": """\
rules:
  - name: everyone
    team: north
    strategy: round_robin
fallback: {notify: [greta]}
""",
    "sla.yaml": """\
policies:
  - name: standard
    respond_within: 4h
    clock: calendar
""",
    "sources.yaml": """\
sources:
  - name: fair-a
    kind: tradefair_files
    path: inbox/fair-a/
    event: {type: tradefair, fair: "Fair A 2026"}
    map: {email: "Mail Address", first_name: "Given", last_name: "Family", company: "Org",
          title: "Role", country: "Nation", company_size: "Staff", rating: "Temp"}
  - name: hooks
    kind: webhook
    secret_env: AUDIT_HOOK_SECRET
    signature: {header: X-Sig, prefix: "v1=", encoding: base64}
    event: {type: download, asset: "$.doc"}
    map: {email: "$.contact.mail", first_name: "$.contact.name", company: "$.org"}
""",
    "scoring.yaml": """\
version: 7
mql:
  threshold: 50
  requires: {fit: 10, engagement: 5}
decay:
  engagement_half_life: 10d
fit:
  - {name: big budget, when: budget >= 10000, points: 12.5}
  - {name: robots, when: interest == "robots", points: 7}
  - {name: subscribed, when: newsletter == true, points: 3}
  - {name: gov domain, when: 'email_domain matches "[.]gov$"', points: -20}
  - {name: no title, when: title is none, points: -4}
  - {name: nordics, when: 'country in ["SE", "NO", "DK"]', points: 6}
  - {name: not nordics, when: 'country not in ["SE", "NO", "DK"]', points: 1}
  - {name: drone people, when: 'interest in ["drones"]', points: 2}
  - {name: large company, when: company_size >= 1000, points: 20}
engagement:
  - {name: webinar, when: event.type == "webinar", points: 20, cap: 25}
  - {name: pricing visit, when: event.type == "visit" and event.url == "/pricing", points: 8}
  - {name: unsubscribe, when: event.type == "unsub", points: -15}
  - {name: hot at the fair, when: event.type == "tradefair" and event.rating == "hot", points: 40}
disqualify:
  - {name: blocked, when: email_domain in lists.blocked}
lists:
  blocked: [spam.example]
""",
    "tests/own.yaml": """\
- name: a Swedish robot buyer who came to two webinars is an MQL
  now: 2026-11-24T12:00:00+00:00
  contact: {email: a@robotics.se, budget: 20000, interest: robots, newsletter: true,
            title: CTO, country: SE}
  events:
    - {type: webinar, at: 2026-11-14T12:00:00+00:00}
    - {type: webinar, at: 2026-11-24T12:00:00+00:00}
  expect: {fit: 28.5, engagement: 25, score: 53.5, mql: true, route: {team: north}}
- name: a blocked domain is never an MQL
  contact: {email: x@spam.example, budget: 20000, interest: robots, title: CTO, country: SE}
  events: [{type: webinar}, {type: webinar}, {type: visit, url: /pricing}]
  expect: {mql: false, disqualified: blocked}
- name: this expectation is wrong on purpose
  contact: {email: b@x.de, title: CTO}
  expect: {score: 99}
""",
}

FAIR_HEADER = ["Given", "Family", "Mail Address", "Org", "Role", "Nation", "Staff", "Temp"]
FAIR_ROWS = [
    ["Jürgen", "Groß", "j.gross@stahlwerk-sued.de", "Stahlwerk Süd", "Geschäftsführer", "DE",
     "1200", "hot"],
    ["Åsa", "Berg", "asa@nordic.se", "Nordic AB", "Head of Ops", "SE", "300", "warm"],
    ["Bad", "Mail", "no-at-sign.example", "X", "Y", "DE", "10", "cold"],
    ["Num", "Bad", "num@bad.de", "X", "Y", "DE", "viele", "cold"],
    ["Empty", "Mail", "", "X", "Y", "DE", "5", "cold"],
]  # fmt: skip


def leadwerk(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``leadwerk ARGS`` as a user types it, with no LEADWERK_ or PORT variables leaking in."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEADWERK_") and k != "PORT"}
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        cwd=cwd,
        env=clean,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def write_project(root: Path, files: dict[str, str], templates: bool = True) -> Path:
    """A project folder holding ``config/`` with ``files``; returns the config directory."""
    config = root / "config"
    for name, text in files.items():
        (config / name).parent.mkdir(parents=True, exist_ok=True)
        (config / name).write_text(text, encoding="utf-8")
    if templates:
        shutil.copytree(ROOT / "config" / "templates", config / "templates")
    return config


def own_project(root: Path) -> Path:
    return write_project(root, OWN_CONFIG)


def write_csv(path: Path, rows: list[list[str]], delimiter: str, encoding: str) -> Path:
    with path.open("w", encoding=encoding, newline="") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(rows)
    return path


def stored(config: Path, query: str) -> list[tuple]:
    with closing(sqlite3.connect(config.parent / "var" / "leadwerk.db")) as db:
        return db.execute(query).fetchall()


def load(config: Path):
    return load_config(load_settings(config))


# --- every YAML example of the contract loads ---------------------------------------------


def test_init_writes_an_example_config_that_rules_check_accepts(tmp_path: Path) -> None:
    made = leadwerk("init", str(tmp_path / "fresh"), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    # --config after the subcommand works as well as before it
    checked = leadwerk("rules", "check", "--config", str(tmp_path / "fresh" / "config"), cwd=ROOT)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.startswith("config ok")


def test_every_contract_example_loads_and_its_rule_test_passes(tmp_path: Path) -> None:
    files = dict(CONTRACT_YAML)
    files["team.yaml"] = CONTRACT_YAML["team.yaml"] + OTHER_REPS
    config = write_project(tmp_path, files)
    checked = leadwerk("--config", str(config), "rules", "check", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = leadwerk("--config", str(config), "rules", "test", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.strip().splitlines()[-1] == "1 passed, 0 failed"


def test_the_contract_team_example_alone_names_every_rep_it_does_not_describe(
    tmp_path: Path,
) -> None:
    config = write_project(tmp_path, CONTRACT_YAML, templates=False)
    with pytest.raises(ConfigErrors) as raised:
        load(config)
    # a rep named in a team, as its manager or in the fallback must be described under reps:
    named = {issue.message.split(" (")[0] for issue in raised.value.issues}
    assert named == {f"unknown rep '{rep}'" for rep in ("anna", "lea", "mehmet", "sophie", "tom")}


# --- scoring semantics, exactly ------------------------------------------------------------


def at(age: timedelta) -> str:
    return (NOW - age).isoformat()


# A pricing visit whose decayed points are 3.46 puts contact B at 49.96: shown as 50.0, not MQL.
AGE_FOR_3_46 = timedelta(days=10 * math.log2(8 / 3.46))
SCORE_LINES = [
    {  # A: fit 12.5+7+3+6 = 28.5; webinars 10+20 capped at 25; visit 8*0.5**0.5 = 5.657
        "contact": {"email": "a@robotics.se", "budget": 20000, "interest": "robots",
                    "newsletter": True, "title": "CTO", "country": "SE"},
        "events": [{"type": "webinar", "at": at(10 * DAY)}, {"type": "webinar", "at": at(0 * DAY)},
                   {"type": "visit", "url": "/pricing", "at": at(5 * DAY)}],
    },
    {  # B: fit 12.5+1 = 13.5; engagement 25+8+3.46 = 36.46; score 49.96
        "contact": {"email": "b@maschinen.de", "budget": 10000, "title": "Leiter",
                    "country": "DE"},
        "events": [{"type": "webinar", "at": at(0 * DAY)}, {"type": "webinar", "at": at(0 * DAY)},
                   {"type": "visit", "url": "/pricing", "at": at(0 * DAY)},
                   {"type": "visit", "url": "/pricing", "at": at(AGE_FOR_3_46)}],
    },
    {  # C: fit -20-4 = -24 (a missing country is neither in nor not in a list);
       # engagement -15 + 20*0.5**2 = -10
        "contact": {"email": "c@agency.gov"},
        "events": [{"type": "unsub", "at": at(0 * DAY)}, {"type": "webinar", "at": at(20 * DAY)}],
    },
    "this line is not JSON",
    {  # D: fit 7+1 = 8 < requires 10, although score 8+25+32 = 65 >= 50
        "contact": {"email": "d@x.de", "interest": "robots", "title": "Eng", "country": "DE"},
        "events": [{"type": "webinar", "at": at(0 * DAY)}] * 2
        + [{"type": "visit", "url": "/pricing", "at": at(0 * DAY)}] * 4,
    },
    {"contact": {"first_name": "No e-mail"}, "events": []},
    {  # E: would be 90.5, but the domain is blocked
        "contact": {"email": "e@spam.example", "budget": 99999, "interest": "robots",
                    "title": "CEO", "country": "SE"},
        "events": [{"type": "webinar", "at": at(0 * DAY)}] * 2
        + [{"type": "visit", "url": "/pricing", "at": at(0 * DAY)}] * 5,
    },
    {"contact": {"email": "f@x.de", "interest": "Robots", "title": "CTO", "country": "DK"}},
    {"contact": {"email": "g@x.de", "interest": "Drones", "title": "CTO"}, "events": []},
]  # fmt: skip
CONTRACT_KEYS = ["score", "fit", "engagement", "mql", "disqualified", "hits", "route", "sla",
                 "ruleset"]  # fmt: skip


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    root = tmp_path_factory.mktemp("scoring")
    config = own_project(root)
    lines = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in SCORE_LINES) + "\n"
    result = leadwerk(
        "--config", str(config), "score", "--json", "--now", NOW.isoformat(), cwd=root, stdin=lines
    )
    # two of the lines cannot be scored: they are refused, and the exit status says so
    assert result.returncode == 1 and result.stderr == "2 line(s) refused\n", result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def hit_names(result: dict) -> list[str]:
    return [hit["rule"] for hit in result["hits"]]


def test_score_prints_one_object_per_input_line_in_input_order(scored: list[dict]) -> None:
    assert len(scored) == len(SCORE_LINES)
    assert ["error" in r for r in scored] == [isinstance(x, str) or "email" not in x["contact"]
                                              for x in SCORE_LINES]  # fmt: skip


def test_each_score_has_the_contract_keys_in_the_contract_order(scored: list[dict]) -> None:
    for result in scored:
        if "error" not in result:
            assert [k for k in result if k in CONTRACT_KEYS] == CONTRACT_KEYS
            assert set(result) - set(CONTRACT_KEYS) <= {"line"}
            assert result["ruleset"]["hash"]
            assert str(result["ruleset"]["version"]) == "7"


def test_engagement_halves_every_half_life_and_a_cap_limits_its_rule(scored: list[dict]) -> None:
    a = scored[0]
    assert (a["fit"], a["engagement"], a["score"], a["mql"]) == (28.5, 30.7, 59.2, True)
    assert {h["rule"]: h["points"] for h in a["hits"]}["webinar"] == 25.0
    assert {h["rule"]: h["points"] for h in a["hits"]}["pricing visit"] == 5.7


def test_an_mql_is_decided_on_the_unrounded_score(scored: list[dict]) -> None:
    b = scored[1]
    assert (b["score"], b["fit"], b["engagement"]) == (50.0, 13.5, 36.5)
    assert b["mql"] is False  # 49.96 < 50, though it is reported as 50.0
    assert b["route"] is None and b["sla"] is None


def test_negative_points_lower_fit_and_engagement(scored: list[dict]) -> None:
    c = scored[2]
    assert (c["fit"], c["engagement"], c["score"], c["mql"]) == (-24.0, -10.0, -34.0, False)
    assert "not nordics" not in hit_names(c) and "nordics" not in hit_names(c)


def test_a_minimum_in_requires_keeps_a_high_score_from_being_an_mql(scored: list[dict]) -> None:
    d = scored[4]
    assert (d["fit"], d["engagement"], d["score"], d["mql"]) == (8.0, 57.0, 65.0, False)


def test_a_disqualified_contact_is_never_an_mql(scored: list[dict]) -> None:
    e = scored[6]
    assert (e["score"], e["mql"], e["disqualified"]) == (90.5, False, "blocked")


def test_equals_and_in_compare_strings_case_sensitively(scored: list[dict]) -> None:
    assert hit_names(scored[7]) == ["nordics"]  # "Robots" is not "robots"
    assert hit_names(scored[8]) == []  # "Drones" is not in ["drones"]


def test_lines_that_cannot_be_scored_say_why_and_the_rest_go_on(scored: list[dict]) -> None:
    assert "not JSON" in scored[3]["error"] and "score" not in scored[3]
    assert "e-mail" in scored[5]["error"] and "score" not in scored[5]
    assert scored[4]["score"] == 65.0  # the line after a bad one is scored


def test_rules_test_prints_the_summary_and_exits_1_on_a_failed_case(tmp_path: Path) -> None:
    config = own_project(tmp_path)
    result = leadwerk("--config", str(config), "rules", "test", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.strip().splitlines()[-1] == "2 passed, 1 failed"
    assert "tests/own.yaml:" in result.stdout  # the failing case is located


# --- the expression language ----------------------------------------------------------------


PROBES = """\
version: 1
mql: {threshold: 1000}
fit:
  - {name: ne, when: company_size != 5, points: 1}
  - {name: lt, when: company_size < 5, points: 1}
  - {name: not in, when: 'country not in ["DE"]', points: 1}
  - {name: matches, when: title matches ".", points: 1}
  - {name: days, when: days_since(created_at) >= 0, points: 1}
  - {name: bool, when: newsletter == false, points: 1}
  - {name: list, when: industry in lists.ind, points: 1}
  - {name: account, when: account.open_leads < 3, points: 1}
  - {name: not of a comparison, when: not (company_size >= 5), points: 1}
  - {name: is none, when: budget is none, points: 1}
  - {name: is not none, when: budget is not none, points: 1}
  - {name: search, when: 'title matches "ead"', points: 1}
  - {name: without i, when: 'title matches "head"', points: 1}
  - {name: with i, when: 'title matches "(?i)HEAD"', points: 1}
  - {name: precedence, when: 'not country == "DE" or company_size > 100 and title is none',
     points: 1}
engagement:
  - {name: event, when: event.type == "x" and event.rating != "hot", points: 1}
  - {name: event none, when: event.type == "x" and event.rating is none, points: 1}
lists:
  ind: [tools]
"""


def test_a_comparison_with_a_missing_value_is_false(tmp_path: Path) -> None:
    config = load(write_project(tmp_path, {**OWN_CONFIG, "scoring.yaml": PROBES}))
    nobody = score_contact(config.ruleset, {"email": "m@x.de"}, [{"type": "x"}], NOW, {})
    assert [h.rule for h in nobody.hits] == [
        "not of a comparison",  # not (company_size >= 5), with the comparison false
        "is none",
        "precedence",  # not (country == "DE"): the comparison is false, so this is true
        "event none",
    ]
    somebody = score_contact(
        config.ruleset,
        {"email": "m@x.de", "company_size": 3, "country": "AT", "title": "Head of IT",
         "created_at": "2026-01-01T00:00:00+00:00", "newsletter": False, "budget": 3,
         "industry": "tools"},
        [{"type": "x", "rating": "warm"}],
        NOW,
        {"open_leads": 1},
    )  # fmt: skip
    assert [h.rule for h in somebody.hits] == [
        "ne", "lt", "not in", "matches", "days", "bool", "list", "account",
        "not of a comparison", "is not none", "search", "with i", "precedence", "event",
    ]  # fmt: skip


BROKEN = """\
version: 1
mql: {threshold: 10}
fit:
  - name: typo
    when: compnay_size >= 200
    points: 1
  - name: mismatch
    when: company_size == "big"
    points: 1
  - name: a function that is not days_since
    when: len(title) > 3
    points: 1
  - name: attribute access
    when: title.upper == "X"
    points: 1
  - name: days_since of a string
    when: days_since(title) > 3
    points: 1
  - name: matches on a number
    when: budget matches "1"
    points: 1
engagement: []
"""


def test_a_typo_or_type_mismatch_is_an_error_at_file_line_col(tmp_path: Path) -> None:
    config = write_project(tmp_path, {**OWN_CONFIG, "scoring.yaml": BROKEN})
    result = leadwerk("--config", str(config), "rules", "check", cwd=tmp_path)
    assert result.returncode == 1
    out = result.stdout + result.stderr
    expected = [
        "scoring.yaml:5:11: unknown field 'compnay_size' (did you mean 'company_size'?)",
        "scoring.yaml:8:27: cannot compare 'company_size' (number) with \"big\" (string)",
        "scoring.yaml:11:11: unknown function 'len'",
        "scoring.yaml:14:11: unknown field 'title.upper'",
        "scoring.yaml:17:22: days_since needs a datetime field",
        "scoring.yaml:20:18: 'matches' needs a string field",
    ]
    for message in expected:
        assert message in out


BLOCK = """\
version: 1
mql: {threshold: 10}
fit:
  - name: a long rule written as a folded block
    when: >
      country == "DE"
      and budgett > 3
    points: 1
engagement: []
"""


def test_an_error_in_a_folded_rule_points_at_the_line_of_the_typo(tmp_path: Path) -> None:
    config = write_project(tmp_path, {**OWN_CONFIG, "scoring.yaml": BLOCK}, templates=False)
    with pytest.raises(ConfigErrors) as caught:
        load(config)
    [issue] = caught.value.issues
    assert "budgett" in issue.message
    assert (issue.line, issue.col) == (7, 11)


def test_a_zero_half_life_is_refused_at_load_time(tmp_path: Path) -> None:
    scoring = OWN_CONFIG["scoring.yaml"].replace(
        "engagement_half_life: 10d", "engagement_half_life: 0d"
    )
    config = write_project(tmp_path, {**OWN_CONFIG, "scoring.yaml": scoring}, templates=False)
    with pytest.raises(ConfigErrors):
        load(config)


# --- exit codes: 0 ok, 1 failed check, 2 bad usage or config ---------------------------------


def test_commands_that_need_broken_rules_exit_2(tmp_path: Path) -> None:
    config = write_project(tmp_path, {**OWN_CONFIG, "scoring.yaml": BROKEN})
    export = write_csv(tmp_path / "x.csv", [FAIR_HEADER, *FAIR_ROWS], ",", "utf-8")
    # (rules check exits 1 on this config: see the file:line:col test above)
    assert leadwerk("--config", str(config), "score", cwd=tmp_path, stdin="").returncode == 2
    imported = leadwerk("import", str(export), "--source", "fair-a", "--config", str(config),
                        cwd=tmp_path)  # fmt: skip
    assert imported.returncode == 2
    assert "compnay_size" in imported.stdout + imported.stderr


def test_scoring_a_file_that_does_not_exist_is_bad_usage(tmp_path: Path) -> None:
    config = own_project(tmp_path)
    result = leadwerk("--config", str(config), "score", str(tmp_path / "nope.jsonl"), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_a_typo_in_leadwerk_yaml_is_a_config_error(tmp_path: Path) -> None:
    config = write_project(tmp_path, {**OWN_CONFIG, "leadwerk.yaml": "databse_url: sqlite:///x\n"})
    checked = leadwerk("--config", str(config), "rules", "check", cwd=tmp_path)
    assert checked.returncode == 1 and "leadwerk.yaml:1:" in checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr


def test_a_secret_written_into_leadwerk_yaml_is_refused(tmp_path: Path) -> None:
    config = write_project(tmp_path, {**OWN_CONFIG, "leadwerk.yaml": "smtp_password: hunter2\n"})
    checked = leadwerk("--config", str(config), "rules", "check", cwd=tmp_path)
    assert checked.returncode == 1
    assert "smtp_password" in checked.stdout + checked.stderr


def test_init_writes_where_config_points(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "config"
    result = leadwerk("--config", str(target), "init", cwd=tmp_path)
    assert result.returncode == 0
    assert (target / "scoring.yaml").exists()
    assert not (tmp_path / "config").exists()


# --- import: received / accepted / duplicates / quarantined with row numbers ----------------


def test_import_reads_semicolon_comma_and_tab_exports_and_reimport_adds_nothing(
    tmp_path: Path,
) -> None:
    config = own_project(tmp_path)
    exports = []
    for n, (delimiter, encoding) in enumerate(
        [(";", "cp1252"), (",", "utf-8-sig"), ("\t", "utf-8")]
    ):
        rows = [[cell.replace("@", f"{n}@", 1) for cell in row] for row in FAIR_ROWS]
        exports.append(
            write_csv(tmp_path / f"fair{n}.csv", [FAIR_HEADER, *rows], delimiter, encoding)
        )
    for export in exports:
        result = leadwerk("--config", str(config), "import", str(export), "--source", "fair-a",
                          "--json", cwd=tmp_path)  # fmt: skip
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert (report["received"], report["accepted"], report["duplicates"]) == (5, 2, 0)
        assert report["quarantined"] == 3
        # the header is row 1: the bad e-mail, the bad number and the empty e-mail
        assert [(p["row"], p["field"]) for p in report["problems"]] == [
            (4, "email"), (5, "company_size"), (6, "email"),
        ]  # fmt: skip
    names = stored(config, "select email, fields from contacts where email like 'j.gross%'")
    assert {json.loads(fields)["last_name"] for _, fields in names} == {"Groß"}
    again = leadwerk("--config", str(config), "import", str(exports[0]), "--source", "fair-a",
                     cwd=tmp_path)  # fmt: skip
    assert again.returncode == 0
    assert "received 5, accepted 0, duplicates 2, quarantined 3" in again.stdout
    assert "row 4:" in again.stdout and "row 5:" in again.stdout
    assert len(stored(config, "select id from contacts")) == 6


def test_a_quote_never_closed_loses_no_row_silently(tmp_path: Path) -> None:
    config = own_project(tmp_path)
    export = tmp_path / "broken.csv"
    export.write_text(
        'Given,Mail Address,Org\nA,a1@x.de,X\nB,b1@x.de,"Unclosed Org\nC,c1@x.de,Y\nD,d1@x.de,Z\n',
        encoding="utf-8",
    )
    result = leadwerk("--config", str(config), "import", str(export), "--source", "fair-a",
                      "--json", cwd=tmp_path)  # fmt: skip
    if result.returncode == 0:
        assert json.loads(result.stdout)["received"] == 4
    else:
        assert stored(config, "select email from contacts") == []  # refused whole


# --- run --once, settings from leadwerk.yaml and env ------------------------------------------


def test_run_once_takes_in_the_inbox_and_env_wins_over_leadwerk_yaml(tmp_path: Path) -> None:
    project = tmp_path / "project"
    yaml_db = tmp_path / "from-yaml.db"
    settings = f'mail_from: "Yaml <yaml@audit.example>"\ndatabase_url: sqlite:///{yaml_db}\n'
    config = write_project(project, {**OWN_CONFIG, "leadwerk.yaml": settings})
    inbox = project / "inbox" / "fair-a"
    inbox.mkdir(parents=True)
    write_csv(inbox / "day1.csv", [FAIR_HEADER, *FAIR_ROWS], ";", "cp1252")
    env = {"LEADWERK_CONFIG_DIR": str(config), "LEADWERK_MAIL_FROM": "Env <env@audit.example>"}

    result = leadwerk("run", "--once", cwd=tmp_path, env=env)  # not run from the project

    assert result.returncode == 0, result.stdout + result.stderr
    assert "imported fair-a: 5 rows, 2 new, 0 known, 3 quarantined" in result.stdout
    assert "accounted for 2 leads: 2 processed, 0 dead-lettered, 0 pending" in result.stdout
    assert yaml_db.exists()  # database_url read from config/leadwerk.yaml
    assert (inbox / "done" / "day1.csv").exists()
    [mail] = (project / "var" / "outbox").glob("*.eml")  # one MQL: the hot CEO of 1200
    assert "From: Env <env@audit.example>" in mail.read_text()  # env wins


# --- webhooks ---------------------------------------------------------------------------------

SECRET = "audit-secret"


def signed(body: bytes) -> dict[str, str]:
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    return {"X-Sig": "v1=" + base64.b64encode(digest).decode(), "Content-Type": "application/json"}


@pytest.fixture(scope="module")
def hooks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """``leadwerk web`` on the port named by PORT, as Procfile platforms set it."""
    root = tmp_path_factory.mktemp("web")
    config = own_project(root)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LEADWERK_")}
    clean.update({"PORT": str(port), "AUDIT_HOOK_SECRET": SECRET})
    server = subprocess.Popen(
        [sys.executable, "-m", "worker", "--config", str(config), "web"],
        cwd=root,
        env=clean,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("leadwerk web did not answer /healthz on $PORT")
        yield f"{url}/hooks/hooks", config
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_a_signed_delivery_is_stored_once_and_a_repeat_adds_nothing(hooks) -> None:
    url, config = hooks
    body = json.dumps({"contact": {"mail": "hook@firma-x.de", "name": "H"}, "doc": "g"}).encode()
    assert httpx.post(url, content=body, headers=signed(body)).status_code == 202
    assert httpx.post(url, content=body, headers=signed(body)).status_code == 202
    assert stored(config, "select email from contacts where email = 'hook@firma-x.de'") == [
        ("hook@firma-x.de",)
    ]
    assert len(stored(config, "select id from events")) == 1


def test_a_missing_or_wrong_signature_is_401_and_stores_nothing(hooks) -> None:
    url, config = hooks
    body = json.dumps({"contact": {"mail": "forged@firma-y.de"}}).encode()
    hexsig = "v1=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    for headers in [{}, {"X-Sig": hexsig}, {"X-Sig": signed(b"other")["X-Sig"]},
                    {"X-Sig": signed(body)["X-Sig"][3:]}]:  # fmt: skip
        assert httpx.post(url, content=body, headers=headers).status_code == 401
    assert stored(config, "select id from contacts where email like 'forged%'") == []


def test_a_body_that_is_not_json_or_lacks_the_email_is_400_and_quarantined(hooks) -> None:
    url, config = hooks
    before = len(stored(config, "select id from quarantine"))
    for body in [b"not json at all", json.dumps({"contact": {"name": "No Mail"}}).encode()]:
        assert httpx.post(url, content=body, headers=signed(body)).status_code == 400
    assert len(stored(config, "select id from quarantine")) == before + 2


def test_a_body_past_the_size_limit_is_413(hooks) -> None:
    url, config = hooks
    body = json.dumps({"contact": {"mail": "big@firma-z.de"}, "pad": "x" * 1_100_000}).encode()
    assert httpx.post(url, content=body, headers=signed(body)).status_code == 413
    assert stored(config, "select id from contacts where email = 'big@firma-z.de'") == []


# --- forget: erasure --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def forgotten(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eva came to the stand twice and was typed once as Eva@, once as eva@; Lisa's row is
    quarantined (a bad head count); then Eva and a@x.de ask to be forgotten."""
    root = tmp_path_factory.mktemp("forget")
    config = own_project(root)
    rows = [
        FAIR_HEADER,
        ["Eva", "M", "Eva@firma.de", "Firma", "CTO", "DE", "50", "warm"],
        ["Eva", "M", "eva@firma.de", "Firma", "CTO", "DE", "50", "hot"],
        ["Lisa", "K", "lisa@x.de", "X", "CTO", "DE", "viele", "warm"],
        ["A", "B", "a@x.de", "X", "CTO", "DE", "10", "warm"],
    ]
    export = write_csv(root / "stand.csv", rows, ";", "utf-8")
    imported = leadwerk("--config", str(config), "import", str(export), "--source", "fair-a",
                        cwd=root)  # fmt: skip
    assert "received 4, accepted 3, duplicates 0, quarantined 1" in imported.stdout
    for email in ("eva@firma.de", "a@x.de"):
        assert leadwerk("--config", str(config), "forget", email, cwd=root).returncode == 0
    return config


def test_forget_erases_the_person_however_the_address_was_typed(forgotten: Path) -> None:
    assert stored(forgotten, "select email from contacts where lower(email) like 'eva@%'") == []


def test_forget_keeps_other_peoples_quarantined_records(forgotten: Path) -> None:
    # lisa@x.de contains a@x.de as a substring; her record is hers, not a@x.de's
    assert len(stored(forgotten, "select id from quarantine")) == 1


def test_forget_leaves_no_event_of_the_people_it_erased(forgotten: Path) -> None:
    # Eva (both spellings) and a@x.de were the only contacts; Lisa is only in quarantine
    assert stored(forgotten, "select email from contacts") == []
    assert stored(forgotten, "select id from events") == []


def test_a_saturday_demo_request_is_a_members_first_task_on_monday_not_the_managers(
    config_dir: Path,
) -> None:
    # Given a Saturday morning: every rep is off, yet nobody is away, so the lead still goes to
    # a member of enterprise-dach, and the hot SLA's business-hours clock waits for Monday
    from worker.commands.evaluate import evaluate

    config = load(config_dir)
    saturday = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    contact = {"email": "eva@bigcorp.de", "company_size": 5000, "country": "DE",
               "title": "Head of IT"}  # fmt: skip
    _, route, sla, _ = evaluate(config, contact, [{"type": "form", "form": "demo-request"}],
                                saturday)  # fmt: skip
    assert route is not None and route.rep in ("jonas", "lea") and route.fallback == ()
    # Monday 30 Nov 08:00 Berlin or Vienna (07:00 UTC) + 5 working minutes
    assert sla == {"policy": "hot", "due": "2026-11-30T07:05:00+00:00"}

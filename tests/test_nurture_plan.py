"""Nurture planning on fixed clocks: send windows in the contact's time zone, DST, public
holidays, business days, one channel at a time, consent and exits; and ``leadwerk nurture plan``."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from config.loader import load_config
from rules.nurture import Active, contact_timezone, parse_delay, plan_contact
from worker.commands.nurture import _view, nurture_rules

EXAMPLE = Path(__file__).resolve().parent.parent / "config"


@pytest.fixture
def config(make_settings):  # the example config: ebook-followup (e-mail), fair-warm-calls (phone)
    return load_config(make_settings())


def plan(config, contact, events, now, active=(), **rules_overrides):
    rules = replace(nurture_rules(config, "Europe/Berlin"), **rules_overrides)
    view = _view(config, contact, events, now)
    return plan_contact(rules, view, events, list(active), now)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


EBOOK = [{"type": "ebook", "asset": "guide"}]
WARM = [{"type": "tradefair", "rating": "warm"}]


def local_times(result) -> list[str]:
    """The steps' times as the contact's clock shows them."""
    return [step["at"] for step in result.as_dict()["steps"]]


def test_an_ebook_download_on_saturday_gets_its_first_email_monday_morning_in_berlin(config):
    # Given a German contact who downloads an e-book on Saturday afternoon
    result = plan(
        config, {"email": "eva@bigcorp.de", "country": "DE"}, EBOOK, at("2026-12-05T14:00:00+01:00")
    )
    # Then step 1 (1d later: Sunday) waits for Monday 09:00, and each later step counts from
    # the time the one before was planned for
    assert (result.sequence, result.channel, result.refused) == ("ebook-followup", "email", None)
    assert local_times(result) == [
        "2026-12-07T09:00:00+01:00",
        "2026-12-10T09:00:00+01:00",
        "2026-12-17T09:00:00+01:00",
    ]
    assert [s.template for s in result.steps] == ["ebook_thanks", "case_study", "webinar_invite"]


def test_windows_are_read_in_new_york_and_tokyo_time(config):
    now = at("2026-12-08T15:30:00+00:00")  # Tuesday: 10:30 in New York, 00:30 Wednesday in Tokyo
    ny = plan(config, {"email": "bob@acme.com", "country": "US"}, EBOOK, now)
    tokyo = plan(config, {"email": "ken@acme.jp", "country": "JP"}, WARM, now)
    assert ny.timezone == "America/New_York"
    assert local_times(ny)[0] == "2026-12-09T10:30:00-05:00"  # inside the window: kept
    assert tokyo.timezone == "Asia/Tokyo"
    assert (tokyo.sequence, tokyo.channel) == ("fair-warm-calls", "phone")
    assert local_times(tokyo)[0] == "2026-12-10T09:00:00+09:00"  # 00:30 moves to the opening
    assert tokyo.steps[0].task == "Call about the conversation at the fair"


def test_the_contacts_own_timezone_field_wins_over_its_country():
    contact = {"country": "US", "timezone": "America/Los_Angeles"}
    assert contact_timezone(contact, "UTC") == "America/Los_Angeles"
    assert contact_timezone({"country": "CA"}, "UTC") == "America/Toronto"
    assert contact_timezone({"country": "RU"}, "UTC") == "Europe/Moscow"
    assert contact_timezone({"country": "XX"}, "Europe/Vienna") == "Europe/Vienna"
    assert contact_timezone({"timezone": "Mars/Olympus"}, "UTC") == "UTC"


def test_a_window_across_the_spring_dst_change_keeps_nine_oclock_local(config):
    # Friday 27 March 2026, 16:00 in Berlin; Europe moves its clocks on Sunday the 29th
    result = plan(
        config, {"email": "eva@bigcorp.de", "country": "DE"}, EBOOK, at("2026-03-27T16:00:00+01:00")
    )
    times = local_times(result)
    assert times[0] == "2026-03-30T09:00:00+02:00"  # Monday after the change, still 09:00
    assert result.steps[0].at == at("2026-03-30T07:00:00+00:00")


def test_public_holidays_of_the_contacts_country_are_closed(config):
    # Christmas Eve (Thursday) in Germany: +1d is Christmas Day, a holiday, then Boxing Day
    result = plan(
        config, {"email": "eva@bigcorp.de", "country": "DE"}, EBOOK, at("2026-12-24T10:00:00+01:00")
    )
    assert local_times(result)[0] == "2026-12-28T09:00:00+01:00"
    # In the US the 26th is no holiday, but it is a Saturday: Monday the 28th as well
    us = plan(
        config, {"email": "bob@acme.com", "country": "US"}, EBOOK, at("2026-11-25T10:00:00-05:00")
    )
    assert local_times(us)[0] == "2026-11-27T09:00:00-05:00"  # Thanksgiving (26th) is closed


def test_business_days_skip_the_weekend_and_keep_the_time_of_day():
    from rules.nurture import add_delay

    friday = at("2026-12-04T11:15:00+01:00")
    assert add_delay(friday, parse_delay("2bd"), "Europe/Berlin", "DE") == at(
        "2026-12-08T11:15:00+01:00"
    )
    # Good Friday and Easter Monday 2026 are German holidays
    thursday = at("2026-04-02T10:00:00+02:00")
    assert add_delay(thursday, parse_delay("1bd"), "Europe/Berlin", "DE") == at(
        "2026-04-07T10:00:00+02:00"
    )


def test_delays_are_read_as_written_and_bad_ones_are_refused():
    assert parse_delay("12h").span.total_seconds() == 12 * 3600
    assert parse_delay("2bd").business_days == 2
    with pytest.raises(ValueError, match="2bd"):
        parse_delay("two days")
    with pytest.raises(ValueError, match="whole days"):
        parse_delay("1.5bd")


def test_a_contact_active_on_the_phone_is_not_enrolled_by_email(config):
    active = [Active("fair-warm-calls", "phone")]
    result = plan(
        config,
        {"email": "eva@bigcorp.de", "country": "DE"},
        EBOOK,
        at("2026-12-07T10:00:00+01:00"),
        active,
    )
    assert (result.sequence, result.refused, result.steps) == (
        "ebook-followup",
        "channel_conflict",
        (),
    )


def test_consent_and_suppression_keep_emails_from_contacts_who_did_not_want_them(config):
    now = at("2026-12-07T10:00:00+01:00")
    no_consent = plan(config, {"email": "eva@bigcorp.de"}, EBOOK, now, consent_field="newsletter")
    assert no_consent.refused == "no_consent"
    consented = plan(
        config,
        {"email": "eva@bigcorp.de", "newsletter": True},
        EBOOK,
        now,
        consent_field="newsletter",
    )
    assert consented.refused is None and len(consented.steps) == 3
    unsubscribed = plan(config, {"email": "eva@bigcorp.de", "unsubscribed": True}, EBOOK, now)
    assert unsubscribed.refused == "suppressed"
    # A phone sequence needs no e-mail consent
    calls = plan(config, {"email": "eva@bigcorp.de"}, WARM, now, consent_field="newsletter")
    assert calls.refused is None


def test_an_mql_is_not_enrolled_and_a_reply_is_an_exit(config):
    now = at("2026-12-07T10:00:00+01:00")
    hot = {"email": "eva@bigcorp.de", "country": "DE", "company_size": 5000, "title": "Head of IT"}
    demo_and_fair = [{"type": "form", "form": "demo-request"}, *WARM]
    assert plan(config, hot, demo_and_fair, now).refused == "exit: mql"
    replied = plan(config, {"email": "eva@bigcorp.de", "replied": True}, WARM, now)
    assert replied.refused == "exit: replied"


def test_no_sequence_for_a_contact_whose_events_match_none(config):
    result = plan(
        config,
        {"email": "eva@bigcorp.de"},
        [{"type": "form", "form": "contact"}],
        at("2026-12-07T10:00:00+01:00"),
    )
    assert (result.sequence, result.refused, result.steps) == (None, None, ())


def test_nurture_plan_prints_one_json_object_a_line_in_input_order():
    lines = [
        {"contact": {"email": "eva@bigcorp.de", "country": "DE"}, "events": EBOOK},
        {
            "contact": {"email": "bob@acme.com", "country": "US"},
            "events": EBOOK,
            "active": [{"sequence": "fair-warm-calls", "channel": "phone"}],
        },
        {"contact": {"email": "no-at-sign"}, "events": EBOOK},
    ]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "nurture",
            "plan",
            "--json",
            "--now",
            "2026-12-05T13:00:00Z",
            "--config",
            str(EXAMPLE),
        ],
        input="\n".join(json.dumps(line) for line in lines),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 1, run.stderr  # one line was refused
    out = [json.loads(line) for line in run.stdout.splitlines()]
    assert out[0]["sequence"] == "ebook-followup" and out[0]["refused"] is None
    assert out[0]["steps"][0] == {
        "n": 1,
        "at": "2026-12-07T09:00:00+01:00",
        "template": "ebook_thanks",
    }
    assert out[1]["refused"] == "channel_conflict" and out[1]["steps"] == []
    assert "e-mail" in out[2]["error"]

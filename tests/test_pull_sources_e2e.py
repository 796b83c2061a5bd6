"""Pull sources through the real pipeline: a paginated JSON API and Typeform's Responses API,
served on 127.0.0.1, polled by ``poll_source`` and by ``leadwerk run --once``. Records are
stored with the cursor of their page, a fault mid-poll loses nothing and repeats nothing, and
a refused token shows in the source's health."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from config.settings import Settings
from connectors.errors import FatalError, RetriableError
from tests.lead_helpers import restore_logging  # noqa: F401
from tests.pipeline_helpers import running
from tests.servers.jsonapi import JsonApiServer
from tests.servers.typeform import TypeformServer, typeform_answer, typeform_response
from tests.source_helpers import (
    FAIR_SOURCE,
    FORMS_TOKEN,
    TYPEFORM_TOKEN,
    counts,
    leadwerk,
    pull_sources,
    write_sources,
)
from worker.pipeline.poll import poll_source
from worker.store.models import SourceState

ENV = {"FORMS_TOKEN": FORMS_TOKEN, "TYPEFORM_TOKEN": TYPEFORM_TOKEN}
# Answered quickly: the retries of a request are the connector's, not what is tested here.
GIVE_UP = [(500, {"Retry-After": "0"})] * 5


def submission(n: int) -> dict[str, Any]:
    return {
        "id": f"sub-{n}",
        "submitted_at": f"2026-11-0{n}T10:00:00Z",
        "form_id": "contact-us",
        "fields": {"email": f"lead{n}@Beispiel-{n}.DE", "first_name": "Käthe", "company": "ACME"},
    }


def demo_request(n: int) -> dict[str, Any]:
    return typeform_response(
        f"tok{n}",
        f"2026-11-0{n}T09:00:00Z",
        [
            typeform_answer("work_email", "email", f"demo{n}@bigcorp.de"),
            typeform_answer("first_name", "text", "Sören"),
        ],
    )


def cursor_of(store: Any, name: str) -> dict[str, Any] | None:
    with store.session() as session:
        state = session.get(SourceState, name)
        return None if state is None else state.cursor


def test_a_fault_on_page_two_keeps_page_one_and_the_next_poll_goes_on_from_there(
    config_dir: Path, make_settings: Callable[..., Settings], database_url: str
) -> None:
    records = [submission(n) for n in range(1, 6)]
    with JsonApiServer(records, pagination="cursor", page_size=2, bearer=FORMS_TOKEN) as api:
        write_sources(config_dir, FAIR_SOURCE, pull_sources(forms_url=api.url))
        settings = make_settings(database_url=database_url, env=ENV)
        with running(settings) as leadwerk_:
            app = leadwerk_.app
            # Given an API that answers page 1, then fails page 2 until the retries give up
            api.script(["normal page", *GIVE_UP])
            with pytest.raises(RetriableError):
                poll_source(app.store, app.config, "website-forms")
            after_fault = counts(app.store)
            cursor_after_fault = cursor_of(app.store, "website-forms")

            # When the next poll runs, and then one more
            resumed = poll_source(app.store, app.config, "website-forms")
            again = poll_source(app.store, app.config, "website-forms")
            final = counts(app.store)

    # Then page 1 was kept with its cursor, pointing at page 2
    assert after_fault["events"] == 2
    assert cursor_after_fault is not None and cursor_after_fault["resume"]["token"] == "c2"
    # and the next poll asked for page 2 and took in exactly the rest
    assert api.requests[len(GIVE_UP) + 1].params.get("cursor") == "c2"
    assert (resumed.accepted, resumed.duplicates) == (3, 0)
    # and polling again adds nothing
    assert again.accepted == 0
    assert final == {"contacts": 5, "events": 5, "quarantined": 0}


def test_typeform_responses_are_polled_once_each_as_they_arrive(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    with TypeformServer(token=TYPEFORM_TOKEN) as typeform:
        write_sources(config_dir, FAIR_SOURCE, pull_sources(typeform_url=typeform.base_url))
        with running(make_settings(env=ENV)) as leadwerk_:
            app = leadwerk_.app
            typeform.add(*(demo_request(n) for n in range(1, 4)))
            first = poll_source(app.store, app.config, "typeform-demo")
            typeform.add(demo_request(4))
            second = poll_source(app.store, app.config, "typeform-demo")
            third = poll_source(app.store, app.config, "typeform-demo")
            stored = counts(app.store)

    assert (first.accepted, second.accepted, third.accepted) == (3, 1, 0)
    assert stored == {"contacts": 4, "events": 4, "quarantined": 0}
    # the last poll asked only for what came after the last stored response
    assert typeform.requests[-1].params.get("after") == "tok4"


def test_run_once_polls_both_apis_and_a_second_run_adds_nothing(config_dir: Path) -> None:
    records = [submission(n) for n in range(1, 4)]
    with (
        JsonApiServer(records, pagination="cursor", page_size=2, bearer=FORMS_TOKEN) as api,
        TypeformServer(token=TYPEFORM_TOKEN) as typeform,
    ):
        typeform.add(demo_request(1), demo_request(2))
        write_sources(config_dir, pull_sources(api.url, typeform.base_url))
        first = leadwerk(config_dir, "run", "--once", env=ENV)
        second = leadwerk(config_dir, "run", "--once", env=ENV)

    assert first.exit_code == 0, first.output
    assert "polled website-forms: 3 new, 0 known, 0 quarantined" in first.stdout
    assert "polled typeform-demo: 2 new, 0 known, 0 quarantined" in first.stdout
    assert "accounted for 5 leads: 5 processed" in first.stdout
    assert second.exit_code == 0, second.output
    assert "polled website-forms: 0 new" in second.stdout
    assert "polled typeform-demo: 0 new, 0 known" in second.stdout
    assert "lead1@beispiel-1.de" not in first.output  # addresses are masked in the output


def test_a_refused_token_shows_in_status_as_consecutive_failures_naming_the_env_var(
    config_dir: Path,
) -> None:
    with JsonApiServer([submission(1)], pagination="cursor", bearer=FORMS_TOKEN) as api:
        write_sources(config_dir, pull_sources(forms_url=api.url))
        env = {"FORMS_TOKEN": "a token that was revoked"}
        runs = [leadwerk(config_dir, "run", "--once", env=env) for _ in range(2)]
        status = leadwerk(config_dir, "status", "--json", env=env)

    assert [run.exit_code for run in runs] == [1, 1]
    assert "polling website-forms failed" in runs[0].output
    health = json.loads(status.stdout)["sources"]["website-forms"]
    assert health["consecutive_failures"] == 2
    assert health["last_success_at"] is None
    assert "401" in health["last_error"] and "FORMS_TOKEN" in health["last_error"]
    assert "revoked" not in health["last_error"]  # the token itself is never shown


def test_a_token_env_var_that_is_not_set_fails_the_poll_and_says_which(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    write_sources(config_dir, pull_sources(typeform_url="http://127.0.0.1:9"))
    with running(make_settings(env={})) as leadwerk_:
        app = leadwerk_.app
        with pytest.raises(FatalError, match="TYPEFORM_TOKEN is not set"):
            poll_source(app.store, app.config, "typeform-demo")
        with app.store.session() as session:
            state = session.get(SourceState, "typeform-demo")
            assert state is not None and state.consecutive_failures == 1
            assert state.last_error is not None and "TYPEFORM_TOKEN" in state.last_error

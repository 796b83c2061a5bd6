"""`leadwerk rules check` reads config/crm.yaml too: the kind, the environment variables it
names, the owners map against team.yaml, each error located as `file:line:col: message`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lead_helpers import restore_logging  # noqa: F401
from tests.test_rules_check import check, located, runner
from worker.commands.cli import app

GOOD = """crm:
  kind: bottlecrm                   # hubspot | salesforce | bottlecrm | webhook
  base_url: http://127.0.0.1:8765
  token_env: BOTTLECRM_TOKEN
  owners: by_email
  map: {company: company_name, title: title, phone: phone, score: description}
  first_activity: poll
"""


def write(config_dir: Path, text: str) -> None:
    (config_dir / "crm.yaml").write_text(text, encoding="utf-8")


def test_the_crm_yaml_of_the_product_description_checks_clean(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOTTLECRM_TOKEN", "bcrm_pat_x")
    write(config_dir, GOOD)
    code, out = check(config_dir, monkeypatch)
    assert code == 0, out
    assert out.startswith("config ok:")


def test_an_unknown_kind_is_located_with_the_kinds_there_are(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(config_dir, GOOD.replace("kind: bottlecrm", "kind: pipedrive"))
    code, out = check(config_dir, monkeypatch)
    assert code == 1
    assert out.startswith("config/crm.yaml:2:9: ")
    assert "'hubspot', 'salesforce', 'bottlecrm' or 'webhook'" in out


def test_a_secret_written_where_its_variable_name_belongs_is_refused(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(config_dir, GOOD.replace("token_env: BOTTLECRM_TOKEN", "token_env: bcrm_pat_s3cr3t"))
    code, out = check(config_dir, monkeypatch)
    assert code == 1
    message = (
        "crm.token_env: 'bcrm_pat_s3cr3t' is not an environment variable name "
        "(write it like CRM_TOKEN)"
    )
    assert out.startswith(located(config_dir, "crm.yaml", "bcrm_pat_s3cr3t", message))


def test_a_salesforce_crm_needs_its_client_credentials_named(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(config_dir, "crm:\n  kind: salesforce\n  base_url: https://login.example.com\n")
    code, out = check(config_dir, monkeypatch)
    assert code == 1
    assert "crm.client_id_env: a salesforce CRM needs the name of the environment" in out
    assert "crm.client_secret_env: a salesforce CRM needs" in out


def test_an_owners_map_naming_someone_not_in_the_team_is_located_with_a_suggestion(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOTTLECRM_TOKEN", "bcrm_pat_x")
    owners = "owners: {jonas: 'u-17', joans: 'u-18'}"
    write(config_dir, GOOD.replace("owners: by_email", owners))
    code, out = check(config_dir, monkeypatch)
    assert code == 1
    expected = located(
        config_dir, "crm.yaml", "joans", "unknown rep 'joans' (did you mean 'jonas'?)"
    )
    assert out.startswith(expected)


def test_an_unset_token_variable_is_a_warning_not_an_error(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BOTTLECRM_TOKEN", raising=False)
    monkeypatch.chdir(config_dir.parent)
    write(config_dir, GOOD)
    result = runner.invoke(app, ["--config", str(config_dir), "rules", "check"])
    assert result.exit_code == 0, result.stdout
    assert (
        "warning: config/crm.yaml:4:14: crm.token_env: BOTTLECRM_TOKEN is not set here; "
        "the CRM sync waits until it is" in result.stderr
    )

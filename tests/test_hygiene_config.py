"""hygiene.yaml as marketing ops write it: the contract's keys, and mistakes pointed at with
their file, line and column."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from config.errors import ConfigErrors
from config.loader import load_config
from config.models import ImapBounces, MaildirBounces, WebhookBounces
from config.settings import Settings

CONTRACT = """\
bounces: {soft_to_hard_after: 3}
stale:
  no_engagement_for: 540d
  expected_decay_per_month: 2.1%
lists:
  warn_bounce_rate: 2%
  suspend_bounce_rate: 5%
  window: 30d
  touch_every: 60d
  check_every: 1d
  owner: anna
bounce_sources:
  - {kind: maildir, path: bounces/}
  - {kind: imap, host: imap.example.com, user_env: BOUNCE_USER, password_env: BOUNCE_PASSWORD}
  - {kind: webhook, provider: postmark, secret_env: POSTMARK_WEBHOOK_SECRET}
"""


def load(config_dir: Path, make_settings: Callable[..., Settings], text: str) -> str:
    (config_dir / "hygiene.yaml").write_text(text)
    with pytest.raises(ConfigErrors) as raised:
        load_config(make_settings())
    return raised.value.render()


def test_the_contracts_hygiene_yaml_loads(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    (config_dir / "hygiene.yaml").write_text(CONTRACT)
    hygiene = load_config(make_settings()).hygiene
    assert hygiene.lists.window == timedelta(days=30)
    assert hygiene.lists.touch_every == timedelta(days=60)
    assert hygiene.lists.owner == "anna"
    assert hygiene.stale is not None and hygiene.stale.expected_decay_per_month == 0.021
    kinds = [type(s) for s in hygiene.bounce_sources]
    assert kinds == [MaildirBounces, ImapBounces, WebhookBounces]


def test_an_owner_who_is_no_rep_is_located_with_a_suggestion(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    errors = load(config_dir, make_settings, CONTRACT.replace("owner: anna", "owner: ana"))
    assert "hygiene.yaml:11:10: unknown rep 'ana' (did you mean 'anna'?)" in errors


def test_a_suspend_rate_below_the_warn_rate_is_refused(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    errors = load(
        config_dir,
        make_settings,
        CONTRACT.replace("suspend_bounce_rate: 5%", "suspend_bounce_rate: 1%"),
    )
    assert "hygiene.yaml:7:24: suspend_bounce_rate is below warn_bounce_rate" in errors


def test_a_signed_webhook_without_its_secret_variable_is_refused(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    text = CONTRACT.replace(", secret_env: POSTMARK_WEBHOOK_SECRET", "")
    errors = load(config_dir, make_settings, text)
    assert "hygiene.yaml:15:5: a postmark webhook needs secret_env:" in errors


def test_an_unknown_provider_and_a_typo_are_located(
    config_dir: Path, make_settings: Callable[..., Settings]
) -> None:
    text = CONTRACT.replace("provider: postmark", "provider: sparkpost").replace(
        "touch_every", "touch_evry"
    )
    errors = load(config_dir, make_settings, text)
    assert "hygiene.yaml:9:3: unknown key 'touch_evry' (did you mean 'touch_every'?)" in errors
    assert "hygiene.yaml:15:" in errors and "sparkpost" in errors

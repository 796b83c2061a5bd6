"""Process settings: pydantic-settings with the ``LEADWERK_`` prefix.

Sources, strongest first: init arguments (the CLI's ``--config``), environment variables,
``<config_dir>/leadwerk.yaml``, defaults. Only this module reads the environment; everything else
receives a :class:`Settings` object (and, for secrets named in YAML, ``Settings.env``).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from config.errors import ConfigErrors, ConfigIssue
from config.yamlload import YamlDoc, YamlSyntaxError, load_yaml


def config_dir_from_env(explicit: str | Path | None = None) -> Path:
    """The config directory: ``--config``, else ``LEADWERK_CONFIG_DIR``, else ``./config``."""
    raw = explicit or os.environ.get("LEADWERK_CONFIG_DIR") or "config"
    return Path(raw).expanduser().resolve()


class Settings(BaseSettings):
    """Every key has its env var: ``database_url`` is ``LEADWERK_DATABASE_URL`` and so on."""

    model_config = SettingsConfigDict(env_prefix="LEADWERK_", extra="forbid")

    config_dir: Path = Path("config")
    database_url: str = "sqlite:///var/leadwerk.db"
    redis_url: str | None = None
    redis_namespace: str = "default"
    timezone: str = "Europe/Berlin"
    public_url: str = "http://127.0.0.1:8000"
    smtp_url: str | None = None
    smtp_password: str | None = None
    mail_from: str = "Leadwerk <leads@localhost>"
    slack_token: str | None = None
    slack_base_url: str = "https://slack.com/api"
    # Checks that a click on a Slack button (POST /slack/actions) really comes from Slack.
    slack_signing_secret: str | None = None
    outbox_dir: Path = Path("var/outbox")
    inbox_dir: Path = Path("inbox")
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    accept_secret: str | None = None
    max_body_bytes: int = 1_000_000
    log_level: str = "INFO"
    log_format: str = "console"  # console | json
    worker_threads: int = 4
    # Seconds a claimed message may stay "sending" before the sweep takes its worker for dead
    # and sends it again; keep it above the longest send (SMTP and Slack time out after 10 s).
    send_lease: float = Field(default=120.0, gt=0)
    # A message that failed for a passing reason (server unreachable, SMTP 4xx, HTTP 429/5xx)
    # is tried again after a random wait (full jitter) of up to retry_base * 2^attempts
    # seconds, at most retry_cap: so a server that comes back gets its mail within retry_cap
    # seconds. After retry_for seconds of failing it is dead-lettered.
    retry_base: float = Field(default=2.0, gt=0)
    retry_cap: float = Field(default=50.0, gt=0)
    retry_for: float = Field(default=86_400.0, gt=0)
    # The clock's sweep enqueues at most sweep_limit rows of each kind per pass, and a row it
    # (or the pipeline) enqueued only again after redelivery_after seconds: its queue message
    # was lost.
    sweep_limit: int = Field(default=1000, gt=0)
    redelivery_after: float = Field(default=60.0, gt=0)
    admin_email: str | None = None
    env: dict[str, str] = Field(default_factory=dict, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = _CURRENT_CONFIG_DIR / "leadwerk.yaml"
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file),
        )

    @property
    def sqlite_path(self) -> Path | None:
        """The file behind a ``sqlite:///`` URL, so its folder can be made."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix) and self.database_url != "sqlite:///:memory:":
            return Path(self.database_url[len(prefix) :])
        return None

    def secret(self, env_name: str) -> str | None:
        """A secret named in YAML (``token_env: TYPEFORM_TOKEN``), from the environment."""
        return self.env.get(env_name)


_CURRENT_CONFIG_DIR = Path("config")


SECRET_KEYS = ("smtp_password", "slack_token", "slack_signing_secret", "accept_secret")


def load_settings(
    config_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings for a process. Relative paths (var/, inbox/) are anchored at the project root,
    the parent of the config directory, so commands work from any working directory.

    Raises :class:`ConfigErrors` for a bad setting, located in ``leadwerk.yaml`` or naming the
    env var, and for a secret written into ``leadwerk.yaml`` (secrets come only from env).
    """
    global _CURRENT_CONFIG_DIR
    directory = config_dir_from_env(config_dir)
    _CURRENT_CONFIG_DIR = directory
    environ = dict(os.environ if env is None else env)
    doc = _settings_doc(directory)
    issues = [
        doc.issue(
            (key,),
            f"'{key}' is a secret: set LEADWERK_{key.upper()} in the environment, never in a file",
            key=True,
        )
        for key in SECRET_KEYS
        if doc is not None and isinstance(doc.data, dict) and key in doc.data
    ]
    settings = None
    try:
        settings = Settings(config_dir=directory, **overrides)
    except ValidationError as exc:
        issues.extend(_setting_issue(doc, environ, error) for error in exc.errors())
    port = environ.get("PORT")
    if port is not None and "LEADWERK_WEB_PORT" not in environ and not port.isdigit():
        issues.append(ConfigIssue("PORT", 1, 1, f"PORT must be a port number, not {port!r}"))
    if issues or settings is None:
        raise ConfigErrors(issues)
    settings.env = environ
    root = directory.parent
    if settings.sqlite_path is not None and not settings.sqlite_path.is_absolute():
        settings.database_url = f"sqlite:///{root / settings.sqlite_path}"
    if not settings.outbox_dir.is_absolute():
        settings.outbox_dir = root / settings.outbox_dir
    if not settings.inbox_dir.is_absolute():
        settings.inbox_dir = root / settings.inbox_dir
    if port is not None and "LEADWERK_WEB_PORT" not in environ:
        settings.web_port = int(port)
        if "LEADWERK_WEB_HOST" not in environ:
            settings.web_host = "0.0.0.0"  # a platform that sets PORT routes to it from outside
    return settings


def _settings_doc(directory: Path) -> YamlDoc | None:
    path = directory / "leadwerk.yaml"
    if not path.exists():
        return None
    try:
        return load_yaml(path, os.path.relpath(path))
    except YamlSyntaxError as exc:
        raise ConfigErrors([exc.issue]) from None


def _setting_issue(doc: YamlDoc | None, environ: Mapping[str, str], error: Any) -> ConfigIssue:
    key = str(error["loc"][0]) if error["loc"] else ""
    message = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
    env_name = f"LEADWERK_{key.upper()}"
    if env_name in environ:
        return ConfigIssue(env_name, 1, 1, f"{env_name}: {message}")
    if doc is not None and isinstance(doc.data, dict) and key in doc.data:
        if error["type"] == "extra_forbidden":
            hint = difflib.get_close_matches(key, list(Settings.model_fields), n=1)
            message = f"unknown setting '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
        return doc.issue((key,), message, key=error["type"] == "extra_forbidden")
    return ConfigIssue("settings", 1, 1, f"{key}: {message}")

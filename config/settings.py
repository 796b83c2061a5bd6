"""Process settings: pydantic-settings with the ``LEADWERK_`` prefix.

Sources, strongest first: init arguments (the CLI's ``--config``), environment variables,
``<config_dir>/leadwerk.yaml``, defaults. Only this package reads the environment: settings
here, and the secrets that YAML files name (``secret_env: X``) through :func:`env_secret` at
the moment they are used, so no object holds a copy of the environment. Secrets are
:class:`~pydantic.SecretStr`: a repr, a log line or a JSON dump shows ``**********``.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_serializer, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from config.errors import ConfigErrors, ConfigIssue
from config.types import Duration
from config.yamlload import YamlDoc, YamlSyntaxError, load_yaml

ENV_PREFIX = "LEADWERK_"


def config_dir_from_env(
    explicit: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The config directory: ``--config``, else ``LEADWERK_CONFIG_DIR``, else ``./config``."""
    environ = os.environ if environ is None else environ
    raw = explicit or environ.get("LEADWERK_CONFIG_DIR") or "config"
    return Path(raw).expanduser().resolve()


def env_secret(name: str) -> str | None:
    """The secret in environment variable ``name`` (named in YAML: ``secret_env: X``,
    ``token_env: X``), read when it is used and kept nowhere; None when unset or empty."""
    return os.environ.get(name) or None


class EnvSecrets(Mapping[str, str]):
    """:func:`env_secret` as the read-only mapping that connectors take their secrets from."""

    def __getitem__(self, name: str) -> str:
        value = env_secret(name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


def mask_url(url: str) -> str:
    """``postgresql://app:s3cret@db/leads`` as ``postgresql://app:***@db/leads``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
    except ValueError:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.netloc.rsplit("@", 1)[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _url_parts(url: str, schemes: tuple[str, ...], what: str) -> tuple[str, str | None]:
    """The scheme and host of ``url``, or a ValueError saying what is expected."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ValueError(
            f"the port of {mask_url(url)!r} is not a number from 1 to 65535; expected {what}"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in schemes and scheme.split("+", 1)[0] not in schemes:
        raise ValueError(f"{mask_url(url)!r} is not a URL Leadwerk can use; expected {what}")
    if port == 0:
        raise ValueError(f"the port of {mask_url(url)!r} is 0; expected {what}")
    return scheme, parts.hostname


URL_KEYS = ("database_url", "redis_url", "broker_url", "smtp_url")


class Settings(BaseSettings):
    """Every key has its env var: ``database_url`` is ``LEADWERK_DATABASE_URL`` and so on.

    Built by :func:`load_settings` from the sources of :func:`settings_sources`; the class
    itself reads nothing but its arguments."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    config_dir: Path = Path("config")
    database_url: str = "sqlite:///var/leadwerk.db"
    redis_url: str | None = None
    redis_namespace: str = "default"
    # dramatiq's queues on RabbitMQ (amqp://) instead of on Redis; Redis still holds the
    # clock's lease, so LEADWERK_REDIS_URL stays required. One deployment per virtual host.
    broker_url: str | None = None
    timezone: str = "Europe/Berlin"
    public_url: str = "http://127.0.0.1:8000"
    smtp_url: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = "Leadwerk <leads@localhost>"
    slack_token: SecretStr | None = None
    slack_base_url: str = "https://slack.com/api"
    # Checks that a click on a Slack button (POST /slack/actions) really comes from Slack.
    slack_signing_secret: SecretStr | None = None
    outbox_dir: Path = Path("var/outbox")
    inbox_dir: Path = Path("inbox")
    web_host: str = "127.0.0.1"
    web_port: int = 8000
    accept_secret: SecretStr | None = None
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
    # A person told of this many new leads within digest_window gets the further ones of the
    # window in one digest message at its end (0: every lead in a message of its own).
    digest_after: int = Field(default=0, ge=0)
    digest_window: Duration = timedelta(seconds=60)
    # Opens /admin/ and /metrics (a bearer token, or the dashboard's login form); unset,
    # /admin/ answers 404 and /metrics answers only on loopback.
    admin_token: SecretStr | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: str) -> str:
        expected = "sqlite:///PATH or postgresql://USER@HOST:5432/DATABASE"
        scheme, host = _url_parts(url, ("sqlite", "postgresql", "postgres"), expected)
        if scheme.startswith("postgres") and not host:
            raise ValueError(f"{mask_url(url)!r} names no host; expected {expected}")
        if scheme.startswith("postgres") and not urlsplit(url).path.strip("/"):
            raise ValueError(f"{mask_url(url)!r} names no database; expected {expected}")
        if scheme.startswith("sqlite") and not urlsplit(url).path:
            raise ValueError(f"{url!r} names no file; expected {expected}")
        return url

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        expected = "redis://HOST:6379/0 or rediss://HOST:6380/0"
        scheme, host = _url_parts(url, ("redis", "rediss", "unix"), expected)
        if scheme != "unix" and not host:
            raise ValueError(f"{mask_url(url)!r} names no host; expected {expected}")
        return url

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        expected = "amqp://USER:PASSWORD@HOST:5672/VHOST or amqps://...:5671/VHOST"
        _scheme, host = _url_parts(url, ("amqp", "amqps"), expected)
        if not host:
            raise ValueError(f"{mask_url(url)!r} names no host; expected {expected}")
        return url

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, url: str | None) -> str | None:
        from connectors.notify.email import smtp_target

        if url is not None:
            smtp_target(url)
        return url

    @field_serializer(*URL_KEYS)
    def _masked(self, url: str | None) -> str | None:
        return None if url is None else mask_url(url)

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, mask_url(value) if name in URL_KEYS and value else value

    @property
    def sqlite_path(self) -> Path | None:
        """The file behind a ``sqlite:///`` URL, so its folder can be made."""
        prefix = "sqlite:///"
        if self.database_url.startswith(prefix) and self.database_url != "sqlite:///:memory:":
            return Path(self.database_url[len(prefix) :])
        return None


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping, so a caller (a test, the
    CLI) decides which environment the settings come from."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


def settings_sources(
    config_dir: Path, environ: Mapping[str, str]
) -> tuple[PydanticBaseSettingsSource, ...]:
    """The sources of :class:`Settings` below the init arguments, strongest first."""
    return (
        _EnvSource(Settings, environ),
        YamlConfigSettingsSource(Settings, yaml_file=config_dir / "leadwerk.yaml"),
    )


SECRET_KEYS = tuple(
    name
    for name, info in Settings.model_fields.items()
    if SecretStr in (info.annotation, *get_args(info.annotation))
)


def unknown_env_vars(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per ``LEADWERK_*`` variable that no setting reads, with the near name.
    Not an error: other tools may share the prefix."""
    environ = os.environ if environ is None else environ
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    warnings = []
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in known:
            continue
        hint = difflib.get_close_matches(
            name.upper().removeprefix(ENV_PREFIX).lower(),
            list(Settings.model_fields),
            n=1,
            cutoff=0.75,
        )
        warnings.append(
            f"{name} is not a Leadwerk setting and is ignored"
            + (f"; did you mean {ENV_PREFIX}{hint[0].upper()}?" if hint else "")
        )
    return warnings


def load_settings(
    config_dir: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Settings for a process, from ``env`` (default: the process environment), the
    config directory's ``leadwerk.yaml`` and ``overrides``. Relative paths (var/, inbox/) are
    anchored at the project root, the parent of the config directory, so commands work from
    any working directory.

    Raises :class:`ConfigErrors` for a bad setting, located in ``leadwerk.yaml`` or naming the
    env var, and for a secret written into ``leadwerk.yaml`` (secrets come only from env).
    """
    environ: Mapping[str, str] = os.environ if env is None else env
    directory = config_dir_from_env(config_dir, environ)
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
    values: dict[str, Any] = {}
    for source in reversed(settings_sources(directory, environ)):
        values.update(source())
    values.update(overrides, config_dir=directory)
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        issues.extend(_setting_issue(doc, environ, error) for error in exc.errors())
    if settings is not None and _smtp_user_without_password(settings):
        message = "names a user but LEADWERK_SMTP_PASSWORD is not set; set it or remove the user"
        issues.append(_setting_issue(doc, environ, {"loc": ("smtp_url",), "msg": message}))
    if settings is not None and settings.broker_url and not settings.redis_url:
        message = "needs LEADWERK_REDIS_URL too: Redis holds the clock's lease"
        issues.append(_setting_issue(doc, environ, {"loc": ("broker_url",), "msg": message}))
    port = environ.get("PORT")
    if port is not None and "LEADWERK_WEB_PORT" not in environ and not port.isdigit():
        issues.append(ConfigIssue("PORT", 0, 0, f"a port number, not {port!r}"))
    if issues or settings is None:
        raise ConfigErrors(issues)
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


def _smtp_user_without_password(settings: Settings) -> bool:
    from connectors.notify.email import smtp_target

    if settings.smtp_url is None or settings.smtp_password is not None:
        return False
    return smtp_target(settings.smtp_url)[3] is not None


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
    kind = error.get("type")
    message = "unknown setting" if kind == "extra_forbidden" else error["msg"]
    message = message.removeprefix("Value error, ")
    env_name = f"{ENV_PREFIX}{key.upper()}"
    if env_name in environ:
        return ConfigIssue(env_name, 0, 0, message)
    if doc is not None and isinstance(doc.data, dict) and key in doc.data:
        if kind == "extra_forbidden":
            hint = difflib.get_close_matches(key, list(Settings.model_fields), n=1)
            message = f"unknown setting '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
        return doc.issue((key,), message, key=kind == "extra_forbidden")
    return ConfigIssue("settings", 0, 0, f"{key}: {message}")

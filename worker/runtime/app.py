"""The running application's parts, built once per process from the settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from threading import Lock
from typing import Any

from config.loader import Config, load_config
from config.settings import Settings
from connectors.crm import build_crm
from connectors.crm.base import IN_LINE_RETRY, CrmConnector
from connectors.notify.base import Notifier
from connectors.notify.email import SmtpNotifier
from connectors.notify.outbox import FileOutboxNotifier
from connectors.notify.slack import SlackNotifier
from worker.store.db import Store


@dataclass
class App:
    settings: Settings
    config: Config
    store: Store
    notifiers: dict[str, Notifier] = field(default_factory=dict)
    crm: CrmConnector | None = None  # crm.yaml's CRM; None: the store is the only record

    @property
    def outbox_mode(self) -> bool:
        """No SMTP configured: e-mails (and Slack messages) go to files in ``var/outbox/``."""
        return self.settings.smtp_url is None

    def notifier(self, channel: str) -> Notifier:
        return self.notifiers[channel]

    def close(self) -> None:
        for notifier in self.notifiers.values():
            notifier.close()
        if self.crm is not None:
            self.crm.close()
        self.store.close()


def build_notifiers(settings: Settings) -> dict[str, Notifier]:
    """E-mail through SMTP when ``smtp_url`` is set; Slack when a bot token is set.
    Without them, the file outbox stands in so a first run shows what reps would receive."""
    outbox = FileOutboxNotifier(Path(settings.outbox_dir), settings.mail_from)
    notifiers: dict[str, Notifier] = {"email": outbox, "slack": outbox}
    if settings.smtp_url:
        notifiers["email"] = SmtpNotifier(
            settings.smtp_url,
            settings.mail_from,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        )
        del notifiers["slack"]  # mail goes out for real: Slack only with a bot token
    if settings.slack_token:
        notifiers["slack"] = SlackNotifier(
            settings.slack_token.get_secret_value(), base_url=settings.slack_base_url
        )
    return notifiers


_lock = Lock()
_current: App | None = None


def init_app(settings: Settings, **parts: Any) -> App:
    """Build the process's App (config, store, notifiers) and make it current."""
    global _current
    config = parts.pop("config", None) or load_config(settings)
    store = parts.pop("store", None) or Store(settings.database_url)
    notifiers = parts.pop("notifiers", None) or build_notifiers(settings)
    crm = build_crm(config.crm, os.environ, retry=IN_LINE_RETRY) if config.crm else None
    app = App(settings=settings, config=config, store=store, notifiers=notifiers, crm=crm)
    with _lock:
        _current = app
    return app


def get_app() -> App:
    if _current is None:
        raise RuntimeError(
            "Leadwerk is not initialised: call worker.runtime.app.init_app(settings) first"
        )
    return _current


def set_config(config: Config) -> None:
    """Swap the rule set atomically (hot reload); in-flight work finishes on the old one."""
    app = get_app()
    app.config = config

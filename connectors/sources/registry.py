"""Source kinds: the ``kind:`` of an entry in ``config/sources.yaml`` → its config model."""

from __future__ import annotations

from connectors.sources.base import SourceConfig
from connectors.sources.http_json import HttpJsonConfig
from connectors.sources.tradefair import TradefairFilesConfig
from connectors.sources.typeform import TypeformConfig
from connectors.sources.webhook import WebhookConfig

SOURCE_KINDS: dict[str, type[SourceConfig]] = {
    "http_json": HttpJsonConfig,
    "typeform": TypeformConfig,
    "webhook": WebhookConfig,
    "tradefair_files": TradefairFilesConfig,
}

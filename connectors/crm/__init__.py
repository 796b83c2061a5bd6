"""The CRM seam (:mod:`connectors.crm.base`) and its kinds, by the ``kind`` of crm.yaml."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from config.models import CrmSettings
from connectors.crm.base import CrmConnector
from connectors.crm.bottlecrm import BottleCrm
from connectors.crm.hubspot import HubSpotCrm
from connectors.crm.salesforce import SalesforceCrm
from connectors.crm.webhook import WebhookCrm

CRM_KINDS: dict[str, type[CrmConnector]] = {
    kind.kind: kind for kind in (HubSpotCrm, SalesforceCrm, BottleCrm, WebhookCrm)
}

# The environment variables each kind reads, by their key in crm.yaml.
REQUIRED_ENV: dict[str, tuple[str, ...]] = {
    "hubspot": ("token_env",),
    "bottlecrm": ("token_env",),
    "webhook": ("token_env",),
    "salesforce": ("client_id_env", "client_secret_env"),
}


def build_crm(
    config: CrmSettings,
    env: Mapping[str, str],
    client: httpx.Client | None = None,
    retry: dict[str, Any] | None = None,
) -> CrmConnector:
    """The connector of the configured kind; builds without I/O."""
    return CRM_KINDS[config.kind](config, env, client=client, retry=retry)

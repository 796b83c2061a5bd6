"""Pydantic models of the YAML files in ``config/``. Unknown keys are errors everywhere.

Expressions stay text here; ``config.loader`` compiles them against the field schema.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from config.types import Count, Duration, Number, NurtureDelay, Percent


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- scoring.yaml -------------------------------------------------------------------------


class FitRule(Strict):
    name: str
    when: str
    points: Number


class EngagementRule(Strict):
    name: str
    when: str
    points: Number
    cap: Number | None = None


class DisqualifyRule(Strict):
    name: str
    when: str


class Mql(Strict):
    threshold: Number
    requires: dict[Literal["fit", "engagement", "score"], Number] = Field(default_factory=dict)


class Decay(Strict):
    engagement_half_life: Duration

    @field_validator("engagement_half_life")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("a half-life must be longer than zero (leave decay: out for none)")
        return value


class ScoringFile(Strict):
    version: int | str
    mql: Mql
    decay: Decay | None = None
    fit: list[FitRule] = Field(default_factory=list)
    engagement: list[EngagementRule] = Field(default_factory=list)
    disqualify: list[DisqualifyRule] = Field(default_factory=list)
    lists: dict[str, list[str]] = Field(default_factory=dict)


# --- fields.yaml --------------------------------------------------------------------------

FieldTypeName = Literal["string", "number", "bool", "date", "datetime", "list"]


class FieldsFile(Strict):
    fields: dict[str, FieldTypeName] = Field(default_factory=dict)


# --- team.yaml ----------------------------------------------------------------------------


class Team(Strict):
    manager: str | None = None
    members: list[str]


class Capacity(Strict):
    per_day: Count | None = Field(default=None, ge=0)


class Away(Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    start: date = Field(alias="from")
    end: date = Field(alias="to")


class Rep(Strict):
    name: str
    email: str
    slack: str | None = None
    notify: Literal["email", "slack"] = "email"
    timezone: str | None = None
    hours: dict[str, str] | None = None
    holidays: str | None = None
    capacity: Capacity = Field(default_factory=Capacity)
    weight: Number = Field(default=1.0, gt=0)
    away: list[Away] = Field(default_factory=list)


class TeamFile(Strict):
    teams: dict[str, Team] = Field(default_factory=dict)
    reps: dict[str, Rep] = Field(default_factory=dict)


# --- routing.yaml -------------------------------------------------------------------------


class RoutingRule(Strict):
    name: str
    when: str | None = None
    assign: Literal["account_owner"] | None = None
    team: str | None = None
    strategy: Literal["round_robin", "weighted", "least_loaded"] = "round_robin"


class Fallback(Strict):
    notify: list[str] = Field(default_factory=list)


class RoutingFile(Strict):
    rules: list[RoutingRule] = Field(default_factory=list)
    fallback: Fallback = Field(default_factory=Fallback)


# --- sla.yaml -----------------------------------------------------------------------------


class SlaPolicy(Strict):
    name: str
    when: str | None = None
    respond_within: Duration
    clock: Literal["business_hours", "calendar"] = "business_hours"
    remind_at: list[Percent] = Field(default_factory=list)
    on_breach: list[Literal["escalate", "reassign"]] = Field(default_factory=list)


class SlaFile(Strict):
    policies: list[SlaPolicy] = Field(default_factory=list)


# --- nurture.yaml -------------------------------------------------------------------------


class SendWindow(Strict):
    days: str = "mon-fri"
    hours: str = "09:00-17:00"
    timezone: str = "contact"


class Limits(Strict):
    per_domain_per_day: Count | None = None
    per_minute: Count | None = None


class Step(Strict):
    after: NurtureDelay
    template: str | None = None
    task: str | None = None


class Sequence(Strict):
    enroll_when: str
    channel: Literal["email", "phone"]
    steps: list[Step]
    exit_when: str | None = None


class NurtureFile(Strict):
    send_window: SendWindow = Field(default_factory=SendWindow)
    consent_field: str | None = None  # e-mail steps only to contacts whose field is true
    limits: Limits = Field(default_factory=Limits)
    sequences: dict[str, Sequence] = Field(default_factory=dict)


# --- hygiene.yaml -------------------------------------------------------------------------


class Bounces(Strict):
    soft_to_hard_after: Count = Field(default=3, ge=1)


class Stale(Strict):
    no_engagement_for: Duration
    expected_decay_per_month: Percent = 0.021


class ListHealth(Strict):
    warn_bounce_rate: Percent = 0.02
    suspend_bounce_rate: Percent = 0.05
    window: Duration = timedelta(days=30)
    touch_every: Duration = timedelta(days=60)
    check_every: Duration | None = None
    owner: str | None = None  # a rep of team.yaml, told on warn and suspend


class MaildirBounces(Strict):
    kind: Literal["maildir"]
    path: str


class ImapBounces(Strict):
    kind: Literal["imap"]
    host: str
    port: Count = 993
    ssl: bool = True
    folder: str = "INBOX"
    user_env: str
    password_env: str


BounceProvider = Literal["sendgrid", "mailgun", "postmark", "ses"]


class WebhookBounces(Strict):
    kind: Literal["webhook"]
    provider: BounceProvider
    # SendGrid: the verification key (base64 public key); Mailgun: the HTTP webhook signing
    # key; Postmark: the password of the webhook's basic auth (or the X-Leadwerk-Token
    # header's value). SES signs with Amazon's certificate and needs no secret.
    secret_env: str | None = None
    topic_arn: str | None = None  # SES: only notifications of this SNS topic are taken
    # SES: the host the SNS signing certificate must come from (always over https).
    signing_cert_host: str = r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?"


BounceSource = Annotated[MaildirBounces | ImapBounces | WebhookBounces, Field(discriminator="kind")]


class HygieneFile(Strict):
    bounces: Bounces = Field(default_factory=Bounces)
    stale: Stale | None = None
    lists: ListHealth = Field(default_factory=ListHealth)
    bounce_sources: list[BounceSource] = Field(default_factory=list)


# --- alerts.yaml --------------------------------------------------------------------------


class Alert(Strict):
    name: str
    when: str
    # who hears about this alert; the file's `notify:` when not given
    notify: list[str] | None = None


class AlertsFile(Strict):
    notify: list[str] = Field(default_factory=list)
    alerts: list[Alert] = Field(default_factory=list)


# --- tests/*.yaml -------------------------------------------------------------------------


class ExpectedRoute(Strict):
    rule: str | None = None
    team: str | None = None
    rep: str | None = None


class Expectation(Strict):
    mql: bool | None = None
    score: Number | None = None
    fit: Number | None = None
    engagement: Number | None = None
    disqualified: str | bool | None = None
    route: ExpectedRoute | None = None
    sla: str | None = None


class RuleTestCase(Strict):
    name: str
    contact: dict[str, Any]
    events: list[dict[str, Any]] = Field(default_factory=list)
    account: dict[str, Any] | None = None
    now: datetime | None = None
    expect: Expectation


# --- crm.yaml -----------------------------------------------------------------------------


class CrmSettings(Strict):
    """The system of record. Secrets are never here: the ``*_env`` keys name the environment
    variables that hold them."""

    kind: Literal["hubspot", "salesforce", "bottlecrm", "webhook"]
    base_url: str
    token_env: str | None = None  # hubspot, bottlecrm: the token; webhook: the signing secret
    client_id_env: str | None = None  # salesforce: OAuth 2.0 client credentials
    client_secret_env: str | None = None
    owners: Literal["by_email"] | dict[str, str] = "by_email"
    map: dict[str, str] = Field(default_factory=dict)
    stages: dict[str, str] = Field(default_factory=dict)  # Leadwerk stage -> the CRM's value
    first_activity: Literal["poll", "off"] = "off"
    poll_every: Duration = timedelta(minutes=1)
    account_owner_ttl: Duration = timedelta(hours=1)
    external_id_field: str = "Leadwerk_Email__c"  # salesforce: the Lead upsert key
    batch_size: Count = Field(default=50, le=200)
    max_attempts: Count = 12


class CrmFile(Strict):
    crm: CrmSettings

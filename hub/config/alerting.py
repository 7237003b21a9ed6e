"""The ``[alerting]`` section of the hub's TOML: rules, notifiers, silences.

Every field has a default, so ``AlertingConfig()`` is a working setup: one ``log`` notifier and one
rule that sends every warning or critical alert to it. Example::

    [alerting]
    late_after_s = 300
    repeat_interval_s = 14400
    offline_for_s = 60          # a device must stay offline this long before it pages

    [alerting.notifiers.ops-hook]
    type = "webhook"
    url = "https://ops.example/hooks/thermopipe"
    timeout_s = 5

    [alerting.notifiers.oncall]
    type = "email"
    host = "smtp.example"
    port = 587
    starttls = true
    username = "thermopipe"
    password = "env:SMTP_PASSWORD"      # or "file:/run/credentials/smtp"; never inline
    from = "hub@example"
    to = ["oncall@example"]

    [[alerting.rules]]
    name = "freezers"
    match = { site = "shop-*", sensor = "freezer*", severity_at_least = "warning" }
    notifiers = ["ops-hook", "oncall", "log"]

    [[alerting.silences]]
    match = { device = "pi-03" }
    until = 2026-12-01T08:00:00Z
    comment = "compressor replaced, expect noise"

Match fields are shell globs (``fnmatch``); an absent field matches anything. ``kind`` is the
kind of the event that caused the alert: ``state_change``, ``fault``, ``rate_alarm`` or ``status``
(a device that went offline).

Device offline: a will (the broker's "connection lost") makes the offline condition pending for
``offline_for_s``. A birth of a newer session received within that time cancels it silently
(counted as ``offline_flaps_suppressed``, logged at info); otherwise it fires once the time has
passed, and the next birth resolves it. A resolved notification goes only where a firing went.
"""

from __future__ import annotations

from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from hub.config.base import Section
from program_support.pydantic_loading import resolve_secret
from schemas.ids import check_identifier
from schemas.models import Severity

SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
GroupField = Literal["site", "device", "sensor", "rule", "condition"]


class Match(Section):
    """Which alerts a rule or silence applies to; globs allowed, absent means any."""

    site: str | None = None
    device: str | None = None
    sensor: str | None = None
    kind: str | None = None
    severity_at_least: Severity | None = None

    def matches(self, *, site: str, device: str, sensor: str | None, kind: str,
                severity: str) -> bool:
        if self.site is not None and not fnmatchcase(site, self.site):
            return False
        if self.device is not None and not fnmatchcase(device, self.device):
            return False
        # a device-level alert (offline) has no sensor: only a sensor pattern of "*" matches it
        if self.sensor is not None and not fnmatchcase(sensor or "", self.sensor) and not (
                sensor is None and self.sensor == "*"):
            return False
        if self.kind is not None and not fnmatchcase(kind, self.kind):
            return False
        return not (self.severity_at_least is not None
                    and SEVERITY_RANK[severity] < SEVERITY_RANK[self.severity_at_least])


class Rule(Section):
    name: str
    match: Match = Match()
    notifiers: list[str] = Field(min_length=1)
    #: a still-firing group is notified again after this long (None: the section's default)
    repeat_interval_s: float | None = Field(None, gt=0)
    #: the fields that make one alert group; the rule's name is always part of the key
    group_by: list[GroupField] = ["site", "device", "sensor", "rule"]

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_identifier(value, "rule name")


class _Notifier(Section):
    #: deliver alerts whose cause is late (replayed or old)? Log and MQTT: yes; pagers: no.
    deliver_late: bool = False


class WebhookNotifier(_Notifier):
    """JSON POST of the alert with ``Idempotency-Key: <alert_id>``; 2xx counts as delivered."""

    type: Literal["webhook"]
    url: str
    headers: dict[str, str] = {}
    timeout_s: float = Field(5.0, gt=0, le=120)
    max_retries: int = Field(3, ge=0, le=20)
    retry_backoff_s: float = Field(0.5, ge=0, le=60)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class EmailNotifier(_Notifier):
    """One plain-text e-mail per alert over SMTP (STARTTLS and AUTH when configured)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    type: Literal["email"]
    host: str
    port: int = Field(587, ge=1, le=65535)
    starttls: bool = True
    #: CA bundle to verify the server's certificate (None: the system's)
    ca_file: Path | None = None
    username: str | None = None
    password: SecretStr | None = None  # "env:NAME" or "file:/path"
    from_addr: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    timeout_s: float = Field(10.0, gt=0, le=120)
    subject_prefix: str = "[thermopipe]"

    @field_validator("password", mode="before")
    @classmethod
    def _password(cls, value: Any) -> Any:
        if isinstance(value, str):
            return resolve_secret(value)
        return value

    @model_validator(mode="after")
    def _auth_pair(self) -> EmailNotifier:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together")
        return self


class MqttNotifier(_Notifier):
    """Publishes the alert JSON on ``{root}/_hub/alerts/{site}/{device}`` (QoS 1)."""

    type: Literal["mqtt"]
    deliver_late: bool = True


class LogNotifier(_Notifier):
    """Writes the alert to the hub's structured log."""

    type: Literal["log"]
    deliver_late: bool = True


NotifierConfig = Annotated[
    WebhookNotifier | EmailNotifier | MqttNotifier | LogNotifier, Field(discriminator="type")]


class Silence(Section):
    match: Match = Match()
    until: datetime
    comment: str = ""

    @field_validator("until")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("must carry a time zone, e.g. 2026-12-01T08:00:00Z")
        return value


def _default_notifiers() -> dict[str, NotifierConfig]:
    return {"log": LogNotifier(type="log")}


def _default_rules() -> list[Rule]:
    return [Rule(name="default", match=Match(severity_at_least="warning"), notifiers=["log"])]


class AlertingConfig(Section):
    enabled: bool = True
    rules: list[Rule] = Field(default_factory=_default_rules)
    notifiers: dict[str, NotifierConfig] = Field(default_factory=_default_notifiers)
    silences: list[Silence] = []
    #: an event older than this when the hub received it is late (also: replayed by the agent)
    late_after_s: float = Field(300.0, gt=0)
    #: default repeat interval of a still-firing group (Alertmanager's default is 4 h)
    repeat_interval_s: float = Field(4 * 3600.0, gt=0)
    #: severity of the alert raised when a device's will says it went offline
    offline_severity: Severity = "critical"
    #: a device's will fires the offline alert only if no birth of a newer session arrives within
    #: this many seconds (the ``for:`` of Alertmanager and Home Assistant): a broker restart, which
    #: publishes every client's will while the agents reconnect at once, pages nobody. Runs from
    #: when the hub received the will; 0 fires at once.
    offline_for_s: float = Field(60.0, ge=0, le=86400)
    #: durable alert state and outbox; None: the hub passes ``<data_dir>/alerting``
    state_dir: Path | None = None
    #: how often to check repeat intervals and expired silences (a pending offline alert is
    #: checked at its own deadline, whatever this is)
    tick_interval_s: float = Field(10.0, gt=0)
    #: an undeliverable notification is retried with backoff, then given up (counted, logged)
    give_up_after_s: float = Field(24 * 3600.0, gt=0)
    retry_max_backoff_s: float = Field(300.0, gt=0)

    @field_validator("notifiers")
    @classmethod
    def _names(cls, value: dict[str, NotifierConfig]) -> dict[str, NotifierConfig]:
        for name in value:
            check_identifier(name, "notifier name")
        return value

    @model_validator(mode="after")
    def _references(self) -> AlertingConfig:
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                raise ValueError(f"rules[{i}]: duplicate rule name {rule.name!r}")
            seen.add(rule.name)
            for name in rule.notifiers:
                if name not in self.notifiers:
                    raise ValueError(f"rules[{i}] ({rule.name}): unknown notifier {name!r}; "
                                     f"configured: {sorted(self.notifiers)}")
        return self

    def repeat_interval_for(self, rule: Rule) -> float:
        return rule.repeat_interval_s if rule.repeat_interval_s is not None \
            else self.repeat_interval_s

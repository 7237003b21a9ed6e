"""The ``[homeassistant]`` section of the hub's TOML."""

from __future__ import annotations

from pydantic import Field, field_validator

from hub.config.base import Section
from schemas.topics import check_levels


class HomeAssistantConfig(Section):
    #: off by default: nothing is published under the discovery prefix unless asked for
    enabled: bool = False
    #: Home Assistant's discovery prefix (its MQTT integration's setting; "homeassistant")
    discovery_prefix: str = "homeassistant"
    #: seconds after which Home Assistant shows a temperature as unavailable when no new state
    #: came (None: never; set it above the agents' report interval if you use one)
    expire_after_s: int | None = Field(None, ge=1)
    #: how long one retained publish may wait for the broker's acknowledgement
    publish_timeout_s: float = Field(10.0, gt=0, le=300)
    #: where your users get help (a wiki, the repository): Home Assistant shows it as the
    #: discovery ``origin``'s support URL; none when unset
    support_url: str | None = Field(None, max_length=512, pattern=r"^https?://\S+$")

    @field_validator("discovery_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_levels(value, "discovery prefix level")

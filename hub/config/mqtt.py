"""The ``[mqtt]`` section of the hub's TOML: the connection keys shared with the agent
(:class:`program_support.mqtt_settings.MqttConnection`) and the hub's own."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from program_support.mqtt_settings import MqttConnection
from schemas.codec import DEFAULT_MAX_PAYLOAD
from schemas.ids import check_identifier


class MqttConfig(MqttConnection):
    """``[mqtt]`` of the hub: the shared connection keys
    (:class:`program_support.mqtt_settings.MqttConnection`) and the hub's own."""

    host: str = "127.0.0.1"
    #: default: "thermopipe-hub-{hub_id}-{random}", the random part made once and kept in
    #: data_dir/client_id (HubConfig.client_id), so no one can guess it from the config
    client_id: str | None = None
    shared_group: str | None = None
    #: one broker account per MQTT connection of the hub: worker i of ``hub run --workers N``
    #: logs in as "{username}-w{i}", the Home Assistant connection as "{username}-ha" (a worker's
    #: as "{username}-w{i}-ha"), all with the one password. Needed on a broker that binds the
    #: client id to the account (deploy's Mosquitto: use_username_as_clientid), where two
    #: connections of one account would take over each other's session.
    account_per_connection: bool = False
    max_payload_bytes: int = Field(DEFAULT_MAX_PAYLOAD, ge=256)
    # Unacknowledged messages the broker may have in flight to us: bounds the in-memory queue.
    receive_maximum: int = Field(2000, ge=10, le=65535)

    @field_validator("shared_group")
    @classmethod
    def _group(cls, value: str | None) -> str | None:
        return None if value is None else check_identifier(value, "shared group")

    @model_validator(mode="after")
    def _shared_needs_v5(self) -> MqttConfig:
        if self.shared_group and self.protocol != "5":
            raise ValueError("shared_group needs protocol = \"5\" (shared subscriptions are "
                             "MQTT 5)")
        return self

    @model_validator(mode="after")
    def _accounts_need_username(self) -> MqttConfig:
        if self.account_per_connection and not self.username:
            raise ValueError("account_per_connection needs a username (the accounts are named "
                             "after it)")
        return self

    def account(self, connection: str) -> MqttConfig:
        """The settings of the hub's connection ``connection`` ("ha", "w0"...): its own
        username ``{username}-{connection}`` when :attr:`account_per_connection`, else these."""
        if not self.account_per_connection or not self.username:
            return self
        return self.model_copy(update={"username": f"{self.username}-{connection}"})

"""Home Assistant MQTT discovery, published by the hub (opt-in: ``[homeassistant] enabled``).

``discovery.Discovery`` (pure: envelopes in, retained messages out), ``consumer.
HomeAssistantConsumer`` (the hub consumer with its own MQTT connection); the ``[homeassistant]``
section is ``hub.config.homeassistant.HomeAssistantConfig``. See ``README.md`` for why the hub, not
the agent, publishes it. Nothing is imported here, so reading a config loads no MQTT client.
"""

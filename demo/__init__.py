"""The whole pipeline on one machine (``scripts/demo``, ``thermopipe-demo``): simulated firmware,
two edge agents, an MQTT broker, the hub with its store, alerts and live page.

It runs every program as its own process, as a real site does; it is neither part of the agent
nor of the hub, and only the ``demo`` extra installs what it needs (amqtt for the embedded
broker). ``cli.py`` supervises the programs; ``embedded_broker.py`` is amqtt in-process.
"""

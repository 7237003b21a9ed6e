"""Stopping a paho client that runs its own network thread (``loop_start``).

paho's ``disconnect()`` then ``loop_stop()`` races: the network thread ends on the disconnect and
sets ``client._thread`` to None between ``loop_stop``'s check and its ``join``, which then raises
``AttributeError: 'NoneType' object has no attribute 'join'`` (eclipse-paho/paho.mqtt.python
issue 872, open; seen in a teardown on a loaded machine). Stopping the thread first and then
disconnecting has no race: with no network thread, ``disconnect()`` writes its packet itself.
"""

from __future__ import annotations

from typing import Any


def stop_client(client: Any) -> None:
    """Stop ``client``'s network thread, then send DISCONNECT (no race, unlike the reverse)."""
    client.loop_stop()
    client.disconnect()

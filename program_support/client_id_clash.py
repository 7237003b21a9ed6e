"""Two clients with one MQTT client id (a cloned SD card, a copied config) throw each other off in
a loop. MQTT 5 brokers may say so ("Session taken over", reason 142); Mosquitto 2.0 just closes
the older connection. So both programs judge it the same way: a connection that keeps dropping
right after it was accepted, ``count`` times in a row, is reported as a likely clash, and the
reconnect backoff keeps growing instead of restarting at its minimum. Pure: time is an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

#: a connection dropped sooner than this after it was accepted counts as a flap
FLAP_WINDOW_S = 10.0
#: flaps in a row that make a likely clash
FLAP_COUNT = 3


@dataclass
class ClashDetector:
    """Counts connections that dropped soon after they were accepted (see the module)."""

    window_s: float = FLAP_WINDOW_S
    count: int = FLAP_COUNT
    flaps: int = 0  # connections in a row that dropped within window_s of being accepted

    def dropped(self, lasted_s: float) -> int:
        """A connection ended after ``lasted_s`` seconds up; returns the flaps in a row now."""
        self.flaps = self.flaps + 1 if lasted_s < self.window_s else 0
        return self.flaps

    @property
    def clash(self) -> bool:
        return self.flaps >= self.count

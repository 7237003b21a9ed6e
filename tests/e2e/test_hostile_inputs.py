"""Property-based: a real hub under hostile MQTT input, restarts and InfluxDB outages, while a
control device keeps sending valid events (issue 21, item 9).

Real processes only: a private Mosquitto, a private InfluxDB 1.x and ``hub run`` as a subprocess
(tests/e2e/hostile.py). A control device (plain paho, the project's own encoder, JSON and Avro in
turn, distinct event ids, increasing seqs, on its own topics) sends one valid event every 0.25 s
for the whole run. Hypothesis draws each example as a few steps, each either a burst of hostile
messages or an operation:

- topics under the hub's topic root: device topics of the control device itself, of other sites
  and devices (valid identifiers, very long levels, unicode, ``_hub`` and other reserved levels),
  on the event, summary, status and receipt levels, and the hubs' own ``_hub/...`` topics;
- payloads: valid events of invented identities; valid-looking JSON events with fields replaced
  by extreme integers (2**64, -2**63-1, ...), NaN and +-Infinity (as Python's json writes them),
  huge strings and wrong types, or removed; the issue's ``{"kind": ..., "seq": 2**64}``; deep
  JSON nesting; invalid UTF-8; random bytes; random Avro (``C3 01`` with random and with real
  fingerprints, random bodies) and current-schema Avro with extreme values (a 2**64 long, NaN,
  huge strings); fake receipts with extreme ranges;
- operations: restart the hub with SIGTERM or SIGKILL; stop InfluxDB (started again at the end
  of the example, so hostile messages and hub restarts happen during the outage).

At the end of every example (``HostileRig.check``): control events made after the example's
steps are required too; every control event the broker acknowledged is stored in InfluxDB exactly
once; /healthz is truthful (control events not stored while /healthz says ``ok: true`` is its own
failure message: a dead component hidden); the hub's RSS stays under ``RSS_LIMIT_MB``. A hub that
exits on its own is started again, as systemd would, and counted. A failure is sticky: the
processes are not reset between examples, so later examples (and Hypothesis's replay of the
failing one) fail with the first failure's message rather than with its consequences.

Examples: ``THERMOPIPE_HOSTILE_EXAMPLES`` sets how many (default 20: about 35 s on 2 loaded
cores when every example passes, a minute when one fails; 80 took 110 s); a longer run, e.g.
``THERMOPIPE_HOSTILE_EXAMPLES=200 pytest tests/e2e/test_hostile_inputs.py``, scales the test's
timeout with it. ``derandomize=True`` and no
example database: the same examples on every run (CI failures reproduce); set
``THERMOPIPE_HOSTILE_SEED=N`` for a different, still reproducible, sequence. No shrinking: each
example costs real seconds and the processes carry state from one example to the next. The run's
figures (examples, hostile messages, hub restarts, InfluxDB stops, control events made and stored,
the hub's largest RSS) are printed at the end, pass or fail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from schemas.codec import AVRO_MAGIC, Encoding, encode
from schemas.models import (
    DeviceStatus,
    FaultEvent,
    ReadingEvent,
    Receipt,
    SeqRange,
    SummaryEvent,
)
from schemas.registry import DEFAULT_REGISTRY
from tests.e2e.hostile import DEVICE, SENSOR, SITE, HostileRig, avro_reading, json_bytes
from tests.servers import InfluxDB1, Mosquitto

EXAMPLES = int(os.environ.get("THERMOPIPE_HOSTILE_EXAMPLES", "20"))
SEED = os.environ.get("THERMOPIPE_HOSTILE_SEED")
RSS_LIMIT_MB = 200.0  # the hub starts at about 60 MiB; hostile input must not grow it without bound
CHECK_TIMEOUT_S = 45.0  # a restarted hub catching up on a loaded machine takes a few seconds

pytestmark = [pytest.mark.servers, pytest.mark.slow,
              pytest.mark.timeout(120 + EXAMPLES * 15)]

# -- strategies -----------------------------------------------------------------------------------

EXTREME_INTS = st.sampled_from([2**64, 2**64 + 1, 2**63, 2**63 - 1, -2**63, -2**63 - 1, -1, 0,
                                2**62, 2**53 + 1, 10**30, -(10**30)])
SPECIAL_FLOATS = st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -1e308,
                                  5e-324, -0.0])
HUGE_STRINGS = st.sampled_from([65, 4_097, 70_000, 300_000]).map(lambda n: "x" * n)
WRONG_TYPES = st.one_of(st.none(), st.booleans(), st.just([]), st.just({}), st.just("1"),
                        st.lists(st.integers(), max_size=3), st.text(max_size=10))
HOSTILE_VALUES = st.one_of(EXTREME_INTS, SPECIAL_FLOATS, HUGE_STRINGS, WRONG_TYPES, st.integers(),
                           st.floats())

HOSTILE_NUMBERS = st.one_of(EXTREME_INTS, SPECIAL_FLOATS, HOSTILE_VALUES)

IDENT = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_.-]{0,15}\Z")
UNICODE_LEVEL = st.text(st.characters(exclude_categories=("Cs", "Cc", "Co", "Cn"),
                                      exclude_characters="+#/"), min_size=1, max_size=20)
LEVELS = st.one_of(IDENT, IDENT, UNICODE_LEVEL,
                   st.sampled_from(["_hub", "$SYS", "", " ", "..", "event", "status", "receipt"]),
                   st.sampled_from([65, 1_000, 20_000]).map(lambda n: "L" * n))
CONTROL = (SITE, DEVICE, SENSOR)
IDENTITIES = st.one_of(st.just(CONTROL), st.tuples(IDENT, IDENT, IDENT),
                       st.tuples(LEVELS, LEVELS, LEVELS),
                       st.tuples(st.just(SITE), st.just(DEVICE), LEVELS))
WHEN = st.datetimes(timezones=st.just(UTC))
IDENT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
FINGERPRINTS = [s.fingerprint for s in (DEFAULT_REGISTRY.current(k)
                                        for k in DEFAULT_REGISTRY.kinds())]


def _id(n: int) -> str:
    return f"hostile{n:012d}"


def valid_message(kind: str, site: str, device: str, sensor: str, seq: int, when: datetime,
                  n: int) -> Any:
    """A contract message of ``kind`` (identifiers as given: invalid ones fall back to a valid
    stand-in, the payload then disagrees with its topic)."""
    def ok(x: str, alt: str) -> str:
        return x if IDENT_RE.fullmatch(x) else alt
    s, d, z = ok(site, "xsite"), ok(device, "xdev"), ok(sensor, "xsensor")
    common: dict[str, Any] = {"event_id": _id(n), "site": s, "device_id": d, "time": when,
                              "clock_synced": True}
    if kind == "status":
        return DeviceStatus(**common, online=True, reason="birth", session=seq)
    if kind == "receipt":
        return Receipt(event_id=_id(n), site=s, device_id=d, time=when, hub_id="elsewhere",
                       ranges=[SeqRange(first=min(seq, 2**63 - 2), last=2**63 - 1)])
    common.update(sensor_id=z, seq=seq)
    if kind == "summary":
        return SummaryEvent(**common, unit="degC", window_start=when, count=seq, min=1.0,
                            max=2.0, mean=1.5, last=2.0)
    if kind == "fault":
        return FaultEvent(**common, fault="crc_error", active=True, unit="degC", detail="x")
    return ReadingEvent(**common, value=21.5, unit="degC")


class Hostile:
    """One hostile message: topic levels below the root, the payload, what made it. (Not a
    dataclass: Hypothesis prints a dataclass field by field, megabytes of it here.)"""

    __slots__ = ("how", "levels", "payload")

    def __init__(self, levels: tuple[str, ...], payload: bytes, how: str) -> None:
        self.levels = levels
        self.payload = payload
        self.how = how

    def __repr__(self) -> str:  # Hypothesis prints the failing example: keep it readable
        topic = "/".join(level if len(level) <= 40 else f"<{len(level)} chars>"
                         for level in self.levels)
        body = self.payload if len(self.payload) <= 120 else (
            self.payload[:100] + f"...<{len(self.payload)} bytes>".encode())
        return f"Hostile({self.how}: {topic} <- {body!r})"


UNITS: list[str | bytes] = ["degC", "kelvin", b"\xff"]
#: how a payload is made; the ones that carry hostile numbers come more often
HOW = ["valid_json", "valid_avro", "mutated_json", "mutated_json", "issue", "issue", "deep",
       "bad_utf8", "random_bytes", "random_avro", "extreme_avro", "extreme_avro"]


@st.composite
def hostile_messages(draw: st.DrawFn) -> Hostile:
    site, device, sensor = draw(IDENTITIES)
    where = draw(st.sampled_from(["event", "event", "summary", "status", "receipt", "hub"]))
    if where in ("event", "summary"):
        levels: tuple[str, ...] = (site, device, where, sensor)
    elif where == "hub":
        levels = draw(st.sampled_from([("_hub", "alerts", site, device), ("_hub", "deadletter"),
                                       ("_hub", "x", "event", sensor),
                                       (site, "_hub", "event", sensor)]))
    else:
        levels = (site, device, where)
    kind = {"summary": "summary", "status": "status", "receipt": "receipt"}.get(
        where, draw(st.sampled_from(["reading", "fault"])))
    n = draw(st.integers(0, 10**9))
    how = draw(st.sampled_from(HOW))
    seq = draw(st.one_of(st.integers(0, 2**63 - 1), st.sampled_from([0, 1, 2**62, 2**63 - 1])))
    when = draw(WHEN)
    if how in ("valid_json", "valid_avro", "mutated_json", "bad_utf8"):
        message = valid_message(kind, site, device, sensor, seq, when, n)
        if how == "valid_avro":
            try:
                return Hostile(levels, encode(message, Encoding.AVRO), how)
            except (ValueError, OverflowError):  # a time Avro's long cannot hold: JSON then
                how = "valid_json"
        doc = message.model_dump(mode="json")
        if how == "mutated_json":
            numbers = ["seq", "count", "session", "value", "first_seq"]
            for key in draw(st.lists(st.sampled_from([*doc, *numbers, "extra"]),
                                     min_size=1, max_size=4)):
                if draw(st.booleans()) or key not in doc:
                    doc[key] = draw(HOSTILE_NUMBERS if key in numbers else HOSTILE_VALUES)
                else:
                    del doc[key]
        payload = json_bytes(doc)
        if how == "bad_utf8":
            at = draw(st.integers(0, len(payload)))
            payload = payload[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80",
                                                           b"\xf4\x90\x80\x80"])) + payload[at:]
        return Hostile(levels, payload, how)
    if how == "issue":  # the payload and its relatives
        doc = {"kind": kind, "seq": draw(EXTREME_INTS)}
        if draw(st.booleans()):
            doc[draw(st.sampled_from(["count", "session", "value"]))] = draw(HOSTILE_VALUES)
        return Hostile(levels, json_bytes(doc), how)
    if how == "deep":
        depth = draw(st.sampled_from([64, 1_000, 5_000, 30_000]))
        inner = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        return Hostile(levels, b'{"kind": "%s", "seq": ' % kind.encode() + inner[0] * depth
                       + (b"1" if inner[0] == b'{"a":' else b"") + inner[1] * depth + b"}", how)
    if how == "random_bytes":
        prefix = draw(st.sampled_from([b"", b"{", b'{"kind": "reading", ']))
        return Hostile(levels, prefix + draw(st.binary(max_size=600)), how)
    if how == "random_avro":
        fingerprint = draw(st.one_of(st.binary(min_size=8, max_size=8),
                                     st.sampled_from(FINGERPRINTS), st.binary(max_size=7)))
        return Hostile(levels, AVRO_MAGIC + fingerprint + draw(st.binary(max_size=400)), how)
    # a current-schema reading with values no encoder would write
    return Hostile(levels, avro_reading(
        event_id=draw(st.one_of(st.just(_id(n)), HUGE_STRINGS, st.just(b"\xff\xfe"))),
        site=site, device=device, sensor=sensor,
        seq=draw(st.one_of(EXTREME_INTS, st.integers())),
        time_us=draw(st.one_of(st.just(int(when.timestamp() * 1e6)), EXTREME_INTS)),
        value=draw(st.one_of(SPECIAL_FLOATS, st.floats())),
        unit=draw(st.sampled_from(UNITS))), how)


OPERATIONS = st.sampled_from(["hub_sigterm", "hub_sigkill", "influx_outage"])
STEPS = st.lists(st.one_of(st.lists(hostile_messages(), min_size=1, max_size=12), OPERATIONS),
                 min_size=1, max_size=4)


# -- the test -------------------------------------------------------------------------------------

@pytest.fixture
def rig(tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto],
        influxdb_factory: Callable[..., InfluxDB1]) -> Iterator[HostileRig]:
    rig = HostileRig(tmp_path, mosquitto_factory(), influxdb_factory(), gap_timeout_s=3.0,
                     rss_limit_mb=RSS_LIMIT_MB)
    yield rig
    rig.close()


def run_step(rig: HostileRig, step: list[Hostile] | str) -> None:
    if isinstance(step, list):
        for message in step:
            rig.hostile.publish("/".join((rig.root, *message.levels)), message.payload)
            rig.figures.hostile_messages += 1
    elif step == "hub_sigterm":
        rig.restart_hub()
    elif step == "hub_sigkill":
        rig.restart_hub(kill=True)
    else:
        rig.influx_stop()


def test_hostile_inputs_never_stop_the_pipeline(rig: HostileRig,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    rig.start_hub()
    rig.control.start()
    rig.check()
    failure: list[str] = []
    history: list[str] = []  # the steps of each example: a failure may be an earlier one's doing

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=SEED is None, database=None,
              phases=[Phase.explicit, Phase.generate], report_multiple_bugs=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example,
                                     HealthCheck.filter_too_much])
    @given(STEPS)
    def example(steps: list[list[Hostile] | str]) -> None:
        if failure:  # sticky: the processes carry the first failure's consequences
            raise AssertionError(f"(an earlier example failed) {failure[0]}")
        rig.figures.examples += 1
        history.append(f"example {rig.figures.examples}: {steps!r}")
        try:
            for step in steps:
                run_step(rig, step)
            rig.check(timeout=CHECK_TIMEOUT_S)
        except AssertionError as exc:
            recent = "\n".join(history[-3:])
            failure.append(f"example {rig.figures.examples}: {exc}\n"
                           f"the last examples' steps (the processes carry state across them):\n"
                           f"{recent}")
            raise

    if SEED is not None:
        example = seed(int(SEED))(example)
    try:
        example()
    finally:
        with capsys.disabled():
            print(f"\nhostile inputs: {rig.summary()}")

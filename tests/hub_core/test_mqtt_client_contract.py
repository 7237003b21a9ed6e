"""hub/mqtt_client.py's BufferedClient leans on paho's private members (STYLE.md calls that a
trap); this holds the coupling: every private member it overrides, calls or reads must exist in
paho with the kind and signature the client assumes, ``MQTTMessage`` must have exactly the slots
the client's ``__new__``-built message fills, and a PUBLISH fed through a socket pair must come
out of ``on_plain_message`` with its PUBACK written by ``ack_many``.

It runs against the installed paho, and against every release the pin in pyproject.toml allows
(``paho-mqtt>=2.2,<3``; it said ``>=2.1`` until this test found that hub/mqtt_client.py does not
import with 2.1.0, which has no ``paho.mqtt.exception`` and whose read loop does not catch
``MalformedPacket``, so the pin went up): each wheel is downloaded once with pip (into
~/.cache/thermopipe/paho, outside the checkout) and imported from there in a fresh interpreter
(about two seconds each). The
list of releases comes from ``pip index versions``; with no index reachable those cases skip and
say so, the installed one still runs.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import socket
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path.home() / ".cache" / "thermopipe" / "paho"

# name -> the parameters after self, as BufferedClient calls or overrides them ("*args" for a
# variable tail; a trailing "=" means "has a default")
METHODS: dict[str, list[str]] = {
    "_handle_publish": [],                              # overridden
    "_create_socket": [],                               # overridden
    "loop_read": ["max_packets="],                      # overridden (public)
    "message_callback_add": ["sub", "callback"],        # overridden (public)
    "_packet_read": [],                                 # called by loop_read
    "_loop_rc_handle": ["rc"],                          # called by loop_read
    "_packet_queue": ["command", "packet", "mid", "qos", "info="],  # ack_many
    "_send_puback": ["mid"],                            # _handle_publish
    "_easy_log": ["level", "fmt", "*args"],             # _handle_publish
}
# instance attributes read on a fresh client, and what they must be
ATTRIBUTES = ("_in_packet", "_protocol", "_in_callback_mutex", "_userdata", "_manual_ack",
              "_transport", "_sock", "suppress_exceptions", "on_message", "_msgtime_mutex",
              "_last_bytes_received")
MODULE_NAMES = ("MQTTv5", "PUBACK", "MQTT_LOG_ERR", "mqtt_ms_invalid", "time_func",
                "MQTTMessage", "Client")


def _params(function: Any) -> list[str]:
    out = []
    for p in list(inspect.signature(function).parameters.values())[1:]:
        if p.kind is p.VAR_POSITIONAL:
            out.append(f"*{p.name}")
        elif p.kind is not p.VAR_KEYWORD:
            out.append(p.name + ("=" if p.default is not p.empty else ""))
    return out


def contract_problems() -> dict[str, Any]:
    """What differs between the paho importable here and what BufferedClient assumes."""
    import paho.mqtt
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from hub import mqtt_client
    from hub.mqtt_client import BufferedClient, BufferedSocket

    problems: list[str] = []
    for name in MODULE_NAMES:
        if not hasattr(mqtt, name):
            problems.append(f"paho.mqtt.client.{name} is gone")
    for name, expected in METHODS.items():
        member = inspect.getattr_static(mqtt.Client, name, None)
        if not inspect.isfunction(member):
            problems.append(f"Client.{name} is not a method: {member!r}")
        elif _params(member) != expected:
            problems.append(f"Client.{name}{_params(member)} is not {expected}")
    if set(METHODS) - {"loop_read", "message_callback_add"} | {
            "_in_packet", "_protocol", "_in_callback_mutex", "_manual_ack",
            "_transport", "_msgtime_mutex", "_last_bytes_received",
    } != set(mqtt_client.HOOKS) | {"_send_puback", "_easy_log"}:
        problems.append("hub.mqtt_client.HOOKS and this test's list differ: update both")

    client = BufferedClient(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    for name in ATTRIBUTES:
        if not hasattr(client, name):
            problems.append(f"a Client has no {name}")
    in_packet = getattr(client, "_in_packet", {})
    if not (isinstance(in_packet, dict) and {"command", "packet"} <= in_packet.keys()):
        problems.append(f"Client._in_packet is not a dict with command and packet: {in_packet!r}")
    if not (hasattr(client._in_callback_mutex, "__enter__")
            and hasattr(client._msgtime_mutex, "__enter__")
            and isinstance(client._last_bytes_received, float)
            and client._protocol == mqtt.MQTTv5
            and client._manual_ack is False and client._transport == "tcp"):
        problems.append("a Client's mutex, protocol, manual_ack or transport changed kind")
    if "self._sock.pending()" not in inspect.getsource(mqtt):
        problems.append("paho's loop no longer asks the socket for pending() bytes")

    # the message built with __new__ fills every slot paho's own message has
    ours = mqtt_client._message(0x32, b"t/1", 7, b"x")
    slots = set(mqtt.MQTTMessage.__slots__)
    unfilled = sorted(s for s in slots if not hasattr(ours, s))
    if unfilled:
        problems.append(f"MQTTMessage slots the lean decoder leaves unset: {unfilled}")
    theirs = mqtt.MQTTMessage(7, b"t/1")
    if {s for s in slots if hasattr(theirs, s)} != slots:
        problems.append("paho's own MQTTMessage leaves slots unset: the slot list changed kind")

    # behaviour: a PUBLISH (QoS 1, MQTT 5, no properties) read through BufferedSocket, handed
    # to on_plain_message, acknowledged by ack_many with one PUBACK on the wire
    ours_end, broker_end = socket.socketpair()
    got: list[tuple[str, bytes, int, int]] = []
    try:
        client.manual_ack_set(True)
        client.on_plain_message = lambda *message: got.append(message)
        ours_end.setblocking(False)
        client._sock = BufferedSocket(ours_end)
        body = b"\x00\x03t/1" + b"\x00\x07" + b"\x00" + b"payload"
        broker_end.sendall(bytes([0x32, len(body)]) + body)
        rc = client.loop_read()
        client.ack_many([7])
        broker_end.settimeout(5)
        ack = broker_end.recv(16)
        if rc != 0 or got != [("t/1", b"payload", 7, 1)] or ack != b"\x40\x02\x00\x07":
            problems.append(f"the buffered read path: rc={rc} got={got} ack={ack!r}")
    except Exception as exc:  # reported as a contract problem, with its reason
        problems.append(f"the buffered read path raised {type(exc).__name__}: {exc}")
    finally:
        client._sock = None
        ours_end.close()
        broker_end.close()
    version = getattr(paho, "__version__", None) or paho.mqtt.__version__  # type: ignore[attr-defined]
    return {"version": version, "file": paho.mqtt.__file__, "problems": problems}


def _run_against(path: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(path), str(ROOT)])
    code = ("import json; from tests.hub_core.test_mqtt_client_contract import contract_problems;"
            " print(json.dumps(contract_problems()))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.splitlines()[-1]))


def _pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if re.match(r"paho-mqtt\b", d))


def _allowed_versions() -> list[str]:
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    spec = SpecifierSet(_pin().removeprefix("paho-mqtt"))
    result = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "paho-mqtt"],
                            capture_output=True, text=True, timeout=120, check=False)
    found = re.search(r"Available versions: (.*)", result.stdout)
    if found is None:
        return []
    return sorted((v for v in found[1].split(", ") if Version(v) in spec), key=Version)


def _unpacked(version: str) -> Path:
    target = CACHE / version
    if not (target / "paho" / "mqtt" / "client.py").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "--only-binary=:all:", f"paho-mqtt=={version}", "-d", str(CACHE)],
                       check=True, capture_output=True, timeout=300)
        wheel = next(CACHE.glob(f"paho_mqtt-{version}-*.whl"))
        with zipfile.ZipFile(wheel) as archive:  # a pure-Python wheel: unpacked is importable
            archive.extractall(target)
    return target


def test_the_installed_paho_holds_the_contract() -> None:
    report = _run_against(None)
    assert ".venv" in report["file"] or "site-packages" in report["file"]
    assert report["problems"] == [], report


_VERSIONS = _allowed_versions()


@pytest.mark.skipif(not _VERSIONS, reason="no package index answered `pip index versions`")
@pytest.mark.parametrize("version", _VERSIONS or ["-"])
def test_every_paho_the_pin_allows_holds_the_contract(version: str) -> None:
    path = _unpacked(version)
    report = _run_against(path)
    assert report["file"].startswith(str(path)), report  # this release, not the installed one
    assert report["version"] == version
    assert report["problems"] == [], report


def test_the_pin_allows_the_releases_checked_here() -> None:
    # the pin as this test reads it; a new major release needs a new look at the hooks
    assert _pin().startswith("paho-mqtt>=2.2,<3")
    if _VERSIONS:
        assert "2.2.0" in _VERSIONS and all(v.startswith("2.") for v in _VERSIONS)

"""``firmware-sim``: serve a scenario over a pty, TCP and a 1-Wire tree; check; list.

    firmware-sim serve --scenario greenhouse_day --pty --link /tmp/ttyTHERMO --speed 60
    firmware-sim check my_scenario.toml
    firmware-sim list

``serve`` prints one machine-parsable line per transport (``pty /dev/pts/7``,
``link /tmp/ttyTHERMO``, ``tcp socket://127.0.0.1:40123``, ``w1 /tmp/w1/devices``) and a new
``pty`` line each time the device comes back after an unplug.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from firmware_sim import scenario as scenarios
from firmware_sim.pty_transport import PtyTransport
from firmware_sim.simulation import Simulation, Sink
from firmware_sim.tcp_transport import TcpTransport
from firmware_sim.w1_tree import W1Tree
from program_support.cli_args import positive_float
from program_support.version import version_line
from schemas.errors import ConfigError

WAIT_GRACE = 0.3  # seconds after the first TCP client connects: pyserial flushes input on open


def _out(line: str) -> None:
    print(line, flush=True)


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host or "127.0.0.1", int(port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="firmware-sim", description="Simulated sensor firmware: serves a scenario of "
        "temperatures and faults over a pseudo-terminal, TCP and a 1-Wire sysfs tree.")
    parser.add_argument("--version", action="version", version=version_line("firmware-sim"))
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a scenario")
    serve.add_argument("--scenario", required=True, help="a file, or a shipped scenario name")
    serve.add_argument("--pty", action="store_true", help="serve on a pseudo-terminal")
    serve.add_argument("--link", type=Path, help="symlink kept pointing at the pty (like by-id)")
    serve.add_argument("--tcp", type=_host_port, metavar="HOST:PORT",
                       help="serve on TCP (port 0: any free port)")
    serve.add_argument("--w1-dir", type=Path, help="write a simulated 1-Wire sysfs tree here")
    serve.add_argument("--speed", type=positive_float, default=1.0,
                       help="scenario seconds per second (above 0)")
    serve.add_argument("--seed", type=int, help="overrides the scenario's seed")
    serve.add_argument("--loop", action="store_true", help="start over at the end, forever")
    serve.add_argument("--wait", action="store_true",
                       help="start the scenario clock when the first TCP client connects")
    check = sub.add_parser("check", help="validate scenario files")
    check.add_argument("files", nargs="+")
    sub.add_parser("list", help="list the shipped scenarios")
    return parser


def _check(files: Sequence[str]) -> int:
    status = 0
    for name in files:
        try:
            scenario = scenarios.load(name)
        except ConfigError as exc:
            for path, reason in exc.errors:
                _out(f"{exc.source}: {path}: {reason}" if path else f"{exc.source}: {reason}")
            status = 2
        else:
            _out(f"{name}: ok ({len(scenario.sensors)} sensors, {len(scenario.faults)} faults)")
    return status


def _list() -> int:
    for name, path in scenarios.shipped().items():
        try:
            description = scenarios.load(path).description
        except ConfigError as exc:  # a broken shipped file must still be listed
            description = f"INVALID: {exc}"
        _out(f"{name}\t{description}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    try:
        scenario = scenarios.load(args.scenario)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    sinks: list[Sink] = []
    with contextlib.ExitStack() as stack:
        if args.pty or args.link or not (args.tcp or args.w1_dir):
            pty = PtyTransport(args.link, on_path=lambda path: _out(f"pty {path}"))
            stack.enter_context(pty)
            if args.link:
                _out(f"link {args.link}")
            sinks.append(pty)
        tcp = None
        if args.tcp:
            tcp = stack.enter_context(TcpTransport(*args.tcp))
            _out(f"tcp {tcp.url}")
            sinks.append(tcp)
        w1 = None
        if args.w1_dir:
            w1 = W1Tree(args.w1_dir)
            w1.create()  # left in place at exit, like the last state of a real bus
            _out(f"w1 {args.w1_dir}")
        if args.wait and tcp is not None:
            while not (tcp.connected.wait(0.1) or stop.is_set()):
                pass
            stop.wait(WAIT_GRACE)
        sim = Simulation(scenario, seed=args.seed, speed=args.speed, sinks=sinks, w1=w1,
                         loop=args.loop)
        if not stop.is_set():
            sim.start()
            stack.callback(sim.stop)  # runs before the transports close (LIFO)
            while not (stop.is_set() or sim.wait(0.2)):
                pass
    for s, handler in previous.items():
        signal.signal(s, handler)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "check":
        return _check(args.files)
    if args.command == "list":
        return _list()
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())

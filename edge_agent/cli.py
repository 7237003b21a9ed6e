"""``edge-agent``: run the agent, or check a config file.

    edge-agent run -c /etc/thermopipe/agent.toml [--status-line]
    edge-agent check-config [-c] /etc/thermopipe/agent.toml [--skip-secrets | --for-another-machine]
    edge-agent status [-c /etc/thermopipe/agent.toml] [--json]
    edge-agent probe [-c /etc/thermopipe/agent.toml] [--seconds 12]
    edge-agent --version

A bad config exits 2 with every error and its key path, before anything starts (a directory the
outbox cannot be created in and a missing optional package included). Any other start-up failure
is one line with the reason, exit 1. An unreachable broker does not stop the agent: it keeps
reading sensors and buffering events in its outbox. A running agent whose thread (a source,
delivery, the MQTT link) crashed more often than its restart budget allows stops as on SIGTERM
(the outbox flushed) and exits 70 with one line naming the component and the reason, for systemd
to restart it. Test seam, for tests only: ``THERMOPIPE_TEST_CRASH_COMPONENT=delivery`` makes
``edge-agent run``'s delivery loop raise at every turn once five events are in the outbox,
restarted after 0.05 s (read in :func:`_test_crash_seam`, nowhere else).

``status`` reads the state file the running agent rewrites every few seconds
(:mod:`edge_agent.state_file`), so it needs neither the broker nor the agent's cooperation: exit 0
when the agent is running, 3 when it is not (no state file, or one not updated for a while).

``probe`` starts each configured source on its own for a few seconds (no broker, no outbox) and
prints what every sensor said: the self-check at the end of deploy/pi/install.sh. Exit 0 when
every source produced a reading, 1 otherwise with what to look at. Run it while the service is
stopped (two readers of one serial port would each get half of its lines).
Under systemd the one-line failures carry the journal priority ``<3>`` like the log lines.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from edge_agent.deferred_imports import load_ssl
from program_support.version import version_line
from schemas.errors import ConfigError, ThermopipeError

if TYPE_CHECKING:
    import argparse

    from edge_agent.config import AgentConfig

EXIT_CONFIG = 2
EXIT_FAILED = 1
EXIT_NOT_RUNNING = 3  # as `systemctl status` says of a unit that is not active
DEFAULT_CONFIG = Path("/etc/thermopipe/agent.toml")
EXAMPLE_CONFIG = "deploy/agent.example.toml"  # in the source tree (program_support.config_loading)


def _parser() -> argparse.ArgumentParser:
    import argparse  # not for the unit's own command line (run_arguments)

    from program_support.cli_args import add_check_flags

    parser = argparse.ArgumentParser(
        prog="edge-agent", description="The thermopipe edge agent: reads temperature sensors, "
        "decides at the edge what changed, keeps every event in an on-disk outbox and publishes "
        "it over MQTT.")
    parser.add_argument("--version", action="version", version=version_line("edge-agent"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run the agent")
    run.add_argument("-c", "--config", type=Path, required=True, help="the agent's TOML file")
    run.add_argument("--status-line", action="store_true",
                     help="print a one-line status every few seconds (default on a terminal)")
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("file", type=Path, nargs="?",
                       help=f"the agent's TOML file (or -c FILE; default {DEFAULT_CONFIG})")
    check.add_argument("-c", "--config", type=Path, default=None, help="the agent's TOML file")
    add_check_flags(check, "device")
    check.set_defaults(parser=check)
    status = sub.add_parser("status", help="show the running agent's state (no broker needed)")
    status.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG,
                        help=f"the agent's TOML file (default {DEFAULT_CONFIG}), to find its "
                             "state file")
    status.add_argument("--state", type=Path, help="read this state file instead")
    status.add_argument("--json", action="store_true", help="print the state as JSON")
    probe = sub.add_parser("probe", help="read every configured source for a few seconds and "
                                         "show what each sensor says (no broker, no outbox)")
    probe.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG,
                       help=f"the agent's TOML file (default {DEFAULT_CONFIG})")
    probe.add_argument("--seconds", type=float, default=12.0,
                       help="read for at most this long (a 1-Wire scan reads every sensor once, "
                            "750 ms each; default 12)")
    return parser


def _stderr(text: str) -> None:
    """Print to stderr; under systemd each line carries the journal priority of an error."""
    from program_support.log_setup import prefixed, to_journal

    journal = to_journal(sys.stderr)
    print("\n".join(prefixed(line, "error", journal) for line in text.splitlines()),
          file=sys.stderr)


def _print_errors(exc: ConfigError) -> None:
    from program_support.config_loading import format_config_error, format_config_error_journal
    from program_support.log_setup import to_journal

    # in the journal one line per problem: a one-problem config is one line at priority error
    _stderr(format_config_error_journal(exc) if to_journal(sys.stderr) else
            format_config_error(exc, EXAMPLE_CONFIG))


def _cannot_start(reason: object) -> int:
    _stderr(f"edge-agent: cannot start: {reason}")
    return EXIT_FAILED


def _load(path: Path) -> AgentConfig:
    """The config, with a note on stderr for each old key it still accepts."""
    from edge_agent.config import load
    from program_support.config_loading import collect_deprecations

    with collect_deprecations() as notes:
        cfg = load(path)
    for note in notes:
        print(f"edge-agent: {path}: deprecated {note}", file=sys.stderr)
    return cfg


def check_config(path: Path, skip_flag: str | None = None, this_machine: bool = True) -> int:
    """``skip_flag``: the option that leaves secrets unread (None: read them); ``this_machine``:
    check what this machine has (TLS files, the outbox directory, packages, the broker's name)."""
    from program_support.config_loading import secrets_unresolved

    try:
        with secrets_unresolved(skip_flag is not None, elsewhere=not this_machine) as skipped:
            cfg = _load(path)
    except ConfigError as exc:
        _print_errors(exc)
        return EXIT_CONFIG
    sources = ", ".join(f"{s.kind}" + (f" {s.name}" if s.name else "") for s in cfg.sources)
    print(f"OK {path}")
    print(f"  device   {cfg.site}/{cfg.device_id}")
    print(f"  broker   {cfg.mqtt.host}:{cfg.mqtt.port} (MQTT {cfg.mqtt.protocol}, "
          f"{'TLS' if cfg.mqtt.tls else 'no TLS'}, topic root {cfg.mqtt.topic_root}, "
          f"{cfg.mqtt.encoding})")
    print(f"  outbox   {cfg.outbox.path} (max {cfg.outbox.max_bytes // 2**20} MiB)")
    print(f"  sources  {sources}")
    for sid, sensor in sorted(cfg.sensors.items()):
        rules = cfg.rules_for(sid)
        bands = ", ".join(f"{t.name} {t.direction} {t.value}" for t in rules.thresholds)
        print(f"  sensor   {sid} ({sensor.unit}{', ' + sensor.name if sensor.name else ''})"
              f"{': ' + bands if bands else ''}")
    for reference in skipped:
        print(f"  secret   {reference} (not read: {skip_flag})")
    if not this_machine:
        print(f"  not checked ({skip_flag}): secrets, files, directories, packages and host "
              "names of the machine that runs it")
    else:
        from program_support.connect_errors import unresolved_host

        problem = unresolved_host(cfg.mqtt.host)
        if problem:  # a warning: a Pi may boot before its network, and the agent keeps retrying
            print(f"  warning  mqtt.host {problem}: the agent keeps every event in its outbox "
                  "and retries")
    return 0


def run(path: Path, status_line: bool) -> int:
    from program_support import log_setup

    try:
        cfg = _load(path)
    except ConfigError as exc:
        _print_errors(exc)
        return EXIT_CONFIG
    log_setup.configure(cfg.log.level, cfg.log.format, site=cfg.site, device_id=cfg.device_id)
    if cfg.mqtt.tls is not None:
        load_ssl()  # the stand-in's exception names must be the real ones from here on
    from edge_agent.agent import AGENT_VERSION, Agent
    from edge_agent.clock import clock_synchronised
    from edge_agent.state_file import state_path
    from edge_agent.status import status_line as format_status
    from edge_agent.supervisor import Supervisor
    from edge_agent.systemd_notify import Notifier
    from program_support.supervision import EXIT_COMPONENT_FAILED

    stop = threading.Event()
    notifier = Notifier.from_environ()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()
        notifier.stopping()

    for s in (signal.SIGTERM, signal.SIGINT):
        signal.signal(s, on_signal)
    try:
        agent = Agent(cfg)
    except ConfigError as exc:
        _print_errors(exc)
        return EXIT_CONFIG
    except ThermopipeError as exc:  # e.g. the outbox cannot be opened, a package is missing
        return _cannot_start(exc)
    except sqlite3.Error as exc:
        return _cannot_start(f"outbox {cfg.outbox.path}: {exc}")
    except OSError as exc:
        return _cannot_start(f"{exc.filename or cfg.outbox.path}: {exc.strerror or exc}")
    printer = None
    if status_line or sys.stdout.isatty():
        tty = sys.stdout.isatty()

        def print_status() -> None:
            while not stop.wait(cfg.status_line_interval_s):
                snap = agent.snapshot()
                line = format_status(cfg.device_id, agent.delivery.connected,
                                     len(agent.sensor_infos()), snap)
                print(("\r\x1b[K" + line) if tty else line, end="" if tty else "\n",
                      flush=True)

        printer = threading.Thread(target=print_status, name="status-line", daemon=True)
        printer.start()
    _test_crash_seam(agent)
    keeper = Supervisor(agent, state_path(cfg.state_file, cfg.outbox.path), cfg.state_interval_s,
                        notifier, clock_synchronised, AGENT_VERSION)
    keeper.start()
    try:
        agent.run(stop)
    finally:
        keeper.stop()
    if printer is not None:
        stop.set()
        printer.join(1)
        if sys.stdout.isatty():
            print()
    if agent.supervisor.fatal.is_set():
        _stderr(f"edge-agent: stopped: {agent.supervisor.fatal_reason}; exit "
                f"{EXIT_COMPONENT_FAILED} for systemd to restart it")
        return EXIT_COMPONENT_FAILED
    return 0


def _test_crash_seam(agent: object) -> None:
    """For tests only: with ``THERMOPIPE_TEST_CRASH_COMPONENT=delivery`` the agent's delivery loop
    raises at every turn once the outbox holds five events (the first ones are published as
    usual) and restarts after 0.05 s, so the restart budget runs out in about a second and the
    exit-70 path, and the outbox kept across it, can be tested through a real process. Nothing
    else reads the variable."""
    from program_support.supervision import TEST_CRASH_ENV

    if os.environ.get(TEST_CRASH_ENV) != "delivery":
        return
    from edge_agent.agent import Agent

    assert isinstance(agent, Agent)
    delivery = agent.delivery
    publish = delivery._publish_ready

    def crash(now: float) -> None:
        if delivery.outbox.depth >= 5:
            raise RuntimeError(f"crash injected by {TEST_CRASH_ENV} (a test)")
        publish(now)

    delivery._publish_ready = crash  # type: ignore[method-assign]
    agent.supervisor.restart_initial_s = agent.supervisor.restart_max_s = 0.05  # a quick test


def status(config: Path, state: Path | None, as_json: bool) -> int:
    import time

    from edge_agent import state_file

    if state is not None:
        candidates = [state]
    else:
        from edge_agent.config import load
        from program_support.config_loading import secrets_unresolved

        try:
            with secrets_unresolved(True):  # status needs no password: never read one
                cfg = load(config)
        except ConfigError as exc:
            _print_errors(exc)
            return EXIT_CONFIG
        candidates = state_file.candidate_paths(cfg.state_file, cfg.outbox.path)
    # A place this user may not look into (the outbox's directory is the agent's own, 0750)
    # raises on stat: it is reported in one line, not as a traceback.
    found: dict[Path, float] = {}
    denied: list[str] = []
    for candidate in candidates:
        try:
            found[candidate] = candidate.stat().st_mtime
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            denied.append(f"{candidate}: {exc.strerror or exc}")
    if not found:
        if denied:
            print(f"edge-agent status: cannot read {'; '.join(denied)} (run it as root or as the "
                  "agent's user)", file=sys.stderr)
            return EXIT_FAILED
        print(f"edge-agent is not running: no state file ({', '.join(map(str, candidates))})",
              file=sys.stderr)
        return EXIT_NOT_RUNNING
    path = max(found, key=found.__getitem__)
    try:
        current = state_file.read_state(path)
    except OSError as exc:
        print(f"edge-agent status: cannot read {path}: {exc.strerror or exc} (run it as root or "
              "as the agent's user)", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:
        print(f"edge-agent status: {path}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    now = time.time()
    age, fresh = state_file.freshness(current, now)
    if as_json:
        print(json.dumps({**current, "state_file": str(path), "state_age_s": round(age, 1),
                          "running": fresh}, indent=2))
    else:
        print("\n".join(state_file.render(current, now)))
    return 0 if fresh else EXIT_NOT_RUNNING


def _source_hint(source: object) -> str:
    """What to look at when a source produced nothing (pure: only reads the config)."""
    from edge_agent.config import OneWireSourceConfig, SerialSourceConfig

    if isinstance(source, OneWireSourceConfig):
        return (f"no 28-* sensor answered in {source.w1_dir}: is 'dtoverlay=w1-gpio' in "
                "/boot/firmware/config.txt (then reboot), and are the sensors wired to GPIO 4 "
                "with a 4.7k pull-up?")
    if isinstance(source, SerialSourceConfig):
        return (f"nothing readable from {source.port}: is the board plugged in (ls -l "
                "/dev/serial/by-id/), is the baud rate right, and is the edge-agent service "
                "stopped (it would hold the port)?")
    return "the source produced no reading"


def probe(config: Path, seconds: float) -> int:
    import threading as _threading
    import time

    from edge_agent.config import load
    from program_support.config_loading import secrets_unresolved

    try:
        with secrets_unresolved(True):  # the probe talks to no broker: no password needed
            cfg = load(config)
    except ConfigError as exc:
        _print_errors(exc)
        return EXIT_CONFIG
    from edge_agent.agent import build_source
    from edge_agent.decide import Reading
    from program_support import log_setup

    log_setup.configure("error", "console")  # the probe's own lines are the output
    failed = 0
    for i, source_cfg in enumerate(cfg.sources):
        label = f"sources[{i}] {source_cfg.kind}" + (f" {source_cfg.name}"
                                                      if source_cfg.name else "")
        try:
            source = build_source(source_cfg)
        except ThermopipeError as exc:
            print(f"{label}: cannot start: {exc}")
            failed += 1
            continue
        got: dict[str, Reading] = {}
        first = _threading.Event()

        def sink(reading: Reading, got: dict[str, Reading] = got,
                 first: _threading.Event = first) -> bool:
            got[reading.sensor_id] = reading
            first.set()
            return True

        source.start(sink)
        deadline = time.monotonic() + seconds
        # stop early: 2 s after the first reading, every sensor on a bus has been read once
        if first.wait(seconds):
            time.sleep(max(0.0, min(2.0, deadline - time.monotonic())))
        source.stop()
        firmware = f", firmware {source.firmware}" if source.firmware else ""
        print(f"{label}: {len(got)} sensor{'s' if len(got) != 1 else ''}{firmware}")
        for sid, reading in sorted(got.items()):
            unit = cfg.sensors[sid].unit if sid in cfg.sensors else "degC"
            shown = (f"{reading.value:.3f} {unit}" if reading.fault is None and
                     reading.value is not None else
                     f"FAULT {reading.fault}: {reading.detail}")
            print(f"  {sid:<20} {shown}")
        if not any(r.fault is None for r in got.values()):
            failed += 1
            print(f"  {_source_hint(source_cfg)}")
    if failed:
        print(f"probe: {failed} of {len(cfg.sources)} source(s) gave no good reading")
        return EXIT_FAILED
    print(f"probe: every source ({len(cfg.sources)}) gave readings")
    return 0


def run_arguments(argv: Sequence[str]) -> tuple[Path, bool] | None:
    """``run -c FILE [--status-line]``, the command line of the systemd unit, read without
    argparse: argparse (with gettext) is 0.35 MiB of a running agent's memory, used once at start
    (bench/README.md). ``(config, status_line)``, or None for any other command line, or this one
    in another shape (``--config=FILE``, an abbreviation, a FILE starting with ``-``): argparse
    reads those, and says what is wrong with them."""
    words = list(argv)
    status_line = "--status-line" in words[1:2] + words[3:4]
    if status_line:
        words.remove("--status-line")
    if (len(words) == 3 and words[0] == "run" and words[1] in ("-c", "--config")
            and words[2] and not words[2].startswith("-")):
        return Path(words[2]), status_line
    return None


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    quick = run_arguments(words)
    if quick is not None:
        return run(*quick)
    from program_support.cli_args import config_argument, skipped_flag

    parser = _parser()
    args = parser.parse_args(words)
    if args.command is None:
        parser.print_help(sys.stderr)
        print("\nedge-agent: say what to do: run, check-config, status or probe "
              "(edge-agent COMMAND --help)", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "probe":
        return probe(args.config, args.seconds)
    if args.command == "check-config":
        flag, this_machine = skipped_flag(args)
        path = config_argument(args.file, args.config, DEFAULT_CONFIG, args.parser)
        return check_config(path, flag, this_machine)
    if args.command == "status":
        return status(args.config, args.state, args.json)
    return run(args.config, args.status_line)


if __name__ == "__main__":
    sys.exit(main())

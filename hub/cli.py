"""``hub``: run the hub, check its config, and look after its dead letters.

    hub run [-c FILE] [--workers N]
    hub check-config [-c] FILE [--skip-secrets | --for-another-machine]
    hub dlq list [-c FILE] [--status open|replayed]
    hub dlq show ID [-c FILE]
    hub dlq replay (ID ... | --all) [--timeout SECONDS] [-c FILE]
    hub --version

``-c FILE`` goes after the subcommand, as above (``hub dlq -c FILE list`` works too); without it
the file is ``$HUB_CONFIG``, else /etc/thermopipe/hub.toml. ``dlq replay`` is a command to the
running hub: it posts to the hub's web server (``[http]`` host, port and token of that file;
hub/dead_letter_api.py) and prints the hub's answer, one line per id.

A bad config exits 2 with every problem and its key path; any other start-up failure (a missing
package of the hub extra, a port taken, a data directory that cannot be made) is one line with
the reason, exit 1. Never a traceback for something the person running it can fix.

A running hub whose component (a thread: ingest, a consumer, the web...) crashed more often than
its restart budget allows stops cleanly and exits 70 (``EXIT_COMPONENT_FAILED``) with one line
on stderr naming the component and the reason; systemd, compose or ``--workers``' parent restart
it. Test seam, for tests only: ``THERMOPIPE_TEST_CRASH_COMPONENT=ingest`` makes ``hub run``'s
ingest loop raise at every turn, restarted after 0.05 s (read in :func:`_test_crash_seam`,
nowhere else).
"""

from __future__ import annotations

import argparse
import base64
import gc
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from program_support.cli_args import add_check_flags, config_argument, skipped_flag
from program_support.config_loading import format_config_error
from program_support.extras import require
from program_support.supervision import EXIT_COMPONENT_FAILED, TEST_CRASH_ENV
from program_support.version import version_line
from schemas.errors import ConfigError, ServerError, ThermopipeError

if TYPE_CHECKING:
    from hub.config import HubConfig
    from hub.records import DeadRecord

DEFAULT_CONFIG = "/etc/thermopipe/hub.toml"
EXAMPLE_CONFIG = "deploy/hub/hub.toml"  # in the source tree (program_support.config_loading)
EXIT_FAILED = 1
EXIT_CONFIG = 2


def _config_or_exit(path: str) -> HubConfig:
    from program_support.config_loading import collect_deprecations
    from program_support.extras import missing_reason

    try:
        # the hub's sections are pydantic models: without them (the agent's install) say which
        # extra to install rather than fail on the import
        models = missing_reason("hub", "the hub's config", ["pydantic"])
        if models:
            raise ConfigError(path, [("", models)])
        from hub.config import load_hub_config

        with collect_deprecations() as notes:
            config = load_hub_config(path)
    except ConfigError as exc:
        _stderr_error(exc, EXAMPLE_CONFIG)
        raise SystemExit(EXIT_CONFIG) from None
    for note in notes:  # an old key still works; say what to write instead
        print(f"hub: {path}: deprecated {note}", file=sys.stderr)
    return config


def _stderr_error(problem: ConfigError | str, example: str | None = None) -> None:
    """A config error or a start-up failure on stderr. Under systemd: each line at the journal's
    priority error, and a config error one line per problem (as the agent writes them)."""
    from program_support.config_loading import format_config_error_journal
    from program_support.log_setup import prefixed, to_journal

    journal = to_journal(sys.stderr)
    if isinstance(problem, ConfigError):
        problem = (format_config_error_journal(problem) if journal
                   else format_config_error(problem, example))
    print("\n".join(prefixed(line, "error", journal) for line in problem.splitlines()),
          file=sys.stderr)


def _fail(reason: object) -> int:
    _stderr_error(f"hub: {reason}")
    return EXIT_FAILED


def _storage_target(config: HubConfig) -> str:
    s = config.storage
    if not s.enabled:
        return "off"
    if s.mode == "sqlite":
        return f"sqlite {s.path or config.data_dir / 'store.sqlite3'}"
    where = f"database {s.database}" if s.mode == "v1" else f"org {s.org}, bucket {s.bucket}"
    return f"{s.mode} {s.url} ({where})"


def cmd_check_config(args: argparse.Namespace) -> int:
    from program_support.config_loading import secrets_unresolved

    flag, this_machine = skipped_flag(args)
    path = str(config_argument(args.file, args.config, Path(_default_config()), args.parser))
    with secrets_unresolved(flag is not None, elsewhere=not this_machine) as skipped:
        config = _config_or_exit(path)
    print(f"{path}: OK (hub_id={config.hub_id}, broker={config.mqtt.host}:"
          f"{config.mqtt.port}, storage {_storage_target(config)})")
    alerting = config.alerting
    print(f"  alerting  {'off' if not alerting.enabled else ', '.join(sorted(alerting.notifiers))}")
    print(f"  data_dir  {config.data_dir}")
    if config.http.enabled:
        print(f"  http      {config.http.host}:{config.http.port} (/healthz, /metrics"
              f"{', dashboard' if config.dashboard.enabled else ''})")
    for reference in skipped:
        print(f"  secret {reference}: not read ({flag})")
    if not this_machine:
        print(f"  not checked ({flag}): secrets, files, directories, packages and host names "
              "of the machine that runs it")
    else:
        from program_support.connect_errors import unresolved_host

        problem = unresolved_host(config.mqtt.host)
        if problem:  # a warning: in compose the hub may start before the broker's name exists
            print(f"  warning   mqtt.host {problem}: the hub will keep retrying")
    return 0


def _test_crash_seam(hub: object) -> None:
    """For tests only: with ``THERMOPIPE_TEST_CRASH_COMPONENT=ingest`` the hub's ingest loop
    raises at every turn and restarts after 0.05 s, so the restart budget runs out in about a
    second and the exit-70 path can be tested through a real process. Nothing else reads the
    variable."""
    if os.environ.get(TEST_CRASH_ENV) != "ingest":
        return
    from hub.app import Hub

    assert isinstance(hub, Hub)

    def crash(_now: float) -> None:
        raise RuntimeError(f"crash injected by {TEST_CRASH_ENV} (a test)")

    hub.ingest._housekeeping = crash  # type: ignore[method-assign,assignment]
    hub.supervisor.restart_initial_s = hub.supervisor.restart_max_s = 0.05  # a quick test


def _run_one(config_path: str, worker: int | None, workers: int) -> int:
    try:
        require("hub", "hub run")
    except ThermopipeError as exc:
        return _fail(exc)
    from hub.app import Hub
    from program_support import log_setup

    config = _config_or_exit(config_path)
    if worker is not None:
        config = config.for_worker(worker)
    log_setup.configure(config.log.level, config.log.format)
    stop = threading.Event()

    def on_signal(_sig: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    hub: Hub | None = None
    try:
        hub = Hub(config)
        _test_crash_seam(hub)
        hub.start()
    except (ThermopipeError, OSError, sqlite3.Error) as exc:
        if hub is not None:
            hub.stop()
        if isinstance(exc, OSError) and exc.filename:
            return _fail(f"cannot start: {exc.filename}: {exc.strerror or exc}")
        return _fail(f"cannot start: {exc}")
    # Millions of short-lived event objects: collect young garbage less often, and keep the
    # long-lived start-up objects (modules, schemas) out of every full collection.
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)
    fatal = hub.supervisor.fatal
    # the signal handler sets ``stop``; a component past its restart budget sets ``fatal``
    hub.supervisor.on_fatal = lambda _reason: stop.set()
    try:
        while not stop.wait(1.0) and not fatal.is_set():
            pass
    finally:
        hub.stop()
    if fatal.is_set():
        _stderr_error(f"hub: stopped: {hub.supervisor.fatal_reason}; exit "
                      f"{EXIT_COMPONENT_FAILED} for the service manager to restart it")
        return EXIT_COMPONENT_FAILED
    return 0


def _supervise(config_path: str, workers: int) -> int:
    """Run ``workers`` hub processes on one shared subscription; restart any that dies."""
    config = _config_or_exit(config_path)
    if not config.mqtt.shared_group:
        _stderr_error("hub run --workers N needs mqtt.shared_group (the workers share one "
                      "subscription)")
        return EXIT_CONFIG
    stopping = threading.Event()

    def spawn(i: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "hub.cli", "run", "-c", config_path,
                                 "--worker-index", str(i), "--workers", str(workers)])

    procs = {i: spawn(i) for i in range(workers)}

    def on_signal(sig: int, _frame: FrameType | None) -> None:
        stopping.set()
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping.is_set():
        for i, proc in list(procs.items()):
            code = proc.poll()
            if code is not None and not stopping.is_set():
                why = (" (a component failed past its restart budget)"
                       if code == EXIT_COMPONENT_FAILED else "")
                print(f"hub worker {i} exited with {code}{why}; restarting", file=sys.stderr)
                time.sleep(1.0)
                procs[i] = spawn(i)
        stopping.wait(0.5)
    for proc in procs.values():
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.worker_index is not None:
        return _run_one(args.config, args.worker_index, args.workers)
    if args.workers > 1:
        return _supervise(args.config, args.workers)
    return _run_one(args.config, None, 1)


def _data_dir(args: argparse.Namespace) -> Path:
    # dead letters live in the data directory: neither secrets nor the hub's packages are needed
    return Path(_unchecked_config(args).data_dir)


DLQ_USAGE = """\
hub dlq: say what to do with the dead letters (events the hub refused, kept with the reason):
  hub dlq list [--status open|replayed]            list them, newest last
  hub dlq show ID                                 one of them, with its payload
  hub dlq replay ID... | --all [--timeout S]      the running hub feeds them through its
                                                  validation again and says what became of each
each takes -c FILE, the hub's config (default: $HUB_CONFIG, else /etc/thermopipe/hub.toml)"""


def cmd_dlq(args: argparse.Namespace) -> int:
    from hub import deadletters as dl

    if args.dlq_command is None:
        print(DLQ_USAGE, file=sys.stderr)
        return EXIT_CONFIG

    data_dir = _data_dir(args)
    database = data_dir / "hub.sqlite3"
    if not dl.stores(data_dir):  # its own, or those of --workers' workers (worker-i/)
        return _fail(f"no hub data in {data_dir} ({database.name} does not exist): is data_dir "
                     f"in {args.config} the running hub's? (-c FILE names its config)")
    esc = dl.printable  # every field came from the wire: escaped before the terminal sees it
    if args.dlq_command == "list":
        rows = dl.list_dead_letters(data_dir, args.status)
        for row in rows:
            size = (f"{row.original_size} B, truncated" if row.truncated
                    else f"{row.original_size} B")
            print(f"{esc(row.dead_letter_id, 64)}  {row.received_at.isoformat()}  "
                  f"{esc(row.status, 20):<16} {esc(row.reason_code, 40):<16} "
                  f"{esc(row.topic, 120)}  ({size})  {esc(row.reason, 100)}")
        print(f"{len(rows)} dead letter(s)")
        return 0
    if args.dlq_command == "show":
        found = dl.find(data_dir, args.id)
        if found is None:
            print(f"no dead letter {esc(args.id, 100)}", file=sys.stderr)
            return 1
        print(_show(found))
        return 0
    return _replay(args, data_dir)


REPLAY_LINES = {"replayed": "replayed", "refused": "still refused",
                "unknown": "unknown id", "already_replayed": "already replayed"}


def _replay(args: argparse.Namespace, data_dir: Path) -> int:
    """``hub dlq replay``: a command to the running hub (hub/dead_letter_api.py), which feeds
    the dead letters through its validation and says per id what happened: one line each here,
    exit 0 when every one is replayed (now or before), 1 otherwise."""
    from hub import replay_client as rc
    from hub.deadletters import printable as esc

    if not args.all and not args.ids:
        print("name dead letter ids to replay, or --all", file=sys.stderr)
        return 1
    config = _unchecked_config(args)
    if not config.http.enabled:
        return _fail(f"replay is a command to the running hub's web server, and [http] enabled "
                     f"= false in {args.config}: turn it on and restart the hub")
    if config.http.port == 0:
        return _fail(f"replay needs the running hub's address, and http.port = 0 (any free "
                     f"port) in {args.config}: give it a port and restart the hub")
    try:
        token = rc.token_of(args.config)
    except (ValueError, OSError) as exc:
        return _fail(f"http.token in {args.config}: {exc}")
    ids = None if args.all else list(args.ids)
    answers, down = [], []
    for target in rc.targets(config.http.host, config.http.port, data_dir):
        try:
            answers.append(rc.send(target, ids, token, args.timeout))
        except rc.HubNotRunning as exc:
            down.append(f"{target.url} ({exc})")
        except ServerError as exc:
            return _fail(exc)
    if not answers:
        return _fail(f"no hub answers at {', '.join(down)}: replay needs the running hub (it "
                     f"feeds the dead letters through its validation); start it (hub run -c "
                     f"{args.config}, or its service: systemctl start hub, docker compose up "
                     "-d hub) and try again")
    for where in down:  # a worker down: its dead letters were not asked for
        print(f"hub: no hub answers at {where}: the dead letters of its store were not "
              "replayed", file=sys.stderr)
    results = rc.merge(answers)
    if not results:
        print("nothing to replay (no open dead letter)")
    for r in results:
        what = REPLAY_LINES.get(r["result"], esc(r["result"], 40))
        reason = f": {esc(r['reason'], 300)}" if r["reason"] else ""
        print(f"{esc(r['id'], 64)}: {what}{reason}")
    done = all(r["result"] in ("replayed", "already_replayed") for r in results)
    return 0 if done and not down else 1


def _unchecked_config(args: argparse.Namespace) -> HubConfig:
    """The config for ``hub dlq``: secrets and this machine's packages left unchecked (what
    replay needs of them, the token, is read by :func:`hub.replay_client.token_of`)."""
    from hub.config import load_hub_config
    from program_support.config_loading import secrets_unresolved

    try:
        with secrets_unresolved():
            return load_hub_config(args.config)
    except ConfigError as exc:
        print(format_config_error(exc, EXAMPLE_CONFIG), file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def _show(found: DeadRecord) -> str:
    """``hub dlq show``: every field escaped (:func:`hub.deadletters.printable`), each cut part
    said with its size and SHA-256; the payload as escaped text, and as base64 too when the
    text is not its exact form (invalid UTF-8, control characters)."""
    from hub.deadletters import printable as esc

    def cut(size: int | None, sha: str | None, cut_: bool) -> str:
        return f"  [a prefix: {size} bytes received, sha256 {sha}]" if cut_ else ""

    text = esc(found.payload, lines=True)
    try:
        exact = found.payload.decode("utf-8") == text
    except UnicodeDecodeError:
        exact = False
    if found.truncated:
        size = (f"{found.original_size} bytes (truncated: the first {len(found.payload)} "
                f"kept; it cannot be replayed)")
        shown = f"payload, first {len(found.payload)} bytes"
    else:
        size, shown = f"{found.original_size} bytes", "payload"
    lines = [f"id:          {esc(found.dead_letter_id, 64)}",
             f"received_at: {found.received_at.isoformat()}",
             f"topic:       {esc(found.topic, 4 * 1024)}"
             f"{cut(found.topic_size, found.topic_sha256, found.topic_truncated)}",
             f"status:      {esc(found.status, 40)}",
             f"reason_code: {esc(found.reason_code, 64)}",
             f"reason:      {esc(found.reason, 8 * 1024)}"
             f"{cut(found.reason_size, found.reason_sha256, found.reason_truncated)}",
             f"outcome:     {esc(found.outcome, 200)}",
             f"size:        {size}", f"sha256:      {found.sha256}"]
    if exact:
        lines += [f"{shown} (utf-8):", text]
    else:
        lines += [f"{shown} (escaped: \\xNN bytes and control characters):", text,
                  f"{shown} (base64):", base64.b64encode(found.payload).decode()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hub", description="The thermopipe hub: receives events from the broker, validates "
        "and de-duplicates them, and hands them to storage, alerting and the live dashboard.")
    parser.add_argument("--version", action="version", version=version_line("hub"))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    config_help = ("the hub's TOML file (default: $HUB_CONFIG, else "
                   f"{DEFAULT_CONFIG})")
    run = sub.add_parser("run", help="run the hub")
    run.add_argument("-c", "--config", default=_default_config(), help=config_help)
    run.add_argument("--workers", type=int, default=1,
                     help="hub processes sharing one MQTT 5 shared subscription")
    run.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check-config", help="validate a config file; exit 2 if invalid")
    check.add_argument("file", type=Path, nargs="?", help=f"{config_help}, or -c FILE")
    check.add_argument("-c", "--config", type=Path, default=None, help="the hub's TOML file")
    add_check_flags(check, "hub's server")
    check.set_defaults(func=cmd_check_config, parser=check)
    dlq = sub.add_parser("dlq", help="inspect and replay dead letters")
    dlq.add_argument("-c", "--config", default=_default_config(), help=config_help)
    dsub = dlq.add_subparsers(dest="dlq_command", metavar="list|show|replay")
    lst = dsub.add_parser("list", help="list dead letters, newest last")
    lst.add_argument("--status", choices=["open", "replayed"])
    show = dsub.add_parser("show", help="one dead letter with its payload")
    show.add_argument("id")
    replay = dsub.add_parser(
        "replay", help="ask the running hub to feed dead letters through its validation again",
        description="Sends the ids to the running hub's web server ([http] host, port and "
        "token of the config); the hub replays them through its validation and answers per id: "
        "replayed, still refused (with the reason), unknown id, already replayed. One line per "
        "id; exit 0 when every one is replayed, 1 otherwise or when no hub answers.")
    replay.add_argument("ids", nargs="*", help="dead letter ids (hub dlq list shows them)")
    replay.add_argument("--all", action="store_true", help="every open dead letter")
    replay.add_argument("--timeout", "--wait", type=float, default=120.0, dest="timeout",
                        help="seconds to wait for the hub's answer (default 120)")
    for child in (lst, show, replay):
        # -c after the subcommand too; SUPPRESS keeps `hub dlq -c FILE list`'s value when absent
        child.add_argument("-c", "--config", default=argparse.SUPPRESS, help=config_help)
    dlq.set_defaults(func=cmd_dlq)
    return parser


def _default_config() -> str:
    return os.environ.get("HUB_CONFIG", DEFAULT_CONFIG)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        print("\nhub: say what to do: run, check-config or dlq (hub COMMAND --help)",
              file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "run" and args.workers < 1:
        print("--workers must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

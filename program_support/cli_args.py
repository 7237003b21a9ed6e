"""Option types and options the command-line programs share, so a bad option is reported against
the option (``argument --speed: must be above 0, got -5``) before anything starts, and
``edge-agent`` and ``hub`` take a config file the same way (``check-config -c FILE`` or
``check-config FILE``; ``--skip-secrets``, ``--for-another-machine``)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def port_number(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return int(text)


def add_check_flags(check: argparse.ArgumentParser, machine: str) -> None:
    """``check-config``'s two ways of leaving things unchecked (the same in ``hub``)."""
    check.add_argument("--skip-secrets", action="store_true",
                       help="do not read env:/file: secrets, only check their form; everything "
                            "else is checked on this machine (a secret that exists only while "
                            "the service runs, such as a systemd credential)")
    check.add_argument("--for-another-machine", action="store_true",
                       help=f"the file is meant for another machine (the {machine}): check its "
                            "form only, and read no secret, file, directory, package or host "
                            "name of this one")
    # the old name of --for-another-machine, kept working for the scripts and notes that use it
    check.add_argument("--no-secrets", action="store_true", help=argparse.SUPPRESS)


def config_argument(positional: Path | None, option: Path | None, default: Path,
                    parser: argparse.ArgumentParser) -> Path:
    """``check-config FILE`` and ``check-config -c FILE`` are one argument given either way."""
    if positional is not None and option is not None and positional != option:
        parser.error(f"two config files given ({positional} and -c {option}): name one")
    return option or positional or default


def skipped_flag(args: argparse.Namespace) -> tuple[str | None, bool]:
    """(the flag that leaves secrets unread, as the user wrote it; whether this machine is
    checked too)."""
    if args.for_another_machine or args.no_secrets:
        return ("--for-another-machine" if args.for_another_machine else "--no-secrets"), False
    if args.skip_secrets:
        return "--skip-secrets", True
    return None, True

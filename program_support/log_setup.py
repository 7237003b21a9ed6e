"""The one structlog set-up of both programs: JSON lines for journald and log collectors,
readable console lines on a terminal. Event names are ``component.event`` in lowercase.

The agent adds its site and device id to every log line by a processor (contextvars would not
reach the source and delivery threads); code binds ``sensor`` / ``event_id`` where it has them.

Under systemd, stderr is a stream into the journal, and systemd says so in ``$JOURNAL_STREAM``
(``device:inode`` of that stream). Then every line starts with its syslog priority, ``<3>`` for
an error, ``<4>`` a warning, ``<6>`` info, ``<7>`` debug: journald strips the prefix and files
the line at that priority, so ``journalctl -u edge-agent -p err`` shows only the errors.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}

#: structlog method name -> syslog priority (sd-daemon(3): SD_ERR is <3>, ...)
PRIORITIES = {"debug": 7, "info": 6, "msg": 6, "warning": 4, "warn": 4, "error": 3,
              "exception": 3, "critical": 2, "fatal": 2}


def journal_stream(value: str | None, st_dev: int, st_ino: int) -> bool:
    """Is the stream with this device and inode the journal stream systemd announced? Pure."""
    if not value:
        return False
    dev, _, ino = value.partition(":")
    return dev.isdigit() and ino.isdigit() and (int(dev), int(ino)) == (st_dev, st_ino)


def to_journal(stream: TextIO, env: Mapping[str, str] | None = None) -> bool:
    """True when ``stream`` is connected to journald (so lines get a ``<N>`` prefix)."""
    env = os.environ if env is None else env
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):  # a StringIO in tests, a closed stream
        return False
    return journal_stream(env.get("JOURNAL_STREAM"), st.st_dev, st.st_ino)


def prefixed(line: str, level: str, journal: bool) -> str:
    """``line`` with the journal priority of ``level`` when writing to the journal. Pure."""
    return f"<{PRIORITIES.get(level, 6)}>{line}" if journal else line


def configure(level: str = "info", fmt: str = "auto", *, site: str | None = None,
              device_id: str | None = None, stream: TextIO | None = None,
              journal: bool | None = None) -> None:
    out = stream if stream is not None else sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    identity = {k: v for k, v in (("site", site), ("device", device_id)) if v}
    journal = to_journal(out) if journal is None else journal

    def add_identity(logger: Any, method: str,
                     event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in identity.items():
            event.setdefault(key, value)
        return event

    def add_priority(logger: Any, method: str, rendered: Any) -> Any:
        return prefixed(rendered, method, True)

    renderer: Any = (structlog.dev.ConsoleRenderer(colors=out.isatty()) if console
                     else structlog.processors.JSONRenderer())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_identity,
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        renderer,
    ]
    if journal:
        processors.append(add_priority)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )

"""Moved: the serial line protocol is the contract between firmware and agent, so it lives in
``schemas/serial_protocol.py`` (documented in ``schemas/SERIAL_PROTOCOL.md``). This name stays for
scripts written against it."""

from schemas.serial_protocol import *  # noqa: F403

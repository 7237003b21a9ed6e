"""The ``edge-agent`` program's entry (the console script and ``python -m edge_agent``).

A process started here is the agent and nothing else, so before anything imports pydantic or
paho it leaves the modules the agent never uses unloaded (``edge_agent/deferred_imports.py``:
OpenSSL without TLS, asyncio, urllib.request, importlib.metadata; about 7 MiB of resident
memory on a Pi). Importing
``edge_agent.cli`` anywhere else (tests, other programs) changes nothing in that process.
"""

from __future__ import annotations

from edge_agent.deferred_imports import defer_unused


def main() -> int:
    defer_unused()
    from edge_agent.cli import main as cli_main

    return cli_main()

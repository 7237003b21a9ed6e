"""The installed thermopipe version: ``--version`` of every program, and the agent's birth."""

from __future__ import annotations

from importlib import metadata


def thermopipe_version() -> str:
    try:
        return metadata.version("thermopipe")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "0+checkout"


def version_line(program: str) -> str:
    """What ``PROGRAM --version`` prints, e.g. ``edge-agent (thermopipe) 0.1.0``."""
    return f"{program} (thermopipe) {thermopipe_version()}"

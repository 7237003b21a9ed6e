"""The installed thermopipe version: ``--version`` of every program, and the agent's birth."""

from __future__ import annotations

import os
import sys

DIST = "thermopipe"


def _version_from_metadata_file() -> str | None:
    """The ``Version:`` of the first thermopipe distribution on ``sys.path`` (where
    ``importlib.metadata`` looks first), read from its metadata file without importing
    ``importlib.metadata``, which brings ``email``, ``zipfile`` and ``csv`` with it: 1.6 MB of
    an agent's memory (edge_agent/deferred_imports.py)."""
    for entry in sys.path:
        folder = entry or "."
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info") and name.startswith(f"{DIST}-"):
                path = os.path.join(folder, name, "METADATA")
            elif name.endswith(".egg-info") and name.startswith((f"{DIST}-", f"{DIST}.")):
                path = os.path.join(folder, name, "PKG-INFO")
            else:
                continue
            try:
                with open(path, encoding="utf-8") as meta:
                    for line in meta:
                        if line.startswith("Version:"):
                            return line.split(":", 1)[1].strip()
                        if not line.strip():  # the headers end here
                            break
            except OSError:
                continue
    return None


def thermopipe_version() -> str:
    found = _version_from_metadata_file()
    if found:
        return found
    from importlib import metadata  # a layout the file look-up does not know

    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "0+checkout"


def version_line(program: str) -> str:
    """What ``PROGRAM --version`` prints, e.g. ``edge-agent (thermopipe) 0.1.0``."""
    return f"{program} (thermopipe) {thermopipe_version()}"

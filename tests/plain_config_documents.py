"""Where a TOML document read by program_support/plain_config.py can be changed: shared by the
property tests that hold a plain loader to the pydantic models it replaced (the agent's config,
tests/agent_config; firmware-sim's scenarios, tests/firmware_sim)."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from typing import Any

from program_support.plain_config import Tagged, fields_of, is_section


def _unwrap(tp: Any) -> tuple[Any, Tagged | None]:
    tag = None
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            base, *rules = typing.get_args(tp)
            tag = next((r for r in rules if isinstance(r, Tagged)), tag)
            tp = base
        elif origin is typing.Union or (origin is None and typing.get_args(tp)
                                         and type(None) in typing.get_args(tp)):
            members = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(members) != 1:
                return tp, tag
            tp = members[0]
        else:
            return tp, tag


def sections(node: Any, tp: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """(path, section class) of every table of ``node`` that is a section of ``tp``."""
    tp, tag = _unwrap(tp)
    if tag is not None and isinstance(node, dict):
        for member in typing.get_args(tp):  # a section may stand for several tag names
            if node.get(tag.key) in typing.get_args(fields_of(member)[tag.key]):
                yield from sections(node, member, path)
        return
    origin = typing.get_origin(tp)
    if is_section(tp) and isinstance(node, dict):
        yield (path, tp)
        known = fields_of(tp)
        for key, child in node.items():
            if key in known:
                yield from sections(child, known[key], (*path, key))
    elif origin is list and isinstance(node, list):
        for i, child in enumerate(node):
            yield from sections(child, typing.get_args(tp)[0], (*path, i))
    elif origin is dict and isinstance(node, dict):
        for key, child in node.items():
            yield from sections(child, typing.get_args(tp)[1], (*path, key))


def node_at(doc: Any, path: tuple[Any, ...]) -> Any:
    node = doc
    for part in path:
        node = node[part]
    return node

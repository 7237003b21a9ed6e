"""``hub dlq replay`` as a command the running hub receives: ``POST /api/dlq/replay``.

The CLI (``hub/cli.py``) sends ``{"ids": [...]}`` or ``{"all": true}`` to the hub's own web
server (address and ``[http] token`` from the same config file). The hub reads those dead
letters from its own store (:func:`hub.deadletters.read_for_replay`) and decides, per id
(:func:`plan`): unknown, already replayed, not replayable (its payload or topic was cut: an
event cannot be accepted from part of it), or to replay. Those to replay go to the ingest thread
(:meth:`hub.ingest.Ingest.replay`), which feeds them through the same decision as live messages
in its own transaction: one that passes becomes an event exactly once (its event id is
deduplicated like any other) and its row ``replayed``; one that fails again stays ``open`` with
the new reason. The answer says what happened to each id (:func:`settle`).

The route is ``hub/dead_letter_api.py``; this module holds the decisions (pure: :func:`plan`,
:func:`settle`, :func:`parse_request`) and the hand-over to the ingest thread
(:class:`ReplayInbox`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from hub.deadletters import read_for_replay
from hub.journal import ReplayOutcome
from hub.records import DeadRecord
from schemas.errors import DeliveryError

Result = Literal["replayed", "refused", "unknown", "already_replayed"]
RESULTS: tuple[Result, ...] = ("replayed", "refused", "unknown", "already_replayed")
#: dead letters handed to the ingest thread at once (``{"all": true}`` may name thousands)
CHUNK = 500
#: seconds the route waits for the ingest thread to decide one chunk
CHUNK_TIMEOUT_S = 60.0

#: (row id, topic, payload) each in, the outcome per row id out (:meth:`ReplayInbox.submit`)
Replayer = Callable[[Sequence[tuple[int, str, bytes]], float], dict[int, ReplayOutcome]]


class ReplayTimeout(DeliveryError):
    """The ingest thread did not decide a replay in time (or failed, or is stopping)."""


@dataclass(slots=True)
class ReplayJob:
    """Dead letters to replay, (row id, topic, payload) each; ``done`` once ``outcomes`` (by
    row id) or ``error`` is set."""

    rows: Sequence[tuple[int, str, bytes]]
    done: threading.Event = field(default_factory=threading.Event)
    outcomes: dict[int, ReplayOutcome] = field(default_factory=dict)
    error: str = ""


class ReplayInbox:
    """The hand-over from the web thread to the ingest thread: :meth:`submit` waits while the
    ingest thread takes the jobs at its next turn (:meth:`take`), decides their rows with its
    batch, and ends them (:meth:`finish`, or :meth:`fail` when the batch raised)."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[ReplayJob] = queue.SimpleQueue()

    def submit(self, rows: Sequence[tuple[int, str, bytes]], timeout_s: float,
               ) -> dict[int, ReplayOutcome]:
        """(Any thread.) The outcome of each row, by row id; :class:`ReplayTimeout` when the
        ingest thread did not decide them in ``timeout_s``, failed, or is stopping."""
        job = ReplayJob(rows)
        self._jobs.put(job)
        if not job.done.wait(timeout_s):
            raise ReplayTimeout(f"the hub's ingest did not replay them within {timeout_s:.0f} s "
                                "(it may still: hub dlq list shows it)")
        if job.error:
            raise ReplayTimeout(job.error)
        return job.outcomes

    def take(self) -> list[ReplayJob]:
        """(The ingest thread.) The jobs submitted since its last turn."""
        jobs = []
        while True:
            try:
                jobs.append(self._jobs.get_nowait())
            except queue.Empty:
                return jobs

    @staticmethod
    def finish(jobs: Sequence[ReplayJob], outcomes: Sequence[ReplayOutcome]) -> None:
        by_row = {o.row_id: o for o in outcomes}
        for job in jobs:
            job.outcomes = {row[0]: by_row[row[0]] for row in job.rows if row[0] in by_row}
            job.done.set()

    @staticmethod
    def fail(jobs: Sequence[ReplayJob], error: str) -> None:
        for job in jobs:
            job.error = error
            job.done.set()


@dataclass(frozen=True, slots=True)
class Answer:
    """What became of one requested id."""

    id: str
    result: Result
    reason: str = ""

    def as_json(self) -> dict[str, str]:
        return {"id": self.id, "result": self.result, "reason": self.reason}


def parse_request(body: object) -> list[str] | None:
    """``{"ids": [...]}`` -> the ids, ``{"all": true}`` -> None; else :class:`ValueError`."""
    if isinstance(body, dict) and set(body) == {"all"} and body["all"] is True:
        return None
    if isinstance(body, dict) and set(body) == {"ids"}:
        ids = body["ids"]
        if (isinstance(ids, list) and ids and len(ids) <= 100_000
                and all(isinstance(i, str) and 0 < len(i) <= 256 for i in ids)):
            return list(dict.fromkeys(ids))  # once each, in the order given
    raise ValueError('the body must be {"ids": ["<dead letter id>", ...]} or {"all": true}')


def _cut(row: DeadRecord) -> str:
    if row.truncated:
        what = (f"only the first {len(row.payload)} of its {row.original_size} bytes were kept "
                f"(sha256 {row.sha256})")
    else:
        what = (f"only a prefix of its {row.topic_size}-byte topic was kept "
                f"(sha256 {row.topic_sha256})")
    return f"not replayable: {what}; an event cannot be accepted from part of its payload or topic"


def plan(ids: list[str] | None, rows: Sequence[DeadRecord],
         ) -> tuple[list[DeadRecord], list[Answer]]:
    """Pure: which ``rows`` to replay, and the answers already known. ``ids`` None: every open
    row; else the rows of those ids (any status: an id already replayed says so)."""
    by_id: dict[str, list[DeadRecord]] = {}
    for row in rows:
        by_id.setdefault(row.dead_letter_id, []).append(row)
    wanted = [r.dead_letter_id for r in rows if r.status == "open"] if ids is None else ids
    replay: list[DeadRecord] = []
    answers: list[Answer] = []
    for dead_id in dict.fromkeys(wanted):
        found = by_id.get(dead_id, [])
        open_rows = [r for r in found if r.status == "open"]
        if not found:
            answers.append(Answer(dead_id, "unknown", "no dead letter with this id in this "
                                                      "hub's store"))
        elif not open_rows:
            answers.append(Answer(dead_id, "already_replayed", found[-1].outcome or "replayed"))
        elif any(not r.replayable for r in open_rows):
            answers.append(Answer(dead_id, "refused", _cut(open_rows[0])))
        else:
            replay.extend(open_rows)
    return replay, answers


def settle(replayed: Sequence[DeadRecord], outcomes: dict[int, ReplayOutcome]) -> list[Answer]:
    """Pure: the answer of each replayed row from the ingest thread's outcome (by row id)."""
    answers = []
    for row in replayed:
        outcome = outcomes.get(row.row_id)
        if outcome is None:  # ingest decides every item it is given: a bug if this happens
            answers.append(Answer(row.dead_letter_id, "refused", "no outcome from ingest"))
        elif outcome.accepted:
            answers.append(Answer(row.dead_letter_id, "replayed", outcome.reason))
        else:
            answers.append(Answer(row.dead_letter_id, "refused",
                                  f"{outcome.reason_code}: {outcome.reason}"))
    return answers


def replay(store: Path, ids: list[str] | None, replayer: Replayer,
           timeout_s: float = CHUNK_TIMEOUT_S) -> list[Answer]:
    """Read, plan, hand the replayable rows to ingest chunk by chunk; one answer per id, in the
    order asked (``all``: the store's). Raises :class:`ReplayTimeout`."""
    rows = read_for_replay(store, ids)
    to_replay, answers = plan(ids, rows)
    for start in range(0, len(to_replay), CHUNK):
        chunk = to_replay[start:start + CHUNK]
        outcomes = replayer([(r.row_id, r.topic, r.payload) for r in chunk], timeout_s)
        answers.extend(settle(chunk, outcomes))
    merged: dict[str, Answer] = {}
    for answer in answers:  # an id of several rows (made by hand): a refusal outweighs the rest
        if answer.id not in merged or answer.result == "refused":
            merged[answer.id] = answer
    order = ids if ids is not None else [r.dead_letter_id for r in rows]
    return [merged[i] for i in dict.fromkeys(order) if i in merged]

"""``hub dlq replay``'s decisions without a broker (hub/dead_letter_replay.py): the request's two
forms, what each id gets (unknown, already replayed, not replayable, replayed, refused), the
hand-over to the ingest thread, and the rows an older hub left ``replay_requested`` opened again
when the store is opened. tests/hub_core/test_dlq_replay_command.py runs it through ``hub run``."""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hub.dead_letter_replay import (
    Answer,
    ReplayInbox,
    ReplayTimeout,
    parse_request,
    plan,
    replay,
    settle,
)
from hub.deadletters import list_dead_letters
from hub.journal import BatchRecord, Journal, ReplayOutcome
from hub.journal.store import REPLAY_REQUEST_DROPPED
from hub.records import DeadRecord

WHEN = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def row(dead_id: str, row_id: int, status: str = "open", payload: bytes = b"{}",
        size: int | None = None) -> DeadRecord:
    return DeadRecord(dead_id, WHEN, "tp/s1/d1/event/t1", "invalid", "bad", payload, status,
                      "accepted on replay" if status == "replayed" else "", row_id,
                      size=size)


def test_the_request_is_a_list_of_ids_or_all() -> None:
    assert parse_request({"all": True}) is None
    assert parse_request({"ids": ["b", "a", "b"]}) == ["b", "a"]  # once each, as given
    for bad in ({"all": False}, {"ids": []}, {"ids": "a"}, {"ids": [1]}, {"ids": [""]},
                {"ids": ["a"], "all": True}, [], "all", None):
        with pytest.raises(ValueError, match=r'\{"ids"'):
            parse_request(bad)


def test_each_id_gets_one_answer_and_only_open_whole_rows_are_replayed() -> None:
    rows = [row("open1", 1), row("done1", 2, "replayed"), row("cut1", 3, size=10_000),
            row("open2", 4)]
    to_replay, answers = plan(["open1", "nope", "done1", "cut1"], rows)
    assert [r.dead_letter_id for r in to_replay] == ["open1"]
    assert [(a.id, a.result) for a in answers] == [
        ("nope", "unknown"), ("done1", "already_replayed"), ("cut1", "refused")]
    assert answers[1].reason == "accepted on replay"
    assert "only the first 2 of its 10000 bytes were kept" in answers[2].reason
    # all: the open rows only; the cut one is refused, every time it is asked
    to_replay, answers = plan(None, rows)
    assert [r.dead_letter_id for r in to_replay] == ["open1", "open2"]
    assert [(a.id, a.result) for a in answers] == [("cut1", "refused")]


def test_the_ingest_outcome_becomes_the_answer() -> None:
    rows = [row("a", 1), row("b", 2), row("c", 3)]
    outcomes = {1: ReplayOutcome(1, True, "accepted", "accepted on replay"),
                2: ReplayOutcome(2, False, "invalid", "not JSON")}
    assert settle(rows, outcomes) == [
        Answer("a", "replayed", "accepted on replay"), Answer("b", "refused", "invalid: not JSON"),
        Answer("c", "refused", "no outcome from ingest")]


def test_the_inbox_hands_rows_to_the_ingest_thread_and_back() -> None:
    inbox = ReplayInbox()
    got: list[dict[int, ReplayOutcome]] = []
    waiter = threading.Thread(target=lambda: got.append(inbox.submit([(7, "t", b"p")], 30)))
    waiter.start()
    jobs: list = []
    while not jobs:  # the ingest thread's turn
        jobs = inbox.take()
    assert [list(j.rows) for j in jobs] == [[(7, "t", b"p")]]
    inbox.finish(jobs, [ReplayOutcome(7, True, "accepted", "ok"), ReplayOutcome(8, True, "", "")])
    waiter.join(10)
    assert got == [{7: ReplayOutcome(7, True, "accepted", "ok")}]
    with pytest.raises(ReplayTimeout, match="within 0 s"):
        inbox.submit([(1, "t", b"p")], 0.01)  # nobody takes it
    errors: list[str] = []

    def submit() -> None:
        try:
            inbox.submit([(2, "t", b"p")], 30)
        except ReplayTimeout as exc:
            errors.append(str(exc))

    asker = threading.Thread(target=submit)
    asker.start()
    while not errors:  # ingest stopping: what it takes is failed, not left waiting
        inbox.fail(inbox.take(), "the hub is stopping")
        asker.join(0.05)
    assert errors == ["the hub is stopping"]


def test_replay_reads_plans_and_answers_in_the_order_asked(tmp_path: Path) -> None:
    store = tmp_path / "hub.sqlite3"
    journal = Journal(store)
    try:
        journal.record(BatchRecord(dead=[
            DeadRecord.refused(i, WHEN, "tp/s1/d1/event/t1", b"{}", reason_code="invalid",
                               reason="bad") for i in ("d1", "d2", "d3")]))
    finally:
        journal.close()
    asked: list[list[int]] = []

    def replayer(rows: object, _timeout: float) -> dict[int, ReplayOutcome]:
        ids = [r[0] for r in rows]  # type: ignore[attr-defined]
        asked.append(ids)
        return {i: ReplayOutcome(i, i % 2 == 1, "invalid", "again") for i in ids}

    answers = replay(store, ["d3", "zz", "d1"], replayer)
    assert [(a.id, a.result) for a in answers] == [
        ("d3", "replayed"), ("zz", "unknown"), ("d1", "replayed")]
    assert asked == [[3, 1]]  # in the order asked
    answers = replay(store, None, replayer)
    assert [(a.id, a.result) for a in answers] == [
        ("d1", "replayed"), ("d2", "refused"), ("d3", "replayed")]


def test_rows_an_older_hub_left_replay_requested_are_open_again_at_start(tmp_path: Path,
                                                                           ) -> None:
    store = tmp_path / "hub.sqlite3"
    journal = Journal(store)
    try:
        journal.record(BatchRecord(dead=[
            DeadRecord.refused(i, WHEN, "tp/s1/d1/event/t1", b"{}", reason_code="invalid",
                               reason="bad") for i in ("asked", "left")]))
    finally:
        journal.close()
    with sqlite3.connect(store) as conn:  # what `hub dlq replay` of an older hub wrote
        conn.execute("UPDATE dead_letters SET status='replay_requested' "
                     "WHERE dead_letter_id='asked'")
    Journal(store).close()  # the hub starting
    with sqlite3.connect(store) as conn:
        rows = dict(conn.execute("SELECT dead_letter_id, status FROM dead_letters"))
        asked_bytes = conn.execute("SELECT stored_bytes FROM dead_letters "
                                   "WHERE dead_letter_id='asked'").fetchone()[0]
    assert rows == {"asked": "open", "left": "open"}
    (asked,) = [r for r in list_dead_letters(tmp_path) if r.dead_letter_id == "asked"]
    assert asked.outcome == REPLAY_REQUEST_DROPPED
    assert asked_bytes == asked.stored_bytes  # retention counts the row as it is now


def test_the_cli_asks_each_worker_of_a_data_dir_on_its_port(tmp_path: Path) -> None:
    from hub.replay_client import Target, base_url, merge, targets

    assert targets("0.0.0.0", 8780, tmp_path) == [
        Target("http://127.0.0.1:8780", tmp_path / "hub.sqlite3")]
    for worker in (0, 1):
        Journal(tmp_path / f"worker-{worker}" / "hub.sqlite3").close()
    assert [t.url for t in targets("127.0.0.1", 8780, tmp_path)] == [
        "http://127.0.0.1:8780", "http://127.0.0.1:8781"]
    assert base_url("::", 9000) == "http://[::1]:9000"
    # an id is unknown only when every worker says so
    assert merge([[{"id": "a", "result": "unknown", "reason": ""},
                   {"id": "b", "result": "unknown", "reason": ""}],
                  [{"id": "a", "result": "replayed", "reason": "ok"},
                   {"id": "b", "result": "unknown", "reason": ""}]]) == [
        {"id": "a", "result": "replayed", "reason": "ok"},
        {"id": "b", "result": "unknown", "reason": ""}]


def test_the_replay_route_refuses_an_endless_or_hostile_body_before_replaying(
        tmp_path: Path) -> None:
    import warnings

    from starlette.applications import Starlette

    with warnings.catch_warnings():
        # starlette 1.x prefers the httpx2 package for its test client; httpx works the same here
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    from hub import dead_letter_api

    def replayer(*_args: object) -> list[object]:
        raise AssertionError("nothing may be replayed for a refused body")

    app = Starlette(routes=[dead_letter_api.replay_route(tmp_path / "dead.sqlite3",
                                                         replayer)])  # type: ignore[arg-type]
    json_type = {"content-type": "application/json"}
    with TestClient(app) as client:
        big = b'{"ids": ["' + b"x" * (dead_letter_api.BODY_MAX + 1) + b'"]}'
        answer = client.post(dead_letter_api.REPLAY_PATH, content=big, headers=json_type)
        assert answer.status_code == 413, answer.text

        def chunks() -> object:  # no content-length: the stream is cut at the bound
            yield b'{"ids": ["'
            for _ in range(40):
                yield b"x" * 2**20
        answer = client.post(dead_letter_api.REPLAY_PATH, content=chunks(), headers=json_type)
        assert answer.status_code == 413, answer.text

        deep = b"[" * 200_000 + b"]" * 200_000  # nested past Python's recursion limit
        answer = client.post(dead_letter_api.REPLAY_PATH, content=deep, headers=json_type)
        assert answer.status_code == 400 and len(answer.text) < 400, answer.text

        answer = client.post(dead_letter_api.REPLAY_PATH, content=b"\xff\xfe", headers=json_type)
        assert answer.status_code == 400, answer.text

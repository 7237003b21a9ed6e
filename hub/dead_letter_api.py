"""``POST /api/dlq/replay``: ``hub dlq replay`` sent to the running hub (hub/dead_letter_replay.py
says what happens). Behind the web app's token gate like every route but /healthz.

Answer, 200: ``{"results": [{"id", "result", "reason"}...]}``, one per id, ``result`` one of
``replayed``, ``refused`` (with the reason), ``unknown``, ``already_replayed``. 400: a body that
is neither ``{"ids": [...]}`` nor ``{"all": true}``; 413: a body over :data:`BODY_MAX` (read no
further); 415: not ``application/json`` (so a web
page cannot post here across sites with a plain form); 503: the ingest thread did not decide in
time (it may still: ``hub dlq list`` shows it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from hub.dead_letter_replay import RESULTS, Replayer, ReplayTimeout, parse_request, replay

REPLAY_PATH = "/api/dlq/replay"
#: the largest body read: parse_request's own bounds (100,000 ids of at most 256 characters)
#: with room for JSON's quoting, so a client cannot make the hub hold an endless body in memory
BODY_MAX = 32 * 2**20


class BodyTooLarge(Exception):
    pass


async def _bounded_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > BODY_MAX:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > BODY_MAX:
            raise BodyTooLarge
    return bytes(body)

log = structlog.get_logger("hub.dlq")


def replay_route(store: Path, replayer: Replayer) -> Route:
    """``POST /api/dlq/replay`` of the hub's web app (behind its token gate like every route
    but /healthz)."""

    async def endpoint(request: Request) -> JSONResponse:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return JSONResponse({"error": "send the request as application/json"},
                                status_code=415)
        try:
            ids = parse_request(json.loads(await _bounded_body(request)))
        except BodyTooLarge:
            return JSONResponse({"error": f"the body is over {BODY_MAX} bytes"}, status_code=413)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            # JSONDecodeError is a ValueError; RecursionError: JSON nested beyond Python's limit
            return JSONResponse({"error": str(exc)[:300]}, status_code=400)
        try:
            answers = await run_in_threadpool(replay, store, ids, replayer)
        except ReplayTimeout as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        counts: dict[str, Any] = {r: sum(a.result == r for a in answers) for r in RESULTS}
        log.info("dlq.replay", requested="all" if ids is None else len(ids), **counts)
        return JSONResponse({"results": [a.as_json() for a in answers]})

    return Route(REPLAY_PATH, endpoint, methods=["POST"])

"""The storage consumer: journal events to InfluxDB as line protocol (``hub/storage/points.py``).

Two modes: ``v2`` writes through influxdb-client's v2 write API (InfluxDB 2.x, 3.x, Cloud, 1.8+
and anything that speaks ``/api/v2/write``); ``v1`` posts to InfluxDB 1.x's ``/write``. A batch is
written in requests of ``batch_size`` lines. A write that cannot be done now (server down, 5xx,
timeout) raises :class:`DeliveryError`: the dispatcher retries the same batch with backoff while
the events wait in the journal, so a database outage loses nothing. Writes are idempotent: the
same event is always the same series and timestamp with the same values, so a batch written
again after a crash overwrites itself instead of adding points.

A request the server refuses as malformed (HTTP 400, e.g. a field type conflict) would fail the
same way forever: InfluxDB has written the valid lines of it, the rejected ones are logged and
counted (``thermopipe_hub_storage_rejected_total``) and storage moves on.
"""

from __future__ import annotations

import base64
import gzip as gzip_lib
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

import structlog

from hub.config.storage import StorageConfig
from hub.consumers.base import ConsumerDefaults, JournalEntry, LocalRecord
from hub.storage.lines import line_for
from schemas.errors import DeliveryError

log = structlog.get_logger("hub.storage")


class StorageConsumer(ConsumerDefaults):
    name = "storage"
    accepts_local = True  # the hub's own alerts and hub_health points (LocalRecord)
    batch_size: int  # its own: lines per write request

    def __init__(self, config: StorageConfig, rejected_counter: Any | None = None) -> None:
        self.config = config
        self.batch_size = config.batch_size
        self.max_wait_s = config.flush_interval_s
        self.points_written = 0
        self._rejected = rejected_counter
        self._lock = threading.Lock()  # one write in flight: influxd 1.x chokes on many
        self._client: Any = None
        self._write_api: Any = None
        if config.mode == "v2":
            from influxdb_client.client.influxdb_client import InfluxDBClient
            from influxdb_client.client.write_api import SYNCHRONOUS

            token = config.token.get_secret_value() if config.token else ""
            self._client = InfluxDBClient(url=config.url, token=token, org=config.org,
                                          timeout=int(config.timeout_s * 1000),
                                          enable_gzip=config.gzip, retries=False)
            self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    def handle(self, batch: Sequence[JournalEntry]) -> None:
        lines = []
        for entry in batch:
            line = (entry.point.to_line() if isinstance(entry, LocalRecord)
                    else line_for(entry.message))
            if line is not None:
                lines.append(line)
        size = self.batch_size
        with self._lock:
            for start in range(0, len(lines), size):
                chunk = lines[start:start + size]
                if self.config.mode == "v2":
                    self._write_v2(chunk)
                else:
                    self._write_v1(chunk)
                self.points_written += len(chunk)

    def _refused(self, status: int, detail: str, count: int) -> None:
        log.error("storage.rejected_points", status=status, detail=detail[:500], lines=count)
        if self._rejected is not None:
            self._rejected.inc(count)

    def _write_v1(self, lines: list[str]) -> None:
        cfg = self.config
        params = {"db": cfg.database, "precision": "ns"}
        if cfg.retention_policy:
            params["rp"] = cfg.retention_policy
        body = "\n".join(lines).encode()
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if cfg.gzip:
            body = gzip_lib.compress(body, 1)
            headers["Content-Encoding"] = "gzip"
        if cfg.username:
            pw = cfg.password.get_secret_value() if cfg.password else ""
            headers["Authorization"] = "Basic " + base64.b64encode(
                f"{cfg.username}:{pw}".encode()).decode()
        request = urllib.request.Request(  # noqa: S310 - the URL is validated http(s) config
            f"{cfg.url}/write?{urllib.parse.urlencode(params)}", data=body, headers=headers,
            method="POST")
        try:
            with urllib.request.urlopen(request, timeout=cfg.timeout_s) as resp:  # noqa: S310
                resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            exc.close()
            if exc.code == 400:
                self._refused(exc.code, detail, len(lines))
                return
            raise DeliveryError(f"InfluxDB /write answered {exc.code}: {detail[:300]}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise DeliveryError(f"InfluxDB at {cfg.url} unreachable: {exc}") from exc

    def _write_v2(self, lines: list[str]) -> None:
        from influxdb_client.rest import ApiException
        from urllib3.exceptions import HTTPError as Urllib3Error

        cfg = self.config
        try:
            self._write_api.write(bucket=cfg.bucket, org=cfg.org, record="\n".join(lines),
                                  write_precision="ns")
        except ApiException as exc:
            if exc.status == 400:
                self._refused(400, str(exc.body), len(lines))
                return
            raise DeliveryError(f"InfluxDB v2 write answered {exc.status}: "
                                f"{str(exc.body)[:300]}") from exc
        except (OSError, Urllib3Error) as exc:
            raise DeliveryError(f"InfluxDB at {cfg.url} unreachable: {exc}") from exc

    def close(self) -> None:
        if self._write_api is not None:
            self._write_api.close()
        if self._client is not None:
            self._client.close()

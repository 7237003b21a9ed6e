"""The web's optional token (issue 21, item 8): ``[http] token`` from the environment; every
route but /healthz needs it, as a bearer token (scripts, Prometheus) or, in a browser, as
``?token=`` once that becomes an HttpOnly cookie; a wrong or missing one gets 401 in one line.
A real hub (real uvicorn, real Mosquitto); ``redact`` and ``config_secrets`` as pure units.
The browser side: tests/hub_dashboard/test_dashboard_browser.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from structlog.testing import capture_logs

from hub.app import Hub
from hub.config import HubConfig
from hub.redact import config_secrets, redact, redact_all
from hub.web import COOKIE
from schemas.errors import ConfigError
from tests.hub_core.helpers import hub_config, wait_until, write_toml

TOKEN = "tok-0123456789abcdef-XYZ"


# ---- redact (pure) ---------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "shown"), [
    ("InfluxDB at http://admin:pw@influx:8086 unreachable",
     "InfluxDB at http://***@influx:8086 unreachable"),
    ("mqtts://hub:secret@broker.example:8883", "mqtts://***@broker.example:8883"),
    ("GET http://h/query?db=x&u=admin&p=hunter2&q=SELECT",
     "GET http://h/query?db=x&u=***&p=***&q=SELECT"),
    ("https://hooks.example/x?token=abc123&other=1", "https://hooks.example/x?token=***&other=1"),
    ("header Authorization: Bearer abcdef123456", "header Authorization: Bearer ***"),
    ("no secret here: http://influx:8086/write", "no secret here: http://influx:8086/write"),
])
def test_redact_hides_url_credentials_query_secrets_and_auth_values(text: str,
                                                                    shown: str) -> None:
    assert redact(text) == shown


def test_redact_hides_the_given_secrets_and_walks_a_report() -> None:
    report = {"ok": False, "mqtt_last_error": "clash with client id thermopipe-hub-h-abc123",
              "consumers": {"c": {"last_error": ["x thermopipe-hub-h-abc123"], "n": 3}}}
    assert redact_all(report, ["thermopipe-hub-h-abc123", "ab"]) == {
        "ok": False, "mqtt_last_error": "clash with client id ***",
        "consumers": {"c": {"last_error": ["x ***"], "n": 3}}}  # "ab": too short to mask


def test_config_secrets_lists_passwords_tokens_webhook_paths_and_userinfo() -> None:
    config = HubConfig.model_validate({
        "mqtt": {"password": SecretStr("mqtt-pass")},
        "storage": {"url": "http://u:influx-pass@db:8086", "token": SecretStr("influx-tok")},
        "http": {"token": SecretStr(TOKEN)},
        "alerting": {"rules": [{"name": "r", "notifiers": ["h"]}], "notifiers": {"h": {
            "type": "webhook", "url": "https://hooks.example/services/T1/B2/xyz",
            "headers": {"Authorization": "Bearer hook-header-secret"}}}}})
    found = config_secrets(config)
    for secret in ("mqtt-pass", "u:influx-pass", "influx-tok", TOKEN, "/services/T1/B2/xyz",
                   "Bearer hook-header-secret"):
        assert secret in found, secret


def test_a_short_token_is_refused_at_start_up(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.config import load_hub_config

    monkeypatch.setenv("TP_SHORT_TOKEN", "abc")
    file = write_toml(tmp_path / "hub.toml", {"data_dir": str(tmp_path / "d"),
                                              "storage": {"enabled": False},
                                              "http": {"token": "env:TP_SHORT_TOKEN"}})
    with pytest.raises(ConfigError) as raised:
        load_hub_config(file)
    assert "http.token" in str(raised.value) and "abc" not in str(raised.value)


# ---- a real hub --------------------------------------------------------------------------------

@pytest.mark.servers
def test_every_route_but_healthz_needs_the_token(tmp_path: Path, mosquitto: Any,
                                                 topic_root: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TP_HUB_HTTP_TOKEN", TOKEN)
    config = hub_config(tmp_path, mosquitto, topic_root, http={"token": "env:TP_HUB_HTTP_TOKEN"},
                        log={"level": "debug"})
    with capture_logs() as logs, Hub(config) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
        base = f"http://127.0.0.1:{hub.web.port}"
        with httpx.Client(base_url=base, timeout=10, follow_redirects=False) as web:
            assert web.get("/healthz").status_code == 200  # health checks need no token
            for path in ("/metrics", "/", "/api/state", "/static/index.html"):
                missing = web.get(path)
                assert missing.status_code == 401, path
                assert missing.text.count("\n") == 1 and "token" in missing.text
                wrong = web.get(path, headers={"Authorization": "Bearer " + "x" * 24})
                assert wrong.status_code == 401, path
            assert web.get("/?token=wrong-token-wrong-token").status_code == 401
            metrics = web.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
            assert metrics.status_code == 200 and "thermopipe_hub_events_in_total" in metrics.text
            assert TOKEN not in metrics.text
            state = web.get("/api/state", headers={"Authorization": f"Bearer {TOKEN}"})
            assert state.status_code == 200
            # the browser's way: ?token= once, then the cookie
            once = web.get(f"/?token={TOKEN}&view=x")
            assert once.status_code == 303
            assert once.headers["location"] == "./?view=x"  # the token out of the address bar
            cookie = once.headers["set-cookie"]
            assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie
            assert "samesite=strict" in cookie.lower() and TOKEN not in cookie
        with httpx.Client(base_url=base, timeout=10) as browser:
            browser.cookies.set(COOKIE, cookie.split(";")[0].split("=", 1)[1])
            assert browser.get("/").status_code == 200
            assert browser.get("/api/state").status_code == 200
            with browser.stream("GET", "/api/events") as stream:
                assert stream.status_code == 200
                assert next(stream.iter_lines()).startswith("retry:")
    assert all(TOKEN not in repr(line) for line in logs)  # never logged

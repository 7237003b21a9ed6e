"""The hub's MQTT identity (issue 12, defence in depth): a default client id that cannot be guessed
from the config (``thermopipe-hub-{hub_id}-{random}``, kept in ``data_dir/client_id`` so restarts
keep the broker session), and one broker account per connection when the broker binds client ids
to usernames (``mqtt.account_per_connection``)."""

from __future__ import annotations

import re
import stat
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from hub.app import Hub
from hub.config import CLIENT_ID_FILE, HubConfig, persistent_client_id
from schemas.codec import encode
from schemas.topics import Topics
from tests.hub_core.helpers import Publisher, hub_config, reading, wait_until


def _config(data_dir: Path, **mqtt: object) -> HubConfig:
    return HubConfig.model_validate({"hub_id": "hub-1", "data_dir": str(data_dir), "mqtt": mqtt})


def test_the_default_id_is_random_and_kept_across_restarts(tmp_path: Path) -> None:
    first = _config(tmp_path / "a").client_id
    assert re.fullmatch(r"thermopipe-hub-hub-1-[0-9a-f]{20}", first), first
    again = _config(tmp_path / "a").client_id  # a restart: a new config object, same data dir
    assert again == first
    kept = tmp_path / "a" / CLIENT_ID_FILE
    assert kept.read_text().strip() == first
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert [p.name for p in (tmp_path / "a").iterdir()] == [CLIENT_ID_FILE]  # no temp file left


def test_two_data_dirs_get_different_ids(tmp_path: Path) -> None:
    assert _config(tmp_path / "a").client_id != _config(tmp_path / "b").client_id


def test_an_explicit_client_id_wins_and_nothing_is_written(tmp_path: Path) -> None:
    config = _config(tmp_path / "a", client_id="my-hub")
    assert config.client_id == "my-hub"
    assert config.for_worker(2).client_id == "my-hub-w2"
    assert not (tmp_path / "a").exists()


def test_workers_share_the_hubs_id_with_their_suffix(tmp_path: Path) -> None:
    config = _config(tmp_path, shared_group="hubs")
    ids = [config.for_worker(i).client_id for i in range(3)]
    assert ids == [f"{config.client_id}-w{i}" for i in range(3)]
    # a worker's own data dir does not get an id of its own: the supervisor's is the one
    assert not (tmp_path / "worker-0" / CLIENT_ID_FILE).exists()


def test_processes_starting_together_agree_on_one_id(tmp_path: Path) -> None:
    got: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def make() -> None:
        barrier.wait()
        value = persistent_client_id(tmp_path, "h")
        with lock:
            got.append(value)

    threads = [threading.Thread(target=make) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1, got
    assert (tmp_path / CLIENT_ID_FILE).read_text().strip() == got[0]


def test_an_empty_id_file_is_replaced(tmp_path: Path) -> None:
    (tmp_path / CLIENT_ID_FILE).write_text("\n")
    made = persistent_client_id(tmp_path, "h")
    assert made.startswith("thermopipe-hub-h-")
    assert persistent_client_id(tmp_path, "h") == made


def test_one_account_per_connection(tmp_path: Path) -> None:
    config = _config(tmp_path, username="hub", shared_group="g", account_per_connection=True)
    assert config.mqtt.username == "hub"  # one hub process: the account itself
    assert config.mqtt.account("ha").username == "hub-ha"
    worker = config.for_worker(3)
    assert worker.mqtt.username == "hub-w3"
    assert worker.mqtt.account("ha").username == "hub-w3-ha"
    assert worker.mqtt.password == config.mqtt.password
    # off (the default): every connection uses the one account, as before
    plain = _config(tmp_path, username="hub", shared_group="g")
    assert plain.for_worker(3).mqtt.username == "hub"
    assert plain.mqtt.account("ha").username == "hub"
    with pytest.raises(ValidationError, match="account_per_connection needs a username"):
        _config(tmp_path, account_per_connection=True)


@pytest.mark.servers
def test_a_restarted_hub_gets_its_queued_messages_with_the_default_id(
        tmp_path: Path, mosquitto, topic_root) -> None:
    """Two runs on one data dir: same default id, so what was published between them (queued
    by the broker for the hub's persistent session) arrives."""
    topics = Topics(topic_root)
    config = hub_config(tmp_path, mosquitto, topic_root, mqtt={"client_id": None})
    with Hub(config) as hub:
        wait_until(hub.ingest.subscribed.is_set, 15, what="subscribed")
        first_id = config.client_id
    events = [reading(i) for i in range(1, 21)]
    pub = Publisher(mosquitto.host, mosquitto.port)
    try:
        pub.publish_all([(topics.for_event(e), encode(e)) for e in events])
    finally:
        pub.close()
    restarted = hub_config(tmp_path, mosquitto, topic_root, mqtt={"client_id": None})
    assert restarted.client_id == first_id
    with Hub(restarted) as hub:
        def accepted() -> float:
            return hub.metrics.events_in._value.get()  # type: ignore[no-any-return]
        wait_until(lambda: accepted() >= len(events), 20, what="the queued events")
        assert hub.ingest.connected.is_set()
    assert accepted() == len(events)

"""deploy/README.md and README.md against what they describe: the contents list names every
section, every in-page link lands on a heading, each dashboard's drop-downs are the ones its JSON
has, the documented `hub dlq` commands reach the container's config and data dir, every documented
add-device.sh command names the broker host, and the README's first screen says what a user gets,
the two commands and where to go next."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DEPLOY_README = DEPLOY / "README.md"
README = ROOT / "README.md"


def _outside_fences(text: str) -> list[str]:
    """The lines of a Markdown text that are not inside ``` code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _code_lines(text: str) -> list[str]:
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def headings(text: str, level: int | None = None) -> list[str]:
    out = []
    for line in _outside_fences(text):
        match = re.match(r"(#+) (.+)", line)
        if match and (level is None or len(match.group(1)) == level):
            out.append(match.group(2))
    return out


def between(text: str, marker: str) -> str:
    match = re.search(rf"<!-- {marker}:begin -->\n(.*?)<!-- {marker}:end -->", text, re.DOTALL)
    assert match, f"lost its {marker} markers"
    return match.group(1)


# --- deploy/README.md ----------------------------------------------------------------------------

def test_the_contents_list_names_every_section_in_order() -> None:
    text = DEPLOY_README.read_text()
    intro = text.split("\n## ", 1)[0]
    linked = re.findall(r"\]\(#([^)]+)\)", intro)
    sections = [slug(h) for h in headings(text, level=2)]
    unlisted, absent = set(sections) - set(linked), set(linked) - set(sections)
    assert not unlisted and not absent, (
        f"deploy/README.md's contents list: sections not listed {sorted(unlisted)}, "
        f"listed but absent {sorted(absent)}")
    steps = re.findall(r"^(\d+)\. \[[^\]]+\]\(#([^)]+)\)", intro, re.MULTILINE)
    numbered = [s for s in sections if re.match(r"\d+-", s)]
    assert [anchor for _n, anchor in steps] == numbered
    assert [int(n) for n, _a in steps] == list(range(1, len(numbered) + 1))
    assert "5-home-assistant" in numbered


@pytest.mark.parametrize("path", [DEPLOY_README, README], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_lands_on_a_file_and_heading(path: Path) -> None:
    text = path.read_text()
    prose = "\n".join(_outside_fences(text))
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if re.match(r"[a-z]+://", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        lands = linked.exists() and (
            not anchor or anchor in {slug(h) for h in headings(linked.read_text())})
        if not lands:
            broken.append(target)
    assert not broken, f"{path.relative_to(ROOT)}: links to nothing: {broken}"


def test_each_dashboards_drop_downs_are_those_of_its_json() -> None:
    table = between(DEPLOY_README.read_text(), "dashboard-variables")
    documented: dict[str, list[str]] = {}
    for row in table.strip().splitlines()[2:]:
        title, names = (cell.strip() for cell in row.strip().strip("|").split(" | "))
        documented[title] = re.findall(r"`([^`]+)`", names)
    in_json: dict[str, list[str]] = {}
    for board_file in sorted((DEPLOY / "grafana" / "dashboards").glob("*.json")):
        board = json.loads(board_file.read_text())
        in_json[board["title"]] = [v.get("label") or v["name"]
                                   for v in board["templating"]["list"] if v.get("hide", 0) != 2]
    assert documented == in_json
    assert in_json["thermopipe · hub pipeline health"] == ["Hub", "Site"]  # no device, no sensor


def test_the_documented_hub_dlq_commands_reach_the_containers_config_and_data_dir(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from hub.cli import build_parser

    monkeypatch.delenv("HUB_CONFIG", raising=False)
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    hub = compose["services"]["hub"]
    assert "HUB_CONFIG" not in hub.get("environment", {})  # -c keeps its default in there
    mounts = {}
    for volume in hub["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[source] = target
    config_in_container = mounts["./hub/hub.toml"]
    data_dir = tomllib.loads((DEPLOY / "hub" / "hub.toml").read_text())["data_dir"]
    assert mounts["hub-data"] == data_dir  # the dead letters are in the volume
    dockerfile = (DEPLOY / "hub" / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["hub"]' in dockerfile  # `run ... hub dlq list` is `hub dlq list`
    assert "USER thermopipe" in dockerfile and f"chown thermopipe {data_dir}" in dockerfile

    commands = [shlex.split(line, comments=True)
                for line in between(DEPLOY_README.read_text(), "hub-dlq").splitlines()
                if line.startswith("docker compose")]
    assert {c[4] for c in commands} == {"exec", "run"}
    for argv in commands:
        assert argv[:4] == ["docker", "compose", "-f", "deploy/compose.yaml"]
        assert (ROOT / argv[3]).exists()
        if argv[4] == "exec":
            service, program, *args = argv[5:]
            assert program == "hub"
        else:
            assert argv[5:7] == ["--rm", "--no-deps"]
            service, *args = argv[7:]
        assert service == "hub" and args[0] == "dlq"
        parsed = build_parser().parse_args(args)
        assert parsed.command == "dlq" and parsed.config == config_in_container, argv


def test_every_documented_add_device_command_names_the_broker_host() -> None:
    commands = [line for path in (DEPLOY_README, README)
                for line in _code_lines(path.read_text()) if "add-device.sh" in line]
    commands += [line for line in (DEPLOY / "scripts" / "setup-server.sh").read_text().splitlines()
                 if "add-device.sh" in line]
    assert commands
    missing = [c for c in commands if "--broker" not in c and "--acl-only" not in c]
    assert not missing, f"add-device.sh requires --broker: {missing}"


def test_the_plain_pip_note_gives_install_shs_own_flag() -> None:
    # the agent's role is pure Python (issue 25, tests/install/test_pi_wheels.py); only Avro's
    # fastavro can compile on a Pi, and install.sh asks for it as a wheel
    install_sh = (DEPLOY / "pi" / "install.sh").read_text()
    assert '--only-binary=fastavro "${repo}[${extras}]"' in install_sh
    assert "pydantic" not in install_sh
    for path in (DEPLOY_README, ROOT / "edge_agent" / "README.md"):
        text = " ".join(path.read_text().split())
        assert "pip install --only-binary=fastavro '.[agent,avro]'" in text, path
        assert "armv6l" in text and "tests/install/test_pi_wheels.py" in text, path


# --- README.md -----------------------------------------------------------------------------------

def test_the_readmes_first_screen_says_what_you_get_the_two_commands_and_where_next() -> None:
    text = README.read_text()
    first_screen = text.split("\n## ", 1)[0]
    assert len(first_screen.splitlines()) <= 25, "the first screen is longer than a screen"
    paragraphs = first_screen.split("\n\n")
    assert paragraphs[0] == "# thermopipe"
    what_you_get = paragraphs[1]
    assert len(what_you_get.splitlines()) == 3
    for needed in ("Raspberry Pi", "InfluxDB", "Grafana", "alerts", "Home Assistant", "lost"):
        assert needed in " ".join(what_you_get.split()), needed
    assert re.search(r"```sh\nscripts/demo .*\nscripts/test .*\n```", first_screen)
    assert "](deploy/README.md)" in first_screen  # where to go next: a Pi and a server
    assert "](#the-two-commands)" in first_screen


def test_the_readme_names_home_assistant_beyond_its_status() -> None:
    text = README.read_text()
    before_status = text.split("\n## Status", 1)[0]
    run_it = before_status.split("\n## Run it for real", 1)[1].split("\n## ", 1)[0]
    assert "Home Assistant" in run_it
    assert "homeassistant/" in before_status

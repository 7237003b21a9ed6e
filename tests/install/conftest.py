"""Fixtures for tests/install: the built wheel and one fresh venv per role (bench/harness/roles.py).

Building them takes 10-60 s (pip's cache makes the second time fast); every test here needs them,
and under CI=true none of these tests may skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.harness.roles import InstallFailed, RoleEnv, build_wheel, role_envs


@pytest.fixture(scope="session")
def project_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built once per test session from a clean copy of the tree."""
    try:
        return build_wheel(tmp_path_factory.mktemp("install") / "wheel")
    except InstallFailed as exc:
        pytest.fail(f"building the wheel failed: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def roles(project_wheel: Path) -> dict[str, RoleEnv]:
    try:
        return role_envs(project_wheel)
    except InstallFailed as exc:
        pytest.fail(f"installing the roles from the built wheel failed: {exc}", pytrace=False)


# What the install tests saw, printed at the end of the run (CI's output shows it even when
# every test passed and pytest hides their own output).
REPORT: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("the product as users install it (tests/install)")
        for line in REPORT:
            terminalreporter.write_line(line)

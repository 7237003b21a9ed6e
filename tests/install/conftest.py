"""Fixtures for tests/install: the built wheel and one fresh venv per role (tests/install/roles.py).

Building them takes 10-60 s (pip's cache makes the second time fast); every test here needs them,
and under CI=true none of these tests may skip.
"""

from __future__ import annotations

import pytest

from tests.install.roles import InstallFailed, RoleEnv, role_envs


@pytest.fixture(scope="session")
def roles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RoleEnv]:
    try:
        return role_envs(tmp_path_factory.mktemp("install"))
    except InstallFailed as exc:
        pytest.fail(f"installing the roles from the built wheel failed: {exc}", pytrace=False)

"""Fixtures of the deploy tests."""

from __future__ import annotations

import pytest

from tests.deploy.compose_model import ComposeFile


@pytest.fixture(scope="session")
def compose() -> ComposeFile:
    """docker-compose.yaml with no variable set: what a bare `docker compose up` runs."""
    return ComposeFile()

"""One real Airflow UI server and one headless Debian Chromium for all browser tests.

The server is Airflow 3's api-server, or Airflow 2's webserver when the tests run on Airflow 2.11.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, expect, sync_playwright

from ct_airflow_provider.testing.browser_setup import CHROMIUM_ARGS, CHROMIUM_PATH
from ct_airflow_provider.testing.gcs_emulator import GCSTestStack
from tests.ui.airflow_server import AirflowApiServer, run_api_server
from tests.ui.connections_page import ConnectionsPage, screenshot_dir, send_empty_port_as_null
from tests.ui.connections_page_airflow2 import ConnectionsPageAirflow2

# Tests run on 2 shared cores: give the UI time, but fail well before pytest's own timeout.
expect.set_options(timeout=20_000)


@pytest.fixture(scope="session")
def api_server(
    tmp_path_factory: pytest.TempPathFactory, gcs_stack: GCSTestStack
) -> Iterator[AirflowApiServer]:
    """The UI server with the provider installed; its Test button reaches the local GCS stack."""
    home = tmp_path_factory.mktemp("airflow-home")
    # The server runs as a worker with an identity of its own would (a metadata server, as on GKE).
    with gcs_stack.metadata_server(name="ct-composer-worker") as metadata:
        env = {
            "STORAGE_EMULATOR_HOST": gcs_stack.emulator_url,
            "GCE_METADATA_HOST": metadata["GCE_METADATA_HOST"],
            "GCE_METADATA_IP": metadata["GCE_METADATA_IP"],
        }
        with run_api_server(home, env) as server:
            server.worker_identity = metadata["email"]
            yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[BrowserContext]:
    """Debian's Chromium (installed by ``python -m ct_airflow_provider.testing.browser_setup``)."""
    if not CHROMIUM_PATH.exists():
        pytest.fail(
            f"{CHROMIUM_PATH} is missing: run `.venv/bin/python -m ct_airflow_provider.testing.browser_setup` "
            "(make test does) to install Debian's chromium package."
        )
    with tempfile.TemporaryDirectory(prefix="ct-chromium-") as user_data_dir, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            user_data_dir,
            executable_path=str(CHROMIUM_PATH),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 960},
            locale="en-US",
            timezone_id="UTC",
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return screenshot_dir(tmp_path_factory.mktemp("screenshots"))


@pytest.fixture(scope="module")
def connections_of_this_module(api_server: AirflowApiServer) -> Iterator[AirflowApiServer]:
    """The server, emptied of connections after the module, so each module's pictures show its own."""
    yield api_server
    api_server.delete_all_connections()


@pytest.fixture
def ui(
    browser: BrowserContext, connections_of_this_module: AirflowApiServer, screenshots: Path
) -> Iterator[ConnectionsPage]:
    """A fresh tab on the Connections page (tests that show the way there use ``open_from_menu``)."""
    page = browser.new_page()
    send_empty_port_as_null(page)
    connections = ConnectionsPage(page, connections_of_this_module.url, screenshots)
    try:
        connections.reload()
        yield connections
    finally:
        page.close()


@pytest.fixture
def airflow2_ui(
    browser: BrowserContext, connections_of_this_module: AirflowApiServer, screenshots: Path
) -> Iterator[ConnectionsPageAirflow2]:
    """A fresh tab on Airflow 2's Connections list (tests that show the way there use ``open_from_menu``)."""
    page = browser.new_page()
    connections = ConnectionsPageAirflow2(page, connections_of_this_module.url, screenshots)
    try:
        connections.reload()
        yield connections
    finally:
        page.close()

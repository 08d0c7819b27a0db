"""The test stack's metadata server answers as Compute Engine's does, by ``default`` and by email."""

from __future__ import annotations

import orjson
import urllib3

from ct_airflow_provider.testing.gcs_emulator import GCSTestStack

HEADERS = {"Metadata-Flavor": "Google"}


def test_the_worker_account_answers_by_default_and_by_its_email(gcs_stack: GCSTestStack) -> None:
    http = urllib3.PoolManager()
    with gcs_stack.metadata_server() as metadata:
        base = f"http://{metadata['GCE_METADATA_HOST']}/computeMetadata/v1/instance/service-accounts"
        for alias in ("default", metadata["email"]):
            info = http.request("GET", f"{base}/{alias}/?recursive=true", headers=HEADERS)
            assert info.status == 200
            assert orjson.loads(info.data)["email"] == metadata["email"]
            token = http.request("GET", f"{base}/{alias}/token", headers=HEADERS)
            assert token.status == 200 and orjson.loads(token.data)["access_token"].startswith("ya29.")
        assert http.request("GET", f"{base}/someone-else@example.com/token", headers=HEADERS).status == 404
        assert http.request("GET", f"{base}/default/token").status == 403  # no Metadata-Flavor header

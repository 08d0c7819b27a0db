"""The token endpoint and IAM gate of the local GCS stack, run in front of a separate fake-gcs-server.

The docker-compose stack runs fake-gcs-server from its own image. fake-gcs-server checks no
credentials, so this process stands in front of it and supplies what a real bucket has: a service
account key that google-auth must exchange for an access token, and a permission check on every
request (the same endpoint and gate as :mod:`ct_airflow_provider.testing.gcs_emulator`)::

    python -m ct_airflow_provider.testing.gcs_gate --host 0.0.0.0 --port 4480 \\
        --upstream http://fake-gcs:4443 --public-url http://gcs-gate:4480 \\
        --bucket ct-exports --state-dir /opt/airflow/ct-stack

At start it waits for fake-gcs-server, creates the bucket, and loads the service account key kept in
``--state-dir`` (or generates one there on first start), so a restart keeps the key that Airflow's
connection already holds. It writes the ``clevertap_gcs`` connection for that key and bucket to
``<state-dir>/connections.json`` (the format ``airflow connections import`` reads) and only then
opens its port: a client that can connect finds the file written. Neither the key nor any part of
it is printed.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import urllib3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_pem_private_key

# The gate's request handler and account table are the ones the test stack runs; only the
# listening address differs (a container listens on all interfaces, the test stack on loopback).
from ct_airflow_provider.testing.gcs_emulator import (
    GCSTestStack,
    Role,
    _Account,
    _GateHandler,
    _GateServer,
    _StackState,
)

KEY_FILE_NAME = "service-account.json"
CONNECTIONS_FILE_NAME = "connections.json"
DEFAULT_CONN_ID = "clevertap_gcs_default"


class GateStartError(RuntimeError):
    """The gate cannot start as configured; the message names the cause and the remedy."""


class _ListeningGateServer(_GateServer):
    """The test stack's gate server, bound to a chosen interface instead of loopback only."""

    def __init__(self, host: str, port: int, state: _StackState) -> None:
        ThreadingHTTPServer.__init__(self, (host, port), _GateHandler)
        self.state = state


def register_key(state: _StackState, key: dict[str, Any], role: Role = "storage_admin") -> None:
    """Make the token endpoint accept ``key``, as IAM accepts a key that was not deleted.

    :param state: the gate's account table.
    :param key: a service account key (the parsed JSON file) with a PEM private key.
    :param role: what the key's account may do in the buckets.
    """
    private_key = load_pem_private_key(str(key["private_key"]).encode(), password=None)
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with state.lock:
        state.accounts_by_key_id[str(key["private_key_id"])] = _Account(
            str(key["client_email"]), role, public_pem
        )


def load_or_create_key(stack: GCSTestStack, state: _StackState, key_file: Path) -> dict[str, Any]:
    """The key kept in ``key_file``, registered with the gate; a new one when there is none.

    A kept key whose ``token_uri`` is not this gate's (the public URL changed) is replaced, since
    google-auth would send its token requests elsewhere.

    :param stack: the stack whose token endpoint issues tokens for the key.
    :param state: the stack's account table.
    :param key_file: where the key is kept between starts.
    """
    if key_file.exists():
        try:
            key: dict[str, Any] = orjson.loads(key_file.read_bytes())
        except orjson.JSONDecodeError:
            raise GateStartError(
                f"{key_file} is not a service account key (not JSON): delete it and restart the gate "
                "to generate a new key, then re-import the bucket connection."
            ) from None
        if key.get("token_uri") == stack.token_uri:
            register_key(state, key)
            return key
        print(f"The kept key's token endpoint is not {stack.token_uri}: generating a new key.", flush=True)
    key = stack.new_service_account_key("storage_admin", name="ct-exporter")
    _write_private(key_file, orjson.dumps(key, option=orjson.OPT_INDENT_2))
    return key


def write_connections_file(
    path: Path, conn_id: str, bucket: str, key: dict[str, Any], nickname: str | None = None
) -> None:
    """Write the bucket connection as ``airflow connections import`` reads it: ``{conn_id: {...}}``.

    :param path: the file to write (readable by its owner only: it holds the key).
    :param conn_id: the Airflow connection id.
    :param bucket: the bucket's exact name.
    :param key: the service account key the connection authenticates with.
    :param nickname: the bucket nickname shown to users (the bucket name when not given).
    """
    connection = orjson.loads(GCSTestStack.connection_env(bucket, key, nickname))
    _write_private(path, orjson.dumps({conn_id: connection}, option=orjson.OPT_INDENT_2))


def wait_for_upstream(http: urllib3.PoolManager, upstream_url: str, timeout: float) -> None:
    """Wait until fake-gcs-server answers its bucket list, or fail naming the URL.

    :param http: the pool to ask with.
    :param upstream_url: fake-gcs-server's base URL.
    :param timeout: seconds to keep trying.
    """
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        try:
            response = http.request("GET", f"{upstream_url}/storage/v1/b", timeout=2.0, retries=False)
            if response.status == 200:
                return
            last_error = f"HTTP {response.status}"
        except urllib3.exceptions.HTTPError as error:
            last_error = type(error).__name__
        time.sleep(0.5)
    raise GateStartError(
        f"fake-gcs-server did not answer at {upstream_url} within {timeout:.0f} s ({last_error}): check that it "
        "runs with '-scheme http' on that host and port."
    )


def _write_private(path: Path, content: bytes) -> None:
    # Written to a temporary name and renamed, so a reader never sees half a key.
    temporary = path.with_name(path.name + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content + b"\n")
    os.replace(temporary, path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ct_airflow_provider.testing.gcs_gate",
        description="Run the OAuth token endpoint and IAM gate in front of a fake-gcs-server.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=4480, help="port to listen on (default 4480)")
    parser.add_argument("--upstream", required=True, help="fake-gcs-server's URL, e.g. http://fake-gcs:4443")
    parser.add_argument(
        "--public-url",
        required=True,
        help="this gate's URL as clients reach it, e.g. http://gcs-gate:4480 (the key's token_uri is <url>/token)",
    )
    parser.add_argument("--bucket", required=True, help="bucket to create and to name in the connection")
    parser.add_argument(
        "--state-dir", required=True, type=Path, help="folder that keeps the key between starts"
    )
    parser.add_argument(
        "--conn-id", default=DEFAULT_CONN_ID, help=f"connection id to write (default {DEFAULT_CONN_ID})"
    )
    parser.add_argument("--nickname", default=None, help="bucket nickname (default: the bucket name)")
    parser.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for fake-gcs-server (default 120)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point: prepare the bucket, key and connection file, then serve until SIGTERM."""
    args = _parser().parse_args(argv)
    public_url = str(args.public_url).rstrip("/")
    upstream_url = str(args.upstream).rstrip("/")
    state = _StackState(token_uri=f"{public_url}/token", upstream=upstream_url)
    stack = GCSTestStack(public_url, upstream_url, state)
    try:
        args.state_dir.mkdir(parents=True, exist_ok=True)
        wait_for_upstream(state.http, upstream_url, args.wait)
        stack.create_bucket(args.bucket)
        key = load_or_create_key(stack, state, args.state_dir / KEY_FILE_NAME)
        connections_file = args.state_dir / CONNECTIONS_FILE_NAME
        write_connections_file(connections_file, args.conn_id, args.bucket, key, args.nickname)
        server = _ListeningGateServer(args.host, args.port, state)
    except (GateStartError, RuntimeError, OSError, KeyError, ValueError) as error:
        print(f"Cannot start the GCS gate: {error}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    thread = threading.Thread(target=server.serve_forever, name="gcs-gate", daemon=True)
    thread.start()
    print(f"GCS gate listening on {args.host}:{args.port}, forwarding to {upstream_url}", flush=True)
    print(f"  token endpoint:  {state.token_uri}")
    print(f"  bucket:          {args.bucket}")
    print(f"  service account: {key['client_email']} (key kept in {args.state_dir / KEY_FILE_NAME})")
    print(f"  connection:      {args.conn_id} written to {connections_file}", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        server.shutdown()
        server.server_close()
    print("GCS gate stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

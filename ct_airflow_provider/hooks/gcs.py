"""The bucket connection: one ``clevertap_gcs`` connection per bucket.

It authenticates one of three ways, each optionally impersonating a service account: a pasted
service account key (CleverTap's own flow), an existing Google Cloud connection (``gcp_conn_id``),
or, with neither, the worker's own identity (Application Default Credentials).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import secrets
from typing import Any, BinaryIO

import orjson
from airflow.providers.common.compat.sdk import BaseHook
from airflow.providers.google.cloud.hooks.gcs import GCSHook
from airflow.providers.google.common.hooks.base_google import GoogleBaseHook
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.api_core import exceptions as google_errors
from google.auth import exceptions as auth_errors
from google.cloud.storage.blob import Blob
from google.cloud.storage.retry import DEFAULT_RETRY

from ct_airflow_provider.connection_forms import AIRFLOW2_SECRET_PLACEHOLDER, BUCKET_FORM
from ct_airflow_provider.version_compat import mask_secret

#: Fields google-auth needs to sign and exchange the key's JWT.
REQUIRED_KEY_FIELDS = ("type", "project_id", "private_key_id", "private_key", "client_email", "token_uri")

#: Roles the service account needs on the bucket, named in every permission error.
REQUIRED_ROLES_HINT = (
    "Grant the service account the Storage Admin role (roles/storage.admin) on the bucket, as CleverTap "
    "asks, or at least Storage Object Admin (roles/storage.objectAdmin) plus Storage Legacy Bucket Reader "
    "(roles/storage.legacyBucketReader)."
)
_NEW_KEY_HINT = (
    "Generate the service account key again (IAM > Service Accounts > Keys > Add key > JSON) "
    "and paste the whole content of the new JSON file into the Service Account Key field."
)
#: Seconds for each storage call made while testing a connection: an unreachable endpoint
#: must fail the Test button within seconds instead of retrying for minutes.
_TEST_TIMEOUT = (5.0, 15.0)
PROBE_PREFIX = ".ct-airflow-provider-connection-test-"
#: Resumable upload chunk: a multiple of 256 KiB, as the GCS API requires, and at least the 8 MiB that
#: Google recommends. Each chunk in transfer is held in memory once (read just before it is sent).
UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024


_ADC_HINT = (
    "On Cloud Composer, GKE or Compute Engine, run the workers as a service account (workload identity "
    "or the VM's service account); elsewhere set GOOGLE_APPLICATION_CREDENTIALS, or run `gcloud auth "
    "application-default login` for a laptop. Or paste a Service Account Key, or name a Google Cloud "
    "connection, in the bucket connection."
)
_TOKEN_CREATOR_HINT = (
    "The identity the export starts from needs the Service Account Token Creator role "
    "(roles/iam.serviceAccountTokenCreator) on {target}."
)
GOOGLE_CLOUD_CONN_TYPE = "google_cloud_platform"


class BucketConnectionError(ValueError):
    """A ``clevertap_gcs`` connection that cannot work as configured; the message says how to fix it."""


def parse_impersonation_chain(raw: object) -> list[str] | None:
    """The service accounts to impersonate, in order (the last one writes); ``None`` for none.

    :param raw: one email, several separated by commas, or a list of emails.
    """
    if raw is None or raw == "" or raw == []:
        return None
    if isinstance(raw, str):
        chain = [part.strip() for part in raw.split(",")]
    elif isinstance(raw, list):
        chain = [str(part).strip() for part in raw]
    else:
        raise BucketConnectionError(
            f"impersonation_chain must be a service account email or a list of them, got {type(raw).__name__}."
        )
    bad = [account for account in chain if "@" not in account]
    if bad:
        raise BucketConnectionError(
            f"impersonation_chain holds {bad[0]!r}, which is not a service account email "
            "(name@project.iam.gserviceaccount.com); list one email, or several separated by commas."
        )
    return chain


def parse_service_account_key(raw: object) -> dict[str, Any]:
    """Validate the content of a service account key file and return it as a dict.

    Every failure names the cause and the remedy, and never echoes the key itself.

    :param raw: the key as pasted into the connection: a JSON string, or an already parsed object.
    """
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise BucketConnectionError(
            "The Service Account Key is empty. Paste the whole content of the JSON key file "
            "downloaded from Google Cloud (IAM > Service Accounts > Keys)."
        )
    if raw == AIRFLOW2_SECRET_PLACEHOLDER:
        raise BucketConnectionError(
            "The Service Account Key is not in the form: Airflow never sends a saved key back to the "
            "browser. Paste the key again to test the connection (saving without it keeps the saved key)."
        )
    if isinstance(raw, dict):
        key: object = raw
    else:
        try:
            key = orjson.loads(str(raw))
        except orjson.JSONDecodeError:
            raise BucketConnectionError(
                "The Service Account Key is not valid JSON: paste the complete content of the downloaded "
                ".json key file, from the opening '{' to the closing '}'."
            ) from None
    if not isinstance(key, dict):
        raise BucketConnectionError(
            "The Service Account Key must be a JSON object, as in the downloaded key file."
        )
    if key.get("type") != "service_account":
        if "installed" in key or "web" in key:
            kind = "an OAuth client ID file, not a service account key"
        elif key.get("type"):
            kind = f"a credential of type {key.get('type')!r}, not a service account key"
        else:
            kind = 'not a service account key (it has no "type": "service_account")'
        raise BucketConnectionError(
            f"The Service Account Key is {kind}. Create a key for the service account "
            "(IAM > Service Accounts > Keys > Add key > JSON) and paste that file's content."
        )
    missing = [field for field in REQUIRED_KEY_FIELDS if not key.get(field)]
    if missing:
        raise BucketConnectionError(
            f"The Service Account Key lacks the field(s) {', '.join(missing)}: it was cut or edited. {_NEW_KEY_HINT}"
        )
    try:
        load_pem_private_key(str(key["private_key"]).encode(), password=None)
    except (ValueError, TypeError):
        raise BucketConnectionError(
            f"The private key inside the Service Account Key is malformed (cut short or altered). {_NEW_KEY_HINT}"
        ) from None
    return key


class CleverTapGCSHook(GCSHook):
    """
    A Google Cloud Storage bucket registered for CleverTap exports (connection type ``clevertap_gcs``).

    The connection holds what CleverTap's own "Google Cloud Bucket" form asks for: a nickname, the
    content of a service account JSON key and the bucket's exact name. Instead of a key it may name
    a Google Cloud connection (``gcp_conn_id`` in the extra), or leave both empty to use the worker's
    own identity (Application Default Credentials); ``impersonation_chain`` then makes the export
    write as another service account. Authentication, uploads and retries are the Google provider's
    :class:`~airflow.providers.google.cloud.hooks.gcs.GCSHook`, fed with those settings.

    :param gcs_conn_id: the ``clevertap_gcs`` connection of the bucket.
    """

    conn_name_attr = "gcs_conn_id"
    default_conn_name = "clevertap_gcs_default"
    conn_type = "clevertap_gcs"
    hook_name = "CleverTap GCS bucket"

    def __init__(self, gcs_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(gcp_conn_id=gcs_conn_id, **kwargs)
        self.gcs_conn_id = gcs_conn_id
        raw_key = self.extras.get("service_account_key")
        # The key is masked before anything can print it, whichever form it was stored in.
        if isinstance(raw_key, str):
            mask_secret(raw_key)
        elif isinstance(raw_key, dict) and isinstance(raw_key.get("private_key"), str):
            mask_secret(raw_key["private_key"])
        self._raw_key = raw_key
        self._source: GoogleBaseHook | None = None

    # -- connection form (Airflow < 3.2 reads these; later versions read the provider info) --------
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """The bucket form's fields: CleverTap's three, then the two ways to authenticate without a key."""
        return BUCKET_FORM.widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hide the standard fields that a bucket connection does not use."""
        return BUCKET_FORM.field_behaviour()

    # -- what the connection holds -------------------------------------------------------------------
    @property
    def bucket_name(self) -> str:
        """The bucket's exact name."""
        name = str(self.extras.get("bucket_name") or "").strip()
        if not name:
            raise BucketConnectionError(
                f"Connection {self.gcs_conn_id!r} has no Bucket name: enter the bucket's name exactly as in GCP."
            )
        return name

    @property
    def bucket_nickname(self) -> str:
        """The nickname users know the bucket by (the bucket name when none was given)."""
        return str(self.extras.get("bucket_nickname") or "").strip() or self.bucket_name

    @functools.cached_property
    def service_account_key(self) -> dict[str, Any]:
        """The validated key; raises :class:`BucketConnectionError` naming what is wrong with it.

        Validated once per hook: checking the RSA key takes ~40 ms, and an export asks for it
        several times (credentials, project, each client)."""
        return parse_service_account_key(self._raw_key)

    @property
    def source_conn_id(self) -> str | None:
        """The Google Cloud connection whose credentials the bucket is reached with, if one is named."""
        return str(self.extras.get("gcp_conn_id") or "").strip() or None

    @property
    def impersonation_chain_setting(self) -> list[str] | None:
        """The service accounts impersonated, in order (the last one writes), or ``None``."""
        return parse_impersonation_chain(self.extras.get("impersonation_chain"))

    @property
    def auth_mode(self) -> str:
        """``"key"``, ``"connection"`` or ``"worker"`` (Application Default Credentials)."""
        has_key = not (
            self._raw_key is None or (isinstance(self._raw_key, str) and not self._raw_key.strip())
        )
        if has_key and self.source_conn_id:
            raise BucketConnectionError(
                f"Connection {self.gcs_conn_id!r} has both a Service Account Key and a Google Cloud connection "
                f"({self.source_conn_id!r}): keep one. Clear the key to use the connection's credentials, or "
                "clear the connection id to use the key."
            )
        if has_key:
            return "key"
        return "connection" if self.source_conn_id else "worker"

    def _source_hook(self) -> GoogleBaseHook:
        """The named Google Cloud connection's own hook, checked to exist and to be of that type."""
        if self._source is None:
            conn_id = str(self.source_conn_id)
            try:
                conn = BaseHook.get_connection(conn_id)
            except Exception:  # Airflow's "not found" error differs between versions
                raise BucketConnectionError(
                    f"Connection {self.gcs_conn_id!r} names the Google Cloud connection {conn_id!r}, which does "
                    "not exist: create it (type Google Cloud) or fix the id."
                ) from None
            if conn.conn_type != GOOGLE_CLOUD_CONN_TYPE:
                raise BucketConnectionError(
                    f"Connection {self.gcs_conn_id!r} names {conn_id!r} as its Google Cloud connection, but that "
                    f"connection is of type {conn.conn_type!r}: name a connection of type Google Cloud "
                    f"({GOOGLE_CLOUD_CONN_TYPE})."
                )
            self._source = GoogleBaseHook(gcp_conn_id=conn_id)
        return self._source

    def _get_field(self, f: str, default: Any = None) -> Any:
        # GoogleBaseHook reads its settings through this: give it those of the chosen way to authenticate.
        if f == "impersonation_chain":
            chain = self.impersonation_chain_setting
            if chain is None and self.auth_mode == "connection":
                return self._source_hook()._get_field(f, default)
            return chain
        mode = self.auth_mode
        if mode == "connection":
            return self._source_hook()._get_field(f, default)
        if mode == "key" and f == "keyfile_dict":
            return self.service_account_key
        if mode == "key" and f == "project":
            return self.service_account_key["project_id"]
        # No key and no connection: GoogleBaseHook falls back to Application Default Credentials.
        if f in {"keyfile_dict", "key_path", "key_secret_name", "credential_config_file", "project"}:
            return None
        return default

    def describe_identity(self, credentials: Any) -> str:
        """Who the bucket is reached as and how, e.g. ``exporter@… through the worker's identity``."""
        email = _email_of(credentials)
        mode = self.auth_mode
        how = {
            "key": "with the Service Account Key",
            "worker": "through the worker's identity (Application Default Credentials)",
            "connection": f"from the Google Cloud connection {self.source_conn_id!r}",
        }[mode]
        chain = self.impersonation_chain_setting
        if chain:
            return f"impersonating {chain[-1]} {how.replace('with the', 'from the', 1)}"
        return f"as {email} {how}"

    # -- the operations exports need ------------------------------------------------------------------
    @property
    def upload_chunk_bytes(self) -> int:
        """Size of each resumable upload chunk (a multiple of 256 KiB, as the GCS API requires)."""
        return UPLOAD_CHUNK_BYTES

    def start_file_upload(self, source: BinaryIO, object_name: str, content_type: str) -> ResumableFileUpload:
        """Start a resumable upload of ``object_name`` that reads its chunks from ``source``.

        Each ``send_chunk()`` reads :data:`UPLOAD_CHUNK_BYTES` from ``source`` and sends them (the
        Google client retries retryable failures, reading the chunk again from where the service
        stopped); a shorter chunk is the last, which creates the object and checks its CRC32C.
        ``cancel()`` abandons the upload: until the last chunk no object exists, so a failed export
        never leaves a partial file in the bucket.

        :param source: a binary file at its start; it may still be growing, as long as a whole
            chunk is there beyond what was sent whenever ``send_chunk()`` is called before its end.
        :param object_name: the object's full name in the bucket.
        :param content_type: the object's MIME type.
        """
        blob = self.get_conn().bucket(self.bucket_name).blob(object_name, chunk_size=UPLOAD_CHUNK_BYTES)
        return ResumableFileUpload(blob, source, content_type)

    def upload_bytes(self, data: bytes, object_name: str, content_type: str) -> None:
        """Upload a small object held in memory (the manifest)."""
        self.upload(
            bucket_name=self.bucket_name,
            object_name=object_name,
            data=data,
            mime_type=content_type,
            num_max_attempts=3,
        )

    def list_objects(self, prefix: str) -> list[str]:
        """Names of the bucket's objects that start with ``prefix``."""
        return list(self.list(bucket_name=self.bucket_name, prefix=prefix))

    def read_object(self, object_name: str) -> bytes:
        """Content of one object."""
        return bytes(self.download(bucket_name=self.bucket_name, object_name=object_name))

    def delete_object(self, object_name: str) -> None:
        """Delete one object; an object already gone is not an error (and not worth a warning)."""
        with contextlib.suppress(google_errors.NotFound):
            self.get_conn().bucket(self.bucket_name).blob(object_name).delete()

    def read_object_generation(self, object_name: str) -> tuple[bytes, int] | None:
        """Content and generation of one object; ``None`` if there is none (or it changed meanwhile)."""
        bucket = self.get_conn().bucket(self.bucket_name)
        try:
            blob = bucket.get_blob(object_name)
            if blob is None:
                return None
            # The blob names its generation, so the content read is that generation's.
            return blob.download_as_bytes(), int(blob.generation)
        except google_errors.NotFound:
            return None

    def write_object_if_generation(
        self, data: bytes, object_name: str, content_type: str, generation: int
    ) -> int | None:
        """Write a small object only if its generation is ``generation`` (0: only if it does not exist).

        :return: the new generation, or ``None`` if the precondition failed.
        """
        blob = self.get_conn().bucket(self.bucket_name).blob(object_name)
        try:
            blob.upload_from_string(data, content_type=content_type, if_generation_match=generation)
        except google_errors.PreconditionFailed:
            return None
        return int(blob.generation)

    def delete_object_if_generation(self, object_name: str, generation: int) -> None:
        """Delete one object if it still has ``generation``; gone or replaced is not an error."""
        with contextlib.suppress(google_errors.NotFound, google_errors.PreconditionFailed):
            self.get_conn().bucket(self.bucket_name).blob(object_name).delete(if_generation_match=generation)

    def uri(self, object_name: str) -> str:
        """The ``gs://`` URI of an object in this bucket."""
        return f"gs://{self.bucket_name}/{object_name}"

    # -- Test button ------------------------------------------------------------------------------------
    def test_connection(self) -> tuple[bool, str]:
        """Check the key, the bucket's exact name and the right to write there.

        Authenticates with the key, reads the bucket under exactly the configured name, then writes and
        deletes a small probe object. Each failure says what is wrong and how to fix it.
        """
        try:
            return True, self._check_bucket()
        except BucketConnectionError as error:
            return False, str(error)

    def _credentials(self) -> Any:
        """Credentials of the chosen way to authenticate, with a token; failures name cause and remedy."""
        mode = self.auth_mode
        key = self.service_account_key if mode == "key" else None
        chain = self.impersonation_chain_setting
        try:
            credentials: Any = self.get_credentials()
        except auth_errors.DefaultCredentialsError as error:
            raise BucketConnectionError(
                f"Connection {self.gcs_conn_id!r} has no Service Account Key and no Google Cloud connection, so it "
                f"uses the worker's own identity, but this worker has no Application Default Credentials "
                f"({str(error).split('.')[0]}). {_ADC_HINT}"
            ) from None
        try:
            credentials.refresh(_short_timeout_request())
        except auth_errors.RefreshError as error:
            if chain:
                raise BucketConnectionError(
                    f"Google refused to let the connection impersonate {chain[-1]} ({_auth_reason(error)}). "
                    + _TOKEN_CREATOR_HINT.format(target=chain[-1])
                ) from None
            if key is not None:
                raise BucketConnectionError(
                    f"Google refused the Service Account Key of {key['client_email']} ({_auth_reason(error)}): "
                    f"the key may have been deleted or disabled. {_NEW_KEY_HINT}"
                ) from None
            raise BucketConnectionError(
                f"Google refused the credentials of connection {self.gcs_conn_id!r} ({_auth_reason(error)})."
            ) from None
        except auth_errors.TransportError:
            where = (
                f"Google's token endpoint {key['token_uri']}"
                if key
                else "Google's token or metadata endpoint"
            )
            raise BucketConnectionError(
                f"Could not reach {where} to authenticate: check the network, proxy and firewall between "
                "Airflow and Google."
            ) from None
        return credentials

    def _check_bucket(self) -> str:
        bucket_name = self.bucket_name
        credentials = self._credentials()
        identity = self.describe_identity(credentials)
        who = _email_of(credentials)

        client = self.get_conn()
        bucket = client.bucket(bucket_name)
        try:
            bucket.reload(timeout=_TEST_TIMEOUT, retry=None)
        except google_errors.NotFound:
            raise BucketConnectionError(self._missing_bucket_message(bucket_name)) from None
        except google_errors.Forbidden:
            raise BucketConnectionError(
                f"{who} may not read bucket {bucket_name!r}. {REQUIRED_ROLES_HINT}"
            ) from None
        except (google_errors.GoogleAPIError, OSError) as error:
            raise BucketConnectionError(_unreachable_storage(error)) from None

        probe = bucket.blob(PROBE_PREFIX + secrets.token_hex(8))
        try:
            probe.upload_from_string(b"ok", content_type="text/plain", timeout=_TEST_TIMEOUT, retry=None)
            probe.delete(timeout=_TEST_TIMEOUT, retry=None)
        except google_errors.Forbidden:
            raise BucketConnectionError(
                f"{who} may read bucket {bucket_name!r} but not write and delete objects there. "
                f"{REQUIRED_ROLES_HINT}"
            ) from None
        except (google_errors.GoogleAPIError, OSError) as error:
            raise BucketConnectionError(_unreachable_storage(error)) from None
        return (
            f"Connected to bucket {bucket_name!r} ({self.bucket_nickname}) {identity}: "
            "the credentials are valid and may write export files there."
        )

    def _missing_bucket_message(self, bucket_name: str) -> str:
        message = f"Bucket {bucket_name!r} does not exist, or the name is not an exact match."
        try:
            names = [b.name for b in self.get_conn().list_buckets(timeout=_TEST_TIMEOUT, retry=None)]
        except (google_errors.GoogleAPIError, OSError):
            names = []  # listing needs storage.buckets.list, which a narrow role may lack
        near = [n for n in names if n.lower() == bucket_name.lower()] or difflib.get_close_matches(
            bucket_name, names, n=1, cutoff=0.8
        )
        if near:
            message += f" A bucket named {near[0]!r} exists: bucket names must match exactly, including case."
        else:
            message += (
                " Check the Bucket name against the bucket's name in the GCP console (Storage > Buckets)."
            )
        return message


def _short_timeout_request() -> Any:
    """A google-auth transport whose token request gives up within seconds."""
    import google.auth.transport.requests as auth_requests

    class _Request(auth_requests.Request):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            kwargs["timeout"] = min(float(kwargs.get("timeout") or 10.0), 10.0)
            return super().__call__(*args, **kwargs)  # type: ignore[no-untyped-call]

    return _Request()


def _email_of(credentials: Any) -> str:
    """The service account (or user) the credentials act as."""
    email = getattr(credentials, "service_account_email", None) or getattr(credentials, "signer_email", None)
    if email and email != "default":
        return str(email)
    return str(getattr(credentials, "account", None) or "the worker's default account")


def _auth_reason(error: auth_errors.RefreshError) -> str:
    # google-auth's message is "invalid_grant: Invalid JWT Signature." plus the raw response.
    text = str(error.args[0]) if error.args else str(error)
    return text.split("{", 1)[0].strip().rstrip(":,") or "refused"


def _unreachable_storage(error: BaseException) -> str:
    endpoint = os.environ.get("STORAGE_EMULATOR_HOST") or "https://storage.googleapis.com"
    return (
        f"Could not reach Google Cloud Storage at {endpoint} ({type(error).__name__}): check the network, "
        "proxy and firewall between Airflow and that endpoint."
    )


def get_bucket_hook(gcs_conn_id: str) -> CleverTapGCSHook:
    """The bucket hook of a connection, refusing connections of another type with a clear message."""
    conn = BaseHook.get_connection(gcs_conn_id)
    if conn.conn_type != CleverTapGCSHook.conn_type:
        raise BucketConnectionError(
            f"Connection {gcs_conn_id!r} is of type {conn.conn_type!r}; exports need a "
            f"{CleverTapGCSHook.conn_type!r} connection ({CleverTapGCSHook.hook_name}): bucket nickname, "
            "service account key and bucket name."
        )
    return CleverTapGCSHook(gcs_conn_id=gcs_conn_id)


class ResumableFileUpload:
    """A resumable upload of the Google client fed straight from a file (see ``start_file_upload``).

    The client's public ``BlobWriter`` copies what it is given into a buffer and reads each chunk
    out of it again, holding every chunk in transfer twice; reading the chunk from the file is one
    copy, which lets two chunks be in transfer in the memory of one (docs/performance.md, request
    budget). That takes the client's ``Blob._initiate_resumable_upload``, the method ``BlobWriter``
    itself calls: tests/hooks/test_gcs.py checks it on every Airflow and dependency version we test.
    """

    def __init__(self, blob: Blob, source: BinaryIO, content_type: str) -> None:
        self._upload, self._transport = blob._initiate_resumable_upload(
            blob.bucket.client, source, content_type, None, chunk_size=UPLOAD_CHUNK_BYTES, retry=DEFAULT_RETRY
        )

    @property
    def finished(self) -> bool:
        """Whether the last chunk was sent and the object created."""
        return bool(self._upload.finished)

    def send_chunk(self) -> None:
        """Read the next chunk from the file and send it (a short chunk is the last)."""
        self._upload.transmit_next_chunk(self._transport)  # the response (and its body) is not kept

    def cancel(self) -> None:
        """Abandon the upload: the service drops what it received, and no object is created."""
        self._transport.delete(self._upload.resumable_url)

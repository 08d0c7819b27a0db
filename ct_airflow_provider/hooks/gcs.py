"""The bucket connection: one ``clevertap_gcs`` connection per bucket, built from a service account key."""

from __future__ import annotations

import contextlib
import difflib
import os
import secrets
from typing import Any

import orjson
from airflow.providers.common.compat.sdk import BaseHook, mask_secret
from airflow.providers.google.cloud.hooks.gcs import GCSHook
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.api_core import exceptions as google_errors
from google.auth import exceptions as auth_errors
from google.cloud.storage.fileio import BlobWriter

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
#: Google recommends. Each chunk in transfer is held in memory (twice, by the Google client).
UPLOAD_CHUNK_BYTES = 8 * 1024 * 1024


class BucketConnectionError(ValueError):
    """A ``clevertap_gcs`` connection that cannot work as configured; the message says how to fix it."""


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
    content of a service account JSON key and the bucket's exact name. Authentication, uploads and
    retries are the Google provider's :class:`~airflow.providers.google.cloud.hooks.gcs.GCSHook`,
    fed with that key.

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

    # -- connection form (Airflow < 3.2 reads these; later versions read the provider info) --------
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Return the three fields of CleverTap's bucket form."""
        from flask_appbuilder.fieldwidgets import BS3PasswordFieldWidget, BS3TextFieldWidget
        from flask_babel import lazy_gettext
        from wtforms import PasswordField, StringField

        return {
            "bucket_nickname": StringField(lazy_gettext("Bucket nickname"), widget=BS3TextFieldWidget()),
            "service_account_key": PasswordField(
                lazy_gettext("Service Account Key"), widget=BS3PasswordFieldWidget()
            ),
            "bucket_name": StringField(lazy_gettext("Bucket name"), widget=BS3TextFieldWidget()),
        }

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Hide the standard fields that a bucket connection does not use."""
        return {
            "hidden_fields": ["host", "schema", "login", "password", "port", "extra"],
            "relabeling": {},
        }

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

    @property
    def service_account_key(self) -> dict[str, Any]:
        """The validated key; raises :class:`BucketConnectionError` naming what is wrong with it."""
        return parse_service_account_key(self._raw_key)

    def _get_field(self, f: str, default: Any = None) -> Any:
        # GoogleBaseHook reads its settings from connection extras; a bucket connection only has a key.
        if f == "keyfile_dict":
            return self.service_account_key
        if f == "project":
            return self.service_account_key["project_id"]
        if f in {"key_path", "key_secret_name", "credential_config_file", "impersonation_chain"}:
            return None
        return default

    # -- the operations exports need ------------------------------------------------------------------
    @property
    def upload_chunk_bytes(self) -> int:
        """Size of each resumable upload chunk (a multiple of 256 KiB, as the GCS API requires)."""
        return UPLOAD_CHUNK_BYTES

    def open_object_writer(self, object_name: str, content_type: str) -> BlobWriter:
        """Open a resumable upload of ``object_name`` that is sent while it is written.

        Each :data:`UPLOAD_CHUNK_BYTES` written go out as one chunk (retried by the Google client on
        retryable failures); ``close()`` sends the rest and creates the object, ``terminate()``
        abandons the upload: until ``close()`` no object exists, so a failed export never leaves a
        partial file in the bucket.

        :param object_name: the object's full name in the bucket.
        :param content_type: the object's MIME type.
        """
        blob = self.get_conn().bucket(self.bucket_name).blob(object_name, chunk_size=UPLOAD_CHUNK_BYTES)
        return BlobWriter(blob, chunk_size=UPLOAD_CHUNK_BYTES, ignore_flush=True, content_type=content_type)

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

    def _check_bucket(self) -> str:
        bucket_name = self.bucket_name
        key = self.service_account_key
        credentials = self.get_credentials()
        try:
            credentials.refresh(_short_timeout_request())  # type: ignore[no-untyped-call]
        except auth_errors.RefreshError as error:
            raise BucketConnectionError(
                f"Google refused the Service Account Key of {key['client_email']} ({_auth_reason(error)}): "
                f"the key may have been deleted or disabled. {_NEW_KEY_HINT}"
            ) from None
        except auth_errors.TransportError:
            raise BucketConnectionError(
                f"Could not reach Google's token endpoint {key['token_uri']} to authenticate the key: "
                "check the network, proxy and firewall between Airflow and Google."
            ) from None

        client = self.get_conn()
        bucket = client.bucket(bucket_name)
        try:
            bucket.reload(timeout=_TEST_TIMEOUT, retry=None)
        except google_errors.NotFound:
            raise BucketConnectionError(self._missing_bucket_message(bucket_name)) from None
        except google_errors.Forbidden:
            raise BucketConnectionError(
                f"{key['client_email']} may not read bucket {bucket_name!r}. {REQUIRED_ROLES_HINT}"
            ) from None
        except (google_errors.GoogleAPIError, OSError) as error:
            raise BucketConnectionError(_unreachable_storage(error)) from None

        probe = bucket.blob(PROBE_PREFIX + secrets.token_hex(8))
        try:
            probe.upload_from_string(b"ok", content_type="text/plain", timeout=_TEST_TIMEOUT, retry=None)
            probe.delete(timeout=_TEST_TIMEOUT, retry=None)
        except google_errors.Forbidden:
            raise BucketConnectionError(
                f"{key['client_email']} may read bucket {bucket_name!r} but not write and delete objects there. "
                f"{REQUIRED_ROLES_HINT}"
            ) from None
        except (google_errors.GoogleAPIError, OSError) as error:
            raise BucketConnectionError(_unreachable_storage(error)) from None
        return (
            f"Connected to bucket {bucket_name!r} ({self.bucket_nickname}) as {key['client_email']}: "
            "the key is valid and the account may write export files there."
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

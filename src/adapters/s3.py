"""Export files in an S3-compatible bucket: ``s3://<bucket>/<prefix><tenant_id>/<job_id>/report.<ext>``.

A file is written as a multipart upload of ``part_bytes`` parts (a file smaller than one part is
one ``PutObject`` at commit): memory holds at most one part whatever the file's size, and the
object exists only once the upload is completed, so that a reader sees a whole file or none.
``abort`` (a failed or cancelled export) aborts the upload. A worker killed mid-export cannot
abort its own; the job's next attempt aborts, at its commit, the uploads open under the key
when it began, retention's delete (or a discard) every one left open under the key, and the
bucket's lifecycle rule (docs/operations.md) is the backstop.

The location is ``s3://bucket/key``; a location naming another bucket, or a key outside the
prefix, is never read or deleted. Transient faults are retried by botocore (its ``standard``
mode); what is left is a :class:`StorageFailure` when writing, and a
:class:`ServiceUnavailable` when reading (503, never a broken response), naming only the kind
of failure (clients see it), its whole reason logged.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from reportcore.errors import ServiceUnavailable, StorageFailure

from .filesystem import check_names

if TYPE_CHECKING:
    # types-boto3's stubs (a dev dependency): what the client's calls take and answer
    from boto3.session import Session
    from botocore.response import StreamingBody
    from types_boto3_s3 import S3Client
    from types_boto3_s3.type_defs import CompletedPartTypeDef

PART_BYTES = 5 * 1024 * 1024  # S3's smallest part (all but the last): the least memory per upload
READ_CHUNK = 256 * 1024
MAX_PRESIGN_SEC = 7 * 24 * 3600  # SigV4's longest presigned URL
_CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/x-ndjson",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "gz": "application/gzip",  # report.csv.gz, report.ndjson.gz
}
_MISSING = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchUpload"})
_NOT_WRITTEN = "export file could not be written to the object store"

log = logging.getLogger(__name__)


def _reason(exc: Exception) -> str:
    """The kind of failure, as a client may see it (a job's ``error_message``, a 503): the S3
    error code (``AccessDenied``) or botocore's exception class (``EndpointConnectionError``).
    Never botocore's message: it names the endpoint URL, the bucket and key, or an IAM
    principal."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or type(exc).__name__)
    return type(exc).__name__


def _detail(exc: Exception) -> str:
    """The whole reason, for operators only (logs, the start check's line)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        message = error.get("Message") or ""
        return f"{code} {message}".strip()
    return f"{type(exc).__name__}: {exc}"


def _failed(what: str, key: str, exc: Exception) -> str:
    """``what`` with the failure's kind; the whole reason is logged with the key."""
    log.warning("%s (%s): %s", what, key, _detail(exc))
    return f"{what}: {_reason(exc)}"


def _is_missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


def content_disposition(file_name: str) -> str:
    """``attachment; filename="..."`` exactly as the API's streamed responses carry it (a test
    compares the two)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", file_name)[:200] or "report"
    return f'attachment; filename="{safe}"'


class S3Writer:
    """One export file being uploaded; no object exists under its key until :meth:`commit`."""

    def __init__(self, client: S3Client, bucket: str, key: str, part_bytes: int) -> None:
        self._client = client
        self.bucket = bucket
        self.key = key
        self._part_bytes = part_bytes
        # one buffer of exactly a part, filled in place and sent as is: bytes are copied once,
        # from the exporter's chunk into it (no growing buffer, no slice copies per part)
        self._buf = bytearray()
        self._fill = 0
        self._parts: list[CompletedPartTypeDef] = []
        self.upload_id: str | None = None
        self._state = "open"  # -> committed | aborted
        extension = key.rsplit(".", 1)[-1]
        self._content_type = _CONTENT_TYPES.get(extension, "application/octet-stream")
        # the uploads earlier attempts left open (see commit); not those of attempts after this
        self._earlier = open_uploads(client, bucket, key)

    def _check_open(self) -> None:
        if self._state != "open":
            raise StorageFailure(f"export file was already {self._state}")

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data``; every full part is uploaded before this returns."""
        self._check_open()
        if not self._buf:
            self._buf = bytearray(self._part_bytes)
        view = memoryview(data).cast("B")
        while view:
            n = min(len(view), self._part_bytes - self._fill)
            self._buf[self._fill : self._fill + n] = view[:n]
            self._fill += n
            view = view[n:]
            if self._fill == self._part_bytes:
                self._upload_part(self._buf)
                self._fill = 0

    def _take_rest(self) -> bytes:
        """The bytes not yet uploaded; the part buffer is let go first, so that the upload
        does not hold both."""
        rest = bytes(memoryview(self._buf)[: self._fill])
        self._buf, self._fill = bytearray(), 0
        return rest

    def _upload_part(self, body: bytes | bytearray) -> None:
        try:
            if self.upload_id is None:
                started = self._client.create_multipart_upload(
                    Bucket=self.bucket, Key=self.key, ContentType=self._content_type
                )
                self.upload_id = started["UploadId"]
            number = len(self._parts) + 1
            done = self._client.upload_part(
                Bucket=self.bucket,
                Key=self.key,
                UploadId=self.upload_id,
                PartNumber=number,
                # botocore sends a bytearray as it sends bytes; the stubs name bytes only, and
                # bytes(body) would copy every part, which the in-place buffer is there to avoid
                Body=body,  # type: ignore[arg-type]
            )
        except (ClientError, BotoCoreError) as exc:
            self.abort()
            raise StorageFailure(_failed(_NOT_WRITTEN, self.key, exc)) from exc
        self._parts.append({"ETag": done["ETag"], "PartNumber": number})

    def commit(self) -> str:
        """Complete the upload (or put a small file whole); returns ``s3://bucket/key``.

        On failure the upload is aborted and no object is left.
        """
        self._check_open()
        try:
            if self.upload_id is None:
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=self.key,
                    Body=self._take_rest(),
                    ContentType=self._content_type,
                )
            else:
                if self._fill:
                    self._upload_part(self._take_rest())
                self._client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=self.key,
                    UploadId=self.upload_id,
                    MultipartUpload={"Parts": self._parts},
                )
        except (ClientError, BotoCoreError) as exc:
            self.abort()
            raise StorageFailure(_failed(_NOT_WRITTEN, self.key, exc)) from exc
        self._state = "committed"
        self._buf = bytearray()
        # uploads of earlier attempts at this job whose worker died are garbage now; only
        # those open when this writer began: a later one is the job's next attempt, uploading
        # while this writer's worker (paused past its lease) finishes late
        _abort(self._client, self.bucket, self.key, self._earlier)
        return f"s3://{self.bucket}/{self.key}"

    def abort(self) -> None:
        """Abort the multipart upload, if one was started; safe to call more than once."""
        if self._state != "open":
            return
        self._state = "aborted"
        self._buf = bytearray()
        if self.upload_id is None:
            return
        try:
            self._client.abort_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
            )
        except ClientError as exc:
            if not _is_missing(exc):
                # the parts stay until a later commit, a delete or the lifecycle rule
                log.warning("could not abort the upload of %s: %s", self.key, _detail(exc))
        except BotoCoreError as exc:
            log.warning("could not abort the upload of %s: %s", self.key, _detail(exc))


def open_uploads(client: S3Client, bucket: str, key: str) -> list[str]:
    """The ids of the multipart uploads open under exactly ``key``; none (logged) if the
    store would not list them."""
    try:
        listed = client.list_multipart_uploads(Bucket=bucket, Prefix=key)
    except (ClientError, BotoCoreError) as exc:
        log.warning("could not list leftover uploads of %s: %s", key, _detail(exc))
        return []
    return [u["UploadId"] for u in listed.get("Uploads", []) if u.get("Key") == key]


def abort_uploads(client: S3Client, bucket: str, key: str) -> None:
    """Abort every multipart upload open under exactly ``key``. Best effort: logged, never
    raised (the caller's object is already whole, or already gone)."""
    _abort(client, bucket, key, open_uploads(client, bucket, key))


def _abort(client: S3Client, bucket: str, key: str, upload_ids: list[str]) -> None:
    for upload_id in upload_ids:
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if not _is_missing(exc):  # a missing one: its own writer ended it meanwhile
                log.warning("could not abort a leftover upload of %s: %s", key, _detail(exc))
        except BotoCoreError as exc:
            log.warning("could not abort a leftover upload of %s: %s", key, _detail(exc))


class S3Store:
    """:class:`reportcore.ports.FileStore` over one bucket of an S3-compatible store.

    ``client`` is a boto3 S3 client (thread-safe: the API's threads share it); ``serving``, if
    given, the one :meth:`size`, :meth:`read` and :meth:`delete` use (``reportsvc all``: what
    an API request may wait for, a download or a cancel's cleanup, bounded; the worker's
    uploads patient; see :func:`create_client`). With ``redirect`` the
    API answers ``/file`` with a presigned URL of the object instead of streaming it.
    """

    def __init__(
        self,
        client: S3Client,
        bucket: str,
        prefix: str = "reports/",
        *,
        part_bytes: int = PART_BYTES,
        redirect: bool = False,
        serving: S3Client | None = None,
    ) -> None:
        self._client = client
        self._serving = serving or client
        self.bucket = bucket
        self.prefix = prefix
        self.part_bytes = part_bytes
        self.redirect = redirect

    def key_of(self, location: str) -> str:
        """The object key of ``s3://<bucket>/<key>``, or :class:`StorageFailure` when it is not
        one of this store's (another bucket, outside the prefix, a relative part)."""
        head = f"s3://{self.bucket}/"
        if not isinstance(location, str) or not location.startswith(head):
            raise StorageFailure(f"refusing a location outside s3://{self.bucket}: {location!r}")
        key = location[len(head) :]
        parts = key.split("/")
        if not key.startswith(self.prefix) or any(p in ("", ".", "..") for p in parts):
            raise StorageFailure(f"refusing a location outside the prefix: {location!r}")
        if "\x00" in key:
            raise StorageFailure("refusing a file location with a NUL byte")
        return key

    # --- the port ---

    def _key(self, tenant_id: str, job_id: str, extension: str) -> str:
        """``<prefix><tenant_id>/<job_id>/report.<extension>``, its names checked."""
        check_names(tenant_id, job_id, extension)
        return f"{self.prefix}{tenant_id}/{job_id}/report.{extension}"

    def create(self, tenant_id: str, job_id: str, extension: str) -> S3Writer:
        """A writer of ``<prefix><tenant_id>/<job_id>/report.<extension>``."""
        key = self._key(tenant_id, job_id, extension)
        return S3Writer(self._client, self.bucket, key, self.part_bytes)

    def size(self, location: str) -> int | None:
        """The object's size; ``None`` if it is gone (or not one of ours)."""
        try:
            key = self.key_of(location)
        except StorageFailure:
            log.warning("size of a location outside the bucket's prefix: %r", location)
            return None
        try:
            head = self._serving.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise ServiceUnavailable(_failed("the object store refused", key, exc)) from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable(_failed("the object store did not answer", key, exc)) from exc
        return int(head["ContentLength"])

    def read(self, location: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes ``start`` .. ``end`` (inclusive) in chunks of 256 KiB, one GET streamed.

        A missing object raises ``FileNotFoundError`` here, before the first chunk.
        """
        key = self.key_of(location)
        ask: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        start = max(0, start)
        if start > 0 or end is not None:
            ask["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            answer = self._serving.get_object(**ask)
        except ClientError as exc:
            if _is_missing(exc):
                raise FileNotFoundError(location) from exc
            if str(exc.response.get("Error", {}).get("Code")) == "InvalidRange":
                return iter(())  # nothing at or after start: the file is shorter
            raise ServiceUnavailable(_failed("the object store refused", key, exc)) from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable(_failed("the object store did not answer", key, exc)) from exc
        return self._chunks(answer["Body"])

    @staticmethod
    def _chunks(body: StreamingBody) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(READ_CHUNK)
        finally:
            body.close()

    def delete(self, location: str) -> None:
        """Remove the object and abort uploads left open under its key; absent is fine."""
        try:
            key = self.key_of(location)
        except StorageFailure as exc:
            # never delete outside the prefix, but let retention move on
            log.warning("not deleting %r: %s", location, exc)
            return
        try:
            self._serving.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            what = "export file could not be deleted from the object store"
            raise StorageFailure(_failed(what, key, exc)) from exc
        abort_uploads(self._serving, self.bucket, key)

    def discard(self, tenant_id: str, job_id: str, extension: str) -> None:
        """The job's object and the uploads crashed attempts left open under its key."""
        self.delete(f"s3://{self.bucket}/{self._key(tenant_id, job_id, extension)}")

    def download_url(
        self, location: str, expires_at: dt.datetime, file_name: str | None = None
    ) -> str | None:
        """With ``redirect``: a presigned GET of the object valid until ``expires_at`` that
        downloads it as ``file_name``; else ``None`` (the API streams it)."""
        if not self.redirect:
            return None
        # SigV4 counts from the signing moment on the real clock, which is what the store checks
        seconds = int(expires_at.timestamp() - time.time())
        # the API's own download is not cacheable (the URL is a credential, the file a tenant's
        # data): the store's answer says so too, or a shared cache may keep it heuristically
        params: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": self.key_of(location),
            "ResponseCacheControl": "private, no-store",
        }
        if file_name:
            params["ResponseContentDisposition"] = content_disposition(file_name)
        url: str = self._client.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=min(max(1, seconds), MAX_PRESIGN_SEC)
        )
        return url

    def check(self, *, writes: bool = True) -> None:
        """Raise :class:`StorageFailure` naming the cause unless the bucket answers with our
        credentials (run once at start, so that a refusal is one clear line, not a crash loop;
        ``writes`` is the filesystem store's distinction, not checked here)."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise StorageFailure(
                f"the object store bucket {self.bucket!r} is not usable: {_detail(exc)}"
            ) from exc


# the API's client: a request thread waits at most ~2 x (connect + read) plus one backoff (~1 s)
# for a store that does not answer, then the client gets its 503; the read timeout bounds each
# socket read, not a whole download, so a large file still streams
SERVING_ATTEMPTS = 2
SERVING_CONNECT_SEC = 3
SERVING_READ_SEC = 5


def create_client(
    endpoint_url: str | None,
    region: str | None,
    max_attempts: int = 5,
    pool: int = 32,
    *,
    serving: bool = False,
    session: Session | None = None,
) -> S3Client:
    """A boto3 S3 client: credentials from the standard AWS chain (``AWS_*`` variables, shared
    config, web identity, instance roles), botocore's ``standard`` retries.

    By default the worker's, patient with uploads (``max_attempts`` retries, 5 s connect and
    30 s read timeouts: a hung store holds a call ~3 minutes). ``serving``: the API's, bounded
    for answering downloads (:data:`SERVING_ATTEMPTS` calls in all, :data:`SERVING_CONNECT_SEC`
    s connect and :data:`SERVING_READ_SEC` s read timeouts). Clients of one ``session`` share
    the service model it loads (~15 MB, once)."""
    from botocore.config import Config

    config = Config(
        # botocore's max_attempts counts the retries (5: six calls); total_max_attempts, calls
        retries=(
            {"mode": "standard", "total_max_attempts": SERVING_ATTEMPTS}
            if serving
            else {"mode": "standard", "max_attempts": max_attempts}
        ),
        max_pool_connections=pool,
        signature_version="s3v4",
        connect_timeout=SERVING_CONNECT_SEC if serving else 5,
        read_timeout=SERVING_READ_SEC if serving else 30,
        # MinIO and most S3-compatible servers want bucket-in-path URLs
        s3={"addressing_style": "path"} if endpoint_url else {},
    )
    return (session or new_session()).client(
        "s3", endpoint_url=endpoint_url, region_name=region, config=config
    )


def new_session() -> Session:
    """A boto3 session, which resolves the credentials of the clients made from it."""
    import boto3

    return boto3.session.Session()

"""The stores kept in an S3-compatible bucket (BLOB_STORAGE=s3, MEDIA_STORAGE=s3).

Imported only when one of them is configured: django-storages and boto3 are an optional
extra (requirements-s3.txt).
"""

from __future__ import annotations

import contextlib
import threading

from botocore.exceptions import ClientError
from django.core.files.base import ContentFile, File
from storages.backends.s3 import S3Storage, _filter_download_params
from storages.utils import clean_name


class SharedS3Storage(S3Storage):
    """django-storages' S3Storage with one boto3 connection for all the threads of a process.

    S3Storage builds a boto3 session and service resource for each thread that uses it. The
    blob store writes raw mail (and the sync writes documents) from its I/O pool's 16 threads,
    and each session costs about 18 MB and a fifth of a second of CPU to build: a 1,000-message
    sync peaked at 443 MB (about 150 MB on the file system). boto3's clients are thread-safe;
    S3Storage uses the service resource only to reach its client and to make new Bucket and
    Object instances per call (it already shares its Bucket between threads), so one
    connection serves every thread's calls.
    """

    def __init__(self, **settings: object) -> None:
        super().__init__(**settings)
        self._shared_connection = None
        self._shared_lock = threading.Lock()

    @property
    def connection(self):  # type: ignore[no-untyped-def]
        if self._shared_connection is None:
            with self._shared_lock:
                if self._shared_connection is None:
                    self._shared_connection = super().connection
        return self._shared_connection


class BlobS3Storage(SharedS3Storage):
    """The blob store's bucket. A blob (one message, written once) goes up as one PutObject
    on the shared client and comes back as one GetObject. S3Storage builds a boto3 Object
    resource (a class made afresh for each call) and an upload or download manager for every
    file: per blob, more CPU than the request itself. Gzip (off for blobs) is not applied."""

    def _save(self, name: str, content) -> str:  # type: ignore[no-untyped-def]
        cleaned = clean_name(name)
        key = self._normalize_name(cleaned)
        params = self._get_write_parameters(key, content)
        content.seek(0)
        self.connection.meta.client.put_object(
            Bucket=self.bucket_name, Key=key, Body=content.read(), **params
        )
        return cleaned

    def _open(self, name: str, mode: str = "rb") -> File:
        """A blob is read whole (the message page, the migrations): one GetObject on the
        shared client, instead of S3File's Object resource and download manager (9 -> 1.6 ms
        of CPU a read against a loopback bucket)."""
        if mode != "rb":
            return super()._open(name, mode)
        key = self._normalize_name(clean_name(name))
        params = _filter_download_params(self.get_object_parameters(key))  # as S3Storage reads
        try:
            body = self.connection.meta.client.get_object(
                Bucket=self.bucket_name, Key=key, **params
            )["Body"]
        except ClientError as err:
            if err.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                raise FileNotFoundError(f"File does not exist: {name}") from err
            raise
        with contextlib.closing(body):
            return ContentFile(body.read(), name=name)

"""Where jobs read and write: s3:// URIs (boto3, any S3-compatible endpoint) and, self-hosted, local paths.

A location is an `s3://bucket/key` URI, a `file:///absolute/path` URI or an absolute path. S3 goes through
data/s3.py's client, so `VLMTUNE_S3_ENDPOINT_URL` / `AWS_ENDPOINT_URL_S3` and the standard AWS credentials
apply. Relative paths are refused: the service's working folder means nothing to a remote client.
"""

from __future__ import annotations

import posixpath
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

from vlmtune.data.s3 import s3_client, split_uri
from vlmtune.errors import VlmtuneError
from vlmtune.service.errors import ValidationError
from vlmtune.service.names import S3_URI


def problem(uri: object) -> str | None:
    """What is wrong with a location, or None when it is a valid s3:// URI, file:// URI or absolute path."""
    if not isinstance(uri, str) or not uri:
        return f"expected an s3:// URI or an absolute local path, found {uri!r}"
    if uri.startswith("s3://"):
        return None if re.fullmatch(S3_URI, uri) else f"expected an S3 URI matching {S3_URI}, found {uri!r}"
    if uri.startswith("file://") and urlparse(uri).netloc not in ("", "localhost"):
        return f"expected file:///absolute/path (no host), found {uri!r}"
    if "://" in uri and not uri.startswith("file://"):
        return f"expected an s3:// URI, a file:// URI or an absolute path, found {uri!r}"
    if not local_path(uri).is_absolute():
        return f"expected an absolute local path (the service's working folder is not yours), found {uri!r}"
    return None


def check(uri: str, field: str) -> str:
    """The location, or the service's ValidationException naming the field."""
    found = problem(uri)
    if found:
        raise ValidationError(f"{field}: {found}")
    return uri


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def local_path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path)) if uri.startswith("file://") else Path(uri).expanduser()


def join(uri: str, *parts: str) -> str:
    """A location below `uri`; `..` parts are resolved for S3 as a file system would (S3 keys have no `..`)."""
    if is_s3(uri):
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        joined = posixpath.normpath("/".join([key.rstrip("/"), *parts]).lstrip("/")) if key or parts else ""
        return f"s3://{bucket}/{joined}" if joined not in ("", ".") else f"s3://{bucket}/"
    return str(local_path(uri).joinpath(*parts))


def parent(uri: str) -> str:
    """The folder (or S3 prefix) a file location lies in."""
    return uri.rsplit("/", 1)[0] if is_s3(uri) else str(local_path(uri).parent)


def read_bytes(uri: str) -> bytes:
    if is_s3(uri):
        bucket, key = split_uri(uri)
        return _s3(uri, lambda c: c.get_object(Bucket=bucket, Key=key)["Body"].read())
    path = local_path(uri)
    if not path.is_file():
        raise VlmtuneError(f"{uri}: expected a file, found {'a folder' if path.is_dir() else 'nothing'}")
    return path.read_bytes()


def upload_folder(folder: Path, uri: str) -> int:
    """Copy every file under `folder` to the location, keeping relative paths; the number of files."""
    files = [p for p in sorted(Path(folder).rglob("*")) if p.is_file()]
    if is_s3(uri):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        for path in files:
            key = "/".join(filter(None, [prefix.rstrip("/"), path.relative_to(folder).as_posix()]))
            _s3(uri, lambda c, path=path, key=key: c.upload_file(str(path), bucket, key))
        return len(files)
    target = local_path(uri)
    for path in files:
        dest = target / path.relative_to(folder)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    return len(files)


def fetch_folder(uri: str, dest: Path) -> list[str]:
    """Copy everything under a prefix or folder into `dest`; the relative paths copied."""
    dest.mkdir(parents=True, exist_ok=True)
    if not is_s3(uri):
        source = local_path(uri)
        if not source.is_dir():
            raise VlmtuneError(f"{uri}: expected a folder, found {'a file' if source.is_file() else 'nothing'}")
        names = [p.relative_to(source).as_posix() for p in sorted(source.rglob("*")) if p.is_file()]
        for name in names:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, dest / name)
        return names
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    keys = _s3(uri, lambda c: [o["Key"] for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                               for o in page.get("Contents", [])])
    names = []
    for key in keys:
        name = key[len(prefix):]
        if not name or name.endswith("/") or ".." in Path(name).parts:
            continue
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        _s3(uri, lambda c, key=key, name=name: c.download_file(bucket, key, str(dest / name)))
        names.append(name)
    return names


def _s3(uri: str, call):
    """Run an S3 call; errors become one line naming the location and the S3 error code."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(s3_client())
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "error")
        raise VlmtuneError(f"{uri}: S3 refused the request: {code}") from None
    except BotoCoreError as e:
        raise VlmtuneError(f"{uri}: S3 request failed: {e}") from None

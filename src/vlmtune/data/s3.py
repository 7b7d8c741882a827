"""s3:// images through boto3, with the standard AWS environment and an optional endpoint URL.

The endpoint comes from `VLMTUNE_S3_ENDPOINT_URL` (or boto3's own `AWS_ENDPOINT_URL_S3` /
`AWS_ENDPOINT_URL`), which is how tests point it at a moto server on loopback.
"""

from __future__ import annotations

import os
from functools import lru_cache

from vlmtune.errors import VlmtuneError


def split_uri(uri: str) -> tuple[str, str]:
    """(bucket, key) of an s3:// URI; anything else is a user error."""
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not uri.startswith("s3://") or not bucket or not key:
        raise VlmtuneError(f"{uri!r}: expected s3://bucket/key")
    return bucket, key


@lru_cache(maxsize=4)
def _client(endpoint_url: str | None):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url)


def s3_client():
    return _client(os.environ.get("VLMTUNE_S3_ENDPOINT_URL") or None)


def read_s3(uri: str) -> bytes:
    """The object's bytes; missing objects, buckets and credentials become one-line user errors."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = split_uri(uri)
    try:
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "error")
        raise VlmtuneError(f"{uri}: expected a readable S3 object, found {code}") from None
    except BotoCoreError as e:
        raise VlmtuneError(f"{uri}: expected a readable S3 object, found {e}") from None

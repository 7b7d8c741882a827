"""Ids, ARNs, timestamps and the service model's name patterns; identifiers (an ARN or a name) -> rows.

ARNs follow the managed service's shapes so that clients which parse them keep working:
`arn:aws:bedrock:<region>:<account>:model-customization-job/<base>/<id>`, `...:custom-model/<base>/<id>`,
`...:custom-model-deployment/<id>`, `...:model-import-job/<id>`, `...:imported-model/<id>`,
`...:model-invocation-job/<id>`, and base models as `arn:aws:bedrock:<region>::foundation-model/<provider>.<name>`
(`vlmtune.tiny`, `qwen.qwen2-vl-2b-instruct`, `local.<folder>`). Ids are 12 characters of [a-z0-9].
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import string
from pathlib import Path

from vlmtune.service.errors import NotFoundError

_ALPHABET = string.ascii_lowercase + string.digits

# The service model's patterns (botocore does not check them client-side; the service does).
JOB_NAME = r"[a-zA-Z0-9](-*[a-zA-Z0-9+\-.])*"
MODEL_NAME = r"([0-9a-zA-Z][_-]?){1,63}"
IMPORTED_MODEL_NAME = r"([0-9a-zA-Z][_-]?)+"
INVOCATION_JOB_NAME = r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9+\-.]){0,63}"
TOKEN = r"[a-zA-Z0-9]([-a-zA-Z0-9]{0,254}[a-zA-Z0-9])?"
INVOCATION_TOKEN = r"[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}"
ROLE_ARN = r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+"
S3_URI = r"s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?"


def new_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(12))


def now() -> str:
    """UTC, ISO 8601 with microseconds and a Z: sorts as text in the order it happened."""
    return stamp(dt.datetime.now(dt.UTC))


def stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def slug(text: str, limit: int = 63) -> str:
    """Lowercase letters, digits and dashes only: the alphabet of an ARN's model name."""
    cleaned = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")
    return cleaned[:limit].strip("-") or "model"


def base_model_name(identifier: str) -> str:
    """`provider.name` for a base model: tiny -> vlmtune.tiny, a folder -> local.<folder>, org/name -> org.name."""
    if identifier == "tiny" or (identifier.startswith("tiny-") and not Path(identifier).exists()):
        return f"vlmtune.{slug(identifier)}"
    if Path(identifier).is_absolute() or Path(identifier).exists():
        return f"local.{slug(Path(identifier).name)}"
    org, _, name = identifier.rpartition("/")
    return f"{slug(org) if org else 'hub'}.{slug(name)}"


class Arns:
    """The ARNs of one service instance (its region and account)."""

    def __init__(self, region: str, account: str):
        self.region, self.account = region, account
        self._prefix = f"arn:aws:bedrock:{region}:{account}"

    def foundation_model(self, name: str) -> str:
        return f"arn:aws:bedrock:{self.region}::foundation-model/{name}"

    def customization_job(self, base_name: str, job_id: str) -> str:
        return f"{self._prefix}:model-customization-job/{base_name}/{job_id}"

    def custom_model(self, base_name: str, model_id: str) -> str:
        return f"{self._prefix}:custom-model/{base_name}/{model_id}"

    def deployment(self, deployment_id: str) -> str:
        return f"{self._prefix}:custom-model-deployment/{deployment_id}"

    def import_job(self, job_id: str) -> str:
        return f"{self._prefix}:model-import-job/{job_id}"

    def imported_model(self, model_id: str) -> str:
        return f"{self._prefix}:imported-model/{model_id}"

    def invocation_job(self, job_id: str) -> str:
        return f"{self._prefix}:model-invocation-job/{job_id}"


# What each table holds, in the words of the not-found message.
KINDS = {
    "customization_jobs": "model customization job",
    "custom_models": "custom model",
    "deployments": "custom model deployment",
    "import_jobs": "model import job",
    "imported_models": "imported model",
    "invocation_jobs": "model invocation job",
}


def find(store, table: str, identifier: str) -> dict | None:
    """The row an identifier names: its ARN, its name or its id."""
    return store.one(f"SELECT * FROM {table} WHERE arn = ? OR name = ? OR id = ?", (identifier, identifier, identifier))


def get(store, table: str, identifier: str) -> dict:
    """Like `find`, but an unknown identifier is the service's ResourceNotFoundException."""
    row = find(store, table, identifier)
    if row is None:
        raise NotFoundError(f"{KINDS[table]} {identifier!r} not found")
    return row

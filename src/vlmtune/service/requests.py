"""Request bodies of the Create* calls, checked as the service model states them.

botocore checks only required fields, types and lengths before sending; the patterns, enums and everything
vlmtune cannot honour are checked here. Fields of the service model that mean nothing on a self-hosted
machine (KMS keys, VPCs) are refused by name rather than silently ignored; roleArn is required by the
client, so it is checked and kept, but no IAM role is assumed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from vlmtune.service import errors, locations
from vlmtune.service import names as n


def _pattern(pattern: str, low: int = 1, high: int = 63):
    return Annotated[str, StringConstraints(min_length=low, max_length=high, pattern=f"^(?:{pattern})$")]


JobName = _pattern(n.JOB_NAME)
ModelName = _pattern(n.MODEL_NAME)
ImportedModelName = _pattern(n.IMPORTED_MODEL_NAME)
InvocationJobName = _pattern(n.INVOCATION_JOB_NAME)
Token = _pattern(n.TOKEN, high=256)
InvocationToken = _pattern(n.INVOCATION_TOKEN, high=256)
RoleArn = _pattern(n.ROLE_ARN, low=0, high=2048)
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=2048)]
MAX_TAGS = 50  # per resource, as the service documents for TooManyTagsException

CUSTOMIZATION_TYPES = ("FINE_TUNING", "CONTINUED_PRE_TRAINING", "DISTILLATION", "REINFORCEMENT_FINE_TUNING", "IMPORTED")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class Tag(_Body):
    key: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9\s._:/=+@-]*$")]
    value: Annotated[str, StringConstraints(max_length=256, pattern=r"^[a-zA-Z0-9\s._:/=+@-]*$")]


Tags = Annotated[list[Tag], Field(max_length=200)]


def _location(value: str | None) -> str | None:
    found = None if value is None else locations.problem(value)
    if found:
        raise ValueError(found)
    return value


class Location(_Body):
    s3Uri: str

    _check = field_validator("s3Uri")(classmethod(lambda cls, v: _location(v)))


class TrainingDataConfig(_Body):
    s3Uri: str | None = None
    invocationLogsConfig: dict | None = None

    _check = field_validator("s3Uri")(classmethod(lambda cls, v: _location(v)))


class ValidationDataConfig(_Body):
    validators: Annotated[list[Location], Field(max_length=10)]


class CreateCustomizationJob(_Body):
    jobName: JobName
    customModelName: ModelName
    roleArn: RoleArn
    clientRequestToken: Token | None = None
    baseModelIdentifier: Identifier
    customizationType: Literal[CUSTOMIZATION_TYPES] = "FINE_TUNING"
    customModelKmsKeyId: str | None = None
    jobTags: Tags = []
    customModelTags: Tags = []
    trainingDataConfig: TrainingDataConfig
    validationDataConfig: ValidationDataConfig | None = None
    outputDataConfig: Location
    hyperParameters: dict[str, str] = {}
    vpcConfig: dict | None = None
    customizationConfig: dict | None = None


class S3DataSource(_Body):
    s3DataSource: Location


class CreateCustomModel(_Body):
    modelName: ModelName
    modelSourceConfig: S3DataSource
    modelKmsKeyArn: str | None = None
    roleArn: RoleArn | None = None
    modelTags: Tags = []
    clientRequestToken: Token | None = None


class CreateDeployment(_Body):
    modelDeploymentName: ModelName
    modelArn: Identifier
    description: Annotated[str, StringConstraints(min_length=1, max_length=2048)] | None = None
    tags: Tags = []
    clientRequestToken: Token | None = None


class UpdateDeployment(_Body):
    modelArn: Identifier


class CreateImportJob(_Body):
    jobName: JobName
    importedModelName: ImportedModelName
    roleArn: RoleArn
    modelDataSource: S3DataSource
    jobTags: Tags = []
    importedModelTags: Tags = []
    clientRequestToken: Token | None = None
    vpcConfig: dict | None = None
    importedModelKmsKeyId: str | None = None


class S3InputDataConfig(Location):
    s3InputFormat: Literal["JSONL"] = "JSONL"
    s3BucketOwner: str | None = None


class S3OutputDataConfig(Location):
    s3EncryptionKeyId: str | None = None
    s3BucketOwner: str | None = None


class InvocationInput(_Body):
    s3InputDataConfig: S3InputDataConfig


class InvocationOutput(_Body):
    s3OutputDataConfig: S3OutputDataConfig


class CreateInvocationJob(_Body):
    jobName: InvocationJobName
    roleArn: RoleArn
    clientRequestToken: InvocationToken | None = None
    modelId: Identifier
    inputDataConfig: InvocationInput
    outputDataConfig: InvocationOutput
    vpcConfig: dict | None = None
    timeoutDurationInHours: Annotated[int, Field(ge=24, le=168)] | None = None
    tags: Tags = []
    modelInvocationType: Literal["InvokeModel", "Converse"] | None = None


# Fields vlmtune refuses by name: what each would need that a self-hosted machine does not have.
UNSUPPORTED = {
    "customModelKmsKeyId": "vlmtune keeps models on the service's own disk and has no KMS keys",
    "modelKmsKeyArn": "vlmtune keeps models on the service's own disk and has no KMS keys",
    "importedModelKmsKeyId": "vlmtune keeps models on the service's own disk and has no KMS keys",
    "s3EncryptionKeyId": "vlmtune writes outputs with the S3 endpoint's default encryption and has no KMS keys",
    "vpcConfig": "vlmtune runs jobs on the service's machine, not in a VPC",
}


def parse(model: type[BaseModel], body: object) -> BaseModel:
    """The body as `model`; one ValidationException naming the field for anything wrong or unsupported."""
    try:
        parsed = model.model_validate(body)
    except ValidationError as e:
        raise errors.ValidationError(_message(e)) from None
    _refuse_unsupported(parsed)
    for name in ("jobTags", "customModelTags", "modelTags", "tags", "importedModelTags"):
        if len(getattr(parsed, name, None) or []) > MAX_TAGS:
            raise errors.TooManyTagsError(f"{name}: at most {MAX_TAGS} tags per resource, found {len(getattr(parsed, name))}")
    return parsed


def _refuse_unsupported(parsed: BaseModel) -> None:
    for name, value in parsed:
        if isinstance(value, BaseModel):
            _refuse_unsupported(value)
        elif value is not None and name in UNSUPPORTED:
            raise errors.ValidationError(f"{name} is not supported: {UNSUPPORTED[name]}; leave it out")


def _message(error: ValidationError) -> str:
    lines = []
    for err in error.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: not a field of this request (vlmtune does not support it)")
        elif err["type"] == "missing":
            lines.append(f"{where}: required, found nothing")
        elif err["type"] == "value_error":  # our own checks already say what they found
            lines.append(f"{where}: {err['msg'].removeprefix('Value error, ')}")
        else:
            found = json.dumps(err.get("input"), default=str)
            lines.append(f"{where}: {err['msg']}; found {found[:80]}")
    return "; ".join(lines[:3])


def request_hash(body: dict) -> str:
    """What a repeated clientRequestToken must send again for the call to count as the same request."""
    same = {k: v for k, v in body.items() if k != "clientRequestToken"}
    return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()


def repeated(store, table: str, token: str | None, digest: str) -> dict | None:
    """The resource an earlier call with this clientRequestToken made (None for a new token).

    The same token with a different request is a ConflictException, not a second resource.
    """
    if token is None:
        return None
    row = store.one(f"SELECT * FROM {table} WHERE client_token = ?", (token,))
    if row is not None and row["request_hash"] != digest:
        raise errors.ConflictError(f"clientRequestToken {token!r} was already used for a different request ({row['arn']}); "
                                   "use a new token for a new request")
    return row

"""What each customization type asks of a CreateModelCustomizationJob request, and what its worker is handed.

FINE_TUNING trains on `trainingDataConfig.s3Uri` (bedrock-conversation-2024) with `hyperParameters`.
CONTINUED_PRE_TRAINING is the same job on documents (`{"input": text}` lines, with "images" too): the recipe's
pretrain objective. DISTILLATION needs `customizationConfig.distillationConfig.teacherModelConfig`; its prompts
are `s3Uri` (data option 1) or `invocationLogsConfig` (option 2), and its hyperParameters are the student's
training ones plus the options of `vlmtune distill` that make sense on a server (task, splits, prices, ...).

The teacher is another model of this service (a deployment, custom model, imported model, or a base model
such as `tiny`), run inside the job's worker; or an OpenAI-compatible endpoint given as its base URL with the
model after '#' (`http://host:8000/v1#model-name`; the key comes from the service's VLMTUNE_TEACHER_API_KEY).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from vlmtune.config import Hyperparameters, TrainConfig, load_config
from vlmtune.distillation.config import DistillConfig
from vlmtune.errors import VlmtuneError
from vlmtune.service import models
from vlmtune.service.errors import ValidationError
from vlmtune.service.requests import CreateCustomizationJob
from vlmtune.training.setup import check_method_possible

SUPPORTED_TYPES = ("FINE_TUNING", "CONTINUED_PRE_TRAINING", "DISTILLATION")
TEACHER_FIELD = "customizationConfig.distillationConfig.teacherModelConfig.teacherModelIdentifier"
# Options the service sets itself: the base model, the data and the run folder come from the job, the device
# from the runner; a distillation's teacher and data source from customizationConfig and trainingDataConfig.
_JOB_FIELDS = {"device", "model", "train_data", "val_data", "output", "images_root", "overwrite"}
_DISTILL_JOB_FIELDS = _JOB_FIELDS | {
    "out", "prompts", "invocation_logs", "use_prompt_response", "request_metadata_filters", "test_data",
    "teacher_api", "teacher_model", "teacher_base_url", "teacher_api_key", "teacher_region", "teacher_adapter",
    "teacher_cache", "max_response_length", "answer_schema"}


def check_request(req: CreateCustomizationJob) -> None:
    """The type is one vlmtune runs, with the data and customizationConfig that type takes."""
    kind, data = req.customizationType, req.trainingDataConfig
    if kind not in SUPPORTED_TYPES:
        raise ValidationError(f"customizationType {kind} is not supported by vlmtune yet; supported: {', '.join(SUPPORTED_TYPES)}")
    if data.invocationLogsConfig is not None and kind != "DISTILLATION":
        raise ValidationError(f"trainingDataConfig.invocationLogsConfig: expected only with customizationType DISTILLATION, found {kind}; "
                              "give trainingDataConfig.s3Uri")
    if (data.s3Uri is None) == (data.invocationLogsConfig is None):
        expected = "exactly one of s3Uri and invocationLogsConfig" if kind == "DISTILLATION" else "s3Uri"
        raise ValidationError(f"trainingDataConfig: expected {expected}, found {'both' if data.s3Uri else 'neither'}")
    if kind == "DISTILLATION" and req.customizationConfig is None:
        raise ValidationError("customizationConfig.distillationConfig.teacherModelConfig: required for DISTILLATION, found nothing")
    if kind != "DISTILLATION" and req.customizationConfig is not None:
        raise ValidationError(f"customizationConfig: expected only with customizationType DISTILLATION, found it with {kind}; leave it out")
    validators = req.validationDataConfig.validators if req.validationDataConfig else []
    if len(validators) > 1:
        raise ValidationError(f"validationDataConfig.validators: vlmtune validates on one file, found {len(validators)}")


def check_hyperparameters(kind: str, hyper: dict[str, str]) -> dict:
    """`hyperParameters` (the service's names, or vlmtune's own) checked as the command's config checks them."""
    config, job_fields = (DistillConfig, _DISTILL_JOB_FIELDS) if kind == "DISTILLATION" else (TrainConfig, _JOB_FIELDS)
    extra_fields = {"DISTILLATION": DistillConfig.model_fields}
    fields = Hyperparameters.model_fields | extra_fields.get(kind, {})
    known = set(fields) - job_fields
    aliases = {a for name, f in fields.items() if name not in job_fields for a in getattr(f.validation_alias, "choices", [])}
    for key in hyper:
        if key not in known and key not in aliases - job_fields:
            extra = " or an option of `vlmtune distill` (task, test_fraction, golden_answers, ...)" if kind == "DISTILLATION" else ""
            raise ValidationError(f"hyperParameters: {key!r} is not a hyperparameter of {kind}; expected the service's names "
                                  "(epochCount, batchSize, learningRate, learningRateWarmupSteps, learningRateMultiplier, "
                                  f"earlyStoppingThreshold, earlyStoppingPatience) or a vlmtune training option (method, lora_rank, ...){extra}")
    placeholders = {"DISTILLATION": {"prompts": "prompts.jsonl", "teacher_model": "teacher"},
                    "CONTINUED_PRE_TRAINING": {"train_data": "train.jsonl", "objective": "pretrain"}}.get(kind, {"train_data": "train.jsonl"})
    try:
        cfg = load_config(config, None, dict(hyper) | placeholders)
        check_method_possible(cfg.method)
    except VlmtuneError as e:
        raise ValidationError(f"hyperParameters: {e}") from None
    return dict(hyper)


def resolve_teacher(svc, req: CreateCustomizationJob) -> dict | None:
    """What the worker asks: {"api": "local", "source", "adapter"} for a model of this service, or {"api": "openai",
    "model", "baseUrl"}; plus maxResponseLength. None for a job without a teacher."""
    if req.customizationConfig is None:
        return None
    teacher = req.customizationConfig.distillationConfig.teacherModelConfig
    length = {"maxResponseLength": teacher.maxResponseLengthForInference} if teacher.maxResponseLengthForInference else {}
    identifier = teacher.teacherModelIdentifier
    if identifier.startswith(("http://", "https://")):
        url, _, model = identifier.partition("#")
        if not model or not urlsplit(url).netloc:
            raise ValidationError(f"{TEACHER_FIELD}: an OpenAI-compatible endpoint is its base URL with the model after '#' "
                                  f"(http://host:8000/v1#model-name), found {identifier!r}")
        return {"api": "openai", "model": model, "baseUrl": url} | length
    source = models.resolve(svc, identifier, TEACHER_FIELD, deployments=True)
    return {"api": "local", "arn": source.arn} | source.spec() | length

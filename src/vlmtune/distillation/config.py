"""`vlmtune distill` options: one typed config is the YAML schema, the CLI, and what a service job hands over.

The managed service's names are accepted as aliases: teacherModelIdentifier, maxResponseLengthForInference,
usePromptResponse, requestMetadataFilters (as JSON on the command line), and every hyperparameter the training
recipe takes (epochCount, learningRate, ...), which apply to the student.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator

from vlmtune.config import Hyperparameters
from vlmtune.data.formats.invocation_log import MetadataFilters
from vlmtune.metrics.tasks import TaskName


def _alias(*names: str) -> AliasChoices:
    return AliasChoices(*names)


class DistillConfig(Hyperparameters):
    """`vlmtune distill`: a teacher answers the prompts, a student is fine-tuned on the answers, both are scored."""

    # ---------------------------------------------------------------- the student
    model: str = Field("tiny", validation_alias=_alias("model", "student", "baseModelIdentifier"),
                       description="the student: 'tiny', 'tiny-<family>', a hub id or a model folder")
    out: Path = Field(Path("distill_out"), validation_alias=_alias("out", "output", "output_dir"),
                      description="output folder: labelled data, student run, evaluations, report; a re-run resumes")
    # ---------------------------------------------------------------- the prompts
    prompts: Path | None = Field(None, validation_alias=_alias("prompts", "train_data", "training_data"),
                                 description="data option 1: bedrock-conversation-2024 prompts (a user turn, images welcome; an assistant answer is optional)")
    invocation_logs: Path | None = Field(None, validation_alias=_alias("invocation_logs", "invocationLogSource"),
                                         description="data option 2: a file or folder of invocation logs (`vlmtune serve --invocation-log`, or the managed service's)")
    use_prompt_response: bool = Field(False, validation_alias=_alias("use_prompt_response", "usePromptResponse"),
                                      description="invocation logs: train on the logged answers as they are instead of asking the teacher again")
    request_metadata_filters: MetadataFilters | None = Field(
        None, validation_alias=_alias("request_metadata_filters", "requestMetadataFilters"),
        description='invocation logs: keep the calls whose requestMetadata match, in the service\'s shape (JSON), '
                    'e.g. \'{"andAll": [{"equals": {"task": "charts"}}, {"notEquals": {"user": "test"}}]}\'')
    images_root: Path | None = Field(None, description="folder that relative image paths resolve against; default the prompts file's folder")
    golden_answers: Literal["train", "filter", "ignore"] = Field(
        "train", description="prompts that come with an assistant answer: train = train on that answer (the teacher answers the rest); "
        "filter = the teacher answers every prompt and an answer is kept only if it scores at least min_score against it; "
        "ignore = the teacher answers every prompt (the answers still score the held-out split)")
    test_data: Path | None = Field(None, description="held-out prompts (with golden answers, or the teacher's become the reference); "
                                   "default: test_fraction of the prompts")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="share of the prompts held out for the report when there is no test_data")
    val_data: Path | None = Field(None, validation_alias=_alias("val_data", "validation_data"),
                                  description="prompts for the student's validation loss, labelled like the training ones; default: val_fraction of the prompts")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="share of the prompts kept for the student's validation loss when there is no val_data")
    # ---------------------------------------------------------------- the teacher
    teacher_api: Literal["openai", "converse", "local"] = Field(
        "openai", description="openai: an OpenAI-compatible endpoint; converse: the Converse API through boto3; local: a model in this process")
    teacher_model: str = Field("", validation_alias=_alias("teacher_model", "teacher", "teacherModelIdentifier"),
                               description="the teacher: a model name (openai), a modelId (converse), or 'tiny' / a folder / a hub id (local)")
    teacher_base_url: str = Field("", description="openai: the base URL (…/v1); converse: the endpoint URL; empty = the API's default")
    teacher_api_key: str = Field("", json_schema_extra={"envvar": "VLMTUNE_TEACHER_API_KEY"},
                                 description="openai: the API key (else OPENAI_API_KEY); converse uses the standard AWS settings")
    teacher_region: str = Field("", description="converse: the AWS region (else AWS_REGION, else us-east-1)")
    teacher_adapter: Path | None = Field(None, description="local: a LoRA adapter folder for the teacher")
    max_response_length: int = Field(512, ge=1, le=32768, validation_alias=_alias("max_response_length", "maxResponseLengthForInference"),
                                     description="most tokens the teacher may answer with (service: maxResponseLengthForInference)")
    teacher_temperature: float = Field(0.0, ge=0, le=2, description="the teacher's sampling temperature (0 = greedy)")
    teacher_top_p: float = Field(1.0, gt=0, le=1, description="the teacher's nucleus sampling")
    samples_per_prompt: int = Field(1, ge=1, le=16, description="teacher answers asked per prompt (needs teacher_temperature > 0 beyond 1); each kept one trains")
    teacher_concurrency: int = Field(4, ge=1, le=256, description="teacher calls in flight at once")
    teacher_timeout: float = Field(60.0, gt=0, description="seconds one teacher call may take")
    teacher_retries: int = Field(3, ge=0, le=20, description="retries of a failed call (429, 5xx, timeout, malformed answer) before it is skipped")
    teacher_backoff: float = Field(1.0, ge=0, description="seconds before the first retry, doubled each time (with jitter)")
    teacher_cache: Path | None = Field(None, description="SQLite file of teacher answers, shared by re-runs; default OUT/teacher_cache.sqlite")
    # ---------------------------------------------------------------- filtering the teacher's answers
    answer_schema: Path | None = Field(None, description="keep only teacher answers that are JSON valid against this JSON schema")
    min_score: float = Field(1.0, ge=0, le=1, description="golden_answers filter: the lowest score (the task's headline metric, 0-1) "
                             "a teacher answer may get against the golden answer and still train; 1 = it must agree")
    # ---------------------------------------------------------------- the report
    task: TaskName = Field("chartqa", description="how held-out answers (and golden_answers filter) are scored")
    max_new_tokens: int = Field(0, ge=0, description="generation cap of base and student on the held-out split; 0 = the task's default")
    eval_batch_size: int = Field(16, ge=1, description="records per generation batch when scoring base and student")
    price_input_per_1k: float = Field(0.0, ge=0, description="student and base: price per 1,000 input tokens")
    price_output_per_1k: float = Field(0.0, ge=0, description="student and base: price per 1,000 output tokens")
    gpu_hour_price: float = Field(0.0, ge=0, description="student and base: price per device-hour")
    teacher_price_input_per_1k: float = Field(0.0, ge=0, description="teacher: price per 1,000 input tokens")
    teacher_price_output_per_1k: float = Field(0.0, ge=0, description="teacher: price per 1,000 output tokens")

    @field_validator("request_metadata_filters", mode="before")
    @classmethod
    def _json(cls, value):
        """The command line gives the filter as JSON text; YAML gives a mapping."""
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as e:
                raise ValueError(f"option 'request_metadata_filters': expected JSON such as '{{\"equals\": {{\"key\": \"value\"}}}}', "
                                 f"found {value[:60]!r} ({e.msg})") from None
        return value

    @model_validator(mode="after")
    def _check_sources(self):
        if (self.prompts is None) == (self.invocation_logs is None):
            raise ValueError("options 'prompts' and 'invocation_logs': expected exactly one (data option 1 or 2), "
                             f"found {'both' if self.prompts else 'neither'}")
        if self.prompts is not None and (self.use_prompt_response or self.request_metadata_filters is not None):
            raise ValueError("options 'use_prompt_response' and 'request_metadata_filters': expected only with invocation_logs, found them with prompts")
        if not self.teacher_model and not self.use_prompt_response:
            raise ValueError("option 'teacher_model' (teacherModelIdentifier): required unless use_prompt_response trains on logged answers, found nothing")
        if self.samples_per_prompt > 1 and self.teacher_temperature == 0:
            raise ValueError(f"option 'samples_per_prompt': {self.samples_per_prompt} samples of a greedy teacher are one answer; "
                             "expected teacher_temperature > 0, found 0")
        if (0 if self.val_data else self.val_fraction) + (0 if self.test_data else self.test_fraction) >= 1:
            raise ValueError("options 'val_fraction' and 'test_fraction': expected them to leave prompts to train on, found they sum to 1 or more")
        return self

"""`vlmtune eval` options: one pydantic model is the YAML schema and the CLI (see config.py)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from vlmtune.metrics.tasks import TaskName


class EvalConfig(BaseModel):
    """A model answers every record of a test file; predictions, metrics and a report go to `out`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, protected_namespaces=())

    model: str = Field("tiny", description="'tiny' (embedded), a hub id or a local model folder")
    adapter: Path | None = Field(None, description="a LoRA adapter folder (peft) to apply to the model")
    data: Path = Field(..., description="test file (bedrock-conversation-2024 JSONL or another supported format)")
    images_root: Path | None = Field(None, description="folder relative image paths resolve against; paths outside it are refused (default: each data file's folder)")
    task: TaskName = Field("extraction", description="how answers are scored")
    out: Path = Field(Path("eval_out"), validation_alias=AliasChoices("out", "output"),
                      description="output folder; rerunning skips ids already predicted there")
    prompt: Path | None = Field(None, description="prompt file: .txt = system prompt; .yaml/.json = {system, user, stop}")
    prefill: str = Field("", description="text the answer starts with (e.g. '```json'); kept in the prediction")
    stop: list[str] = Field(default_factory=list, description="a stop string, added to the prompt file's (repeatable)")
    shots: int = Field(0, ge=0, le=32, description="few-shot examples put before each question")
    shots_from: Path | None = Field(None, description="training file the few-shot examples come from (never the test file)")
    # The field cannot be called `schema` (pydantic's BaseModel has that name); `schema` is how users write it.
    schema_file: Path | None = Field(None, validation_alias=AliasChoices("schema"), description="JSON schema for schema-valid rate and --constrained")
    constrained: bool = Field(False, description="constrain decoding to --schema (output always validates)")
    batch_size: int = Field(8, ge=1, le=1024, description="records per generation batch")
    max_new_tokens: int = Field(0, ge=0, description="generation cap; 0 = the task's default")
    temperature: float = Field(0.0, ge=0, le=5, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling when temperature > 0")
    limit: int = Field(0, ge=0, description="evaluate only the first N records; 0 = all")
    seed: int = Field(42, description="seed for sampling and for choosing few-shot examples")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")

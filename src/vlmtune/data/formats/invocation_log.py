"""The managed service's model invocation logs: one JSON object per Converse call, written and read here.

A log line, as the managed service writes it (and `vlmtune serve --invocation-log` too):

    {"schemaType": "ModelInvocationLog", "schemaVersion": "1.0", "timestamp": "2025-03-11T00:38:02Z",
     "accountId": "...", "identity": {"arn": "..."}, "region": "...", "requestId": "...", "operation": "Converse",
     "modelId": "...", "requestMetadata": {"project": "charts"},
     "input": {"inputContentType": "application/json", "inputBodyJson": {<the Converse request>}, "inputTokenCount": 93},
     "output": {"outputContentType": "application/json", "outputBodyJson": {<the Converse response>}, "outputTokenCount": 12}}

Distillation reads them as prompts (`invocationLogsConfig`): `requestMetadataFilters` (equals, notEquals, andAll,
orAll) choose calls by the metadata logged with them, and `usePromptResponse` keeps the logged answer as the
training target instead of asking the teacher again. Logs come as one file or a folder of them (`.jsonl`, `.json`,
and either gzipped, as the service delivers them to S3), one call per line. Lines that cannot be used (a torn last
line, another operation, a body stored elsewhere) are skipped and counted by reason, never the end of a job.
"""

from __future__ import annotations

import gzip
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vlmtune.data.formats.bedrock import SCHEMA_VERSION, parse_bedrock
from vlmtune.data.problems import RecordError
from vlmtune.data.record import Message, Record, TextPart
from vlmtune.errors import VlmtuneError

SCHEMA_TYPE = "ModelInvocationLog"
LOG_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".gz")


# ---------------------------------------------------------------- writing
def log_entry(model_id: str, request: dict, response: dict, *, metadata: dict | None = None, request_id: str = "",
              account_id: str = "000000000000", region: str = "local", when: datetime | None = None) -> dict:
    """One invocation-log line for a Converse call: the request body as received, the response as sent."""
    usage = response.get("usage", {})
    entry = {
        "schemaType": SCHEMA_TYPE,
        "schemaVersion": "1.0",
        "timestamp": (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "accountId": account_id,
        "identity": {"arn": f"arn:aws:iam::{account_id}:user/vlmtune"},
        "region": region,
        "requestId": request_id or str(uuid.uuid4()),
        "operation": "Converse",
        "modelId": model_id,
        "input": {"inputContentType": "application/json", "inputBodyJson": request,
                  "inputTokenCount": usage.get("inputTokens", 0)},
        "output": {"outputContentType": "application/json", "outputBodyJson": response,
                   "outputTokenCount": usage.get("outputTokens", 0)},
    }
    if metadata:
        entry["requestMetadata"] = dict(metadata)
    return entry


# ---------------------------------------------------------------- requestMetadataFilters
class _Filters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    equals: dict[str, str] | None = Field(None, min_length=1, max_length=1, description="include calls whose key equals the value")
    notEquals: dict[str, str] | None = Field(None, min_length=1, max_length=1, description="include calls whose key does not equal the value")


class BaseMetadataFilter(_Filters):
    """One of andAll's / orAll's members: equals and/or notEquals (both must hold when both are given)."""

    @model_validator(mode="after")
    def _something(self):
        if self.equals is None and self.notEquals is None:
            raise ValueError("a base filter needs 'equals' or 'notEquals'")
        return self

    def matches(self, metadata: dict) -> bool:
        return _matches(self.equals, self.notEquals, metadata)


class MetadataFilters(_Filters):
    """The service's `requestMetadataFilters`: exactly one of equals, notEquals, andAll, orAll.

    Example:
        >>> MetadataFilters.model_validate({"orAll": [{"equals": {"task": "charts"}}, {"equals": {"task": "w2"}}]}).matches({"task": "w2"})
        True
    """

    andAll: list[BaseMetadataFilter] | None = Field(None, min_length=1, max_length=16, description="include calls all filters match")
    orAll: list[BaseMetadataFilter] | None = Field(None, min_length=1, max_length=16, description="include calls any filter matches")

    @model_validator(mode="after")
    def _exactly_one(self):
        given = [name for name in ("equals", "notEquals", "andAll", "orAll") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"requestMetadataFilters: expected exactly one of equals, notEquals, andAll, orAll, found {given or 'none'}")
        return self

    def matches(self, metadata: dict) -> bool:
        if self.andAll is not None:
            return all(f.matches(metadata) for f in self.andAll)
        if self.orAll is not None:
            return any(f.matches(metadata) for f in self.orAll)
        return _matches(self.equals, self.notEquals, metadata)


def _matches(equals: dict | None, not_equals: dict | None, metadata: dict) -> bool:
    # A call without the key does not equal any value: notEquals includes it, equals does not.
    ok = all(metadata.get(k) == v for k, v in (equals or {}).items())
    return ok and all(metadata.get(k) != v for k, v in (not_equals or {}).items())


# ---------------------------------------------------------------- reading
@dataclass
class LoggedCalls:
    """Records read from invocation logs, with what was skipped and why."""

    records: list[Record] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    files: int = 0


def read_invocation_logs(source: str | Path, filters: MetadataFilters | None = None, use_prompt_response: bool = False) -> LoggedCalls:
    """Converse calls in the logs at `source` (a file or a folder), as records.

    With `use_prompt_response` each record ends with the logged answer (the training target as it is); without,
    it ends with the prompt's last user turn, for the teacher to answer. The request metadata is kept in
    `record.meta["requestMetadata"]`.
    """
    out = LoggedCalls()
    for path in log_files(source):
        out.files += 1
        for line, obj in _lines(path, out.skipped):
            reason, record = _record(obj, f"{path}:{line}", filters, use_prompt_response)
            if reason:
                out.skipped[reason] += 1
            else:
                out.records.append(record)
    return out


def log_files(source: str | Path) -> list[Path]:
    """The log files at `source`: the file itself, or every log file under the folder, in name order."""
    source = Path(source)
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise VlmtuneError(f"invocation logs {source}: expected a log file or a folder of them, found nothing")
    files = sorted(p for p in source.rglob("*") if p.is_file() and p.name.endswith(LOG_SUFFIXES))
    if not files:
        raise VlmtuneError(f"invocation logs {source}: expected files ending in {', '.join(LOG_SUFFIXES)}, found none")
    return files


def _lines(path: Path, skipped: Counter) -> Iterator[tuple[int, dict]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                    skipped["unreadable line (not one JSON object)"] += 1
                    continue
                if isinstance(obj, dict):
                    yield number, obj
                else:
                    skipped["unreadable line (not one JSON object)"] += 1
    except (OSError, EOFError) as e:  # a gzip file cut short keeps the calls before the cut
        skipped[f"unreadable file part ({type(e).__name__})"] += 1


def _record(obj: dict, origin: str, filters: MetadataFilters | None, use_prompt_response: bool) -> tuple[str, Record | None]:
    """(reason to skip, None) or ("", the record) for one log line."""
    if obj.get("operation") != "Converse":
        return f"not a Converse call (operation {obj.get('operation')!r})", None
    body = (obj.get("input") or {}).get("inputBodyJson")
    if not isinstance(body, dict):
        stored = "inputBodyS3Path" in (obj.get("input") or {})
        return ("request body stored in a separate object (large-data delivery)" if stored else "no request body logged"), None
    metadata = obj.get("requestMetadata", body.get("requestMetadata")) or {}
    if filters is not None and not filters.matches(metadata if isinstance(metadata, dict) else {}):
        return "left out by requestMetadataFilters", None
    try:
        prompt = parse_bedrock({"schemaVersion": SCHEMA_VERSION, "system": body.get("system"), "messages": body.get("messages")},
                               origin=origin, record_id=str(obj.get("requestId") or origin))
    except RecordError as e:
        return f"request not readable as a conversation ({e.code})", None
    messages, prefill = _split_prefill(prompt.messages)
    response = (obj.get("output") or {}).get("outputBodyJson") or {}
    meta = {"requestMetadata": metadata, "modelId": obj.get("modelId", ""), "requestId": obj.get("requestId", ""),
            "usage": response.get("usage") or {}, "latencyMs": (response.get("metrics") or {}).get("latencyMs", 0)}
    if not use_prompt_response:
        return "", replace(prompt, messages=messages, meta=meta)
    answer = _response_text(obj)
    if answer is None:
        return "no response logged (usePromptResponse needs one)", None
    turn = Message("assistant", (TextPart(prefill + answer),))
    return "", replace(prompt, messages=(*messages, turn), meta=meta)


def _split_prefill(messages: tuple[Message, ...]) -> tuple[tuple[Message, ...], str]:
    """A final assistant message is the start of the answer; the logged response holds what follows it."""
    if len(messages) > 1 and messages[-1].role == "assistant":
        return messages[:-1], messages[-1].text
    return messages, ""


def _response_text(obj: dict) -> str | None:
    response = (obj.get("output") or {}).get("outputBodyJson")
    content = (((response or {}).get("output") or {}).get("message") or {}).get("content") if isinstance(response, dict) else None
    if not isinstance(content, list):
        return None
    texts = [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)]
    return "".join(texts) if texts else None

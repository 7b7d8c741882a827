"""Request fields vlmtune does not implement: refused by name, never silently ignored.

Clients send many optional fields, mostly as null or at their defaults, and those ask for nothing: they are
accepted. A field that asks for something vlmtune does not do (tools, log probabilities, a guardrail) is a
400 that names it. A few fields change nothing vlmtune does (an end-user id, request metadata for logs) and
are accepted as they are. Any other unknown field is refused unless it is null.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

NOT_IMPLEMENTED = "not_implemented"  # the pydantic error type of a refusal (validation_message shows it as is)


class Refusing(BaseModel):
    """A request object whose unknown fields go through its `unsupported` / `ignored` tables."""

    model_config = ConfigDict(strict=True, extra="allow", protected_namespaces=())
    # field -> (why it is refused, the values that ask for nothing and are accepted)
    unsupported: ClassVar[dict[str, tuple[str, tuple]]] = {}
    ignored: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="after")
    def _refuse_unsupported(self):
        for name, value in (self.model_extra or {}).items():
            if value is None or name in self.ignored:
                continue
            why, accepted = self.unsupported.get(name, ("not a field vlmtune implements", ()))
            if any(value == ok and isinstance(value, bool) == isinstance(ok, bool) for ok in accepted):
                continue
            raise PydanticCustomError(NOT_IMPLEMENTED, "{field}: {why}; found {found}",
                                      {"field": name, "why": why, "found": repr(value)[:80]})
        return self


_TOOLS = "tool calling is not implemented by vlmtune"
_LOGPROBS = "log probabilities are not returned by vlmtune"

# OpenAI chat completions (the fields of openai-python's CompletionCreateParams that vlmtune does not honour).
OPENAI_UNSUPPORTED = {
    "tools": (_TOOLS, ([],)),
    "tool_choice": (_TOOLS, ("none",)),
    "functions": (_TOOLS, ([],)),
    "function_call": (_TOOLS, ("none",)),
    "logprobs": (_LOGPROBS, (False,)),
    "top_logprobs": (_LOGPROBS, (0,)),
    "n": ("vlmtune returns one choice per request; send n requests", (1,)),
    "logit_bias": ("logit_bias is not implemented by vlmtune", ({},)),
    "frequency_penalty": ("frequency_penalty is not implemented by vlmtune", (0,)),
    "presence_penalty": ("presence_penalty is not implemented by vlmtune", (0,)),
    "modalities": ("vlmtune answers with text only", (["text"],)),
    "audio": ("vlmtune answers with text only", ()),
    "prediction": ("predicted outputs are not implemented by vlmtune", ()),
    "reasoning_effort": ("reasoning settings are not implemented by vlmtune", ()),
    "verbosity": ("verbosity is not implemented by vlmtune", ()),
    "web_search_options": ("web search is not implemented by vlmtune", ()),
    "store": ("vlmtune does not store completions", (False,)),
    "service_tier": ("vlmtune has one service tier", ("auto", "default")),
}
# They change nothing vlmtune does: who the end user is, labels for the caller's own records, a cache hint,
# and parallel_tool_calls (which only matters with tools, and those are refused).
OPENAI_IGNORED = frozenset({"user", "metadata", "safety_identifier", "prompt_cache_key", "prompt_cache_retention",
                            "parallel_tool_calls"})
OPENAI_MESSAGE_UNSUPPORTED = {
    "tool_calls": (_TOOLS, ([],)),
    "function_call": (_TOOLS, ()),
    "audio": ("audio is not implemented by vlmtune", ()),
}
OPENAI_MESSAGE_IGNORED = frozenset({"name", "refusal"})

# Converse and ConverseStream (the top-level members of bedrock-runtime's ConverseRequest in botocore's model).
CONVERSE_UNSUPPORTED = {
    "toolConfig": ("tool use is not implemented by vlmtune", ()),
    "guardrailConfig": ("guardrails are not implemented by vlmtune", ()),
    "additionalModelRequestFields": ("model-specific request fields are not implemented by vlmtune", ({},)),
    "additionalModelResponseFieldPaths": ("model-specific response fields are not implemented by vlmtune", ([],)),
    "promptVariables": ("prompt management is not implemented by vlmtune", ({},)),
    "projectIdentifier": ("vlmtune has no projects", ("default",)),
    "performanceConfig": ("vlmtune has no latency-optimized models", ({}, {"latency": "standard"})),
    "serviceTier": ("vlmtune has one service tier", ({}, {"type": "default"})),
}
CONVERSE_IGNORED = frozenset({"requestMetadata"})  # key-value pairs for the caller's own log filtering

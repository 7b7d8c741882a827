"""Constrained decoding: output that is guaranteed to validate against a JSON schema.

The grammar engine is llguidance (the one vLLM and llama.cpp use): it compiles the schema to a grammar and,
at each step, says which tokens of the vocabulary can extend the output. Masking every other token before
the model picks means the output cannot leave the grammar, and once the JSON value is complete the only
token allowed is end-of-sequence, so the model also stops there.

What is guaranteed is that an output that ENDED ON ITS OWN validates. An output cut by `max_new_tokens` is
incomplete JSON and says so (finish_reason "max_tokens"): a weak model given a schema with free text (an
unbounded string, or keys it may invent because `additionalProperties` is not false) can write until the
cap. One bound is built in: an integer without `minimum`/`maximum` is kept within +-2**53 (the integers
JSON parsers agree on, RFC 7493), because an unbounded one lets a model write digits until the cap, and the
grammar engine's work per token grows with the length of the number.
"""

from __future__ import annotations

import json
import weakref

import jsonschema
import llguidance
import llguidance.hf
import torch
from jsonschema_specifications import REGISTRY as METASCHEMAS
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012
from transformers import LogitsProcessor

from vlmtune.errors import VlmtuneError
from vlmtune.metrics import parse_json_object

# json.dumps' layout, as in most training answers. Without a fixed layout, whitespace is allowed between any
# two tokens and a weak model can spend its whole token budget on it.
_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}

# The built-in bound on integers without one (see the module docstring).
INTEGER_BOUND = 2**53
# Why a matcher may stop with its JSON complete; any other reason is a grammar-engine limit.
_COMPLETE = ("NoExtension", "NoExtensionBias", "EndOfSentence")
_DATA_KEYWORDS = ("enum", "const", "default", "examples")  # their values are JSON data, not schemas

# Wrapping a tokenizer for llguidance walks its whole vocabulary; do it once per tokenizer object.
_WRAPPED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _ll_tokenizer(tokenizer) -> llguidance.LLTokenizer:
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor carries its tokenizer
    if tokenizer not in _WRAPPED:
        try:
            _WRAPPED[tokenizer] = llguidance.hf.from_tokenizer(tokenizer)
        except ValueError as e:
            raise VlmtuneError(f"constrained decoding: expected a fast (Rust) tokenizer, found {type(tokenizer).__name__}: {e}") from None
    return _WRAPPED[tokenizer]


def compile_schema(schema: dict) -> str:
    """The llguidance grammar of a JSON schema; an unusable schema is a user error."""
    check_schema(schema)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(bound_integers(schema), overrides=_LAYOUT)
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise VlmtuneError(f"JSON schema: cannot be used for constrained decoding: {messages[0]}")
    return grammar


def check_schema(schema, where: str = "JSON schema") -> None:
    """Refuse, before any answer is generated, a schema that scoring would crash on.

    jsonschema checks a schema against its metaschema only when asked (and then also compiles every
    `pattern` and `patternProperties` key, through the metaschema's "regex" format), and resolves `$ref`
    only when validation reaches one: `{"type": 12}`, `{"pattern": "("}` and a `$ref` to nowhere all pass
    `Draft202012Validator(schema)` and raise in the middle of scoring. Remote `$ref`s are refused too:
    fetching them would need the network while scoring.
    """
    if not isinstance(schema, dict):
        raise VlmtuneError(f"{where}: expected an object, found {type(schema).__name__}")
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
        missing = next(_unresolvable_refs(schema), None)
    except jsonschema.SchemaError as e:
        at = "/".join(map(str, e.path)) or "root"
        raise VlmtuneError(f"{where}: not a valid schema (JSON Schema draft 2020-12) at {at}: {e.message}") from None
    except RecursionError:
        raise VlmtuneError(f"{where}: expected a JSON schema, found one nested too deeply to check") from None
    if missing is not None:
        raise VlmtuneError(f"{where}: $ref {missing!r}: expected a reference to a part of the schema (such as "
                           f"#/$defs/name), found nothing there (remote schemas are not fetched)")


def _unresolvable_refs(schema: dict):
    """Every `$ref` / `$dynamicRef` that does not resolve, with `$id`s moving the base URI as in validation."""
    root = DRAFT202012.create_resource(schema)
    resolver = METASCHEMAS.with_resource(root.id() or "", root).resolver(base_uri=root.id() or "")

    def walk(node, resolver):
        if isinstance(node, list):
            for item in node:
                yield from walk(item, resolver)
            return
        if not isinstance(node, dict):
            return
        if isinstance(node.get("$id"), str):
            resolver = resolver.in_subresource(DRAFT202012.create_resource(node))
        for key in ("$ref", "$dynamicRef"):
            if isinstance(node.get(key), str):
                try:
                    resolver.lookup(node[key])
                except Unresolvable:
                    yield node[key]
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                yield from walk(value, resolver)

    return walk(schema, resolver)


def bound_integers(schema):
    """A copy of `schema` where every integer without a bound gets +-INTEGER_BOUND; what it accepts validates the original."""
    if isinstance(schema, list):
        return [bound_integers(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (v if k in _DATA_KEYWORDS else bound_integers(v)) for k, v in schema.items()}
    types = out.get("type")
    if (types == "integer" or (isinstance(types, list) and "integer" in types and "number" not in types)) and not (
            {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"} & set(out)):
        out |= {"minimum": -INTEGER_BOUND, "maximum": INTEGER_BOUND}
    return out


class JsonSchemaLogitsProcessor(LogitsProcessor):
    """Mask, row by row, every token that would take the output outside the schema.

    One grammar matcher per batch row; each call consumes the token the row picked last step. The matchers
    are rebuilt when a new generation starts, so one processor can serve several `generate` calls.
    """

    def __init__(self, tokenizer, schema: dict):
        self.ll_tokenizer = _ll_tokenizer(tokenizer)
        self.grammar = compile_schema(schema)
        self.eos_token_id = self.ll_tokenizer.eos_token
        self.pad_token_id = getattr(getattr(tokenizer, "tokenizer", tokenizer), "pad_token_id", None)
        self._matchers: list[llguidance.LLMatcher] = []
        self._seen: torch.Tensor | None = None  # the ids of the previous call, to tell a continuation from a new run

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        ids = input_ids.detach().cpu()
        if self._continues(ids):
            for row, (matcher, token) in enumerate(zip(self._matchers, ids[:, -1].tolist())):
                self._consume(row, matcher, token)
        else:
            self._matchers = [llguidance.LLMatcher(self.ll_tokenizer, self.grammar, log_level=0) for _ in range(ids.shape[0])]
        self._seen = ids
        allowed = torch.stack([self._allowed(m) for m in self._matchers]).to(scores.device)
        width = min(allowed.shape[1], scores.shape[1])
        masked = torch.full_like(scores, float("-inf"))
        # Logit columns past the tokenizer's vocabulary (padded embedding rows) stay forbidden.
        masked[:, :width] = torch.where(allowed[:, :width], scores[:, :width], masked[:, :width])
        return masked

    def _continues(self, ids: torch.Tensor) -> bool:
        """Whether `ids` is the previous call's ids plus one token per row (else a new generation began)."""
        prev = self._seen
        return prev is not None and ids.shape == (prev.shape[0], prev.shape[1] + 1) and torch.equal(ids[:, :-1], prev)

    def _consume(self, row: int, matcher: llguidance.LLMatcher, token: int) -> None:
        """Advance one row's grammar by the token it picked last step."""
        if matcher.is_stopped():
            return  # the JSON was complete and the row picked end-of-sequence, or it is fed padding after that
        if not matcher.consume_token(token) and token != self.pad_token_id:
            # The mask allowed only grammar tokens; anything else means the ids and the grammar disagree.
            raise RuntimeError(f"constrained decoding: row {row}: token {token} is outside the grammar: {matcher.get_error()}")
        # A row cut by a stop string is fed padding: its matcher errs, and the row's output is cut anyway.

    def _allowed(self, matcher: llguidance.LLMatcher) -> torch.Tensor:
        """Boolean vocabulary mask of the tokens this row may pick next."""
        if matcher.is_stopped() and not matcher.is_error() and matcher.stop_reason() not in _COMPLETE:
            # A grammar-engine limit stopped the matcher short of a complete value. Ending the row with
            # end-of-sequence would return truncated JSON as if the model had finished, so refuse instead.
            raise RuntimeError(f"constrained decoding: the grammar engine gave up ({matcher.stop_reason()}) before the JSON was complete")
        if matcher.is_stopped():
            only_eos = torch.zeros(self.ll_tokenizer.vocab_size, dtype=torch.bool)
            only_eos[self.eos_token_id] = True
            return only_eos
        return torch.frombuffer(bytearray(matcher.compute_logit_bias()), dtype=torch.uint8) > 0


def json_schema_logits_processor(tokenizer, schema: dict) -> LogitsProcessor:
    """A logits processor that keeps every row of a batch inside `schema` and ends it when the JSON is done.

    Example:
        >>> proc = json_schema_logits_processor(processor.tokenizer, {"type": "object"})  # doctest: +SKIP
        >>> model.generate(**inputs, logits_processor=LogitsProcessorList([proc]))  # doctest: +SKIP
    """
    return JsonSchemaLogitsProcessor(tokenizer, schema)


def validates(text: str, schema: dict) -> bool:
    """Whether `text` is JSON that validates against `schema` (jsonschema, draft 2020-12)."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return False
    return jsonschema.Draft202012Validator(schema).is_valid(value)


def schema_valid(prediction: str, schema: dict) -> bool:
    """Whether model text holds a JSON object (bare, fenced or with chatter) that validates against `schema`."""
    if validates(prediction, schema):
        return True
    value = parse_json_object(prediction)
    return value is not None and jsonschema.Draft202012Validator(schema).is_valid(value)


def load_schema(path) -> dict:
    """Read and check a schema file; a missing file, bad JSON or an unusable schema is a user error naming the file."""
    try:
        schema = json.loads(open(path, encoding="utf-8").read())
    except FileNotFoundError:
        raise VlmtuneError(f"--schema {path}: file not found") from None
    except UnicodeDecodeError:
        raise VlmtuneError(f"--schema {path}: expected a UTF-8 JSON file, found other bytes") from None
    except json.JSONDecodeError as e:
        raise VlmtuneError(f"--schema {path}: line {e.lineno}: expected a JSON schema, found invalid JSON ({e.msg})") from None
    except RecursionError:
        raise VlmtuneError(f"--schema {path}: expected a JSON schema, found JSON nested too deeply to read") from None
    check_schema(schema, f"--schema {path}")
    return schema

"""Constrained decoding: a random-init model's outputs become schema-valid, and generation stops there."""

import json

import pytest
import torch
from transformers import LogitsProcessorList

from vlmtune.data.record import Message, Record, TextPart
from vlmtune.errors import VlmtuneError
from vlmtune.models.constrained import (
    INTEGER_BOUND,
    bound_integers,
    compile_schema,
    json_schema_logits_processor,
    load_schema,
    schema_valid,
    validates,
)
from vlmtune.models.generate import Sampling, generate_batch

SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"enum": ["red", "green", "blue"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 10},
        "note": {"type": "string", "maxLength": 6},
        "ok": {"type": "boolean"},
    },
    "required": ["answer", "count", "note", "ok"],
    "additionalProperties": False,
}


def _prompts(n=6):
    # Different lengths so left padding differs row by row.
    return [Record((Message("user", (TextPart("How many bars are there? " * (i + 1)),)),), id=str(i)) for i in range(n)]


def _generate(tiny, procs, sampling):
    model, processor = tiny
    records = _prompts()
    return generate_batch(model, processor, records, [[] for _ in records], sampling=sampling, logits_processor=procs)


def test_unconstrained_tiny_model_is_not_schema_valid(tiny):
    outs = _generate(tiny, None, Sampling(max_new_tokens=40))
    assert not any(validates(o.text, SCHEMA) for o in outs)


@pytest.mark.parametrize("sampling", [Sampling(max_new_tokens=80), Sampling(max_new_tokens=80, temperature=1.0, seed=3)])
def test_constrained_outputs_all_validate_and_end_with_eos(tiny, sampling):
    proc = json_schema_logits_processor(tiny[1].tokenizer, SCHEMA)
    outs = _generate(tiny, LogitsProcessorList([proc]), sampling)
    assert all(validates(o.text, SCHEMA) for o in outs), [o.text for o in outs]
    # The grammar allows only end-of-sequence once the object closes, so no row runs to the cap.
    assert [o.finish_reason for o in outs] == ["end_turn"] * len(outs)
    assert all(o.output_tokens < sampling.max_new_tokens for o in outs)


def test_one_processor_serves_consecutive_generations(tiny):
    proc = LogitsProcessorList([json_schema_logits_processor(tiny[1], SCHEMA)])  # a processor works too
    first = _generate(tiny, proc, Sampling(max_new_tokens=80))
    second = _generate(tiny, proc, Sampling(max_new_tokens=80))
    assert [o.text for o in first] == [o.text for o in second]
    assert all(validates(o.text, SCHEMA) for o in second)


def test_padded_vocabulary_columns_are_masked(tiny):
    proc = json_schema_logits_processor(tiny[1].tokenizer, SCHEMA)
    vocab = len(tiny[1].tokenizer)
    scores = proc(torch.ones((2, 3), dtype=torch.long), torch.zeros((2, vocab + 7)))
    assert torch.isinf(scores[:, vocab:]).all()
    assert torch.isfinite(scores[:, :vocab]).any(dim=1).all()


def test_validates_and_schema_valid():
    good = '{"answer": "red", "count": 3, "note": "", "ok": true}'
    assert validates(good, SCHEMA)
    assert not validates('{"answer": "pink", "count": 3, "note": "", "ok": true}', SCHEMA)
    assert not validates('{"answer": "red"', SCHEMA) and not validates("", SCHEMA)
    assert not validates("```json\n" + good + "\n```", SCHEMA)  # strict: the text itself is the JSON
    assert schema_valid("```json\n" + good + "\n```", SCHEMA)  # lenient: model text with fences
    assert not schema_valid("no json here", SCHEMA)


def test_invalid_schema_is_a_user_error():
    with pytest.raises(VlmtuneError, match="not a valid schema"):
        compile_schema({"type": "objekt"})
    with pytest.raises(VlmtuneError, match="expected an object"):
        compile_schema(["type"])


OPEN_INTEGER = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}


def test_unbounded_integer_rows_end_on_their_own_and_validate(tiny):
    # Unbounded, three of these rows write digits until the cap (and each step gets slower as the number grows).
    proc = json_schema_logits_processor(tiny[1].tokenizer, OPEN_INTEGER)
    outs = _generate(tiny, LogitsProcessorList([proc]), Sampling(max_new_tokens=40))
    assert [o.finish_reason for o in outs] == ["end_turn"] * len(outs), [o.text for o in outs]
    assert all(validates(o.text, OPEN_INTEGER) for o in outs)


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "string"}}},  # free keys, text, digits
    {"type": "object", "properties": {"a": {"type": "array", "items": {"enum": ["red", "green"]}}, "b": {"type": "object"}}},
])
def test_every_row_that_ended_validates_and_cut_rows_say_so(tiny, schema):
    for sampling in (Sampling(max_new_tokens=24), Sampling(max_new_tokens=24, temperature=1.0, seed=5)):
        outs = _generate(tiny, LogitsProcessorList([json_schema_logits_processor(tiny[1].tokenizer, schema)]), sampling)
        assert all(validates(o.text, schema) == (o.finish_reason == "end_turn") for o in outs), [(o.finish_reason, o.text) for o in outs]
        assert all(o.output_tokens == 24 for o in outs if o.finish_reason == "max_tokens")


def test_bound_integers_adds_bounds_only_where_none_and_keeps_data():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}, "m": {"type": "integer", "minimum": 0},
                                               "x": {"type": ["integer", "null"]}, "f": {"type": "number"}},
              "default": {"type": "integer"}, "items": [{"type": "integer"}]}
    out = bound_integers(schema)
    assert out["properties"]["n"] == {"type": "integer", "minimum": -INTEGER_BOUND, "maximum": INTEGER_BOUND}
    assert out["properties"]["m"] == {"type": "integer", "minimum": 0}
    assert out["properties"]["x"]["maximum"] == INTEGER_BOUND and "maximum" not in out["properties"]["f"]
    assert out["default"] == {"type": "integer"} and out["items"][0]["maximum"] == INTEGER_BOUND
    assert "minimum" not in schema["properties"]["n"]  # the caller's schema is not changed


def test_a_token_outside_the_grammar_is_an_error_not_a_silent_end(tiny):
    tok = tiny[1].tokenizer
    proc = json_schema_logits_processor(tok, SCHEMA)
    vocab = len(tok)
    ids = torch.ones((1, 3), dtype=torch.long)
    proc(ids, torch.zeros((1, vocab)))
    close = tok.convert_tokens_to_ids("}") if "}" in tok.get_vocab() else tok.encode("}", add_special_tokens=False)[0]
    with pytest.raises(RuntimeError, match="outside the grammar"):
        proc(torch.cat([ids, torch.tensor([[close]])], dim=1), torch.zeros((1, vocab)))


# ------------------------------------------------------------ schemas are checked when they are loaded
BAD_SCHEMAS = {
    "bad type": ({"type": 12}, "not a valid schema (JSON Schema draft 2020-12) at type"),
    "bad pattern": ({"type": "string", "pattern": "("}, "at pattern: '(' is not a 'regex'"),
    "bad patternProperties key": ({"type": "object", "patternProperties": {"[": {}}}, "at patternProperties"),
    "unresolvable $ref": ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "$ref '#/$defs/missing'"),
    "remote $ref": ({"$ref": "https://example.com/schema.json"}, "remote schemas are not fetched"),
    "ref under a nested $id": ({"$id": "https://example.com/root.json",
                                "$defs": {"b": {"$id": "b.json", "properties": {"y": {"$ref": "#/$defs/c"}}}}}, "$ref '#/$defs/c'"),
    "not an object": (["type"], "expected an object, found list"),
}


@pytest.mark.parametrize("name", BAD_SCHEMAS)
def test_a_schema_scoring_would_crash_on_is_refused_when_loaded(tmp_path, name):
    schema, says = BAD_SCHEMAS[name]
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    with pytest.raises(VlmtuneError) as e:
        load_schema(path)
    assert str(e.value).startswith(f"--schema {path}: ") and says in str(e.value)


GOOD_REFS = [
    {"$defs": {"a": {"type": "string"}}, "type": "object", "properties": {"x": {"$ref": "#/$defs/a"}}},
    {"$id": "https://example.com/root.json", "$defs": {"b": {"$id": "b.json", "type": "integer"}}, "properties": {"x": {"$ref": "b.json"}}},
    {"$id": "https://example.com/root.json", "$defs": {"b": {"$id": "sub/b.json", "$defs": {"c": {"type": "integer"}},
                                                             "properties": {"y": {"$ref": "#/$defs/c"}}}}},
    {"$defs": {"a": {"$anchor": "name", "type": "string"}}, "properties": {"x": {"$ref": "#name"}}},
    {"$dynamicAnchor": "node", "properties": {"child": {"$dynamicRef": "#node"}}},
    {"$ref": "https://json-schema.org/draft/2020-12/schema"},  # the metaschema ships with jsonschema
    {"enum": [{"$ref": "#/nowhere"}]},  # data, not a schema
]


@pytest.mark.parametrize("schema", GOOD_REFS)
def test_schemas_whose_refs_resolve_load_and_validate(tmp_path, schema):
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    assert load_schema(path) == schema
    schema_valid('{"x": "a"}', schema)  # resolving every $ref raises nothing


def test_a_schema_file_that_is_not_utf8_is_a_user_error(tmp_path):
    path = tmp_path / "schema.json"
    path.write_bytes(b'{"type": "\xff"}')
    with pytest.raises(VlmtuneError, match="UTF-8"):
        load_schema(path)

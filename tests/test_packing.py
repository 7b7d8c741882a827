"""Packed rows train exactly as padded ones (per family), and batches are a pure function of (seed, epoch)."""

import pytest
import torch
from PIL import Image

from vlmtune.data.record import qa_record
from vlmtune.data.synth import generate_chart_qa
from vlmtune.models.encode import collate, encode_record
from vlmtune.models.packing import CANNOT_PACK, collate_packed, first_fit_rows, packed_position_ids, packing_problem
from vlmtune.models.tiny_families import TINY_FAMILIES, build_tiny_family
from vlmtune.training.batching import BatchPlan, epoch_batches, micro_batches

PACKING_FAMILIES = [f for f in TINY_FAMILIES if f.replace("-", "_").replace(".", "_") not in CANNOT_PACK]


def _records(processor, n: int = 6) -> list[dict]:
    """Records of very different lengths (one long question, the rest short) and two image shapes."""
    out = []
    for j, ex in enumerate(generate_chart_qa(n, seed=1)):
        question = ex.question + " and more words here please" * (12 if j == 0 else j % 2)
        image = ex.image if j % 2 == 0 else ex.image.resize((64, 32))
        out.append(encode_record(processor, qa_record("x.png", question, ex.answer), [image]))
    return out


def _loss_and_grads(model, batch: dict, n_tokens: int):
    model.zero_grad()
    loss = model(**packed_position_ids(model, batch), use_cache=False, num_items_in_batch=torch.tensor(n_tokens)).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", PACKING_FAMILIES)
def test_packed_rows_give_the_unpacked_loss_and_gradients(family):
    model, processor = build_tiny_family(family)
    model.train()
    examples = _records(processor)
    n_tokens = sum(int((e["labels"][1:] != -100).sum()) for e in examples)
    pad = processor.tokenizer.pad_token_id
    packed = collate_packed(examples, pad)
    assert len(packed["input_ids"]) < len(examples), "the fixture must actually put several records in one row"
    assert "attention_mask" not in packed
    loss, grads = _loss_and_grads(model, collate(examples, pad), n_tokens)
    packed_loss, packed_grads = _loss_and_grads(model, packed, n_tokens)
    assert packed_loss == pytest.approx(loss.item(), rel=1e-5)
    assert packed_grads.keys() == grads.keys()
    scale = max(g.abs().max().item() for g in grads.values())  # parameters with no real gradient hold only rounding
    for name, grad in grads.items():
        assert torch.allclose(packed_grads[name], grad, rtol=1e-3, atol=1e-5 * scale), name


def test_a_family_that_cannot_pack_says_why():
    model, _ = build_tiny_family("paligemma")
    assert "PaliGemma" in packing_problem(model)
    assert packing_problem(build_tiny_family("llava")[0]) == ""


def test_qwen_packed_positions_are_each_records_own_mrope_positions():
    model, processor = build_tiny_family("qwen2-vl")
    examples = _records(processor, 4)
    packed = packed_position_ids(model, collate_packed(examples, processor.tokenizer.pad_token_id))
    assert packed["position_ids"].shape[0] == 4  # text positions, then temporal / height / width
    rope_index = model.model.get_rope_index
    # The first row starts with the longest record: its positions are what the model computes for it alone.
    first = examples[0]
    alone, _ = rope_index(first["input_ids"][None], first["mm_token_type_ids"][None], first["image_grid_thw"])
    n = len(first["input_ids"])
    assert torch.equal(packed["position_ids"][1:, 0, :n], alone[:, 0])
    assert torch.equal(packed["position_ids"][0, 0, :n], torch.arange(n))


def test_first_fit_rows_stay_within_capacity_and_keep_every_record_once():
    lengths = [90, 10, 40, 50, 60, 5, 100, 30]
    rows = first_fit_rows(lengths, 100)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 100 for r in rows)
    assert len(rows) == 4 and rows == first_fit_rows(lengths, 100)


def test_batches_are_a_pure_function_of_seed_and_epoch_and_grouping_reduces_padding():
    lengths = [int(x) for x in torch.randint(60, 1000, (400,), generator=torch.Generator().manual_seed(0))]
    for grouped in (False, True):
        a = epoch_batches(lengths, 16, seed=3, epoch=1, group_by_length=grouped)
        assert a == epoch_batches(lengths, 16, seed=3, epoch=1, group_by_length=grouped)
        assert a != epoch_batches(lengths, 16, seed=3, epoch=2, group_by_length=grouped)
        assert sorted(i for b in a for i in b) == list(range(400)) and all(len(b) == 16 for b in a[:-1] + a[-1:])

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches) / sum(lengths)

    random_batches = epoch_batches(lengths, 16, 3, 0, group_by_length=False)
    assert padding(epoch_batches(lengths, 16, 3, 0, group_by_length=True)) < padding(random_batches) / 4
    # Random batches are the order vlmtune always had: one permutation per epoch, cut in pieces.
    order = torch.randperm(400, generator=torch.Generator().manual_seed(3 * 100_003 + 0)).tolist()
    assert random_batches == [order[i : i + 16] for i in range(0, 400, 16)]


def test_a_resumed_plan_continues_with_the_same_steps():
    lengths = list(range(10, 110))
    plan = BatchPlan(lengths, [1] * 100, batch_size=8, seed=1, group_by_length=True, accumulation=2)
    everything = list(plan.steps(0, 3 * plan.steps_per_epoch))
    assert list(plan.steps(17, 3 * plan.steps_per_epoch)) == everything[17:]
    assert micro_batches(list(range(10)), rank=1, processes=2, accumulation=2) == [[1, 3, 5], [7, 9]]


def test_image_tensors_follow_their_tokens_in_packed_rows():
    model, processor = build_tiny_family("llava")
    examples = [encode_record(processor, qa_record("x.png", "more words " * k, "a"), [Image.new("RGB", (64, 64), (k, 0, 0))])
                for k in (200, 1, 2)]
    packed = collate_packed(examples, processor.tokenizer.pad_token_id)
    # Row 0 holds the longest record, row 1 the two short ones in their order: pixels in the same order.
    expected = torch.cat([examples[0]["pixel_values"], examples[1]["pixel_values"], examples[2]["pixel_values"]])
    assert torch.equal(packed["pixel_values"], expected)

"""Splits are deterministic and never put the same image in two splits."""

import shutil

from vlmtune.data.record import qa_record
from vlmtune.data.split import split_records


def test_split_sizes_and_determinism(chart_dir):
    root, records = chart_dir
    a = split_records(records, root, (0.5, 0.25, 0.25), seed=1)
    b = split_records(list(reversed(records)), root, (0.5, 0.25, 0.25), seed=1)
    assert [len(v) for v in a.values()] == [6, 3, 3]
    assert {k: [r.id for r in v] for k, v in a.items()} == {k: [r.id for r in v] for k, v in b.items()}


def test_same_image_content_never_crosses_splits(chart_dir):
    root, records = chart_dir
    # A copy of one image under another name, asked a different question: same content, same split.
    shutil.copy(root / records[0].images[0].source, root / "images" / "copy.png")
    twin = qa_record("images/copy.png", "Is the line rising or falling?", "rising", id="twin")
    for seed in range(5):
        splits = split_records(records + [twin], root, (0.34, 0.33, 0.33), seed=seed)
        where = {r.id: name for name, rs in splits.items() for r in rs}
        assert where["twin"] == where[records[0].id]

"""Writing synthetic examples as a dataset folder: DIR/data.jsonl (bedrock-conversation-2024) and DIR/images/."""

from __future__ import annotations

import json
from pathlib import Path

from vlmtune.data.formats.bedrock import write_bedrock
from vlmtune.data.record import qa_record
from vlmtune.io import atomic_path, write_text

from .example import SynthExample


def write_dataset(examples: list[SynthExample], out: str | Path) -> Path:
    """Save images as PNG and the records (images by relative path); returns the data file.

    Ground truth goes to DIR/truth.jsonl beside the data, one line per record in the same order.
    """
    out = Path(out)
    records = []
    for ex in examples:
        rel = f"images/{ex.id}.png"
        with atomic_path(out / rel) as tmp:
            ex.image.save(tmp, format="PNG")
        records.append(qa_record(rel, ex.question, ex.answer, id=ex.id))
    write_text(out / "truth.jsonl", "".join(json.dumps({"id": ex.id, "kind": ex.kind, "truth": ex.truth}) + "\n" for ex in examples))
    # The data file is written last, so its presence means the images it names are all there.
    write_bedrock(out / "data.jsonl", records)
    return out / "data.jsonl"

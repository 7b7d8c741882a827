"""What a stopped eval left in its --out folder: the rows already predicted and the settings they came from.

vlmtune writes both files whole and atomically, so a run stopped by Ctrl-C or kill -9 leaves them complete.
A damaged file comes from outside (a disk that filled, a copy cut short, a crash of the filesystem, an edit
by hand): rather than a traceback, the good rows are kept and every damaged line is dropped with one
warning, so only the records on those lines are asked again.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from vlmtune.progress import console

# The fields a row needs to be summarized again (evaluation/aggregate.py reads them) and their types.
# bool is a subclass of int in Python, so token counts that are true/false are refused separately.
ROW_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str, "prediction": str, "input_tokens": int, "output_tokens": int, "finish_reason": str,
    "seconds": (int, float), "json_valid": bool,
}


def warn(message: str) -> None:
    """One yellow line on stderr; markup off, since paths and JSON hold square brackets."""
    console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)


def read_settings(run_file: Path) -> dict | None:
    """run.json's settings; {} when there is none; None (with a warning) when it is damaged."""
    if not run_file.is_file():
        return {}
    try:
        settings = json.loads(run_file.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        settings, why = None, "not UTF-8"
    except (ValueError, RecursionError) as e:
        settings, why = None, f"not JSON ({e})"
    else:
        why = f"expected a JSON object, found {type(settings).__name__}"
    if isinstance(settings, dict):
        return settings
    warn(f"{run_file}: damaged, {why}; the predictions beside it cannot be checked against this run's "
         f"settings, so they are kept as if made with them (remove the folder to start over)")
    return None


def read_rows(pred_file: Path, ids: set[str]) -> dict[str, dict]:
    """The good rows of predictions.jsonl whose id is one of `ids`; damaged lines are dropped with a warning."""
    rows: dict[str, dict] = {}
    damaged: list[str] = []
    for number, line in enumerate(pred_file.read_bytes().split(b"\n"), start=1):
        if not line.strip(b" \t\r"):
            continue
        row, why = _parse_row(line)
        if why:
            damaged.append(f"line {number} {why}")
        elif row["id"] in ids:
            rows[row["id"]] = row
    if damaged:
        shown = "; ".join(damaged[:3]) + (f"; and {len(damaged) - 3} more" if len(damaged) > 3 else "")
        warn(f"{pred_file}: dropped {len(damaged)} damaged line(s), their records are asked again ({shown}); "
             f"kept {len(rows)} good row(s)")
    return rows


def _parse_row(line: bytes) -> tuple[dict | None, str]:
    """(row, "") for a good line, else (None, what is wrong with it)."""
    if not line.strip(b"\x00 \t\r"):
        return None, "is NUL bytes"
    try:
        row = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "is not UTF-8"
    except (ValueError, RecursionError) as e:
        return None, f"is not JSON ({str(e).split(':')[0]})"
    if not isinstance(row, dict):
        return None, f"is a JSON {type(row).__name__}, expected an object"
    for field, kind in ROW_FIELDS.items():
        value = row.get(field)
        if field not in row:
            return None, f"has no {field!r}"
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return None, f"field {field!r}: expected {_kind_name(kind)}, found {type(value).__name__}"
    if not math.isfinite(row["seconds"]) or min(row["input_tokens"], row["output_tokens"], row["seconds"]) < 0:
        return None, "has a negative or non-finite count"
    return row, ""


def _kind_name(kind) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false"}
    return names.get(kind, "a number")

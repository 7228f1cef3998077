"""The rows of an evaluation on disk: append-only JSON lines per rank, merged at the end.

Each process appends to ``samples.rank<R>.jsonl`` in the output folder, one JSON object per
(sample, arm), flushed and fsynced per sample so that a killed run loses at most the sample
it was writing. A partial last line (the process died inside a write) is dropped when read;
its owner truncates it before appending. ``run.json`` holds the run's fingerprint: a run
resumes only into a folder written for the same fingerprint.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

ROW_FIELDS = (
    "id", "index", "arm", "intersection", "union", "iou", "pred_empty", "target_empty",
    "has_target", "pred_has_object", "seconds", "error",
)
"""Keys of every row. ``error`` is None or a one-line reason; an error row's measurements
(``intersection`` ... ``pred_has_object``) are None where they could not be taken."""

RUN_FILE = "run.json"
MERGED_FILE = "samples.jsonl"
_RANK_FILE = re.compile(r"^samples\.rank(\d+)\.jsonl$")


class RunError(ValueError):
    """The output folder cannot be used for this run (message: one line)."""


class RunMismatchError(RunError):
    """The output folder holds rows of another run (other data, arms or metric settings)."""


def rank_file(out_dir: os.PathLike, rank: int) -> Path:
    return Path(out_dir) / f"samples.rank{rank}.jsonl"


def rank_files(out_dir: os.PathLike) -> List[Path]:
    """Every rank's row file in ``out_dir``, by rank."""
    folder = Path(out_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _RANK_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def read_rows(path: os.PathLike, truncate_partial: bool = False) -> List[Dict[str, Any]]:
    """The complete rows of one JSON-lines file; an unterminated last line is dropped (and
    cut from the file when ``truncate_partial``). A complete line that is not a row raises
    ``RunError`` naming the file and line."""
    p = Path(path)
    if not p.exists():
        return []
    data = p.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data) and truncate_partial:
        with open(p, "r+b") as f:
            f.truncate(end)
            f.flush()
            os.fsync(f.fileno())
    rows = []
    for lineno, line in enumerate(data[:end].splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise RunError(f"{p}:{lineno}: not a JSON line; remove the line or the file to recompute it") from None
        if not isinstance(row, dict) or any(k not in row for k in ROW_FIELDS):
            raise RunError(f"{p}:{lineno}: not a sample row (needs keys {', '.join(ROW_FIELDS)})")
        rows.append(row)
    return rows


def read_all_rows(out_dir: os.PathLike, own: Optional[Path] = None) -> List[Dict[str, Any]]:
    """Rows of every rank's file; only ``own`` (this process's file) has a partial last line
    truncated, the others are read as they are."""
    rows: List[Dict[str, Any]] = []
    for path in rank_files(out_dir):
        rows.extend(read_rows(path, truncate_partial=own is not None and path == own))
    return rows


class RowWriter:
    """Appends rows to one file; ``write`` puts one sample's rows down in a single write,
    then flushes and fsyncs."""

    def __init__(self, path: os.PathLike, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self._f = open(self.path, "ab")

    def write(self, rows: Iterable[Dict[str, Any]]) -> None:
        data = b"".join(json.dumps(r, allow_nan=False).encode() + b"\n" for r in rows)
        if not data:
            return
        self._f.write(data)
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def merge_rows(rows: Iterable[Dict[str, Any]], arm_names: Sequence[str], count: int) -> List[Dict[str, Any]]:
    """Rows sorted by sample index, then by arm in ``arm_names`` order; raises ``RunError``
    when a (sample, arm) appears twice, an arm is unknown or a row is missing."""
    order = {name: k for k, name in enumerate(arm_names)}
    seen: Dict[tuple, Dict[str, Any]] = {}
    for row in rows:
        if row["arm"] not in order:
            raise RunError(f"a row names arm {row['arm']!r}, this run has {', '.join(arm_names)}")
        key = (int(row["index"]), order[row["arm"]])
        if key in seen:
            raise RunError(f"sample {row['index']} ({row['id']}) has two {row['arm']!r} rows; "
                           "were two runs writing into the same folder?")
        seen[key] = row
    missing = count * len(arm_names) - len(seen)
    if missing:
        raise RunError(f"{missing} rows are missing; run again with the same --out to finish")
    return [seen[k] for k in sorted(seen)]


def write_atomic(path: os.PathLike, text: str) -> None:
    """Write a text file through a temporary name and a rename (readers never see half)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, p)


def write_jsonl(path: os.PathLike, rows: Iterable[Dict[str, Any]]) -> None:
    write_atomic(path, "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows))


def normalise(obj: Any) -> Any:
    """``obj`` as JSON would give it back (tuples become lists ...), for comparisons."""
    return json.loads(json.dumps(obj, sort_keys=True, allow_nan=False))


def _differences(a: Any, b: Any, prefix: str = "") -> List[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: List[str] = []
        for k in sorted(set(a) | set(b)):
            out += _differences(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        return out
    return [] if a == b else [prefix or "(root)"]


def check_run(out_dir: os.PathLike, fingerprint: Dict[str, Any]) -> None:
    """Create ``out_dir`` and its ``run.json``, or check that it holds this fingerprint.

    Raises:
        RunMismatchError: ``run.json`` holds another fingerprint, or rows exist without one.
    """
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise RunError(f"--out {folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    fp = normalise(fingerprint)
    path = folder / RUN_FILE
    if not path.exists():
        if rank_files(folder):
            raise RunMismatchError(f"{folder} holds sample rows but no {RUN_FILE}; use another --out")
        write_atomic(path, json.dumps({"fingerprint": fp}, indent=1, sort_keys=True) + "\n")
        return
    try:
        old = json.loads(path.read_text()).get("fingerprint")
    except (ValueError, AttributeError):
        raise RunMismatchError(f"{path} is not a run file of sasp compare; use another --out") from None
    if old != fp:
        diff = _differences(old, fp)
        shown = ", ".join(diff[:4]) + (f" (+{len(diff) - 4} more)" if len(diff) > 4 else "")
        raise RunMismatchError(
            f"{folder} holds another run (differs in {shown}); use another --out or delete the folder"
        )

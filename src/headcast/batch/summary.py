"""The batch summary: ``OUT/summary.csv`` (and ``OUT/summary.parquet`` when pyarrow is importable), one row
per job in input order, each column in :data:`headcast.batch.worker.COLUMNS`; empty cells where a figure
does not apply. Written through :mod:`headcast.io.outputs` (whole, replacing only an earlier summary)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from headcast.batch.worker import COLUMNS
from headcast.io.outputs import staged_file

CSV = "summary.csv"
PARQUET = "summary.parquet"
NAMES = (CSV, PARQUET)  # what the summary may write into the batch folder (listed in its manifest)


def write_summary(out: Path, rows: list[dict]) -> list[Path]:
    """Write the summary files into ``out``; returns their paths."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in COLUMNS})
    with staged_file(Path(out) / CSV, force=True) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    written = [Path(out) / CSV]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    table = pa.table({k: [r.get(k) for r in rows] for k in COLUMNS})
    with staged_file(Path(out) / PARQUET, force=True) as tmp:
        pq.write_table(table, tmp)
    return written + [Path(out) / PARQUET]


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def read_summary(out: Path) -> list[dict]:
    """The rows of ``out``'s summary.csv as strings (empty cells as '')."""
    with open(Path(out) / CSV, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))

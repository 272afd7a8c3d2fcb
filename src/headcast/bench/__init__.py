"""Benchmarks behind ``headcast bench ...``; figures go to bench/RESULTS.md."""

from __future__ import annotations

import json
import logging
import os
import platform
from pathlib import Path

from headcast.core.errors import HeadcastError
from headcast.core.files import read_json
from headcast.io.outputs import staged_files

logger = logging.getLogger(__name__)

RESULT_MAX_BYTES = 256 << 20  # a bench's NAME.json (reconstruct's is about 4 kB a subject)
REAL_FRAMES = ("frame-030", "frame-050", "frame-065")  # the TrueDepth mannequin captures the benches use


def shared_samples() -> Path:
    """``../shared/samples`` beside the repository (may be absent: callers say so and skip)."""
    return Path(__file__).resolve().parents[3].parent / "shared" / "samples"


def machine() -> str:
    """One line describing this machine for result tables."""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def truedepth_folder(samples: Path | None = None) -> Path:
    """The TrueDepth mannequin frames under ``samples`` (default :func:`shared_samples`); may be absent."""
    return (samples or shared_samples()) / "rgbd" / "truedepth-mannequin"


def write_results(out: Path, name: str, result: dict, markdown: str | None = None) -> None:
    """A benchmark's figures as ``out/NAME.json`` (and its summary as ``out/NAME.md``), both whole or
    neither (:func:`staged_files`); they replace the results of an earlier run of the same bench
    (:func:`check_replaceable`), never other files of those names."""
    check_replaceable(Path(out), name)
    texts = {f"{name}.json": json.dumps(result, indent=2, default=float) + "\n"}
    if markdown is not None:
        texts[f"{name}.md"] = markdown + "\n"
    with staged_files([Path(out) / n for n in texts], force=True) as tmps:
        for tmp, text in zip(tmps, texts.values()):
            tmp.write_text(text)


def check_replaceable(out: Path, name: str) -> None:
    """Refuse, in one line, to replace ``out/NAME.json`` or ``out/NAME.md`` unless they are an earlier
    result of a benchmark: NAME.json a JSON object with its ``machine`` line (every bench's result has
    one), NAME.md only beside such a NAME.json."""
    js, md = out / f"{name}.json", out / f"{name}.md"
    try:
        found = read_json(js, "bench result", max_bytes=RESULT_MAX_BYTES) if js.is_file() else None
    except HeadcastError:  # not JSON, too large or too deep: not a bench's result
        found = None
    ours = isinstance(found, dict) and "machine" in found
    for p in (js, md):
        if os.path.lexists(p) and not ours:
            raise HeadcastError(f"{p} exists and is not an earlier {name} benchmark's result: choose another --out")


def finish(out: Path | None, name: str, result: dict, markdown: str) -> dict:
    """The end of a benchmark run: its summary ``markdown`` logged and, when ``out`` is given, its figures
    written (:func:`write_results`); returns ``result``."""
    logger.info(markdown)
    if out is not None:
        write_results(out, name, result, markdown)
    return result

"""Caption cleaning and subsets on 200,000 WebVid-format rows, on all local cores.

The limit is language identification alone (py3langid on every caption, same process pool and
chunks): the one piece of per-caption work `vtp clean` cannot skip, so the ratio shows what the
rules, drops, duplicate groups, parquet, report and plot cost on top of it.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tools.clean import CleanConfig, clean_file
from tools.clean.language import LanguageConfig, LanguageIdentifier
from tools.subset import subset_file
from tools.synth.dataset import SynthConfig, plan, write_tables
from tools.webvid import read_webvid

ROWS = 200_000
WEBVID_ROWS = 2_500_000


def _identify(texts: list[str]) -> int:
    identifier = LanguageIdentifier(LanguageConfig())
    return sum(identifier.identify(t)[0] == "en" for t in texts)


def _language_only(source: Path, workers: int, chunk: int) -> float:
    start = time.perf_counter()
    texts = read_webvid(source)["name"].fillna("").tolist()
    chunks = [texts[i:i + chunk] for i in range(0, len(texts), chunk)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_identify, chunks))
    return time.perf_counter() - start


def run(work: Path) -> str:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    synth = SynthConfig(num_clips=ROWS, num_test=0, seed=0, defect_rate=0.1)
    write_tables(plan(synth), synth, work)
    config = CleanConfig(workers=os.cpu_count() or 1, progress=False)
    start = time.perf_counter()
    clean_file(work / "results.csv", work / "clean", config)
    ours = time.perf_counter() - start
    limit = _language_only(work / "results.csv", config.workers, config.chunk_rows)
    start = time.perf_counter()
    subset_file(work / "clean" / "captions.parquet", work / "subsets")
    subset_s = time.perf_counter() - start
    shutil.rmtree(work, ignore_errors=True)
    return (
        "## Caption cleaning (`vtp clean`) and subsets (`vtp subset`)\n\n"
        f"{ROWS:,} synthetic WebVid-format rows, {config.workers} worker processes.\n\n"
        "| what | seconds | rows/s |\n|---|---|---|\n"
        f"| `vtp clean` (read, rules, language id, drops, duplicates, parquet, report, plot) "
        f"| {ours:.1f} | {ROWS / ours:,.0f} |\n"
        f"| limit: read + language id alone, same pool | {limit:.1f} | {ROWS / limit:,.0f} |\n"
        f"| ratio (limit time / ours) | {limit / ours:.2f} | |\n"
        f"| `vtp subset` 0.01,0.1,1.0 with KS report | {subset_s:.1f} | "
        f"{ROWS / subset_s:,.0f} |\n\n"
        f"At this rate WebVid's {WEBVID_ROWS:,} rows take about "
        f"{WEBVID_ROWS / ROWS * ours / 60:.1f} min "
        f"to clean and {WEBVID_ROWS / ROWS * subset_s:.0f} s to subset on this machine.\n"
    )

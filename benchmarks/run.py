"""`make bench`: runs every benchmark and writes benchmarks/RESULTS.md.

Each benchmark module exposes ``run(work: Path) -> str`` returning a markdown section (a table
with the measured figure, the limit measured in the same run, and their ratio). Sections are
also kept in benchmarks/results/<name>.md so one benchmark can be rerun alone:
``python -m benchmarks.run synth``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import time
from pathlib import Path

HERE = Path(__file__).parent
BENCHMARKS = ["synth", "clean", "shard", "pipeline", "model"]


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", default=BENCHMARKS, help=f"any of {BENCHMARKS}")
    parser.add_argument("--work", type=Path, default=HERE / "work")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {BENCHMARKS}")
    (HERE / "results").mkdir(exist_ok=True)
    for name in args.names:
        print(f"== bench {name}", flush=True)
        start = time.perf_counter()
        section = importlib.import_module(f"benchmarks.bench_{name}").run(args.work / name)
        took = time.perf_counter() - start
        stamp = f"\n_{time.strftime('%Y-%m-%d')}, {machine()}, {took:.0f} s_\n"
        (HERE / "results" / f"{name}.md").write_text(section.rstrip() + "\n" + stamp)
        print(section)
    parts = [(HERE / "results" / f"{n}.md") for n in BENCHMARKS]
    body = "\n".join(p.read_text() for p in parts if p.exists())
    (HERE / "RESULTS.md").write_text(
        "# Benchmark results\n\n"
        "Regenerate with `make bench` (or `python -m benchmarks.run NAME`).\n"
        "Every ratio compares against a limit measured in the same run on the same machine.\n\n"
        + body
    )
    print(f"wrote {HERE / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

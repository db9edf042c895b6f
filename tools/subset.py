"""vtp subset CAPTIONS --fractions 0.01,0.1,1.0 --out DIR: nested, deterministic subsets.

A row belongs to the p-subset iff ``h(salt, videoid) < p``, where ``h`` maps the blake2b
digest of ``"{salt}:{videoid}"`` to [0, 1). Membership depends on nothing but the salt and
the id, so the subsets are nested (1% ⊂ 10% ⊂ 100%), a row keeps its membership when rows are
appended, and anyone can recompute them. Rows with a ``drop_reason`` are left out unless
``--include-dropped``. Writes DIR/subset-{p}.parquet per fraction and DIR/subset_report.md
(count, total duration, and two-sample KS tests of duration and caption length against the
full set).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np

DEFAULT_FRACTIONS = (0.01, 0.1, 1.0)
DEFAULT_SALT = "vtp"
MATCH_P = 0.01  # KS p-value under which a subset's distribution is reported as different


def unit_hash(videoids: Iterable[str], salt: str) -> np.ndarray:
    """A stable value in [0, 1) per id: blake2b("{salt}:{videoid}"), top 53 bits / 2**53.

    53 bits because that is what a float64 holds exactly, so the value is never rounded up
    to 1.0 and ``h < 1.0`` keeps every row.

    Args:
        videoids: ids as strings.
        salt: any string; a different salt draws independent subsets.
    """
    digests = (hashlib.blake2b(f"{salt}:{v}".encode(), digest_size=8).digest() for v in videoids)
    values = [int.from_bytes(d, "big") >> 11 for d in digests]
    return np.asarray(values, dtype=np.float64) / float(2**53)


def parse_fractions(text: str) -> tuple[float, ...]:
    """Parses "0.01,0.1,1.0" into sorted unique fractions, each in (0, 1].

    Raises:
        ValueError: empty list, a value that is not a number or outside (0, 1].
    """
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("--fractions needs at least one value, e.g. 0.01,0.1,1.0")
    fractions = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"--fractions: {part!r} is not a number") from None
        if not 0.0 < value <= 1.0:
            raise ValueError(f"--fractions: {part} is outside (0, 1]")
        fractions.append(value)
    return tuple(sorted(set(fractions)))


def subset_name(fraction: float) -> str:
    """The file name of a subset, e.g. ``subset-0.01.parquet`` and ``subset-1.0.parquet``."""
    return f"subset-{float(fraction)!r}.parquet"


def eligible(frame, include_dropped: bool = False):
    """The rows subsets draw from: all of them, or those without a ``drop_reason``."""
    if include_dropped or "drop_reason" not in frame.columns:
        return frame.reset_index(drop=True)
    return frame[frame["drop_reason"].isna()].reset_index(drop=True)


def select(frame, fractions: Iterable[float], salt: str, include_dropped: bool = False) -> dict:
    """The rows of each p-subset of ``frame`` (a DataFrame with ``videoid``).

    Args:
        frame: the cleaned captions table.
        fractions: values in (0, 1].
        salt: hash salt.
        include_dropped: keep rows whose ``drop_reason`` is set.

    Returns:
        {fraction: DataFrame}, each in the input's row order.
    """
    pool = eligible(frame, include_dropped)
    h = unit_hash(pool["videoid"].astype(str), salt)
    return {p: pool[h < p].reset_index(drop=True) for p in fractions}


def _ks(sample: np.ndarray, full: np.ndarray) -> tuple[float, float]:
    from scipy.stats import ks_2samp

    sample, full = sample[~np.isnan(sample)], full[~np.isnan(full)]
    if len(sample) == 0 or len(full) == 0:
        return float("nan"), float("nan")
    result = ks_2samp(sample, full)
    return float(result.statistic), float(result.pvalue)


def report_rows(pool, h: np.ndarray, fractions: Iterable[float]) -> list[dict]:
    """Per fraction: count, share, total hours, and KS statistic/p-value of duration and words.

    Args:
        pool: the eligible rows (see `eligible`), with ``caption`` and ``duration_s``.
        h: `unit_hash` of ``pool["videoid"]``.
        fractions: values in (0, 1].
    """
    from tools.clean.rules import word_counts

    duration = (pool["duration_s"].astype("float64").to_numpy() if "duration_s" in pool
                else np.full(len(pool), np.nan))
    words = word_counts(pool["caption"]).astype(np.float64)
    rows = []
    for p in fractions:
        member = h < p
        d_stat, d_p = _ks(duration[member], duration)
        w_stat, w_p = _ks(words[member], words)
        rows.append({"fraction": p, "rows": int(member.sum()),
                     "share": float(member.mean()) if len(h) else 0.0,
                     "hours": float(np.nansum(duration[member]) / 3600),
                     "duration_ks": d_stat, "duration_p": d_p, "words_ks": w_stat, "words_p": w_p,
                     # NaN (no durations) compares False: unknown is not a match.
                     "matches": bool(d_p >= MATCH_P and w_p >= MATCH_P)})
    return rows


def write_report(rows: list[dict], source: Path, salt: str, pool_rows: int, out: Path) -> Path:
    """Writes ``out/subset_report.md`` from `report_rows` output."""
    lines = [
        "# Subsets", "",
        f"- input: `{source}`; salt `{salt}`; eligible rows (not dropped): {pool_rows}",
        "- membership: blake2b(\"{salt}:{videoid}\") -> [0, 1) < p, so subsets are nested",
        "- KS: two-sample Kolmogorov-Smirnov of the subset against all eligible rows; a large "
        "p-value means no evidence that the distributions differ; `matches` when both "
        f"p >= {MATCH_P}", "",
        "| subset | rows | share | hours | duration KS (p) | caption words KS (p) | matches |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {subset_name(r['fraction'])} | {r['rows']} | {r['share']:.2%} "
                     f"| {r['hours']:.2f} | {r['duration_ks']:.3f} ({r['duration_p']:.3g}) "
                     f"| {r['words_ks']:.3f} ({r['words_p']:.3g}) "
                     f"| {'yes' if r['matches'] else 'NO'} |")
    path = out / "subset_report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def subset_file(source: Path, out: Path, fractions: Iterable[float] = DEFAULT_FRACTIONS,
                salt: str = DEFAULT_SALT, include_dropped: bool = False) -> dict:
    """Writes one parquet per fraction and the report; returns a summary dict.

    Args:
        source: captions.parquet from `vtp clean` (any parquet with ``videoid`` works).
        out: output folder.
        fractions: values in (0, 1].
        salt: hash salt.
        include_dropped: keep rows whose ``drop_reason`` is set.
    """
    import pandas as pd

    from tools.folders import check_output_folder, make_output_folder
    from tools.webvid import InputError, read_table

    check_output_folder(out)
    frame = read_table(source).to_pandas()
    for column in ("videoid", "caption"):
        if column not in frame.columns:
            raise InputError(f"{source} has no {column!r} column; expected `vtp clean` output")
    pool = eligible(frame, include_dropped)
    h = unit_hash(pool["videoid"].astype(str), salt)
    make_output_folder(out)
    for p in fractions:
        tmp = out / f".{subset_name(p)}.tmp"
        pool[h < p].to_parquet(tmp, index=False)
        tmp.replace(out / subset_name(p))  # a reader never sees a half-written subset
    rows = report_rows(pool, h, fractions)
    write_report(rows, source, salt, len(pool), out)
    subsets = pd.DataFrame(rows).round(4).to_dict("records")
    # An empty subset has no KS statistic: null in the JSON summary, not NaN (not JSON).
    subsets = [{k: None if isinstance(v, float) and np.isnan(v) else v for k, v in r.items()}
               for r in subsets]
    return {"out": str(out), "eligible_rows": len(pool), "salt": salt, "subsets": subsets}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="captions.parquet from `vtp clean`")
    parser.add_argument("--fractions", default=",".join(map(str, DEFAULT_FRACTIONS)),
                        help="comma-separated fractions in (0, 1] (default %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--salt", default=DEFAULT_SALT, help="hash salt (default %(default)s)")
    parser.add_argument("--include-dropped", action="store_true",
                        help="also draw from rows that `vtp clean` dropped (default: not)")


def run(args: argparse.Namespace) -> int:
    from tools.errors import UsageError
    from tools.folders import OutputFolderError
    from tools.webvid import InputError

    try:
        fractions = parse_fractions(args.fractions)
    except ValueError as err:
        raise UsageError(str(err)) from err
    try:
        summary = subset_file(args.input, args.out, fractions, args.salt, args.include_dropped)
    except (InputError, FileNotFoundError, OutputFolderError) as err:
        raise UsageError(str(err)) from err
    print(json.dumps(summary, indent=2, allow_nan=False))
    return 0

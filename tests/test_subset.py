"""`vtp subset`: membership by hash(salt, videoid) < p is nested, stable, reproducible."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from tools.subset import eligible, parse_fractions, report_rows, select, subset_name, unit_hash

VTP = str(Path(sys.executable).parent / "vtp")
FRACTIONS = (0.01, 0.1, 0.5, 1.0)


def _table(n: int, start: int = 0, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    words = rng.integers(2, 20, size=n)
    return pd.DataFrame({
        "videoid": [str(1_000_000 + i) for i in range(start, start + n)],
        "caption": [" ".join(["word"] * w) for w in words],
        "drop_reason": pd.Series([None] * n, dtype="string"),
        "duration_s": rng.uniform(2, 60, size=n),
    })


def _ids(subsets: dict) -> dict[float, set]:
    return {p: set(frame["videoid"]) for p, frame in subsets.items()}


def test_hash_is_in_unit_interval_and_uniform():
    h = unit_hash((str(i) for i in range(20_000)), "s")
    assert h.min() >= 0.0 and h.max() < 1.0
    counts, _ = np.histogram(h, bins=10, range=(0, 1))
    assert counts.min() > 1700 and counts.max() < 2300  # expected 2000 each, sd ~42


def test_subsets_are_nested():
    ids = _ids(select(_table(5000), FRACTIONS, "a"))
    assert ids[0.01] <= ids[0.1] <= ids[0.5] <= ids[1.0]
    assert len(ids[1.0]) == 5000 and 0 < len(ids[0.01]) < len(ids[0.1]) < len(ids[0.5])


def test_fractions_are_roughly_right():
    ids = _ids(select(_table(8000), FRACTIONS, "a"))
    for p in FRACTIONS:
        sd = np.sqrt(8000 * p * (1 - p))
        assert abs(len(ids[p]) - 8000 * p) <= 4 * sd + 1, (p, len(ids[p]))


def test_membership_is_stable_when_rows_are_appended():
    old = _table(3000)
    grown = pd.concat([old, _table(2000, start=3000, seed=1)], ignore_index=True)
    before, after = _ids(select(old, FRACTIONS, "a")), _ids(select(grown, FRACTIONS, "a"))
    old_ids = set(old["videoid"])
    for p in FRACTIONS:
        assert after[p] & old_ids == before[p]
    assert after[0.1] - old_ids  # the new rows do take part


def test_same_salt_same_sets_other_salt_other_sets():
    table = _table(4000)
    shuffled = table.sample(frac=1.0, random_state=3)  # row order must not matter
    assert _ids(select(table, FRACTIONS, "a")) == _ids(select(shuffled, FRACTIONS, "a"))
    a, b = _ids(select(table, FRACTIONS, "a")), _ids(select(table, FRACTIONS, "b"))
    assert a[0.1] != b[0.1]
    overlap = len(a[0.1] & b[0.1]) / len(a[0.1])
    assert overlap < 0.3  # independent draws overlap by about p = 0.1


def test_dropped_rows_are_excluded_unless_asked():
    table = _table(2000)
    table.loc[::4, "drop_reason"] = "non_english"
    dropped = set(table.loc[table["drop_reason"].notna(), "videoid"])
    assert not _ids(select(table, [1.0], "a"))[1.0] & dropped
    assert _ids(select(table, [1.0], "a", include_dropped=True))[1.0] >= dropped


@pytest.mark.parametrize("text", ["", "0", "1.5", "-0.1", "0.1,abc", ",", "nan"])
def test_bad_fractions_are_rejected(text):
    with pytest.raises(ValueError, match="fractions"):
        parse_fractions(text)


def test_fractions_are_sorted_and_named():
    assert parse_fractions("1.0, 0.1,0.01,0.1") == (0.01, 0.1, 1.0)
    assert [subset_name(p) for p in (0.01, 0.1, 1.0)] == [
        "subset-0.01.parquet", "subset-0.1.parquet", "subset-1.0.parquet"]


def _vtp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VTP, *args], capture_output=True, text=True, timeout=300)


def test_cli_writes_subsets_and_report(tmp_path):
    table = _table(3000)
    table.loc[::10, "drop_reason"] = "empty"
    table.to_parquet(tmp_path / "captions.parquet", index=False)
    result = _vtp("subset", str(tmp_path / "captions.parquet"), "--fractions", "0.01,0.1,1.0",
                  "--out", str(tmp_path / "out"), "--salt", "demo")
    assert result.returncode == 0, result.stderr
    parts = {p: pq.read_table(tmp_path / "out" / subset_name(p)).to_pandas()
             for p in (0.01, 0.1, 1.0)}
    assert len(parts[1.0]) == 2700 and parts[1.0]["drop_reason"].isna().all()
    assert set(parts[0.01]["videoid"]) <= set(parts[0.1]["videoid"]) <= set(parts[1.0]["videoid"])
    assert list(parts[0.1].columns) == list(table.columns)
    expected = select(table, [0.1], "demo")[0.1]
    assert parts[0.1]["videoid"].tolist() == expected["videoid"].tolist()
    report = (tmp_path / "out" / "subset_report.md").read_text()
    for p in (0.01, 0.1, 1.0):
        assert subset_name(p) in report
    assert "KS" in report and f"| {len(parts[0.1])} |" in report


@pytest.mark.parametrize("fractions", ["0", "2", "0.1,x", ""])
def test_cli_bad_fractions_are_a_usage_error(tmp_path, fractions):
    _table(10).to_parquet(tmp_path / "captions.parquet", index=False)
    result = _vtp("subset", str(tmp_path / "captions.parquet"), "--fractions", fractions,
                  "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "vtp subset: error" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_missing_input_is_a_usage_error(tmp_path):
    result = _vtp("subset", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "no such file" in result.stderr


def test_report_rows_show_matching_distributions():
    pool = eligible(_table(8000))
    rows = report_rows(pool, unit_hash(pool["videoid"], "a"), FRACTIONS)
    assert [r["rows"] for r in rows] == [len(v) for v in select(pool, FRACTIONS, "a").values()]
    assert all(r["matches"] for r in rows), rows
    assert rows[-1]["duration_ks"] == 0.0
    assert abs(rows[-1]["hours"] - pool["duration_s"].sum() / 3600) < 1e-9


def test_report_rows_flag_a_biased_subset():
    pool = eligible(_table(4000))
    biased = (pool["duration_s"] > 30).to_numpy()  # a "subset" that is all long clips
    rows = report_rows(pool, np.where(biased, 0.0, 0.99), [0.5])
    assert rows[0]["rows"] == biased.sum() and not rows[0]["matches"]


def test_subsets_of_a_cleaned_synthetic_dataset(tmp_path):
    from tools.clean import CleanConfig, clean_file
    from tools.subset import subset_file
    from tools.synth.dataset import SynthConfig, plan, write_tables

    config = SynthConfig(num_clips=600, num_test=0, seed=4, defect_rate=0.3, workers=1)
    write_tables(plan(config), config, tmp_path)
    clean_file(tmp_path / "results.csv", tmp_path / "clean", CleanConfig(workers=1, progress=False))
    cleaned = pq.read_table(tmp_path / "clean" / "captions.parquet").to_pandas()
    summary = subset_file(tmp_path / "clean" / "captions.parquet", tmp_path / "sub", (0.1, 1.0),
                          "x")
    full = pq.read_table(tmp_path / "sub" / subset_name(1.0)).to_pandas()
    assert summary["eligible_rows"] == len(full) == cleaned["drop_reason"].isna().sum() < 600
    kept = cleaned.loc[cleaned["drop_reason"].isna(), "videoid"]
    assert full["videoid"].tolist() == kept.tolist()
    hours = summary["subsets"][1]["hours"]
    assert abs(hours - full["duration_s"].sum() / 3600) < 1e-3 and hours > 0


def test_hash_follows_the_documented_formula():
    # Pinned so that a refactor can never silently reshuffle everyone's subsets.
    import hashlib

    digest = hashlib.blake2b(b"vtp:1066", digest_size=8).digest()
    expected = (int.from_bytes(digest, "big") >> 11) / 2**53
    assert unit_hash(["1066"], "vtp")[0] == expected
    assert unit_hash(["1066"], "vtp")[0] == pytest.approx(0.84059004, abs=1e-8)

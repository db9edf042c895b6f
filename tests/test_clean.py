"""`vtp clean` against the synthetic ground truth: every injected defect is caught by the rule
or drop of its kind, nothing else is touched, and the command line writes what §9 promises."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from dataclasses import replace
from itertools import combinations
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from tools.clean import CleanConfig, clean_frame
from tools.clean.rules import RULE_NAMES, clean_caption
from tools.synth.dataset import CAPTION_DEFECTS, SynthConfig, plan, write_tables
from tools.webvid import InputError, parse_duration, read_webvid

VTP = str(Path(sys.executable).parent / "vtp")
# 2,500 rows at rate 0.3: ~80 rows of each of the 9 caption defect kinds, in about a second.
CONFIG = SynthConfig(num_clips=2500, num_test=0, seed=11, defect_rate=0.3, workers=1)
# The rule whose firing means "caught" for each text defect kind of the generator.
RULE_OF_KIND = {"boilerplate": "stock_boilerplate", "resolution_tag": "resolution_tags",
                "url": "urls", "timecode": "time_codes", "filename": "file_names",
                "html_entity": "html_entities"}
DROP_OF_KIND = {"non_english": "non_english", "empty": "empty"}


def _norm(text) -> str:
    return " ".join(str(text).casefold().split())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean_synth")
    write_tables(plan(CONFIG), CONFIG, out)
    return out


@pytest.fixture(scope="module")
def cleaned(dataset) -> pd.DataFrame:
    """Cleaned rows joined with their ground truth (one process pool, small chunks)."""
    config = CleanConfig(workers=2, chunk_rows=600, progress=False)
    frame = clean_frame(read_webvid(dataset / "results.csv"), config).frame
    truth = pq.read_table(dataset / "ground_truth.parquet").to_pandas()
    columns = ["videoid", "caption_clean", "caption_defects", "dup_of", "lang"]
    truth = truth[truth["split"] == "train"][columns]
    return frame.merge(truth.rename(columns={"lang": "true_lang"}), on="videoid", validate="1:1")


def _precision_recall(caught: pd.Series, truth: pd.Series) -> tuple[float, float]:
    hits = int((caught & truth).sum())
    return hits / max(int(caught.sum()), 1), hits / max(int(truth.sum()), 1)


def test_every_defect_kind_is_present(cleaned):
    for kind in CAPTION_DEFECTS:
        assert cleaned["caption_defects"].map(lambda d, k=kind: k in d).sum() >= 20, kind


@pytest.mark.parametrize("kind", sorted(RULE_OF_KIND))
def test_text_defects_are_caught_by_their_rule(cleaned, kind):
    fired = cleaned["rules"].str.split(",").map(lambda names: RULE_OF_KIND[kind] in names)
    has = cleaned["caption_defects"].map(lambda d: kind in d)
    precision, recall = _precision_recall(fired, has)
    assert (precision, recall) == (1.0, 1.0), \
        f"{kind}: precision {precision:.3f} recall {recall:.3f}"


@pytest.mark.parametrize("kind", sorted(DROP_OF_KIND))
def test_drop_kinds_get_their_drop_reason(cleaned, kind):
    dropped = cleaned["drop_reason"] == DROP_OF_KIND[kind]
    has = cleaned["caption_defects"].map(lambda d: kind in d)
    precision, recall = _precision_recall(dropped.fillna(False), has)
    assert (precision, recall) == (1.0, 1.0), \
        f"{kind}: precision {precision:.3f} recall {recall:.3f}"


def _true_pairs(frame: pd.DataFrame) -> set[frozenset]:
    """Rows that are the same caption: linked by dup_of, or equal captions by chance.

    The generator's foreign captions (caption_clean None, no other mess) repeat by chance
    too: their raw text is their true text.
    """
    by_text = defaultdict(list)
    texts = frame["caption_clean"].fillna(frame["caption_raw"]).map(_norm)
    for vid, text in zip(frame["videoid"], texts, strict=True):
        if text:
            by_text[text].append(vid)
    pairs = {frozenset(p) for ids in by_text.values() for p in combinations(ids, 2)}
    non_empty = frame["caption"].str.len() > 0  # an empty caption is caught as `empty` instead
    links = frame[frame["dup_of"].notna() & non_empty]
    return pairs | {frozenset(p) for p in zip(links["videoid"], links["dup_of"], strict=True)}


def test_duplicates_share_a_group(cleaned):
    groups = cleaned.dropna(subset=["dup_group"]).groupby("dup_group")["videoid"].apply(list)
    predicted = {frozenset(p) for ids in groups for p in combinations(ids, 2)}
    truth = _true_pairs(cleaned)
    linked = cleaned["dup_of"].notna() & (cleaned["caption"].str.len() > 0)
    assert linked.sum() >= 20
    precision = len(predicted & truth) / max(len(predicted), 1)
    recall = len(predicted & truth) / max(len(truth), 1)
    assert (precision, recall) == (1.0, 1.0), \
        f"duplicate: precision {precision:.3f} recall {recall:.3f}"
    assert cleaned["dup_group"].value_counts().min() >= 2  # no singleton groups


def test_no_clean_caption_is_damaged_or_dropped(cleaned):
    should_keep = cleaned["caption_clean"].notna()
    kept = cleaned["drop_reason"].isna()
    assert (should_keep == kept).all(), \
        cleaned.loc[should_keep != kept, ["caption_raw", "drop_reason"]]
    damaged = cleaned[kept & (cleaned["caption"].map(_norm) != cleaned["caption_clean"].map(_norm))]
    assert damaged.empty, damaged[["caption_raw", "caption", "caption_clean"]].head().to_string()


def test_untouched_captions_fire_no_removal_rule(cleaned):
    clean_rows = cleaned[cleaned["caption_defects"].map(len) == 0]
    assert len(clean_rows) > 1000
    assert (clean_rows["rules"] == "").all()
    assert (clean_rows["caption"] == clean_rows["caption_raw"]).all()


def test_raw_captions_and_input_columns_are_kept(dataset, cleaned):
    raw = read_webvid(dataset / "results.csv")
    assert cleaned["videoid"].tolist() == raw["videoid"].tolist()
    assert cleaned["caption_raw"].tolist() == raw["name"].fillna("").tolist()
    for column in ("contentUrl", "duration", "page_dir", "duration_s"):
        assert cleaned[column].tolist() == raw[column].tolist()
    assert cleaned["duration_s"].between(1, 60).all()


def test_drop_duplicates_keeps_the_first_of_each_group(dataset):
    config = CleanConfig(workers=1, progress=False, drop_duplicates=True)
    frame = clean_frame(read_webvid(dataset / "results.csv"), config).frame
    grouped = frame[frame["dup_group"].notna()
                    & (frame["drop_reason"].isna() | (frame["drop_reason"] == "duplicate"))]
    for _, group in grouped.groupby("dup_group"):
        assert group["drop_reason"].isna().tolist() == [True] + [False] * (len(group) - 1)
    assert (frame["drop_reason"] == "duplicate").sum() >= 20


@pytest.mark.parametrize(("raw", "expected", "rule"), [
    ("A dog runs on the beach 4K UHD 1920x1080 60fps", "A dog runs on the beach",
     "resolution_tags"),
    ("Write to me@example.org about the cat video", "Write to about the cat video", "emails"),
    ("Follow @drone_pilot for aerial shots", "Follow for aerial shots", "handles"),
    ("<b>Sunset</b> over the sea", "Sunset over the sea", "html_tags"),
    ("Aerial view of city 123456789", "Aerial view of city", "digit_runs"),
    ("Ａｅｒｉａｌ view of the\u200b coast", "Aerial view of the coast", "unicode_nfkc"),
    ("Waves at sunset!!!   ...", "Waves at sunset!", "punctuation"),
    ("A woman smiling, close up -- Royalty Free Stock Footage", "A woman smiling, close up",
     "stock_boilerplate"),
    ("Forest from above - example.com/clips", "Forest from above", "urls"),
    ("Barcelona skyline (HD) 00:00:12", "Barcelona skyline", "time_codes"),
])
def test_rules_on_hand_written_captions(raw, expected, rule):
    text, mask = clean_caption(raw)
    assert text == expected
    assert mask >> RULE_NAMES.index(rule) & 1


@pytest.mark.parametrize("keep", ["20 years ago in Paris", "A man's hands",
                                  "Close-up of a 3D printer", "Rock 'n' roll band on stage",
                                  "Dogs (two of them) running"])
def test_ordinary_captions_are_left_alone(keep):
    assert clean_caption(keep) == (keep, 0)


def test_short_empty_and_foreign_drops():
    frame = pd.DataFrame({"videoid": list("abcdef"), "name": [
        "Sunset 4K", "HD 1080p stock footage", None, "Ein Hund läuft über die Wiese im Park",
        "A dog runs across the meadow in the park", "A dog runs across the meadow in the park"]})
    out = clean_frame(frame, CleanConfig(workers=1, progress=False)).frame
    assert out["drop_reason"].tolist()[:4] == ["too_short", "empty", "empty", "non_english"]
    assert out["drop_reason"].iloc[4:].isna().all() and out["lang"].iloc[3] == "de"
    assert out["dup_group"].tolist()[4:] == [0, 0] and out["dup_group"].iloc[:4].isna().all()
    longer = clean_frame(frame, replace(CleanConfig(workers=1, progress=False), min_words=1)).frame
    assert pd.isna(longer["drop_reason"].iloc[0])


def test_an_already_cleaned_table_is_refused():
    frame = pd.DataFrame({"videoid": ["1"], "name": ["a cat"], "caption": ["a cat"]})
    with pytest.raises(InputError, match="already has output column"):
        clean_frame(frame, CleanConfig(workers=1, progress=False))


def test_durations_parse_iso_and_seconds():
    values = pd.Series(["PT00H00M17S", "PT01H02M03S", "17", "12.5", "P1DT1S", "PT", "", None,
                        "soon"])
    parsed = parse_duration(values).tolist()
    assert parsed[:5] == [17.0, 3723.0, 17.0, 12.5, 86401.0]
    assert all(pd.isna(v) for v in parsed[5:])


def test_parquet_input_keeps_ids_as_strings(tmp_path):
    pd.DataFrame({"videoid": [7, 8], "name": ["a red ball rolls", "a blue cube spins"],
                  "duration": [3, 4]}).to_parquet(tmp_path / "in.parquet")
    frame = read_webvid(tmp_path / "in.parquet")
    assert frame["videoid"].tolist() == ["7", "8"] and frame["duration_s"].tolist() == [3.0, 4.0]


def _vtp(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([VTP, *args], capture_output=True, text=True, timeout=300)


def test_cli_writes_table_report_and_plot(dataset, tmp_path):
    result = _vtp("clean", str(dataset / "results.csv"), "--out", str(tmp_path), "--workers", "1")
    assert result.returncode == 0, result.stderr
    table = pq.read_table(tmp_path / "captions.parquet")
    assert table.column_names[:5] == ["videoid", "caption_raw", "caption", "drop_reason",
                                      "dup_group"]
    assert {"contentUrl", "duration", "page_dir", "duration_s"} <= set(table.column_names)
    assert table.num_rows == CONFIG.num_clips
    report = (tmp_path / "clean_report.md").read_text()
    for name in (*RULE_NAMES, "non_english", "empty", "too_short", "duplicate"):
        assert f"| {name} |" in report, name
    assert (tmp_path / "caption_length.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads(result.stdout)
    assert summary["rows"] == CONFIG.num_clips and summary["repeated_videoids"] == 0
    assert summary["kept"] + sum(summary["dropped"].values()) == summary["rows"]
    assert summary["rows_per_second"] > 0


@pytest.mark.parametrize("args", [("missing.csv",), ("notes.txt",),
                                  ("results.csv", "--min-words", "0"),
                                  ("results.csv", "--lang-threshold", "2")])
def test_cli_bad_input_is_a_usage_error(dataset, tmp_path, args):
    (tmp_path / "notes.txt").write_text("hello")
    source = args[0] if args[0] != "results.csv" else str(dataset / "results.csv")
    path = source if Path(source).is_absolute() else str(tmp_path / source)
    result = _vtp("clean", path, *args[1:], "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert "vtp clean: error" in result.stderr and "Traceback" not in result.stderr


SHORT_ENGLISH = ["Sunset over the sea", "Cute dog", "Barcelona beach", "Man running", "Santa Claus",
                 "Waterfall in Iceland", "Fire flames", "Paris Eiffel tower", "Timelapse clouds"]
SHORT_FOREIGN = ["Vista aérea de la ciudad", "Luftaufnahme der Stadt", "Vue aérienne de la ville",
                 "Женщина пьет кофе", "Uomo che corre sulla spiaggia", "Strand mit Wellen"]


@pytest.fixture(scope="module")
def identifier():
    from tools.clean.language import LanguageConfig, LanguageIdentifier

    return LanguageIdentifier(LanguageConfig())


@pytest.mark.parametrize("text", SHORT_ENGLISH)
def test_short_english_captions_are_not_called_foreign(identifier, text):
    assert not identifier.is_foreign(*identifier.identify(text))


@pytest.mark.parametrize("text", SHORT_FOREIGN)
def test_short_foreign_captions_are_called_foreign(identifier, text):
    assert identifier.is_foreign(*identifier.identify(text))


def test_length_histograms_count_every_row(dataset):
    from tools.clean.report import length_histograms

    frame = read_webvid(dataset / "results.csv")
    frame.loc[0, "name"] = "word " * 500  # one very long caption lands in the last bar
    result = clean_frame(frame, CleanConfig(workers=1, progress=False))
    counts, raw, kept = length_histograms(result)
    assert raw.sum() == len(frame) and kept.sum() == result.frame["drop_reason"].isna().sum()
    assert raw[-1] >= 1 and raw[0] == result.drop_counts["empty"]


def test_compressed_csv_reads_like_plain(dataset, tmp_path):
    import gzip

    (tmp_path / "results.csv.gz").write_bytes(gzip.compress((dataset / "results.csv").read_bytes()))
    plain, packed = read_webvid(dataset / "results.csv"), read_webvid(tmp_path / "results.csv.gz")
    assert packed.equals(plain) and len(packed) == CONFIG.num_clips


def test_parallel_and_serial_runs_agree(dataset, cleaned):
    serial = clean_frame(read_webvid(dataset / "results.csv"),
                         CleanConfig(workers=1, progress=False)).frame
    # The fixture came out of a merge, which turns string columns into object ones.
    pd.testing.assert_frame_equal(serial, cleaned[serial.columns], check_dtype=False)


@pytest.mark.parametrize(("name", "body"), [("bad.csv", b"videoid,name\n1,a cat,runs,far\n"),
                                            ("bad.parquet", b"not a parquet file"),
                                            ("nocaption.csv", b"videoid,title\n1,a cat runs\n")])
def test_cli_unreadable_tables_are_usage_errors(tmp_path, name, body):
    (tmp_path / name).write_bytes(body)
    result = _vtp("clean", str(tmp_path / name), "--out", str(tmp_path / "out"))
    assert result.returncode == 2, result.stderr
    assert name in result.stderr or "'name'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_100k_character_caption_keeps_the_report_small():
    """One huge caption once asked the length plot for ~12,500 bars (25 s) and put all of it
    in a report table; nested quotes were peeled one pair per pass over the whole text."""
    from tools.clean.report import CELL_CHARS, MAX_BARS, _cell, length_histograms
    from tools.clean.rules import _strip_quotes

    huge = ("cat dog " * 12_500)[:100_000]
    frame = pd.DataFrame({"videoid": ["1", "2", "3"], "name": ["a cat runs", "a dog sits", huge]})
    result = clean_frame(frame, CleanConfig(workers=1, progress=False))
    counts, raw, _ = length_histograms(result)
    assert len(counts) <= MAX_BARS + 1 and raw.sum() == 3 and raw[-1] == 1
    cell = _cell(huge)
    assert len(cell) < CELL_CHARS + 50 and "100,000 characters" in cell
    assert _strip_quotes("'" * 10 + "a" + "'" * 10) == "a"  # all pairs in one pass

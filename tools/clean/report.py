"""clean_report.md (counts per rule and drop reason, before/after examples) and the length plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tools.clean.core import DROP_REASONS, CleanConfig, CleanResult
from tools.clean.rules import RULES, word_counts

EXAMPLES = 3
CELL_CHARS = 300  # a table cell shows at most this much of a caption
MAX_BARS = 120  # words per caption beyond this share the last bar of the length plot


def _cell(text) -> str:
    text = "" if text is None or text is pd.NA else str(text)
    if len(text) > CELL_CHARS:
        text = f"{text[:CELL_CHARS]}... ({len(text):,} characters)"
    text = text.replace("|", "\\|").replace("\n", " ")
    return f"`{text}`" if text else "(empty)"


def _rule_section(result: CleanResult) -> list[str]:
    frame, total = result.frame, max(len(result.frame), 1)
    lines = ["## Rules", "", "| rule | rows changed | share | what it does |",
             "|---|---:|---:|---|"]
    for rule in RULES:
        count = result.rule_counts[rule.name]
        lines.append(f"| {rule.name} | {count} | {count / total:.2%} | {rule.description} |")
    lines += ["", "### Before and after", "", "| rule | raw | cleaned |", "|---|---|---|"]
    for bit, rule in enumerate(RULES):
        rows = np.flatnonzero(result.masks >> bit & 1)[:EXAMPLES]
        hits = frame.iloc[rows]
        for raw, clean in zip(hits["caption_raw"], hits["caption"], strict=True):
            lines.append(f"| {rule.name} | {_cell(raw)} | {_cell(clean)} |")
    return lines


def _drop_section(result: CleanResult) -> list[str]:
    frame, total = result.frame, max(len(result.frame), 1)
    lines = ["## Drops", "", "| drop reason | rows | share |", "|---|---:|---:|"]
    for reason in DROP_REASONS:
        count = result.drop_counts[reason]
        lines.append(f"| {reason} | {count} | {count / total:.2%} |")
    lines += ["", "| drop reason | raw | cleaned | language (p) |", "|---|---|---|---|"]
    for reason in DROP_REASONS:
        for _, row in frame[frame["drop_reason"] == reason].head(EXAMPLES).iterrows():
            lang = "" if pd.isna(row["lang"]) else f"{row['lang']} ({row['lang_prob']:.2f})"
            lines.append(f"| {reason} | {_cell(row['caption_raw'])} | {_cell(row['caption'])} "
                         f"| {lang} |")
    return lines


def _dup_section(result: CleanResult) -> list[str]:
    groups = result.frame["dup_group"].dropna()
    sizes = groups.value_counts()
    lines = ["## Exact duplicates (after cleaning, ignoring case and white space)", "",
             f"- {len(sizes)} groups holding {len(groups)} rows; largest group "
             f"{int(sizes.max()) if len(sizes) else 0} rows"]
    for group in sizes.index[:EXAMPLES]:
        caption = result.frame.loc[result.frame["dup_group"] == group, "caption"].iloc[0]
        lines.append(f"- group {group} ({sizes[group]} rows): {_cell(caption)}")
    return lines


def write_report(result: CleanResult, config: CleanConfig, source: Path, out: Path) -> Path:
    """Writes ``out/clean_report.md``; returns its path.

    Args:
        result: what `clean_frame` returned.
        config: the configuration it ran with.
        source: the input file (named in the report).
        out: the output folder.
    """
    frame = result.frame
    kept = int(frame["drop_reason"].isna().sum())
    lang = config.language
    durations = (int(frame["duration_s"].isna().sum()) if "duration_s" in frame
                 else "no duration column")
    lines = [
        "# Caption cleaning report", "",
        f"- input: `{source}` ({len(frame)} rows, caption column `{config.caption_column}`)",
        f"- kept: {kept} rows ({kept / max(len(frame), 1):.2%}); dropped: {len(frame) - kept}",
        f"- minimum words: {config.min_words}; duplicates dropped: {config.drop_duplicates}",
        f"- language id: py3langid over {len(lang.candidates)} candidate languages; a caption is "
        f"non-English when another language wins with p >= {lang.threshold}",
        f"- speed: {result.rows_per_second:,.0f} rows/s ({result.seconds:.1f} s, "
        f"{config.workers} worker(s))",
        f"- rows without a parseable duration: {durations}",
        f"- videoids: {int(frame['videoid'].duplicated().sum())} repeated, "
        f"{int(frame['videoid'].isna().sum())} missing "
        "(kept as they are; subsets and shards key on videoid)",
        "", "![caption length before and after](caption_length.png)", "",
    ]
    lines += _rule_section(result) + [""] + _drop_section(result) + [""] + _dup_section(result)
    path = out / "clean_report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def length_histograms(result: CleanResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Words per caption as (counts 0..top, rows per count raw, rows per count kept).

    The last count ``top`` (99.5th percentile + 2, at most ``MAX_BARS``) also holds every
    longer caption, so each histogram sums to its number of rows. The cap keeps one
    100,000-character caption in a small table from asking for thousands of bars (slow to draw).
    """
    frame = result.frame
    raw = word_counts(frame["caption_raw"])
    kept = word_counts(frame["caption"])[frame["drop_reason"].isna().to_numpy()]
    top = min(int(np.percentile(raw, 99.5)) + 2, MAX_BARS) if len(raw) else 2
    counts = np.arange(top + 1)
    return counts, np.bincount(np.minimum(raw, top), minlength=top + 1), \
        np.bincount(np.minimum(kept, top), minlength=top + 1)


def plot_lengths(result: CleanResult, out: Path) -> Path:
    """Writes ``out/caption_length.png``: words per caption, raw vs cleaned-and-kept."""
    from matplotlib.figure import Figure  # the object API needs no global pyplot state

    counts, raw, kept = length_histograms(result)
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.add_subplot()
    ax.bar(counts, raw, width=1.0, alpha=0.5, label=f"raw, all rows (n={raw.sum()})")
    ax.bar(counts, kept, width=1.0, alpha=0.5, label=f"cleaned, kept rows (n={kept.sum()})")
    ax.set_xlabel(f"words per caption (last bar: {counts[-1]} or more)")
    ax.set_ylabel("rows")
    ax.set_title("Caption length before and after cleaning")
    ax.legend()
    fig.tight_layout()
    path = out / "caption_length.png"
    fig.savefig(path)
    return path

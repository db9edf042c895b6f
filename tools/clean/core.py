"""Cleaning a whole caption table: rules, drops, duplicate groups, in chunks over a process pool."""

from __future__ import annotations

import contextlib
import functools
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from tqdm import tqdm

from tools.clean.language import LanguageConfig, LanguageIdentifier
from tools.clean.rules import RULE_NAMES, clean_captions
from tools.webvid import InputError

DROP_REASONS = ("empty", "too_short", "non_english", "duplicate")
OUTPUT_COLUMNS = ("videoid", "caption_raw", "caption", "drop_reason", "dup_group")
ADDED_COLUMNS = (*OUTPUT_COLUMNS, "rules", "lang", "lang_prob")


@dataclass(frozen=True)
class CleanConfig:
    """What `vtp clean` removes and drops, and how it spreads the work."""

    caption_column: str = "name"
    min_words: int = 2
    drop_duplicates: bool = False
    language: LanguageConfig = field(default_factory=LanguageConfig)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    chunk_rows: int = 20_000  # a chunk is one task: big enough to amortise the model load
    progress: bool = True

    def __post_init__(self) -> None:
        if self.min_words < 1:
            raise ValueError(f"min_words must be >= 1, got {self.min_words}")
        if self.workers < 1 or self.chunk_rows < 1:
            raise ValueError("workers and chunk_rows must be >= 1")


@dataclass
class CleanResult:
    """The cleaned table plus what happened to it."""

    frame: pd.DataFrame
    masks: np.ndarray  # uint32 per row, bit i set when RULES[i] changed the caption
    rule_counts: dict[str, int]
    drop_counts: dict[str, int]
    seconds: float

    @property
    def rows_per_second(self) -> float:
        return len(self.frame) / max(self.seconds, 1e-9)


@functools.lru_cache(maxsize=1)
def _identifier(config: LanguageConfig) -> LanguageIdentifier:
    # Loading the model (lzma + numpy) is slow next to a chunk: once per worker process, not
    # per chunk.
    return LanguageIdentifier(config)


def _clean_chunk(job: tuple[list[str], int, LanguageConfig]) -> tuple:
    """Rules plus language id for one chunk; runs in a worker process.

    Returns (cleaned texts, rule bit masks, word counts, language codes, probabilities,
    foreign flags).
    """
    texts, min_words, language = job
    cleaned, masks = clean_captions(texts)
    identifier = _identifier(language)
    words = np.fromiter((len(t.split()) for t in cleaned), dtype=np.int32, count=len(cleaned))
    langs: list[str | None] = [None] * len(texts)
    probs = np.full(len(texts), np.nan)
    foreign = np.zeros(len(texts), dtype=bool)
    # Language id is only asked about captions that survive the cheaper drops.
    for i in np.flatnonzero(words >= min_words):
        langs[i], probs[i] = identifier.identify(cleaned[i])
        foreign[i] = identifier.is_foreign(langs[i], probs[i])
    return cleaned, masks, words, langs, probs, foreign


def _chunks(texts: list[str], config: CleanConfig):
    for start in range(0, len(texts), config.chunk_rows):
        yield texts[start:start + config.chunk_rows], config.min_words, config.language


def _run_chunks(texts: list[str], config: CleanConfig) -> list[tuple]:
    """`_clean_chunk` over all chunks, in order, in a process pool when there is more than one."""
    parallel = config.workers > 1 and len(texts) > config.chunk_rows
    parts = []
    with contextlib.ExitStack() as stack:
        bar = stack.enter_context(tqdm(total=len(texts), desc="clean", unit="row",
                                       disable=not config.progress))
        if parallel:
            pool = stack.enter_context(ProcessPoolExecutor(max_workers=config.workers))
            results = pool.map(_clean_chunk, _chunks(texts, config))
        else:
            results = map(_clean_chunk, _chunks(texts, config))
        for part in results:
            parts.append(part)
            bar.update(len(part[0]))
    return parts


def rule_names(masks: np.ndarray) -> list[str]:
    """Comma-separated names of the rules set in each bit mask ("" when none fired)."""
    unique, inverse = np.unique(masks, return_inverse=True)  # a few dozen distinct masks
    names = [",".join(n for b, n in enumerate(RULE_NAMES) if int(m) >> b & 1) for m in unique]
    return [names[i] for i in inverse]


def _concat(parts: list[tuple], index: int, dtype) -> np.ndarray:
    return np.concatenate([p[index] for p in parts]).astype(dtype) if parts else np.zeros(0, dtype)


def duplicate_groups(captions: pd.Series, eligible: np.ndarray) -> pd.Series:
    """Integer ids shared by rows whose captions are equal up to case.

    The ``whitespace`` rule has already collapsed white space, so equal up to case is equal
    up to case and white space.

    Ids count groups in order of first appearance; rows without a twin (or not ``eligible``)
    get null.

    Args:
        captions: cleaned captions.
        eligible: bool mask of rows that may join a group (non-empty captions).
    """
    keys = captions.str.casefold().where(eligible)
    codes, _ = pd.factorize(keys, use_na_sentinel=True)
    sizes = np.bincount(codes[codes >= 0], minlength=1)
    in_group = (codes >= 0) & (sizes[np.maximum(codes, 0)] >= 2)
    group_codes = np.where(in_group, codes, -1)
    renumbered, _ = pd.factorize(pd.Series(group_codes).where(in_group))
    return pd.Series(renumbered, index=captions.index, dtype="Int64").where(in_group)


def _drop_reasons(words: np.ndarray, foreign: np.ndarray, config: CleanConfig, index) -> pd.Series:
    reason = np.select([words == 0, words < config.min_words, foreign],
                       ["empty", "too_short", "non_english"], default="")
    return pd.Series(reason, index=index, dtype="string").replace("", pd.NA)


def clean_frame(frame: pd.DataFrame, config: CleanConfig) -> CleanResult:
    """Cleans ``frame[config.caption_column]``; keeps every other column.

    Args:
        frame: a WebVid-format table (needs ``videoid`` and the caption column).
        config: rules, drops and parallelism.

    Returns:
        the table with ``videoid, caption_raw, caption, drop_reason, dup_group, rules, lang,
        lang_prob`` first (the caption column renamed ``caption_raw``), then the other input
        columns, plus counts per rule and per drop reason.
    """
    _check_columns(frame, config)
    start = time.perf_counter()
    raw = frame[config.caption_column].astype("string").fillna("")
    parts = _run_chunks(raw.tolist(), config)
    masks = _concat(parts, 1, np.uint32)
    out = _assemble(frame, raw, parts, config)
    rule_counts = {name: int(((masks >> b) & 1).sum()) for b, name in enumerate(RULE_NAMES)}
    drop_counts = {r: int((out["drop_reason"] == r).sum()) for r in DROP_REASONS}
    return CleanResult(out, masks, rule_counts, drop_counts, time.perf_counter() - start)


def _check_columns(frame: pd.DataFrame, config: CleanConfig) -> None:
    clash = sorted(set(ADDED_COLUMNS) & set(frame.columns) - {config.caption_column, "videoid"})
    if clash:
        raise InputError(f"input already has output column(s) {clash}; is it already cleaned? "
                         "Pass the original table, or rename those columns")
    for name in ("videoid", config.caption_column):
        if name not in frame.columns:
            raise InputError(f"input has no {name!r} column (columns: {list(frame.columns)})")


def _assemble(frame: pd.DataFrame, raw: pd.Series, parts: list[tuple],
              config: CleanConfig) -> pd.DataFrame:
    """The output table from the chunk results: new columns first, then the input's."""
    cleaned = pd.Series([t for p in parts for t in p[0]], index=frame.index, dtype="string")
    words, foreign = _concat(parts, 2, np.int32), _concat(parts, 5, bool)
    out = pd.DataFrame({"videoid": frame["videoid"].astype("string"), "caption_raw": raw,
                        "caption": cleaned}, index=frame.index)
    out["drop_reason"] = _drop_reasons(words, foreign, config, frame.index)
    out["dup_group"] = duplicate_groups(cleaned, words > 0)
    if config.drop_duplicates:
        grouped = out["drop_reason"].isna() & out["dup_group"].notna()
        # The first kept row of each group stays; NA rows are masked out by ``grouped``.
        repeat = grouped & out["dup_group"].where(grouped).duplicated(keep="first")
        out.loc[repeat, "drop_reason"] = "duplicate"
    out["rules"] = rule_names(_concat(parts, 1, np.uint32))
    out["lang"] = pd.Series([x for p in parts for x in p[3]], index=frame.index, dtype="string")
    out["lang_prob"] = _concat(parts, 4, np.float64)
    rest = frame.drop(columns=["videoid", config.caption_column])
    return pd.concat([out, rest], axis=1).reset_index(drop=True)

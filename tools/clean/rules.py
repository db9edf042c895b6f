"""The named caption-cleaning rules, applied in order; each reports whether it changed the text.

Order matters: entities are decoded before anything looks at the text, URLs and e-mails go
before handles and file names (they contain both), and the punctuation and white-space
rules run last to tidy what the removals left behind ("stock footage: a cat" -> ": a cat"
-> "a cat"). Removals insert a space, so words on either side never merge.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Rule:
    """One cleaning step: ``fn(text) -> text``, named in the report."""

    name: str
    fn: Callable[[str], str]
    description: str
    # A cheap pre-check: most captions hold no '@', ':' or digit, and skipping the big
    # patterns for them halves the cost per caption.
    trigger: re.Pattern | None = None

    def apply(self, text: str) -> str:
        if self.trigger is not None and not self.trigger.search(text):
            return text
        return self.fn(text)


def _sub(pattern: str, repl: str = " ", flags: int = re.IGNORECASE) -> Callable[[str], str]:
    compiled = re.compile(pattern, flags)
    return lambda text: compiled.sub(repl, text)


def _t(pattern: str) -> re.Pattern:
    return re.compile(pattern, re.IGNORECASE)


_INVISIBLE = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f"
                        "\u00ad\u200b-\u200f\u2060\ufeff]")


def _unicode(text: str) -> str:
    # NFKC folds compatibility forms (no-break space, full-width letters, ligatures);
    # zero-width and control characters are not touched by NFKC, so they go here too.
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))


def _entities(text: str) -> str:
    # Twice: scraped alt text is often double-escaped ("&amp;quot;").
    return html.unescape(html.unescape(text)) if "&" in text else text


VIDEO_EXT = (r"mov|mp4|m4v|avi|mkv|webm|mpe?g|wmv|flv|mts|m2ts|mxf|r3d|prores|3gp"
             r"|jpe?g|png|gif|tiff?|wav|mp3")
TLDS = r"com|net|org|io|ly|co|tv|me|info|biz|uk|de|ru|fr|us|gl|gg"
QUOTES = "\"'“”‘’«»„‟‹›`´"

_BRACKETS = re.compile(r"\(\s*[-–—:;,.|/]*\s*\)|\[\s*[-–—:;,.|/]*\s*\]|\{\s*\}")
_REPEATS = re.compile(r"([!?.,;:\-–—|/])(?:\s*\1)+")
_SPACE_BEFORE = re.compile(r"\s+([,.;:!?)\]])")
_SPACE_AFTER_OPEN = re.compile(r"([(\[])\s+")
END_CHARS = " \t\n\r\f\v-–—:;,.|/\\*#~_•·+=>"


def _strip_quotes(text: str) -> str:
    """Removes the quote pairs around the whole text, then a quote dangling at either end."""
    start, end = 0, len(text)
    # By index, not by slicing pair after pair: 50,000 nested quotes stay linear.
    while end - start >= 2 and text[start] in QUOTES and text[end - 1] in QUOTES:
        start, end = start + 1, end - 1
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
    text = text[start:end]
    if text and text[0] in QUOTES and not any(q in text[1:] for q in QUOTES):
        text = text[1:].lstrip()
    # An apostrophe at the end can be a plural possessive ("the dogs'"): keep it.
    if text and text[-1] in QUOTES.replace("'", "") and not any(q in text[:-1] for q in QUOTES):
        text = text[:-1].rstrip()
    return text


PUNCTUATION_ROUNDS = 8  # real captions settle in two or three


def _punctuation(text: str) -> str:
    previous = None
    rounds = 0
    # Removing one layer can expose another ("( - )" -> ""); the cap keeps a hostile caption
    # ("'-'-'-...", one layer per round) from costing a round per character.
    while previous != text and rounds < PUNCTUATION_ROUNDS:
        previous, rounds = text, rounds + 1
        text = _BRACKETS.sub(" ", text)
        text = _REPEATS.sub(r"\1", text)
        text = _SPACE_BEFORE.sub(r"\1", text)
        text = _SPACE_AFTER_OPEN.sub(r"\1", text)
        text = text.strip(END_CHARS)
        text = _strip_quotes(text)
    return text


RULES: tuple[Rule, ...] = (
    Rule("html_entities", _entities, "HTML entities decoded (&quot; &amp; &#39; &nbsp; ...)",
         _t("&")),
    Rule("unicode_nfkc", _unicode,
         "Unicode NFKC normalisation; zero-width and control characters removed"),
    Rule("html_tags", _sub(r"<[^<>]{1,200}>"), "HTML tags removed", _t("<")),
    Rule("emails", _sub(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), "e-mail addresses removed", _t("@")),
    Rule("urls", _sub(rf"(?:\b(?:https?|ftp)://|\bwww\.)\S+|\b[\w-]+(?:\.[\w-]+)*\.(?:{TLDS})\b(?:/\S*)?"),
         "URLs and bare domains removed", _t(r"\.|://")),
    Rule("handles", _sub(r"(?<![\w@])@\w+"), "@handles removed", _t("@")),
    Rule("file_names", _sub(rf"\b[\w-]+\.(?:{VIDEO_EXT})\b"),
         "file names (clip_123.mov, DSC1234.MP4) removed", _t(r"\.")),
    Rule("stock_boilerplate", _sub(
        r"\b(?:royalty[\s-]*free\s+)?(?:stock|archival|archive)[\s-]+(?:footage|videos?|clips?|film|photos?|images?)\b"
        r"|\broyalty[\s-]*free\b|\b(?:for\s+)?editorial\s+use\s+only\b|\bshutterstock\b"),
        "stock-site boilerplate (stock footage, stock video, royalty free, editorial use only)",
        _t("stock|royalty|editorial|archiv")),
    Rule("resolution_tags", _sub(
        r"\b(?:full|ultra)[\s-]?hd\b|\b(?:uhd|fhd|hdr|hd)\b|\b[2-8]k\b"
        r"|\b(?:240|360|480|576|720|1080|1440|2160|4320)[pi]\b|\b\d{3,4}\s?[x×]\s?\d{3,4}\b"
        r"|\b\d{2,3}\s?fps\b"),
        "resolution and quality tags (4K, UHD, HD, full HD, 1080p, 1920x1080, 60fps)",
        _t(r"\d|hd")),
    Rule("time_codes", _sub(r"\b\d{1,2}:\d{2}(?::\d{2}){0,2}(?:[.,]\d+)?\b"),
         "time codes (0:12, 00:00:12, 00:01:12:12)", _t(":")),
    Rule("digit_runs", _sub(r"\b\d{5,}\b"), "runs of 5 or more digits (ids, stock numbers)",
         _t(r"\d{5}")),
    Rule("punctuation", _punctuation,
         "repeated punctuation, empty brackets, punctuation and quotes left dangling at the ends"),
    Rule("whitespace", lambda text: " ".join(text.split()),
         "runs of white space collapsed, ends stripped"),
)
RULE_NAMES: tuple[str, ...] = tuple(rule.name for rule in RULES)


def clean_caption(text: str) -> tuple[str, int]:
    """Applies every rule to ``text``.

    Args:
        text: a raw caption.

    Returns:
        (cleaned text, bit mask of the rules that changed it; bit i is ``RULES[i]``).
    """
    fired = 0
    for bit, rule in enumerate(RULES):
        new = rule.apply(text)
        if new != text:
            fired |= 1 << bit
            text = new
    return text, fired


def clean_captions(texts: list[str]) -> tuple[list[str], np.ndarray]:
    """Cleans many captions; returns the texts and a uint32 array of rule bit masks."""
    cleaned, masks = [], np.zeros(len(texts), dtype=np.uint32)
    for i, text in enumerate(texts):
        cleaned_text, masks[i] = clean_caption(text)
        cleaned.append(cleaned_text)
    return cleaned, masks


def word_counts(texts) -> np.ndarray:
    """Words (runs of non-space characters) per string, vectorised in Arrow; null counts 0.

    Args:
        texts: a list, pandas Series or Arrow array of strings.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if not isinstance(texts, pa.Array | pa.ChunkedArray):
        texts = pa.array(texts, type=pa.string(), from_pandas=True)
    counts = pc.fill_null(pc.count_substring_regex(texts, r"\S+"), 0)
    return counts.to_numpy(zero_copy_only=False).astype(np.int64)

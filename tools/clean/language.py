"""Offline language identification for captions (py3langid, a naive Bayes byte n-gram model).

Stock-site captions are short, and on a few words the full 97-language model spreads its
probability thinly and wanders into languages nobody writes alt text in ("Barcelona beach"
-> Northern Sotho, "Cinematic landscape" -> Aragonese). Two choices keep it honest:

* candidates are restricted to languages that stock captions are actually written in, so the
  probability mass goes to plausible answers (most English captions then score above 0.8);
* a caption is called non-English only when another language wins with normalised
  probability >= ``threshold`` (0.5). Ambiguous two-word captions stay in.

Measured (threshold 0.5; ``plan(SynthConfig(num_clips=5000, seed=3, defect_rate=0.3))`` gives
5,911 English and 169 German/French/Spanish captions; plus 30 short hand-written English stock
captions such as "Sunset", "Cute dog", "Barcelona beach" and 12 short foreign ones):

| model | synth. en flagged | synth. foreign caught | short en flagged | short foreign caught |
|---|---:|---:|---:|---:|
| 24 candidates (ours) | 0 / 5911 | 169 / 169 | 0 / 30 | 12 / 12 |
| all 97 languages | 0 / 5911 | 169 / 169 | 0 / 30 | 10 / 12 |

Without the threshold (any non-English winner drops) the 24-language model flags 9 of the 30
short English captions ("Sunset" -> de, "Cute dog" -> da), hence the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

# Languages of stock-footage alt text (WebVid is English with a tail of these), plus the
# big scripts so that Cyrillic, CJK, Arabic and Devanagari captions are named correctly.
CANDIDATES = ("en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "da", "no", "fi", "cs",
              "tr", "ru", "uk", "ar", "hi", "zh", "ja", "ko", "th", "vi", "id")


@dataclass(frozen=True)
class LanguageConfig:
    """How the non-English drop decides."""

    candidates: tuple[str, ...] = CANDIDATES
    threshold: float = 0.5  # another language must win with at least this probability
    target: str = "en"


class LanguageIdentifier:
    """A py3langid model restricted to ``config.candidates``; one per process."""

    def __init__(self, config: LanguageConfig) -> None:
        from py3langid.langid import MODEL_FILE
        from py3langid.langid import LanguageIdentifier as Model

        self.config = config
        self.model = Model.from_model_file(MODEL_FILE, norm_probs=True)
        self.model.set_languages(list(config.candidates))

    def identify(self, text: str) -> tuple[str, float]:
        """(language code, normalised probability) of ``text``."""
        lang, prob = self.model.classify(text)
        return lang, float(prob)

    def is_foreign(self, lang: str, prob: float) -> bool:
        """True when a language other than the target wins clearly enough to drop the caption."""
        return lang != self.config.target and prob >= self.config.threshold

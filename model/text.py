"""Text side: BERT-style embeddings (word + learned position + token type, then LN and dropout).

SimVTP uses BERT's embedding module only (none of BERT's transformer layers); attribute names
match ``BertEmbeddings`` so a BERT state dict loads by name.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TextEmbeddings"]


class TextEmbeddings(nn.Module):
    """Args:
        vocab_size: WordPiece vocabulary (30522 for BERT uncased).
        dim: token width (the encoder width).
        max_len: learned positions.
        type_vocab_size: token types (every id is 0 here, as in SimVTP).
        pad_token_id: id whose embedding gets no gradient.
        eps: LayerNorm eps (BERT: 1e-12).
        dropout: dropout after the LayerNorm (BERT: 0.1).
    """

    def __init__(self, vocab_size: int, dim: int, max_len: int, type_vocab_size: int = 2,
                 pad_token_id: int = 0, eps: float = 1e-12, dropout: float = 0.1) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_len, dim)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)  # BERT's name, kept for loading
        self.dropout = nn.Dropout(dropout)
        for emb in (self.word_embeddings, self.position_embeddings, self.token_type_embeddings):
            nn.init.normal_(emb.weight, std=0.02)  # BERT's initializer_range
        self.word_embeddings.weight.data[pad_token_id].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, L) int64 ids -> (B, L, D)."""
        length = ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(f"text length {length} exceeds max_text_len "
                             f"{self.position_embeddings.num_embeddings}")
        pos = torch.arange(length, device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(pos)
        x = x + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))

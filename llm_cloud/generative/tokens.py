"""A tokenizer for semantic-ID sequences (TIGER, arXiv 2305.05065): one token per (level, code).

Item ``i`` with codes ``(12, 3, 7, 0)`` is the token string ``<a_12> <b_3> <c_7> <d_0>``; level ``l`` uses the
``l``-th letter. The vocabulary also holds ``<pad>``, ``<bos>``, ``<eos>`` and ``<unk>`` (the WordLevel model needs an
unknown token). The tokenizer is a :class:`transformers.PreTrainedTokenizerFast` over a ``tokenizers`` WordLevel model
with a whitespace pre-tokenizer, so it saves and loads with the checkpoint.

:class:`SemanticIdCodec` maps items to token ids and generated token ids back to items.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field

import numpy as np

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)


def code_token(level: int, code: int) -> str:
    """``(0, 12)`` -> ``<a_12>``."""
    if not 0 <= level < len(string.ascii_lowercase):
        raise ValueError(f"semantic IDs have at most 26 levels, got level {level}")
    return f"<{string.ascii_lowercase[level]}_{int(code)}>"


def check_codes(codes: np.ndarray) -> None:
    """Refuse a code table that is not (N+1, L+1) with row 0 padding and one unique, non-negative row per item."""
    if codes.ndim != 2 or codes.shape[0] < 2:
        raise ValueError(f"codes must be (N+1, L+1) with row 0 as padding, got shape {codes.shape}")
    items = codes[1:]
    if (items < 0).any():
        raise ValueError("item codes must be >= 0 (only row 0, the padding row, is -1)")
    if len(np.unique(items, axis=0)) != len(items):
        raise ValueError("two items share a code; build the codes with the trailing disambiguation level")


def code_vocabulary(codes: np.ndarray) -> list[str]:
    """Every (level, code) token from 0 to the largest code of each level, level by level."""
    check_codes(codes)
    return [code_token(level, code) for level in range(codes.shape[1])
            for code in range(int(codes[1:, level].max()) + 1)]


def add_code_tokens(tokenizer, codes: np.ndarray) -> int:
    """Extend a pretrained tokenizer with the code tokens (as special tokens: never split, never merged)."""
    return tokenizer.add_tokens(code_vocabulary(codes), special_tokens=True)


def build_tokenizer(codes: np.ndarray):
    """A PreTrainedTokenizerFast whose vocabulary is the special tokens plus every (level, code) seen in ``codes``."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *code_vocabulary(codes)))}
    backend = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, bos_token=BOS, eos_token=EOS,
                                   unk_token=UNK, padding_side="left")


@dataclass
class SemanticIdCodec:
    """Items <-> token ids for one code table ``codes`` (N+1, L+1) and its tokenizer's vocabulary."""

    codes: np.ndarray
    vocab: dict[str, int]
    special: dict[str, str] = field(default_factory=lambda: {"bos": BOS, "eos": EOS, "pad": PAD})  # role -> token
    item_tokens: np.ndarray = field(init=False)  # (N+1, L+1) token ids; row 0 = pad
    to_item: dict[tuple[int, ...], int] = field(init=False)  # token-id tuple -> item id

    def __post_init__(self) -> None:
        check_codes(self.codes)
        n, width = self.codes.shape
        table = np.full((n, width), self.pad_id, dtype=np.int64)  # (N+1, L+1)
        for level in range(width):
            for item in range(1, n):
                table[item, level] = self.vocab[code_token(level, self.codes[item, level])]
        self.item_tokens = table
        self.to_item = {tuple(int(t) for t in table[i]): i for i in range(1, n)}

    @classmethod
    def from_tokenizer(cls, codes: np.ndarray, tokenizer) -> SemanticIdCodec:
        """Codes plus a tokenizer holding every code token (ours, or a pretrained one extended with them)."""
        special = {"bos": tokenizer.bos_token or tokenizer.eos_token, "eos": tokenizer.eos_token,
                   "pad": tokenizer.pad_token or tokenizer.eos_token}
        return cls(codes=np.asarray(codes, dtype=np.int64), vocab=dict(tokenizer.get_vocab()), special=special)

    @property
    def n_items(self) -> int:
        return self.codes.shape[0] - 1

    @property
    def width(self) -> int:
        """Tokens per item, L+1."""
        return self.codes.shape[1]

    @property
    def bos_id(self) -> int:
        return self.vocab[self.special["bos"]]

    @property
    def eos_id(self) -> int:
        return self.vocab[self.special["eos"]]

    @property
    def pad_id(self) -> int:
        return self.vocab[self.special["pad"]]

    def encode_items(self, items: np.ndarray, bos: bool = True) -> list[int]:
        """Item ids (t,) -> token ids (1 + t*(L+1),): ``<bos>`` then each item's codes."""
        ids = self.item_tokens[np.asarray(items, dtype=np.int64)].reshape(-1).tolist()  # (t*(L+1),)
        return [self.bos_id] + ids if bos else ids

    def decode_item(self, token_ids) -> int | None:
        """The item whose code is exactly these L+1 token ids, or None when no item has it."""
        return self.to_item.get(tuple(int(t) for t in token_ids))

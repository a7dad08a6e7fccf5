"""GPT-2 with gist masking: sentence boundaries plus an attention mask.

Each token sees its own sentence causally and earlier sentences of its document **only through
their `[EOS]` tokens**. The mask restricts the key axis: the original implementation masked the
query axis, which gives no cross-sentence access at all (paper.md section 4).

The mask is derived from the token ids alone (`[BOS]` opens a sentence, `[EOD] [EOS]` closes a
document), so training blocks and scoring windows need no side information.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tgbench.models.gpt2 import GPT2Config
from tgbench.models.gpt2_boundary import GPT2BoundaryAdapter


@dataclass
class GistConfig(GPT2Config):
    """GPT-2 settings plus the gist mask's document rule."""

    # False: a token sees [EOS] tokens of its own document only (ours). True: also those of earlier
    # documents packed into the same block, as the release's mask does not separate documents.
    cross_document: bool = False


def gist_mask(ids: torch.Tensor, vocab_base: int, cross_document: bool = False) -> torch.Tensor:
    """Boolean attention mask (B, 1, T, T): True where query i may attend to key j.

    Special ids follow `tgbench.adapter.Vocab`: BOS = base + 1, EOS = base + 2, EOD = base + 3.
    With `cross_document`, earlier documents' [EOS] tokens stay visible (their other tokens never are).
    """
    bos, eos, eod = vocab_base + 1, vocab_base + 2, vocab_base + 3
    B, T = ids.shape
    sentence = torch.cumsum(ids == bos, dim=1)  # (B, T) sentence index, [BOS] opens one
    closes_doc = torch.zeros_like(ids, dtype=torch.bool)
    closes_doc[:, 2:] = (ids[:, :-2] == eod) & (ids[:, 1:-1] == eos)  # first token after [EOD] [EOS]
    document = torch.cumsum(closes_doc, dim=1)  # (B, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=ids.device).tril()  # (T, T)
    same_sentence = sentence[:, :, None] == sentence[:, None, :]  # (B, T, T)
    same_document = document[:, :, None] == document[:, None, :]  # (B, T, T)
    key_is_eos = (ids == eos)[:, None, :]  # (B, 1, T) on the key axis
    allowed = causal & (same_sentence | key_is_eos)  # (B, T, T)
    if not cross_document:
        allowed = allowed & same_document
    return allowed[:, None]  # (B, 1, T, T)


class GPT2GistAdapter(GPT2BoundaryAdapter):
    """GPT-2 + boundaries where earlier sentences are visible only through their `[EOS]`."""

    name = "gpt2-gist"
    description = "GPT-2 + gist masking: earlier sentences visible only through their [EOS] (key axis)"
    config_class = GistConfig

    def attention_mask(self, ids: torch.Tensor, vocab_base: int) -> torch.Tensor:
        return gist_mask(ids, vocab_base, self.config.cross_document)

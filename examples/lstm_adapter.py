"""An LSTM language model as a tgbench adapter that lives outside the package.

Use it wherever a model name is accepted:

    tgbench train --model examples/lstm_adapter.py:LSTMAdapter --width 64 --layers 1 --out runs/lstm

`docs/adapters.md` walks through this file; `tests/test_plugin_adapter.py` trains, scores and
evaluates it through the normal CLI path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tgbench.adapter import Adapter, Batch, Document, LossParts, Vocab
from tgbench.models.gpt2 import IGNORE, block_batches, pack_stream


@dataclass
class LSTMConfig:
    width: int = 256
    layers: int = 1
    heads: int = 1  # unused; grids pass it to every adapter
    context: int = 128  # training block length (truncated back-propagation through time)
    dropout: float = 0.0


class LSTMLanguageModel(nn.Module):
    def __init__(self, config: LSTMConfig, vocab_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, config.width)
        self.lstm = nn.LSTM(config.width, config.width, config.layers, batch_first=True, dropout=config.dropout)
        self.head = nn.Linear(config.width, vocab_size, bias=False)
        self.head.weight = self.embed.weight  # tied, like the built-ins
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, ids: torch.Tensor, state=None):
        hidden, state = self.lstm(self.embed(ids), state)  # (B, T, d)
        return self.head(hidden), state  # (B, T, V)


class LSTMAdapter(Adapter):
    """An LSTM over packed blocks; scores each document as one uninterrupted sequence."""

    name = "lstm"
    description = "Example plug-in: a tied-embedding LSTM language model"
    config_class = LSTMConfig

    def build(self, vocab: Vocab) -> nn.Module:
        return LSTMLanguageModel(self.config, vocab.size)

    def batches(self, documents, vocab, *, batch_tokens, epoch, rng) -> list[Batch]:
        # The same layout as GPT-2: [EOD] before each document, blocks of `context` tokens.
        stream, ends = pack_stream(documents, vocab)
        return block_batches(stream, ends, vocab, self.config.context, batch_tokens)

    def loss(self, model, batch, epoch) -> LossParts:
        logits, _ = model(batch.tensors["inputs"])  # (B, T, V)
        targets = batch.tensors["targets"]  # (B, T)
        nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE,
                              reduction="none").view_as(targets)
        return LossParts(
            loss=nll.sum() / (targets != IGNORE).sum().clamp(min=1),
            lexical_nll_sum=nll[batch.tensors["lexical"]].sum().detach(),
            lexical_tokens=batch.lexical_tokens,
        )

    def score(self, model, documents: Sequence[Document], vocab: Vocab) -> list[torch.Tensor]:
        device = next(model.parameters()).device
        out = []
        with torch.no_grad():
            for doc in documents:
                tokens = np.concatenate([[vocab.eod_id], *[np.asarray(s) for s in doc]]).astype(np.int64)
                ids = torch.from_numpy(tokens).to(device)[None]  # (1, T+1)
                logits, _ = model(ids[:, :-1])  # (1, T, V)
                logprobs = torch.log_softmax(logits.float(), -1)[0]  # (T, V)
                out.append(logprobs.gather(1, ids[0, 1:, None])[:, 0].cpu())
        return out

    def generate(self, model, prompt, vocab, *, max_new_tokens, stop=()) -> list[int]:
        device = next(model.parameters()).device
        tokens = [vocab.eod_id] + [int(t) for s in prompt for t in s]
        with torch.no_grad():
            logits, state = model(torch.tensor(tokens, device=device)[None])
            new: list[int] = []
            for _ in range(max_new_tokens):
                token = int(logits[0, -1, : vocab.base_size].argmax())
                new.append(token)
                if any(len(s) and new[-len(s):] == list(s) for s in stop):
                    break
                logits, state = model(torch.tensor([[token]], device=device), state)
        return new

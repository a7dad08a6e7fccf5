"""GPT-2 + sentence boundaries: the paper's second baseline.

The same network as `models/gpt2.py`; only the data differs. TG's sentence-split stream is
flattened into one token sequence that keeps the boundary tokens,
`[BOS] x1..xn [EOS] [BOS] ... [EOD] [EOS]`, and packed into context-length blocks. Special-token
targets are trained on but excluded from every lexical metric, and `score` returns the content
tokens only, so its perplexity is comparable with GPT-2's and TG's.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from tgbench.adapter import Batch, Document, LossParts, Vocab
from tgbench.models.gpt2 import IGNORE, GPT2Adapter, GPT2Config, block_batches, token_losses


def flatten_with_boundaries(documents: Sequence[Document], vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """`[BOS] s [EOS]` per sentence, `[EOD]` before the last `[EOS]` of a document.

    Returns the token stream and a flag on each sentence's closing `[EOS]` (for sentences/s).
    """
    pieces, ends = [], []
    for doc in documents:
        for index, sentence in enumerate(doc):
            tail = [vocab.eod_id, vocab.eos_id] if index == len(doc) - 1 else [vocab.eos_id]
            tokens = np.concatenate([[vocab.bos_id], np.asarray(sentence, dtype=np.int64), tail])
            pieces.append(tokens)
            flag = np.zeros(len(tokens), dtype=bool)
            flag[-1] = True
            ends.append(flag)
    if not pieces:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    return np.concatenate(pieces).astype(np.int64), np.concatenate(ends)


class GPT2BoundaryAdapter(GPT2Adapter):
    """GPT-2 trained on the sentence-split stream with `[BOS] [EOS] [EOD]` kept."""

    name = "gpt2-boundary"
    description = "GPT-2 + sentence boundaries: packed blocks that keep [BOS] [EOS] [EOD]"
    config_class = GPT2Config

    def attention_mask(self, ids: torch.Tensor, vocab_base: int) -> torch.Tensor | None:
        """Extra attention restriction for (B, T) inputs; None = plain causal attention."""
        return None

    def batches(self, documents, vocab, *, batch_tokens, epoch, rng) -> list[Batch]:
        stream, ends = flatten_with_boundaries(documents, vocab)
        # batch_tokens counts lexical tokens; the stream also carries ~3 specials per sentence.
        ratio = len(stream) / max(1, int(sum(len(s) for d in documents for s in d)))
        batches = block_batches(stream, ends, vocab, self.config.context, int(batch_tokens * ratio))
        for batch in batches:
            batch.tensors["vocab_base"] = vocab.base_size
        return batches

    def loss(self, model: nn.Module, batch: Batch, epoch: int) -> LossParts:
        inputs, targets = batch.tensors["inputs"], batch.tensors["targets"]  # (B, T)
        logits = model(inputs, self.attention_mask(inputs, batch.tensors["vocab_base"]))  # (B, T, V)
        nll = token_losses(logits, targets, ignore_index=IGNORE)  # (B, T)
        lexical = batch.tensors["lexical"]
        return LossParts(
            loss=nll.sum() / (targets != IGNORE).sum().clamp(min=1),
            lexical_nll_sum=nll[lexical].sum().detach(),
            lexical_tokens=batch.lexical_tokens,
        )

    def score(self, model: nn.Module, documents: Sequence[Document], vocab: Vocab) -> list[torch.Tensor]:
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        context = self.config.context
        stride = self.config.score_stride or context
        device = next(model.parameters()).device
        windows = []  # (document index, input ids, predicted ids, content flags of predicted)
        for index, doc in enumerate(documents):
            flat, _ = flatten_with_boundaries([doc], vocab)
            tokens = flat[1:].tolist()  # the leading [BOS] is the prefix token
            for pair in get_rolling_token_windows(tokens, vocab.bos_id, context, context - stride + 1):
                inputs, predicted = make_disjoint_window(pair)
                windows.append((index, inputs + predicted[:-1], predicted))
        scores: list[list[torch.Tensor]] = [[] for _ in documents]
        with torch.no_grad():
            for start in range(0, len(windows), self.config.score_batch_windows):
                chunk = windows[start : start + self.config.score_batch_windows]
                length = max(len(w[1]) for w in chunk)
                ids = torch.full((len(chunk), length), vocab.eos_id, dtype=torch.long)
                for row, (_, inputs, _) in enumerate(chunk):
                    ids[row, : len(inputs)] = torch.tensor(inputs)
                ids = ids.to(device)
                logprobs = torch.log_softmax(model(ids, self.attention_mask(ids, vocab.base_size)).float(), -1)
                for row, (index, inputs, predicted) in enumerate(chunk):
                    n = len(predicted)
                    target = torch.tensor(predicted, device=device)
                    picked = logprobs[row, len(inputs) - n : len(inputs)].gather(1, target[:, None])[:, 0]
                    scores[index].append(picked[target < vocab.base_size].cpu())  # content targets only
        return [torch.cat(parts) if parts else torch.zeros(0) for parts in scores]

    def generate(self, model, prompt, vocab, *, max_new_tokens, stop=()) -> list[int]:
        device = next(model.parameters()).device
        flat, _ = flatten_with_boundaries([prompt], vocab) if prompt else (np.array([vocab.bos_id]), None)
        tokens = flat.tolist()
        if prompt:  # reopen the last sentence: drop its closing [EOD] [EOS]
            tokens = tokens[:-2]
        new: list[int] = []
        with torch.no_grad():
            while len(new) < max_new_tokens:
                window = torch.tensor(tokens[-self.config.context :], device=device)[None]
                logits = model(window, self.attention_mask(window, vocab.base_size))[0, -1]
                logits[vocab.pad_id] = logits[vocab.bos_id] = -float("inf")
                token = int(logits.argmax())
                if token >= vocab.base_size:  # a boundary: close the sentence and open the next
                    tokens += [vocab.eos_id, vocab.bos_id] if token == vocab.eos_id else [token]
                    continue
                tokens.append(token)
                new.append(token)
                if any(len(s) and new[-len(s) :] == list(s) for s in stop):
                    break
        return new

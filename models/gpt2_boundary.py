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

from tgbench.adapter import Batch, Document, Sampler, Vocab, batch_ends
from tgbench.models.gpt2 import GPT2Adapter, GPT2Config, block_batches, block_lexical


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
    sentence_boundaries = True

    def batches(self, documents, vocab, *, batch_tokens, epoch, rng) -> list[Batch]:
        """Packed blocks grouped by their lexical targets: `[BOS] [EOS] [EOD]` targets do not count towards
        `batch_tokens`, so a batch holds more blocks than GPT-2's and the two train the same number of steps."""
        stream, ends = flatten_with_boundaries(documents, vocab)
        batches = block_batches(stream, ends, vocab, self.config.context, batch_tokens)
        for batch in batches:
            batch.tensors["vocab_base"] = vocab.base_size
        return batches

    def count_batches(self, documents, vocab, *, batch_tokens, epoch, rng) -> int:
        stream, _ = flatten_with_boundaries(documents, vocab)
        markers = np.flatnonzero(stream >= vocab.base_size)
        return len(batch_ends(block_lexical(len(stream), markers, self.config.context), batch_tokens))

    def scoring_sequence(self, document: Document, vocab: Vocab) -> tuple[list[int], int]:
        flat, _ = flatten_with_boundaries([document], vocab)
        return flat[1:].tolist(), vocab.bos_id  # the leading [BOS] is the prefix token

    def generate(self, model, prompt, vocab, *, max_new_tokens, stop=()) -> list[int]:
        sentences = self._continue(model, prompt, vocab, max_new_tokens, stop, Sampler(), 0, end_at_eod=False)
        return [t for sentence in sentences for t in sentence]

    def sample(self, model, prompt, vocab, *, max_new_tokens, sampler, max_sentences=0) -> list[list[int]]:
        """Sentences end where the model predicts [EOS]; a predicted [EOD] ends the sample."""
        return self._continue(model, prompt, vocab, max_new_tokens, (), sampler, max_sentences, end_at_eod=True)

    def _continue(self, model, prompt, vocab, max_new_tokens, stop, sampler: Sampler, max_sentences: int,
                  end_at_eod: bool) -> list[list[int]]:
        """The continuation as sentences (see `Adapter.sample`); greedy `generate` flattens them."""
        device = next(model.parameters()).device
        flat, _ = flatten_with_boundaries([prompt], vocab) if prompt else (np.array([vocab.bos_id]), None)
        tokens = flat.tolist()
        if prompt:  # reopen the last sentence: drop its closing [EOD] [EOS]
            tokens = tokens[:-2]
        new: list[int] = []
        sentences: list[list[int]] = [[]]
        boundaries = 0  # a model that predicts nothing but boundaries must still stop
        with torch.no_grad():
            while len(new) < max_new_tokens and boundaries <= max_new_tokens:
                window = torch.tensor(tokens[-self.config.context :], device=device)[None]
                logits = model(window, self.attention_mask(window, vocab.base_size))[0, -1]
                logits[vocab.pad_id] = logits[vocab.bos_id] = -float("inf")
                token = sampler.pick(logits)
                if token >= vocab.base_size:  # a boundary: close the sentence and open the next
                    boundaries += 1
                    if token == vocab.eod_id and end_at_eod:
                        break
                    tokens += [vocab.eos_id, vocab.bos_id] if token == vocab.eos_id else [token]
                    if token == vocab.eos_id:
                        if max_sentences and sum(map(bool, sentences)) >= max_sentences:
                            break
                        sentences.append([])
                    continue
                tokens.append(token)
                new.append(token)
                sentences[-1].append(token)
                if any(len(s) and new[-len(s) :] == list(s) for s in stop):
                    break
        return sentences

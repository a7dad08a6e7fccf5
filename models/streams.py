"""Sentence streams: the layout and the step loop that TG and its segment-recurrent peers share.

A document becomes units (`split_units`: sentences capped like the data pipeline's cap, or `split_spans`: fixed
spans), a training stream is consecutive units of one document (memory empty at its start), and a batch is a
set of streams laid out step-major (`stream_layout`): the t-th unit of every alive stream forms sentence step t.

How a batch runs (the speed design):
  * Streams are sorted by unit count, longest first, so the streams still alive at step t are a prefix
    0..B_t-1 and dropping finished streams is a slice.
  * Token-wise layers (LN, projections, SwiGLU, LM head) run on the *packed* rows of a step (N_t, d): no
    padding is computed there. Only inside attention are the rows scattered into a (B_t, T_t) grid
    (`StepInputs.to_grid`), T_t being the longest unit of the step; padding sits at the end of each row, so
    causal attention never lets a real query see it.
  * Every index (grid position, [BOS]/[EOS] rows, targets) is computed in numpy when the batch is built; the
    step loop slices device tensors with host integers and never syncs.

`StreamAdapter` is the adapter of every model that runs this way (`tg`, `tg-span`, `rmt`, `txl`): how
documents become streams and batches, the weighted loss summed over steps, scoring each test document as one
uncut stream, and generation unit by unit. A model behind it provides `run(tensors, steps)`, `step(...)`,
`empty_memory()`, `wte`, `ln_f`, `lm_head` and `vocab`.

Training FLOPs (`Adapter.train_flops`): 3 x the forward, which is each model's sum over the batch's steps
(`steps_forward_flops`, its formula in its model file) plus the output layer once, 2 N_targets d V on the
rows that have a target (every row but [EOS]); a model that checkpoints its steps (`recomputes_steps`) runs
the steps' forward once more in the backward, which counts too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tgbench.adapter import (
    TRAIN_FLOPS_PER_FORWARD,
    Adapter,
    Batch,
    Document,
    LossParts,
    Sampler,
    Vocab,
    batch_ends,
    matmul_flops,
)
from tgbench.data.split import cap_and_merge
from tgbench.models.gpt2 import cross_entropy

MIN_FRAGMENT_TOKENS = 3  # the data pipeline's fragment merge (DataConfig.min_fragment_tokens)


@dataclass
class StepInputs:
    """The packed rows of one sentence step and how they map onto the attention grid.

    Attributes:
        ids: (N,) token id of each row (rows of stream 0's sentence first, then stream 1's, ...).
        pos: (N,) position of each row inside its sentence.
        grid_index: (N,) flat index b * T + pos of each row in the (B, T) attention grid.
        stream: (N,) stream index b of each row (for mean pooling).
        bos_rows: (B,) row of each stream's [BOS]; eos_rows: (B,) row of its last token.
        n_streams: B (host int); max_len: T (host int).
        embedded: (N, d) token + position embeddings of the rows, when the caller looked them up
            for a whole batch at once (one embedding backward per batch instead of one per step).
    """

    ids: torch.Tensor
    pos: torch.Tensor
    grid_index: torch.Tensor
    stream: torch.Tensor
    bos_rows: torch.Tensor
    eos_rows: torch.Tensor
    n_streams: int
    max_len: int
    embedded: torch.Tensor | None = None

    def to_grid(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) packed rows -> (B, T, C) grid, zeros in the padding."""
        grid = x.new_zeros(self.n_streams * self.max_len, x.shape[-1]).index_copy(0, self.grid_index, x)
        return grid.view(self.n_streams, self.max_len, x.shape[-1])  # (B, T, C)

    def from_grid(self, y: torch.Tensor) -> torch.Tensor:
        """(B, T, C) grid -> (N, C) packed rows."""
        return gather_rows(y.reshape(-1, y.shape[-1]), self.grid_index)  # (N, C)

    def with_prefix(self, slots: int) -> StepInputs:
        """The layout with `slots` memory rows per stream placed before the stream's sentence.

        Memory rows come first in the packed order (stream-major, oldest slot first), then the
        sentence rows; in the (B, K + T) grid each stream's row is [memory..., sentence..., padding],
        so plain causal attention lets every sentence row see all of its stream's memory.
        """
        B, K = self.n_streams, slots
        width = K + self.max_len
        streams = torch.arange(B, device=self.pos.device)
        memory_index = (streams[:, None] * width + torch.arange(K, device=self.pos.device)[None]).reshape(-1)  # (B*K,)
        return StepInputs(
            ids=self.ids, pos=self.pos,
            grid_index=torch.cat([memory_index, self.stream * width + K + self.pos]),  # (B*K + N,)
            stream=torch.cat([streams.repeat_interleave(K), self.stream]),
            bos_rows=self.bos_rows + B * K, eos_rows=self.eos_rows + B * K,
            n_streams=B, max_len=width,
        )


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """`x.index_select(0, index)` for an index without repeats, with a cheaper backward.

    Autograd's generic `index_select` backward is an accumulating `index_add`, which on the CPU
    runs a multi-pass sort (several thread barriers per call) and dominated TG's step time
    whenever the machine was shared. Distinct indices need no accumulation: the gradient is a
    plain scatter (`index_copy_`). x: (R, C), index: (N,) -> (N, C).
    """
    return _UniqueGather.apply(x, index)


def step_inputs(tensors: dict[str, torch.Tensor], steps: list[tuple[int, int, int, int, int]],
                embedded: torch.Tensor) -> Iterator[StepInputs]:
    """The inputs of every sentence step of a batch of streams, each with its rows of `embedded`."""
    per_step = torch.split(embedded, [row1 - row0 for row0, row1, *_ in steps])
    for (row0, row1, s0, s1, T), emb in zip(steps, per_step, strict=True):
        yield StepInputs(
            ids=tensors["ids"][row0:row1], pos=tensors["pos"][row0:row1],
            grid_index=tensors["grid_index"][row0:row1], stream=tensors["stream"][row0:row1],
            bos_rows=tensors["bos_rows"][s0:s1], eos_rows=tensors["eos_rows"][s0:s1],
            n_streams=s1 - s0, max_len=T, embedded=emb,
        )


class _UniqueGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index)
        ctx.rows = x.shape[0]
        return x.index_select(0, index)  # (N, C)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (index,) = ctx.saved_tensors
        return grad.new_zeros(ctx.rows, grad.shape[-1]).index_copy_(0, index, grad), None  # (R, C)


def split_units(document: Document, vocab: Vocab, cap: int, eod_unit: bool = False) -> list[np.ndarray]:
    """A document's sentences as token arrays of at most `cap` tokens, ending with `[EOD]`.

    Sentences longer than `cap` are re-split exactly as the data pipeline enforces its own cap
    (`cap_and_merge`: the fewest near-equal fragments, fragments under 3 tokens merged into a
    neighbour), so a model cap below the corpus cap (the half-length ablation) follows the same rule
    on the same documents and tokens. `[EOD]` is appended to the last sentence and counts towards
    the cap (an overflow becomes the unit `[BOS] [EOD] [EOS]`); with `eod_unit` it is always its own
    unit. An empty document becomes the single unit `[BOS] [EOD] [EOS]`.
    """
    sentences = [np.asarray(s, dtype=np.int64).reshape(-1) for s in document]
    sentences = [s for s in sentences if len(s)]
    if any(len(s) > cap for s in sentences):
        capped, _, _ = cap_and_merge([s.tolist() for s in sentences], cap, MIN_FRAGMENT_TOKENS)
        sentences = [np.asarray(s, dtype=np.int64) for s in capped]
    eod = np.array([vocab.eod_id], dtype=np.int64)
    if eod_unit or not sentences or len(sentences[-1]) == cap:
        return [*sentences, eod]
    return [*sentences[:-1], np.append(sentences[-1], vocab.eod_id)]


def split_spans(document: Document, vocab: Vocab, span: int) -> list[np.ndarray]:
    """A document's concatenated tokens (plus `[EOD]`) cut into consecutive spans of `span` tokens."""
    pieces = [np.asarray(s, dtype=np.int64).reshape(-1) for s in document]
    tokens = np.concatenate([*pieces, np.array([vocab.eod_id], dtype=np.int64)])
    return [tokens[j : j + span] for j in range(0, len(tokens), span)]


def stream_layout(streams: Sequence[Sequence[np.ndarray]], vocab: Vocab) -> tuple[dict, list, dict]:
    """Lay a set of streams out step-major, as packed rows with all indices precomputed.

    Args:
        streams: Streams of sentence token arrays, sorted by sentence count, longest first.

    Returns:
        (tensors, steps, info): numpy arrays for `TG.run` plus "targets"; per step
        (row0, row1, sentence0, sentence1, T) host ints; info with counts and per-target metadata
        ("target_stream", "target_step") for scoring and tests.
    """
    counts = np.array([len(s) for s in streams], dtype=np.int64)
    assert np.all(counts[:-1] >= counts[1:]), "streams must be sorted by sentence count, longest first"
    n_steps = int(counts[0])
    alive = (counts[None, :] > np.arange(n_steps)[:, None]).sum(axis=1)  # (steps,) streams alive per step
    sentences = [streams[b][t] for t in range(n_steps) for b in range(alive[t])]
    n_sent = len(sentences)
    lengths = np.array([len(s) + 2 for s in sentences], dtype=np.int64)  # [BOS] + tokens + [EOS]
    row_start = np.concatenate([[0], np.cumsum(lengths)[:-1]])  # (n_sent,)
    total = int(lengths.sum())

    ids = np.empty(total, dtype=np.int64)
    is_bos = np.zeros(total, dtype=bool)
    is_eos = np.zeros(total, dtype=bool)
    is_bos[row_start] = True
    is_eos[row_start + lengths - 1] = True
    ids[is_bos] = vocab.bos_id
    ids[is_eos] = vocab.eos_id
    ids[~(is_bos | is_eos)] = np.concatenate(sentences) if total > 2 * n_sent else np.zeros(0, np.int64)

    sent_of_row = np.repeat(np.arange(n_sent), lengths)  # (total,)
    pos = np.arange(total) - row_start[sent_of_row]
    step_of_sent = np.repeat(np.arange(n_steps), alive)  # (n_sent,)
    step_sent0 = np.concatenate([[0], np.cumsum(alive)[:-1]])  # (steps,) first sentence of each step
    stream_of_sent = np.arange(n_sent) - step_sent0[step_of_sent]
    step_row0 = row_start[step_sent0]  # (steps,)
    step_T = np.maximum.reduceat(lengths, step_sent0)  # (steps,) longest sentence of each step
    row_step = step_of_sent[sent_of_row]
    stream = stream_of_sent[sent_of_row]
    grid_index = stream * step_T[row_step] + pos
    bos_rows = row_start - step_row0[step_of_sent]  # row inside its step
    eos_rows = bos_rows + lengths - 1

    target_rows = np.flatnonzero(~is_eos)  # every row but [EOS] predicts the next token
    targets = ids[target_rows + 1]
    step_row1 = np.append(step_row0[1:], total)
    step_sent1 = step_sent0 + alive
    steps = [(int(a), int(b), int(c), int(d), int(T))
             for a, b, c, d, T in zip(step_row0, step_row1, step_sent0, step_sent1, step_T, strict=True)]
    tensors = {
        "ids": ids, "pos": pos, "grid_index": grid_index, "stream": stream,
        "bos_rows": bos_rows, "eos_rows": eos_rows, "target_rows": target_rows, "targets": targets,
        "target_step": row_step[target_rows],
    }
    info = {
        "rows": total,
        "grid_slots": int((alive * step_T).sum()),
        "sentences": n_sent,
        "lexical_tokens": int((targets < vocab.base_size).sum()),
        "target_stream": stream[target_rows],
        "target_step": row_step[target_rows],
    }
    return tensors, steps, info


def stream_batch(streams: Sequence[Sequence[np.ndarray]], vocab: Vocab) -> Batch:
    tensors, steps, info = stream_layout(streams, vocab)
    return Batch(
        tensors=tensors,
        lexical_tokens=info["lexical_tokens"],
        sentences=info["sentences"],
        computed_slots=info["rows"],  # rows through every token-wise layer; padding exists only in attention
        meta={"steps": steps, "grid_slots": info["grid_slots"], "streams": len(streams),
              "target_stream": info["target_stream"], "target_step": info["target_step"]},
    )


class StreamAdapter(Adapter):
    """The adapter of a sentence-stream model; a subclass sets its config and `build` (and what its memory reads)."""

    sentence_boundaries = True

    # -- how documents become sentence units --------------------------------------------------
    @property
    def unit_tokens(self) -> int:
        """Most tokens in one sentence unit (sizes the position table; forces [EOS] in generation)."""
        return self.config.max_sentence_tokens

    def units(self, document: Document, vocab: Vocab) -> list[np.ndarray]:
        return split_units(document, vocab, self.config.max_sentence_tokens, self.config.eod_unit)

    def prompt_units(self, prompt: Document) -> list[np.ndarray]:
        """Prompt sentences split at the cap; the last unit is the one generation continues."""
        cap = self.unit_tokens
        units = []
        for sentence in prompt:
            tokens = np.asarray(sentence, dtype=np.int64).reshape(-1)
            units.extend(tokens[j : j + cap] for j in range(0, len(tokens), cap))
        return units

    def data_config(self, data):
        """The corpus is encoded at the model's sentence cap when that is the smaller one (half length)."""
        if data.max_sentence_tokens <= self.config.max_sentence_tokens:
            return data
        return dataclasses.replace(data, max_sentence_tokens=self.config.max_sentence_tokens)

    # -- training -----------------------------------------------------------------------------
    def streams(self, documents: Sequence[Document], vocab: Vocab, epoch: int) -> list[list[np.ndarray]]:
        """Training streams: each document cut into consecutive chunks of at most S sentences."""
        S = self.config.stream_sentences(epoch)
        out = []
        for doc in documents:
            units = self.units(doc, vocab)
            out.extend(units[i : i + S] for i in range(0, len(units), S))
        return out

    def batches(self, documents, vocab, *, batch_tokens, epoch, rng) -> list[Batch]:
        """Streams bucketed by sentence count: shuffle, sort by count, group to `batch_tokens` (`batch_ends`).

        Streams of a batch then have similar counts, so few steps run with a handful of streams;
        the batch order is shuffled so lengths do not drift through the epoch.
        """
        groups = self._stream_groups(documents, vocab, batch_tokens=batch_tokens, epoch=epoch, rng=rng)
        return [stream_batch(groups[i], vocab) for i in rng.permutation(len(groups))]

    def count_batches(self, documents, vocab, *, batch_tokens, epoch, rng) -> int:
        return len(self._stream_groups(documents, vocab, batch_tokens=batch_tokens, epoch=epoch, rng=rng))

    def _stream_groups(self, documents, vocab, *, batch_tokens, epoch, rng) -> list[list]:
        """The streams of each batch (before shuffling the batch order), without building tensors."""
        streams = self.streams(documents, vocab, epoch)
        if not streams:
            return []
        order = rng.permutation(len(streams))
        counts = np.array([len(streams[i]) for i in order])
        order = order[np.argsort(-counts, kind="stable")]  # longest first, random among equals
        lexical = [int(sum(int((u < vocab.base_size).sum()) for u in streams[i])) for i in order]
        # Whole streams (a stream's memory starts empty, so cutting one would change what the model sees), grouped
        # to batch_tokens lexical tokens per batch on average: the same number of steps as every other model.
        bounds = [0, *batch_ends(lexical, batch_tokens)]
        return [[streams[i] for i in order[a:b]] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def steps_forward_flops(self, steps: Sequence[tuple[int, int, int, int, int]]) -> float | None:
        """Forward FLOPs of a batch's steps (`stream_layout`'s (row0, row1, stream0, stream1, T) per step),
        everything but the output layer; None (the default): the model does not count them."""
        return None

    @property
    def recomputes_steps(self) -> bool:
        """Whether the backward runs every step's forward again (activation checkpointing per step)."""
        return False

    def train_flops(self, model: nn.Module, batch: Batch) -> float | None:
        """3 x (the steps' forward + the output layer on the target rows), plus the steps' forward once more
        when the backward recomputes it; see the module docstring."""
        steps = self.steps_forward_flops(batch.meta["steps"])
        if steps is None:
            return None
        head = matmul_flops(len(batch.tensors["targets"]), self.config.width, model.lm_head.weight.shape[0])
        return TRAIN_FLOPS_PER_FORWARD * (steps + head) + (steps if self.recomputes_steps else 0.0)

    def loss(self, model: nn.Module, batch: Batch, epoch: int) -> LossParts:
        t = batch.tensors
        out = model.run(t, batch.meta["steps"])
        logits = model.lm_head(out["hidden"])  # (N_targets, V)
        targets = t["targets"]  # (N_targets,)
        nll = cross_entropy(logits.float(), targets)  # (N_targets,)
        eos_weight = self.config.eos_weight(epoch)
        weights = torch.where(targets == model.vocab.eos_id, eos_weight, 1.0)  # (N_targets,) [EOD] keeps 1
        if self.config.loss_reduction == "steps":
            # Each sentence step's weighted mean, summed over the steps (paper section 3).
            n_steps = len(batch.meta["steps"])
            step_nll = nll.new_zeros(n_steps).index_add(0, t["target_step"], nll * weights)  # (steps,)
            step_weight = nll.new_zeros(n_steps).index_add(0, t["target_step"], weights)  # (steps,)
            loss = (step_nll / step_weight).sum()
        else:
            loss = (nll * weights).sum() / weights.sum()
        if out["penalty"] is not None:
            loss = loss + out["penalty"] / batch.sentences  # mean hinge over the batch's sentence vectors
        return LossParts(
            loss=loss,
            lexical_nll_sum=nll.masked_fill(targets >= model.vocab.base_size, 0.0).sum().detach(),
            lexical_tokens=batch.lexical_tokens,
        )

    # -- evaluation -----------------------------------------------------------------------------
    def score_batches(self, documents: Sequence[Document], vocab: Vocab) -> list[tuple[list[int], Batch]]:
        """Evaluation documents, each one uncut stream, sorted by length and grouped into batches."""
        units = [self.units(doc, vocab) for doc in documents]
        order = sorted(range(len(units)), key=lambda i: -len(units[i]))
        groups, current, rows = [], [], 0
        for i in order:
            n = sum(len(u) + 2 for u in units[i])
            if current and rows + n > self.config.score_batch_tokens:
                groups.append(current)
                current, rows = [], 0
            current.append(i)
            rows += n
        if current:
            groups.append(current)
        return [(g, stream_batch([units[i] for i in g], vocab)) for g in groups]

    def score(self, model: nn.Module, documents: Sequence[Document], vocab: Vocab) -> list[torch.Tensor]:
        device = next(model.parameters()).device
        result: list[torch.Tensor] = [torch.zeros(0)] * len(documents)
        with torch.no_grad():
            for doc_ids, batch in self.score_batches(documents, vocab):
                b = batch.to(device)
                hidden = model.run(b.tensors, b.meta["steps"])["hidden"]  # (N_targets, d)
                targets = b.tensors["targets"]
                lexical = targets < vocab.base_size
                hidden, targets = hidden[lexical], targets[lexical]
                logps = []
                for start in range(0, len(targets), 2048):  # bound the (rows, V) logits
                    logits = model.lm_head(hidden[start : start + 2048]).float()  # (n, V)
                    logps.append(torch.log_softmax(logits, dim=-1)
                                 .gather(1, targets[start : start + 2048, None])[:, 0])
                values = torch.cat(logps).cpu().numpy() if logps else np.zeros(0, np.float32)
                # Targets are step-major; a stable sort by stream restores each document's order.
                stream = batch.meta["target_stream"][batch.tensors["targets"] < vocab.base_size]
                order = np.argsort(stream, kind="stable")
                sizes = np.bincount(stream, minlength=len(doc_ids))
                for i, part in zip(doc_ids, np.split(values[order], np.cumsum(sizes)[:-1]), strict=True):
                    result[i] = torch.from_numpy(np.ascontiguousarray(part, dtype=np.float32))
        return result

    def _unit_step(self, tokens: list[int], vocab: Vocab, device: torch.device, complete: bool) -> StepInputs:
        ids = [vocab.bos_id, *tokens] + ([vocab.eos_id] if complete else [])
        n = len(ids)
        arange = torch.arange(n, device=device)
        return StepInputs(
            ids=torch.tensor(ids, device=device), pos=arange, grid_index=arange,
            stream=torch.zeros(n, dtype=torch.long, device=device),
            bos_rows=torch.zeros(1, dtype=torch.long, device=device),
            eos_rows=torch.full((1,), n - 1, dtype=torch.long, device=device),
            n_streams=1, max_len=n,
        )

    def generate(self, model, prompt, vocab, *, max_new_tokens, stop=()) -> list[int]:
        """Greedy continuation of the prompt's last sentence, sentence by sentence (see `sample`).

        Returns the new content ids, including a stop sequence that ended generation (as the GPT-2
        adapter does).
        """
        sentences = self._continue(model, prompt, vocab, max_new_tokens, stop, Sampler(), 0)
        return [t for sentence in sentences for t in sentence]

    def sample(self, model, prompt, vocab, *, max_new_tokens, sampler, max_sentences=0) -> list[list[int]]:
        """Generation as in training, one sentence at a time.

        Completed prompt sentences are written to memory; the current sentence is recomputed at
        every new token. A predicted `[EOS]` (or reaching the sentence cap) closes the sentence,
        writes its vector to memory and seeds the next one with it; `[EOD]` ends generation.
        """
        return self._continue(model, prompt, vocab, max_new_tokens, (), sampler, max_sentences)

    def _continue(self, model, prompt, vocab, max_new_tokens, stop, sampler: Sampler,
                  max_sentences: int) -> list[list[int]]:
        device = next(model.parameters()).device
        units = self.prompt_units(prompt)
        cap = self.unit_tokens
        current = [int(t) for t in units.pop()] if units and len(units[-1]) < cap else []
        new: list[int] = []
        sentences: list[list[int]] = [[]]  # the continuation of the prompt's last unit, then new units
        allowed = torch.zeros(model.wte.num_embeddings, dtype=torch.bool, device=device)
        allowed[: vocab.base_size] = True
        allowed[vocab.eos_id] = allowed[vocab.eod_id] = True
        closed = 0  # a model that predicts nothing but [EOS] must still stop
        with torch.no_grad():
            memory = model.empty_memory()
            for unit in units:
                memory = model.step(self._unit_step([int(t) for t in unit], vocab, device, True), memory)[2]
            while len(new) < max_new_tokens and closed <= max_new_tokens:
                if len(current) >= cap:
                    token = vocab.eos_id
                else:
                    x = model.step(self._unit_step(current, vocab, device, False), memory, write=False)[0]
                    logits = model.lm_head(model.ln_f(x[-1])).float()  # (V,)
                    token = sampler.pick(logits.masked_fill(~allowed, float("-inf")))
                if token == vocab.eod_id:
                    break
                if token == vocab.eos_id:
                    memory = model.step(self._unit_step(current, vocab, device, True), memory)[2]
                    current = []
                    closed += 1
                    if max_sentences and sum(map(bool, sentences)) >= max_sentences:
                        break
                    sentences.append([])
                    continue
                current.append(token)
                new.append(token)
                sentences[-1].append(token)
                if any(len(s) and new[-len(s) :] == [int(t) for t in s] for s in stop):
                    break
        return sentences

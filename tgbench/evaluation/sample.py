"""`tgbench sample`: text from a run's checkpoint, through the adapter's `sample` (see tgbench/adapter.py).

The prompt becomes a document the way lm-eval requests do (the run's splitter, tokenizer and sentence caps,
`tgbench.evaluation.scoring.text_sentences`). TG-family models generate sentence by sentence as in training: tokens
until a predicted [EOS], the sentence's vector written to memory and seeding the next sentence; GPT-2 +
boundaries ends sentences at its own [EOS] too. Those boundaries are the model's and are shown as they are.
GPT-2 marks no sentence ends, so its text is split for display by the run's splitter (and `--sentences` counts
those sentences). A plug-in adapter that does not implement `sample` gets the documented greedy fallback
(`Adapter.sample` calls `generate`), and the output says so.
"""


from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tgbench.adapter import Sampler
from tgbench.core.devices import autocast_context
from tgbench.core.errors import UserError
from tgbench.data.split import split_sentences
from tgbench.evaluation.loaded import load_run
from tgbench.evaluation.scoring import as_document, text_sentences


@dataclass
class SampleResult:
    """One sample and how it was made.

    Attributes:
        run_dir: The run.
        adapter: The run's adapter name.
        checkpoint: "best" or "latest", and `step` the step it was saved at.
        prompt: The prompt text.
        sentences: The generated text, one string per sentence; the first continues the prompt's last
            sentence when `continues_prompt` (it is then "" if the model closed that sentence at once).
        boundaries: "model" (the model's own [EOS]) or "splitter" (the run's sentence splitter, for models
            without boundaries).
        greedy_fallback: The adapter does not sample; its greedy `generate` was used whatever was asked.
        new_tokens: Content tokens generated.
        settings: temperature, top_k, seed, max_tokens, sentences as used.
    """

    run_dir: Path
    adapter: str
    checkpoint: str
    step: int | None
    prompt: str
    sentences: list[str]
    boundaries: str
    greedy_fallback: bool
    new_tokens: int
    continues_prompt: bool = True
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The whole continuation as one string."""
        return "".join(self.sentences)


def check_settings(max_tokens: int, temperature: float, top_k: int, sentences: int) -> None:
    if max_tokens <= 0:
        raise UserError(f"--max-tokens {max_tokens} must be positive", "give --max-tokens 100, for example")
    if not temperature >= 0:
        raise UserError(f"--temperature {temperature} must be 0 (greedy) or positive", "give --temperature 0.8")
    if top_k < 0:
        raise UserError(f"--top-k {top_k} must not be negative", "give --top-k 40, or 0 for every token")
    if sentences < 0:
        raise UserError(f"--sentences {sentences} must not be negative", "give --sentences 3, or 0 for no limit")


def sample_run(run_dir: Path, prompt: str, *, max_tokens: int = 100, temperature: float = 0.0, top_k: int = 0,
               seed: int = 0, sentences: int = 0, checkpoint: str = "best", device: str = "auto",
               run=None) -> SampleResult:
    """Generate from a run's checkpoint.

    Args:
        run_dir: A run directory.
        prompt: Text to continue ("" starts a document).
        max_tokens: Most content tokens to generate.
        temperature: 0 = greedy; else softmax(logits / temperature).
        top_k: Sample among the k most likely tokens (0: all).
        seed: Seeds the sampler's random stream (the same seed gives the same text).
        sentences: Stop after this many finished sentences (0: only max_tokens stops it).
        checkpoint: "best" (lowest validation loss) or "latest".
        device: Where the model runs.
        run: An already loaded run (`tgbench.training.rundir.load_run`), to sample it several times.
    """
    import torch

    check_settings(max_tokens, temperature, top_k, sentences)
    run = run or load_run(Path(run_dir), checkpoint=checkpoint, device=device)
    tokenizer, data = run.corpus.tokenizer, run.config.data
    document = as_document(text_sentences(prompt, tokenizer, data))
    sampler = Sampler.seeded(temperature, top_k, seed)
    torch.manual_seed(seed)
    model_device = next(run.model.parameters()).device
    run.model.eval()
    with torch.no_grad(), autocast_context(model_device, run.config.train.dtype):
        units = run.adapter.sample(run.model, document, run.vocab, max_new_tokens=max_tokens, sampler=sampler,
                                   max_sentences=sentences)
    fallback = not type(run.adapter).sampling_supported()
    new_tokens = sum(len(u) for u in units)
    if fallback or not run.adapter.sentence_boundaries:

        text = tokenizer.decode(units[0])
        pieces = _split_keeping_spaces(text, data.splitter, split_sentences)
        if sentences:
            pieces = pieces[:sentences]
        return SampleResult(run.run_dir, run.config.model, run.checkpoint, _step(run), prompt, pieces, "splitter",
                            fallback, new_tokens, continues_prompt=False, settings=_settings(
                                max_tokens, temperature, top_k, seed, sentences, fallback))
    return SampleResult(run.run_dir, run.config.model, run.checkpoint, _step(run), prompt,
                        [tokenizer.decode(u) for u in units], "model", fallback, new_tokens,
                        settings=_settings(max_tokens, temperature, top_k, seed, sentences, fallback))


def _split_keeping_spaces(text: str, splitter: str, split_sentences) -> list[str]:
    """`text` cut where the splitter's sentences start, every character kept (the pieces join back to `text`)."""
    starts, position = [], 0
    for piece in split_sentences(text, splitter):
        found = text.find(piece, position)
        if found >= 0:
            starts.append(found)
            position = found + len(piece)
    if not starts:
        return [text]
    bounds = [0, *starts[1:], len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _step(run) -> int | None:
    state = (run.sidecar or {}).get("state") or {}
    return state.get("step")


def _settings(max_tokens, temperature, top_k, seed, sentences, fallback) -> dict[str, Any]:
    return {"max_tokens": max_tokens, "temperature": 0.0 if fallback else temperature, "top_k": top_k,
            "seed": seed, "sentences": sentences}


def render(result: SampleResult) -> list[str]:
    """The lines `tgbench sample` prints: a header, the prompt, then one line per sentence."""
    how = ("greedy" if result.settings.get("temperature", 0) <= 0 else
           f"temperature {result.settings['temperature']:g}, top-k {result.settings.get('top_k') or 'all'}, "
           f"seed {result.settings.get('seed')}")
    step = f", step {result.step:,}" if result.step is not None else ""
    lines = [f"run {result.run_dir} ({result.adapter}, checkpoint {result.checkpoint}{step}): {how}, "
             f"{result.new_tokens} new tokens"]
    if result.greedy_fallback:
        lines.append(f"note: adapter '{result.adapter}' does not implement sample(); its greedy generate() was used "
                     "(temperature, top-k and --sentences do not apply)")
    lines.append("sentence boundaries: " + ("the model's own [EOS] predictions" if result.boundaries == "model"
                                            else "none from the model; split by the run's splitter"))
    lines.append(f"prompt | {result.prompt}")
    for index, sentence in enumerate(result.sentences):
        if index == 0 and result.continues_prompt:
            lines.append(f"  ...  | {sentence.strip() or '(the model ended the prompt sentence)'}")
        else:
            number = index if result.continues_prompt else index + 1
            lines.append(f"  [{number}]  | {sentence.strip()}")
    return lines

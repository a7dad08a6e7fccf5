"""A realistic synthetic grid directory for the report tests (no model is trained).

`write_synthetic_grid` writes the files a real grid leaves behind (grid.toml, run dirs with config.toml,
metrics.jsonl, summary.json, eval/ppl.json, eval/reversal.json, DONE / FAILED, results.csv, fits.json), with
losses that follow a joint power law L(N, D) = E + A / N^a + B / D^b. TG gets 1.38x effective parameters and
1.065x effective data, so it is slightly ahead, as in the paper. One run failed and one lacks its evaluation.
"""

from __future__ import annotations

import atexit
import functools
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tgbench.core.files import write_json, write_text
from tgbench.plan.config import to_toml
from tgbench.plan.expand import expand
from tgbench.plan.grid import GridConfig
from tgbench.results.table import write_results
from tgbench.training.rundir import RunDir

HOSTILE = "<script>alert(1)</script>"
FAILED_MESSAGE = "training loss became nan at step 120; the last good checkpoint is kept in checkpoints"

# effective (parameter, data) multipliers and a loss offset per adapter label
_EFFECT = {"tg": (1.3, 1.02, 0.0), "gpt2": (1.0, 1.0, 0.0), "gpt2-boundary": (1.0, 1.0, 0.012)}
_SPEED = {"tg": 0.6, "gpt2": 1.0, "gpt2-boundary": 0.97}  # relative training throughput


def _grid_dict(hostile: bool) -> dict:
    models = [
        {"adapter": "tg", "options": {"dropout": 0.1}},
        {"adapter": "gpt2", "options": {"context": 1024, "dropout": 0.1}},
        {"adapter": "gpt2-boundary", "options": {"context": 1024, "dropout": 0.1}},
    ]
    if hostile:
        models.append({"adapter": "tg", "variant": HOSTILE, "options": {"dropout": 0.1}})
    return {
        "name": "synthetic" if not hostile else f"synthetic {HOSTILE}",
        "description": "Synthetic grid for the report tests" + (f" {HOSTILE}" if hostile else ""),
        "design": "axes", "widths": [64, 128, 256], "layers": 4, "head_dim": 64,
        "budgets": [2_000_000, 4_000_000, 8_000_000], "seeds": [0, 1],
        "models": models,
        "data": {"corpus": "embedded" if not hostile else f"corpus {HOSTILE}", "tokenizer": "gpt2",
                 "splitter": "syntok"},
        "train": {"epochs": 1, "batch_tokens": 20000, "lr": 2.5e-4, "eval_tokens": 250000},
    }


def _loss(label: str, n_params: float, tokens: float, rng: np.random.Generator) -> float:
    n_mult, d_mult, offset = _EFFECT.get(label.split("/")[0], (1.0, 1.0, 0.0))
    clean = 1.7 + 40.0 / (n_mult * n_params) ** 0.3 + 70.0 / (d_mult * tokens) ** 0.25 + offset
    return float(clean + rng.normal(0.0, 0.006))


def _meta(n_params: int) -> dict:
    return {"tgbench": "0.1.0", "format": 1, "torch": "2.5.1+cu124", "numpy": "2.1.3", "python": "3.11.9",
            "platform": "Linux-6.1-x86_64", "device": "cuda", "device_name": "NVIDIA A40",
            "git_sha": "3f2c1a9e8b7d6c5f4e3a2b1c0d9e8f7a6b5c4d3e", "n_params": n_params}


def _write_run(grid_dir: Path, spec, rng: np.random.Generator, *, fail: bool, skip_eval: bool,
               day: int) -> None:
    run = RunDir(grid_dir / spec.run_id)
    base = spec.label.split("/")[0]
    n_params = int(12.5 * spec.layers * spec.width**2 * (1.02 if base == "tg" else 1.0))
    run.write_config(spec.config, _meta(n_params))
    loss = _loss(spec.label, n_params, spec.tokens, rng)
    steps = spec.tokens // spec.config.train.batch_tokens
    speed = _SPEED.get(base, 1.0) * 4.0e5 * (64 / spec.width) ** 0.7
    fractions = [0.25, 0.5, 0.75, 1.0] if not fail else [0.25, 0.5]
    for i, frac in enumerate(fractions):
        step, tokens = int(steps * frac), int(spec.tokens * frac)
        tps = speed * (1 + rng.normal(0, 0.02))
        train = {"step": step, "epoch": 0, "tokens": tokens, "lr": 2.5e-4 * (1 - 0.9 * frac),
                 "train_loss": loss + 2.4 * (1 - frac) ** 2 + 0.05,
                 "train_lexical_loss": loss + 2.4 * (1 - frac) ** 2,
                 "tokens_per_s": tps, "sentences_per_s": tps / 24.0,
                 "peak_memory_mb": 180.0 + spec.width * 3.1 * (1.4 if base == "tg" else 1.0)}
        if fail and i == len(fractions) - 1:
            train.update(train_loss=math.nan, error=FAILED_MESSAGE)
        run.append_metrics(train)
        if not (fail and i == len(fractions) - 1):
            val = loss + 0.02 + 2.6 * (1 - frac) ** 2
            run.append_metrics({"step": step, "epoch": 0, "tokens": tokens, "val_loss": val,
                                "val_ppl": math.exp(val), "val_tokens": 250000})
    if fail:
        run.mark("FAILED", FAILED_MESSAGE + "\n")
        return
    summary = {"adapter": spec.adapter, "n_params": n_params, "steps": steps, "tokens": spec.tokens,
               "best_val_loss": loss + 0.02, "best_val_ppl": math.exp(loss + 0.02),
               "final_train_lexical_loss": loss, "tokens_per_s": speed, "sentences_per_s": speed / 24.0,
               "peak_memory_mb": 180.0 + spec.width * 3.1 * (1.4 if base == "tg" else 1.0),
               "wall_s_this_session": spec.tokens / speed, "config_hash": spec.config.hash()}
    write_json(run.summary_path, summary)
    date = f"2025-03-{day:02d}T12:00:00+0000"
    if not skip_eval:
        ppl = {"lexical_loss": loss, "lexical_ppl": math.exp(loss), "word_perplexity": math.exp(loss * 1.31),
               "bits_per_byte": loss / math.log(2) / 4.3, "tokens": 241_530}
        write_json(run.eval_dir / "ppl.json", {"results": {"tg_ppl": {"alias": "tg_ppl", **ppl}},
                                                "versions": {"tg_ppl": 1}, "date_iso": date,
                                                "task": "tg_ppl", "tgbench_version": "0.1.0"})
        reversal = {}
        # TG must carry the context through its memory, so its reversed margin is smaller
        margins = {"normal": 2.2 - 0.3 * (base == "tg"), "reversed": 0.15 + 0.1 * (base != "tg")}
        for cond, margin in margins.items():
            target = 3.0 + 40.0 / spec.tokens**0.25 + rng.normal(0, 0.03)
            m = margin * (1 + 0.1 * math.log2(spec.tokens / 2e6)) + rng.normal(0, 0.03)
            values = {"target_nll": target, "distractor_nll": target + m, "margin": m,
                      "error_rate": 1.0 / (1.0 + math.exp(2.0 * m))}
            for key, value in values.items():
                reversal[f"{cond}_{key}"] = value
                reversal[f"{cond}_{key}_stderr"] = 0.02
        write_json(run.eval_dir / "reversal.json",
                   {"results": {"tg_reversal": {"alias": "tg_reversal", **reversal}},
                                                     "versions": {"tg_reversal": 1}, "date_iso": date,
                                                     "task": "tg_reversal", "tgbench_version": "0.1.0"})
    run.mark("DONE", date + "\n")


def write_synthetic_grid(path: Path, *, hostile: bool = False, fits: bool = True,
                         n_resamples: int = 30) -> Path:
    """Write a synthetic grid directory: tg, gpt2, gpt2-boundary on an axes design, 2 seeds.

    Args:
        path: The grid directory to create.
        hostile: Add HTML/script injection strings to the grid name, description, corpus and a model variant.
        fits: Also write fits.json (through tgbench.tasks.stats.fits, when importable).
        n_resamples: Bootstrap resamples of the fits (small keeps tests fast).

    Returns:
        The grid directory.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    raw = _grid_dict(hostile)
    grid = GridConfig.from_dict(raw)
    write_text(path / "grid.toml", to_toml(grid.to_dict()))
    rng = np.random.default_rng(0)
    specs = expand(grid)
    failed = next(s for s in specs if s.label == "gpt2-boundary" and s.tokens == 8_000_000 and s.seed == 1
                  and s.width == 256)
    no_eval = next(s for s in specs if s.label == "gpt2-boundary" and s.tokens == 2_000_000 and s.seed == 0)
    for day, spec in enumerate(specs):
        _write_run(path, spec, rng, fail=spec is failed, skip_eval=spec is no_eval, day=1 + day % 28)
    write_results(path)
    if fits:
        try:
            from tgbench.tasks.stats.fits import write_fits
        except ImportError:
            return path
        write_fits(path, n_resamples=n_resamples)
    return path


@functools.cache
def cached_grid() -> Path:
    """One synthetic grid (with fits) per test process; tests that change files copy it first."""
    root = Path(tempfile.mkdtemp(prefix="tgbench-report-"))
    atexit.register(shutil.rmtree, root, True)
    return write_synthetic_grid(root / "grid", n_resamples=10)


if __name__ == "__main__":  # python tests/report_fixture.py OUT_DIR: a grid to look at by hand
    import sys

    out = write_synthetic_grid(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/synthetic"))
    print(json.dumps({"grid": str(out)}))

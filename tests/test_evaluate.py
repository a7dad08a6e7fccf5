"""The lm-eval bridge and `tgbench eval`: requests answered through `adapter.score`, ppl results,
eval/TASK.json files and their skip rules."""

import json
import math

import numpy as np
import pytest
import torch
import typer
from corpora import write_family_corpus
from lm_eval.api.instance import Instance
from typer.testing import CliRunner

from tgbench import evaluate as ev
from tgbench import lmeval, scoring
from tgbench.cli.evaluate import eval_command
from tgbench.core.errors import UserError
from tgbench.evaluation.loaded import load_run
from tgbench.plan.config import DataConfig, RunConfig, TrainConfig
from tgbench.tasks.tg_ppl import task as ppl_task
from tgbench.tasks.tg_reversal import task as reversal_task
from tgbench.training.trainer import train

NAMES = ["Anna", "Tom", "Mary", "John", "Paul", "Emma", "Jack", "Lucy"]


def write_corpus(path, n_docs=40, seed=0):
    write_family_corpus(path, NAMES, seed=seed, n_docs=n_docs, per_doc=(3, 6))


def tiny_run(root, model="gpt2"):
    write_corpus(root / "wiki.txt")
    options = dict(width=32, layers=2, heads=4, dropout=0.0, attention_dropout=0.0)
    if model == "gpt2":
        options["context"] = 64
    config = RunConfig(
        model=model,
        model_options=options,
        data=DataConfig(corpus=str(root / "wiki.txt"), tokenizer="bpe-400", splitter="blingfire",
                        cache_dir=str(root / "cache"), valid_fraction=0.1, test_fraction=0.1),
        train=TrainConfig(epochs=1, batch_tokens=256, eval_tokens=500, lr=3e-3, device="cpu"),
    )
    return train(config, root / "run", progress=False).run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("evaluate"))


@pytest.fixture(scope="module")
def loaded(run_dir):
    return load_run(run_dir, device="cpu")


def instance(kind, args, i=0):
    return Instance(request_type=kind, doc={}, arguments=args, idx=i, metadata=("t", i, 1))


def test_loglikelihood_scores_the_continuation_after_the_context_sentences(loaded):
    tok, adapter = loaded.corpus.tokenizer, loaded.adapter
    lm = lmeval.TGBenchLM(loaded=loaded, progress=False)
    context, continuation = "The son of Anna is Tom. The father of Tom is", " Anna"
    (ll, greedy), (ll_empty, _) = lm.loglikelihood(
        [instance("loglikelihood", (context, continuation)), instance("loglikelihood", ("", "Tom went"), 1)])
    # By hand: two sentences, the continuation appended to the last one.
    first, query, name = tok.encode("The son of Anna is Tom."), tok.encode(" The father of Tom is"), tok.encode(" Anna")
    doc = [np.array(first), np.array(query + name)]
    expected = adapter.score(loaded.model, [doc], loaded.vocab)[0][-len(name):].sum().item()
    assert ll == pytest.approx(expected, abs=1e-5)
    assert greedy is False  # score gives no argmax (documented)
    whole = adapter.score(loaded.model, [[np.array(tok.encode("Tom went"))]], loaded.vocab)[0]
    assert ll_empty == pytest.approx(whole.sum().item(), abs=1e-5)


def test_continuation_tokens_are_the_difference_of_encodings_or_encoded_alone():
    class Chars:  # a tokenizer whose encoding of a joined text does not extend the context's
        def encode(self, text):
            return [ord(c) for c in text.replace("ab", "X")]

        def encode_batch(self, texts):
            return [self.encode(t) for t in texts]

    data = DataConfig(splitter="blingfire", max_sentence_tokens=64, min_fragment_tokens=1)
    doc, n = scoring.continuation_document("Hi there. Say a", "b", Chars(), data)
    assert n == 1 and doc[-1][-1] == ord("b")  # "a"+"b" merges to "X": continuation encoded alone
    doc, n = scoring.continuation_document("Hi there. Say", " cd", Chars(), data)
    assert n == 3 and [chr(c) for c in doc[-1][-3:]] == [" ", "c", "d"] and len(doc) == 2


def test_rolling_equals_score_of_the_corpus_document(loaded):
    lm = lmeval.TGBenchLM(loaded=loaded, progress=False, batch_size=2)
    documents = loaded.corpus.splits["test"].documents()[:3]
    texts = [ppl_task.document_text(doc, loaded.corpus.tokenizer) for doc in documents]
    rolled = lm.loglikelihood_rolling([instance("loglikelihood_rolling", (t,), i) for i, t in enumerate(texts)])
    direct = [s.double().sum().item() for s in loaded.adapter.score(loaded.model, documents, loaded.vocab)]
    assert rolled == pytest.approx(direct, abs=1e-4)


def test_generate_until_is_greedy_generation_cut_at_the_stop_string(loaded):
    lm = lmeval.TGBenchLM(loaded=loaded, progress=False)
    tok = loaded.corpus.tokenizer
    (free,) = lm.generate_until([instance("generate_until", ("The son of Anna is", {"max_gen_toks": 12}))])
    new = loaded.adapter.generate(loaded.model, [np.array(tok.encode("The son of Anna is"))], loaded.vocab,
                                  max_new_tokens=12)
    assert free == tok.decode(new)
    stop = free[len(free) // 2 :][:2] or "."
    (cut,) = lm.generate_until([instance("generate_until", ("The son of Anna is", {"until": [stop],
                                                                                   "max_gen_toks": 12}))])
    assert stop not in cut and free.startswith(cut)
    assert lmeval.cut_at("abc. def\n\nx", ["\n\n", "."]) == "abc"


def test_ppl_metrics_use_lm_eval_aggregations():
    metrics = ppl_task.ppl_metrics([-10.0, -20.0], [5, 10], [2, 4], [8, 16])
    assert metrics["lexical_loss"] == pytest.approx(2.0)
    assert metrics["lexical_ppl"] == pytest.approx(math.exp(2.0))
    assert metrics["word_perplexity"] == pytest.approx(math.exp(5.0))
    assert metrics["bits_per_byte"] == pytest.approx(30 / 24 / math.log(2))
    assert metrics["tokens"] == 15


def test_direct_ppl_equals_the_lm_eval_tg_ppl_task(loaded):
    direct, n, total = ppl_task.evaluate_ppl(loaded, progress=False)
    assert n == total == len(loaded.corpus.splits["test"])
    assert direct["tokens"] == loaded.corpus.splits["test"].lexical_tokens
    through = lmeval.lm_eval_task(loaded, "tg_ppl", progress=False)["results"]["tg_ppl"]
    for key in ("lexical_loss", "lexical_ppl", "word_perplexity", "bits_per_byte"):
        assert through[f"{key},none"] == pytest.approx(direct[key], rel=1e-6), key
    assert through["tokens,none"] == direct["tokens"]
    # Lexical loss agrees with the trainer's validation measure on the same split.
    documents = loaded.corpus.splits["test"].documents()
    scores = loaded.adapter.score(loaded.model, documents, loaded.vocab)
    assert direct["lexical_loss"] == pytest.approx(-sum(s.sum().item() for s in scores) / direct["tokens"],
                                                   rel=1e-5)


def test_eval_writes_results_and_skips_when_current(run_dir, tmp_path):
    status, path, results = ev.eval_run(run_dir, "ppl", device="cpu", progress=False)
    assert status == "done" and path == run_dir / "eval" / "ppl.json"
    saved = json.loads(path.read_text())
    for key in ("lexical_loss", "lexical_ppl", "word_perplexity", "bits_per_byte", "tokens"):
        assert isinstance(saved["results"]["ppl"][key], (int, float))
    assert saved["versions"] == {"ppl": ppl_task.PerplexityTask.version}
    schema = {m["name"]: m for m in saved["metrics"]}
    assert schema["lexical_loss"]["higher_is_better"] is False and schema["tokens"]["higher_is_better"] is None
    sidecar = json.loads((run_dir / "checkpoints" / "best.json").read_text())
    assert saved["checkpoint"] == {"name": "best", "step": sidecar["state"]["step"], "sha256": sidecar["sha256"]}
    assert {"configs", "n_samples", "date"} <= set(saved)

    assert ev.eval_run(run_dir, "tg_ppl", device="cpu", progress=False)[0] == "skipped"  # alias, same file
    assert ev.eval_run(run_dir, "ppl", device="cpu", force=True, progress=False)[0] == "done"
    assert ev.eval_run(run_dir, "ppl", device="cpu", limit=2, progress=False)[0] == "done"  # limit changed
    saved = json.loads(path.read_text())
    saved["checkpoint"]["sha256"] = "0" * 64  # as if the checkpoint had been retrained
    path.write_text(json.dumps(saved))
    assert ev.eval_run(run_dir, "ppl", device="cpu", limit=2, progress=False)[0] == "done"
    saved["checkpoint"]["sha256"] = json.loads(path.read_text())["checkpoint"]["sha256"]
    saved["versions"] = {"ppl": 0}  # as if written by an older version of the task
    path.write_text(json.dumps(saved))
    assert ev.eval_run(run_dir, "ppl", device="cpu", limit=2, progress=False)[0] == "done"


def test_eval_command_over_a_grid_writes_reversal_results(run_dir, tmp_path):
    app = typer.Typer()
    app.command()(eval_command)
    grid = tmp_path / "grid"
    grid.mkdir()
    (grid / "run-a").symlink_to(run_dir, target_is_directory=True)
    (grid / "unfinished").mkdir()
    (grid / "unfinished" / "config.toml").write_text("")
    result = CliRunner().invoke(app, ["--task", "reversal", "--runs", str(grid), "--limit", "20",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    saved = json.loads((run_dir / "eval" / "reversal.json").read_text())
    metrics = saved["results"]["reversal"]
    for cond in ("normal", "reversed"):
        for name in ("target_nll", "distractor_nll", "margin", "error_rate"):
            assert math.isfinite(metrics[f"{cond}_{name}"]) and math.isfinite(metrics[f"{cond}_{name}_stderr"])
        assert metrics[f"{cond}_margin"] == pytest.approx(
            metrics[f"{cond}_distractor_nll"] - metrics[f"{cond}_target_nll"])
    assert saved["reversal"]["pairs"] == 20 and saved["n_samples"]["reversal"]["effective"] == 20
    rows = (run_dir / "eval" / "reversal_items.csv").read_text().splitlines()
    assert len(rows) == 21 and rows[0].startswith("pair,father,son,normal_target_logprob")
    again = CliRunner().invoke(app, ["--task", "tg_reversal", "--runs", str(grid), "--limit", "20"])
    assert again.exit_code == 0 and "skipped" in again.output
    both = CliRunner().invoke(app, ["--task", "ppl", "--run", str(run_dir), "--runs", str(grid)])
    assert isinstance(both.exception, UserError)


def test_any_lm_eval_task_yaml_runs_and_unknown_names_are_explained(run_dir, tmp_path, monkeypatch):
    # lm-eval's ~14,000 built-in YAMLs take tens of seconds to index: leave them out here.
    local_only = lmeval.task_manager
    monkeypatch.setattr(lmeval, "task_manager", lambda paths=(), defaults=False, metadata=None:
                        local_only(paths, False, metadata))
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in (
        "The son of Anna is Tom.", "Mary went to the market with John. They came back.")) + "\n")
    (tmp_path / "my_rolling.yaml").write_text(
        "task: my_rolling\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
        f"    test: {tmp_path / 'docs.jsonl'}\ntest_split: test\noutput_type: loglikelihood_rolling\n"
        'doc_to_text: ""\ndoc_to_target: "{{text}}"\nmetric_list:\n  - metric: word_perplexity\n'
        "metadata:\n  version: 3\n")
    status, path, results = ev.eval_run(run_dir, str(tmp_path / "my_rolling.yaml"), device="cpu", progress=False)
    assert status == "done" and path.name == "my_rolling.json"
    assert results["versions"] == {"my_rolling": 3} and results["results"]["my_rolling"]["word_perplexity,none"] > 1
    status, _, _ = ev.eval_run(run_dir, "my_rolling", include_paths=[tmp_path], device="cpu", progress=False)
    assert status == "skipped"
    with pytest.raises(UserError, match="did you mean 'tg_reversal'"):
        lmeval.resolve_task("tg_reversl")


def test_lm_eval_cli_adds_the_task_folder_and_hands_over(monkeypatch):
    import sys

    seen = []
    monkeypatch.setattr(sys, "argv", ["tgbench-lm-eval"])
    lmeval.lm_eval_cli(["--model", "tgbench", "--tasks", "tg_reversal"], run=lambda: seen.append(list(sys.argv)))
    # tgbench's task folder, and tgbench's batching and device instead of lm-eval's 1 and cuda:0
    assert seen[0][-6:] == ["--include_path", str(lmeval.TASKS_DIR), "--batch_size", "32", "--device", "auto"]
    lmeval.lm_eval_cli(["--model", "tgbench", "--include_path", "x", "-b", "8", "--device=cpu"],
                       run=lambda: seen.append(list(sys.argv)))
    assert seen[1][1:] == ["--model", "tgbench", "--include_path", "x", "-b", "8", "--device=cpu"]  # given: kept
    from lm_eval.api.registry import get_model

    assert get_model("tgbench") is lmeval.TGBenchLM


def test_task_yaml_versions_match_the_direct_tasks():
    from lm_eval.tasks._yaml_loader import load_yaml

    from tgbench.registry import TASK_ALIASES, get_task

    assert set(TASK_ALIASES) == set(lmeval.local_lm_eval_tasks())
    for name, alias in TASK_ALIASES.items():
        yaml = load_yaml(lmeval.TASKS_DIR / name / f"{name}.yaml", resolve_func=False)
        assert yaml["metadata"]["version"] == get_task(alias).version
        # the twin's metrics and directions are the direct task's
        declared = {m.name: m.higher_is_better for m in lmeval.config_metrics(yaml)}
        direct = {m.name: m.higher_is_better for m in get_task(alias).metrics}
        assert {k: v for k, v in declared.items() if k in direct and direct[k] is not None} == \
            {k: v for k, v in direct.items() if k in declared and v is not None}


@pytest.mark.slow
def test_tg_runs_through_the_same_paths(tmp_path):
    pytest.importorskip("tgbench.models.tg")
    run_dir = tiny_run(tmp_path, model="tg")
    run = load_run(run_dir, device="cpu")
    direct, _, _ = ppl_task.evaluate_ppl(run, progress=False)
    through = lmeval.lm_eval_task(run, "tg_ppl", progress=False)["results"]["tg_ppl"]
    assert through["lexical_loss,none"] == pytest.approx(direct["lexical_loss"], rel=1e-5)
    metrics, rows, _ = reversal_task.evaluate_reversal(run, limit=10, progress=False)
    assert len(rows) == 10 and all(math.isfinite(v) for v in metrics.values())
    assert torch.isfinite(torch.tensor(direct["lexical_loss"]))


def test_model_args_device_wins_over_the_lm_eval_cli_default(run_dir):
    from tgbench.evaluation.lmeval import TGBenchLM

    lm = TGBenchLM.create_from_arg_obj({"run": str(run_dir), "device": "cpu"}, {"device": "cuda:0", "batch_size": 4})
    assert next(lm.run.model.parameters()).device.type == "cpu"

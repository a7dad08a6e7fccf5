"""The father/son reversal probe: items, names, pairs, metrics, and both ways of running it."""

import math
import re

import pytest
from corpora import write_family_corpus

from tgbench import lmeval as ev
from tgbench.core.errors import UserError
from tgbench.tasks.tg_reversal import task as reversal_task

CONTEXT = re.compile(r"^The son of (\w+) is (\w+)\.$")
NORMAL = re.compile(r"^ The son of (\w+) is$")
REVERSED = re.compile(r"^ The father of (\w+) is$")


def test_items_state_the_relation_and_its_inverse():
    pairs = reversal_task.sample_pairs(["Anna", "Tom", "Mary", "John"], 12, seed=1)
    items = reversal_task.reversal_items(pairs)
    assert len(items) == 24 and [i.condition for i in items[:2]] == ["normal", "reversed"]
    for item in items:
        father, son = CONTEXT.match(item.context).groups()  # parse the text, not the fields
        doc = item.as_doc()
        assert doc["text"] == item.context + item.query and doc["choices"][doc["label"]] == item.target
        if item.condition == "normal":
            (asked,) = NORMAL.match(item.query).groups()
            assert asked == father and item.target == son and item.distractor == father
        else:
            (asked,) = REVERSED.match(item.query).groups()
            assert asked == son and item.target == father and item.distractor == son


def test_single_token_names_keep_only_names_that_are_one_id():
    from tgbench.data.tokenizer import gpt2_tokenizer

    tok = gpt2_tokenizer()
    names = reversal_task.load_names()
    assert len(names) >= 600 and len(set(names)) == len(names)
    kept = reversal_task.single_token_names(tok)
    assert len(kept) >= 400 and all(len(tok.encode(" " + n)) == 1 for n in kept)
    dropped = set(names) - set(kept)
    assert dropped and all(len(tok.encode(" " + n)) > 1 for n in dropped)
    assert reversal_task.single_token_names(tok, ["Anna", "Xqzzyvar"]) == ["Anna"]


def test_pairs_are_deterministic_distinct_and_prefix_stable():
    names = [f"N{i}" for i in range(30)]
    pairs = reversal_task.sample_pairs(names, 200, seed=3)
    assert pairs == reversal_task.sample_pairs(names, 200, seed=3)
    assert pairs != reversal_task.sample_pairs(names, 200, seed=4)
    assert all(f != s for f, s in pairs) and len(set(pairs)) == 200
    assert reversal_task.sample_pairs(names, 50, seed=3) == pairs[:50]
    few = reversal_task.sample_pairs(["A", "B", "C"], 10, seed=0)  # only 6 ordered pairs exist
    assert len(few) == 10 and len(set(few[:6])) == 6 and all(f != s for f, s in few)
    with pytest.raises(UserError, match="at least 2 names"):
        reversal_task.sample_pairs(["A"], 5)


def test_metrics_on_a_hand_built_case():
    # Target/distractor log-probs chosen so the margins are +1, -1, +3 (normal) and -2, -2, -2 (reversed).
    rows = [
        {"normal_target_logprob": -1.0, "normal_distractor_logprob": -2.0,
         "reversed_target_logprob": -4.0, "reversed_distractor_logprob": -2.0},
        {"normal_target_logprob": -3.0, "normal_distractor_logprob": -2.0,
         "reversed_target_logprob": -3.0, "reversed_distractor_logprob": -1.0},
        {"normal_target_logprob": -1.0, "normal_distractor_logprob": -4.0,
         "reversed_target_logprob": -2.5, "reversed_distractor_logprob": -0.5},
    ]
    m = reversal_task.reversal_metrics(rows)
    assert m["normal_target_nll"] == pytest.approx(5 / 3)
    assert m["normal_distractor_nll"] == pytest.approx(8 / 3)
    assert m["normal_margin"] == pytest.approx(1.0)
    assert m["normal_error_rate"] == pytest.approx(1 / 3)
    assert m["normal_margin_stderr"] == pytest.approx(2.0 / math.sqrt(3))  # sample sd of (1,-1,3) is 2
    assert m["normal_error_rate_stderr"] == pytest.approx(math.sqrt(1 / 3) / math.sqrt(3))
    assert m["reversed_margin"] == pytest.approx(-2.0) and m["reversed_margin_stderr"] == pytest.approx(0.0)
    assert m["reversed_error_rate"] == 1.0


def test_lm_eval_process_results_report_only_the_rows_condition():
    import importlib.util

    spec = importlib.util.spec_from_file_location("tg_reversal_utils", ev.TASKS_DIR / "tg_reversal" / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    normal = utils.process_results({"condition": "normal"}, [(-1.0, False), (-2.0, False)])
    reverse = utils.process_results({"condition": "reversed"}, [(-3.0, False), (-1.0, False)])
    assert normal == {"normal_target_nll": 1.0, "normal_distractor_nll": 2.0, "normal_margin": 1.0,
                      "normal_error_rate": 0.0}
    assert reverse["reversed_margin"] == -2.0 and reverse["reversed_error_rate"] == 1.0 and len(reverse) == 4


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """A tiny GPT-2 run on a corpus about a few people (so a small BPE learns their names)."""
    from tgbench.evaluation.loaded import load_run
    from tgbench.plan.config import DataConfig, RunConfig, TrainConfig
    from tgbench.training.trainer import train

    root = tmp_path_factory.mktemp("reversal")
    write_family_corpus(root / "wiki.txt", ["Anna", "Tom", "Mary", "John", "Paul", "Emma"])
    config = RunConfig(
        model="gpt2", model_options=dict(width=32, layers=2, heads=4, context=64, dropout=0.0, attention_dropout=0.0),
        data=DataConfig(corpus=str(root / "wiki.txt"), tokenizer="bpe-400", splitter="blingfire",
                        cache_dir=str(root / "cache"), valid_fraction=0.1, test_fraction=0.1),
        train=TrainConfig(epochs=1, batch_tokens=256, eval_tokens=500, lr=3e-3, device="cpu"),
    )
    return load_run(train(config, root / "run", progress=False).run_dir, device="cpu")


def test_documents_put_the_query_after_the_context_sentence(loaded):
    tok = loaded.corpus.tokenizer
    item = reversal_task.reversal_items([("Anna", "Tom")])[1]
    target, distractor = reversal_task.reversal_documents(item, tok)
    assert len(target) == 2 and tok.decode(target[0]) == "The son of Anna is Tom."
    assert tok.decode(target[1]) == " The father of Tom is Anna"
    assert tok.decode(distractor[1]) == " The father of Tom is Tom"


def test_direct_probe_equals_the_lm_eval_task(loaded):
    metrics, rows, counts = reversal_task.evaluate_reversal(loaded, limit=15, progress=False)
    assert counts["pairs"] == len(rows) == 15 and counts["usable_names"] >= 2
    names = set(reversal_task.single_token_names(loaded.corpus.tokenizer))
    assert all(r["father"] in names and r["son"] in names and r["father"] != r["son"] for r in rows)
    through = ev.lm_eval_task(loaded, "tg_reversal", limit=30, progress=False)["results"]["tg_reversal"]
    for key, value in metrics.items():
        assert through[f"{key},none"] == pytest.approx(value, rel=1e-5, abs=1e-6), key

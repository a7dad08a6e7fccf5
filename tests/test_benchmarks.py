"""Smoke tests of the benchmarks: each runs on toy sizes and ends with a JSON line of its figures.

No timing assertions: the figures of a quick run mean nothing; only their presence and sanity do.
"""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import memory, padding, score_throughput, train_throughput
from tgbench.cli.bench import BENCHMARKS, run_benchmarks
from tgbench.core.errors import UserError


def last_json(capsys) -> dict:
    lines = [line for line in capsys.readouterr().out.strip().splitlines() if line.strip()]
    return json.loads(lines[-1])


def test_padding_quick_prints_exact_counts(capsys):
    result = padding.main(quick=True)
    printed = last_json(capsys)
    assert printed["tg_padding_efficiency"] == pytest.approx(result["tg_padding_efficiency"])
    # Packed rows only add [BOS]/[EOS] per sentence and [EOD] per document; the grid adds padding;
    # naive 66-slot padding is worst.
    overhead = 2 * printed["tg_sentences"] + printed["documents"]
    assert printed["tg_computed_slots"] == printed["tg_lexical_tokens"] + overhead
    assert 0 < printed["naive_66_efficiency"] < printed["tg_grid_efficiency"] <= printed["tg_padding_efficiency"] < 1


def test_score_throughput_quick(capsys):
    score_throughput.main(quick=True, max_tokens=200)
    printed = last_json(capsys)
    for key in ("tokens_per_s_tg", "tokens_per_s_gpt2", "ratio_tg_vs_gpt2"):
        assert math.isfinite(printed[key]) and printed[key] > 0
    assert printed["ratio_tg_vs_gpt2"] == pytest.approx(printed["tokens_per_s_tg"] / printed["tokens_per_s_gpt2"])


def test_memory_child_runs_a_step_on_s_sentence_streams():
    # In this (shared, long-lived) process the RSS figure means nothing; main() runs children in fresh ones.
    record = memory.child(quick=True, device="cpu", S=4, n_streams=2, ckpt=True)
    assert record["sentences"] == 8 and record["streams"] == 2 and record["lexical_tokens"] > 0
    assert math.isfinite(record["peak_mb"])


def test_sentence_streams_have_exactly_s_sentences():
    from benchmarks.common import load_setup, make_adapter

    setup = load_setup(quick=True)
    adapter = make_adapter("tg", setup.options["tg"])
    streams = memory.sentence_streams(setup.train, adapter, setup.vocab, S=7, n_streams=3)
    assert [len(s) for s in streams] == [7, 7, 7]
    with pytest.raises(ValueError):
        memory.sentence_streams(setup.train[:1], adapter, setup.vocab, S=50, n_streams=3)


def test_unknown_benchmark_name_suggests_the_closest():
    with pytest.raises(UserError) as err:
        run_benchmarks("paddng", quick=True)
    assert "padding" in str(err.value)


def test_bench_runs_one_benchmark_by_name(capsys):
    results = run_benchmarks("padding", quick=True)
    assert list(results) == ["padding"]
    assert last_json(capsys)["benchmark"] == "padding"
    assert set(BENCHMARKS) == {"train_throughput", "score_throughput", "padding", "memory", "data_pipeline", "compile",
                               "grid_throughput"}


@pytest.mark.slow
def test_train_throughput_quick_reports_named_ratios(capsys):
    train_throughput.main(quick=True, repeats=1, steps=1)
    printed = last_json(capsys)
    for key in ("ratio_gpt2_vs_transformers", "ratio_tg_vs_gpt2", "tg_padding_efficiency", "matmul_peak_flops",
                "flops_fraction_tg", "tokens_per_s_transformers", "ratio_rmt_vs_gpt2", "ratio_txl_vs_gpt2"):
        assert math.isfinite(printed[key]) and printed[key] > 0, key
    assert printed["ratio_tg_vs_gpt2"] == pytest.approx(printed["tokens_per_s_tg"] / printed["tokens_per_s_gpt2"])
    assert printed["transformers_attn_implementation"] == "sdpa"
    # TG's achieved FLOP/s against GPT-2's: the tokens/s ratio is the FLOP/s ratio over the FLOPs-per-token ratio
    assert printed["ratio_tg_vs_gpt2"] == pytest.approx(
        printed["ratio_tg_vs_gpt2_flops_per_s"] / printed["ratio_tg_vs_gpt2_flops_per_token"])
    assert printed["flops_per_s_tg"] == pytest.approx(printed["flops_fraction_tg"] * printed["matmul_peak_flops"])
    # getrusage of the timed steps, per contender, and of the whole process
    for name in ("tg", "gpt2"):
        assert 0 <= printed[f"system_fraction_{name}"] <= 1 and printed[f"minor_page_faults_per_step_{name}"] >= 0
    assert printed["cpu_usage_process"]["cpu_user_s"] > 0 and printed["malloc"] in ("kept", "default")
    assert printed["batch_tokens"] == 256  # quick mode's batch; otherwise the preset's (`--preset`)


@pytest.mark.slow
def test_memory_quick_runs_every_configuration(capsys):
    memory.main(quick=True, lengths=(3, 6))
    printed = last_json(capsys)
    assert {(r["S"], r["checkpointing"]) for r in printed["records"]} == {(3, False), (3, True), (6, False), (6, True)}
    assert all(r["peak_mb"] > 0 for r in printed["records"])
    assert math.isfinite(printed["ratio_ckpt_longest_vs_shortest"])


def test_fused_cross_entropy_matches_torch_values_and_gradients():
    import torch
    import torch.nn.functional as F

    from tgbench.models.gpt2 import cross_entropy

    torch.manual_seed(0)
    logits = (3 * torch.randn(6, 11, dtype=torch.float64)).requires_grad_()
    targets = torch.tensor([0, 10, -1, 4, 4, -1])
    weights = torch.rand(6, dtype=torch.float64)
    ours = cross_entropy(logits, targets, ignore_index=-1)
    (ours * weights).sum().backward()
    ours_grad, logits.grad = logits.grad, None
    reference = F.cross_entropy(logits, targets, ignore_index=-1, reduction="none")
    (reference * weights).sum().backward()
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(ours_grad, logits.grad)
    assert ours[2] == 0 and ours[5] == 0 and torch.all(ours_grad[[2, 5]] == 0)  # ignored rows


def test_data_pipeline_quick_encodes_its_generated_corpus_alike_serially_and_in_parallel(capsys):
    from benchmarks import data_pipeline

    data_pipeline.main(quick=True)
    printed = last_json(capsys)
    assert printed["benchmark"] == "data_pipeline" and printed["outputs_identical"] is True
    assert printed["corpus_mb"] >= data_pipeline.QUICK_MB and printed["corpus_mb_per_split"]["valid"] > 0
    serial, parallel = printed["records"]
    assert serial["workers"] == 1 and serial["lexical_tokens"] == parallel["lexical_tokens"] > 0
    for key in ("mb_per_s_serial", "mb_per_s_parallel", "speedup_parallel_vs_serial"):
        assert math.isfinite(printed[key]) and printed[key] > 0, key
    assert printed["bpe_training"]["seconds"] > 0


@pytest.mark.slow
def test_grid_throughput_quick_trains_the_grid_both_ways_and_prints_the_ratio(capsys):
    from benchmarks import grid_throughput

    grid_throughput.main(quick=True)
    printed = last_json(capsys)
    runs = len(printed["grid"]["models"]) * len(printed["grid"]["seeds"])  # the demo's first budget
    assert printed["benchmark"] == "grid_throughput" and printed["grid"]["runs"] == runs >= 4
    for name in ("jobs1", "jobs2"):
        (sample,) = printed["samples"][name]
        assert sample["jobs"] == int(name[-1]) and sample["done"] == sample["runs"] == runs
        assert sample["training_tokens"] > 0 and all(m > 0 for m in sample["run_peak_memory_mb"])
    assert printed["samples"]["jobs1"][0]["training_tokens"] == printed["samples"]["jobs2"][0]["training_tokens"]
    assert printed["ratio_jobs2_vs_jobs1"] == pytest.approx(printed["wall_s_jobs1"] / printed["wall_s_jobs2"])
    for name in ("jobs1", "jobs2"):  # every run's getrusage, from its own summary.json (jobs2: its worker's)
        usage = printed["samples"][name][0]["cpu_usage"]
        assert usage["runs"] == runs and usage["cpu_user_s"] > 0 and usage["minor_page_faults"] > 0
        assert 0 <= printed[f"system_fraction_{name}"] <= 1
    check = printed["trainer_vs_benchmark"]  # the benchmark's step at the demo preset against the jobs1 runs
    assert check["preset"] == "demo" and isinstance(check["within_10_percent"], bool)
    for model in ("tg", "gpt2"):
        assert check[f"ratio_trainer_vs_benchmark_{model}"] == pytest.approx(
            check[f"trainer_tokens_per_s_{model}"] / check[f"benchmark_tokens_per_s_{model}"])


@pytest.mark.slow
def test_gpu_check_quick_runs_on_the_cpu_with_the_sentence_loop_profile(capsys):
    from benchmarks import gpu_check

    gpu_check.main(quick=True, steps=2)
    printed = last_json(capsys)
    assert printed["device"] == "cpu" and printed["parity_ok"] is True
    loop = printed["tg"]["sentence_loop"]
    assert loop["timed_on"] == "cpu" and loop["sentence_steps_per_batch"] >= 2
    assert loop["ms_per_sentence_step"] > 0 and 0 < loop["share_outside_matmul"] < 1
    assert 0 <= loop["share_attention"] < 1


@pytest.mark.slow
def test_profile_step_quick_splits_each_step_into_categories(capsys):
    from benchmarks import profile_step

    profile_step.main(quick=True, steps=1, threads=(1,))
    printed = last_json(capsys)
    for name in ("tg_threads1", "gpt2_threads1"):
        shares = printed["profiles"][name]
        assert sum(v for k, v in shares.items() if k != "ms_per_step") == pytest.approx(1.0)
        assert shares["matmul"] > 0 and shares["ms_per_step"] > 0

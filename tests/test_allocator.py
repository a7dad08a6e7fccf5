"""keep_freed_memory: glibc's mallopt with the intended settings, nothing when disabled; the usage figures."""

from __future__ import annotations

import json
import resource

import pytest

from tgbench.training import allocator
from tgbench.training.allocator import (
    GIB,
    M_MMAP_THRESHOLD,
    M_TOP_PAD,
    M_TRIM_THRESHOLD,
    cpu_usage,
    keep_freed_memory,
    runs_usage,
    usage_line,
    usage_since,
)


class FakeLibc:
    """Records mallopt calls; answers `result` (glibc: 1 on success, 0 on failure)."""

    def __init__(self, result: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.result = result

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.result


def test_sets_mmap_and_trim_thresholds_to_1_gib_and_the_top_pad_to_64_mib(monkeypatch):
    monkeypatch.delenv(allocator.ENV, raising=False)
    libc = FakeLibc()
    assert keep_freed_memory(libc) is True
    assert libc.calls == [(M_MMAP_THRESHOLD, GIB), (M_TRIM_THRESHOLD, GIB), (M_TOP_PAD, 64 << 20)]
    assert (M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD) == (-1, -2, -3)  # glibc's malloc.h


def test_disabled_by_the_environment_and_reports_a_refusal(monkeypatch):
    monkeypatch.setenv(allocator.ENV, "default")
    libc = FakeLibc()
    assert keep_freed_memory(libc) is False and libc.calls == []
    monkeypatch.delenv(allocator.ENV)
    assert keep_freed_memory(FakeLibc(result=0)) is False


def test_on_this_glibc_the_real_call_succeeds(monkeypatch):
    monkeypatch.delenv(allocator.ENV, raising=False)
    libc = allocator._libc()
    if libc is None:
        pytest.skip("not glibc")
    assert keep_freed_memory(libc) is True


def test_usage_since_counts_this_process_and_the_kernel_share():
    start = cpu_usage()
    buffers = [bytearray(1 << 20) for _ in range(64)]  # touching 64 MiB faults pages in
    del buffers
    sum(i * i for i in range(200_000))
    spent = usage_since(start)
    assert spent["cpu_user_s"] + spent["cpu_system_s"] > 0 and spent["minor_page_faults"] >= 0
    assert isinstance(spent["minor_page_faults"], int)
    assert set(usage_since(cpu_usage(resource.RUSAGE_CHILDREN), resource.RUSAGE_CHILDREN)) == set(spent)
    assert usage_line({"cpu_user_s": 98.0, "cpu_system_s": 2.0, "minor_page_faults": 1234567}) == \
        "CPU 98.0 s user + 2.0 s system (2.0% in the kernel), 1,234,567 minor page faults"


def test_runs_usage_sums_the_runs_summaries_and_skips_older_ones(tmp_path):
    for name, fields in {"a": {"cpu_user_s": 10.0, "cpu_system_s": 1.0, "minor_page_faults": 100},
                         "tune/b": {"cpu_user_s": 5.0, "cpu_system_s": 0.5, "minor_page_faults": 50},
                         "old": {"tokens_per_s": 1.0}}.items():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "summary.json").write_text(json.dumps(fields))
    assert runs_usage(tmp_path) == {"cpu_user_s": 15.0, "cpu_system_s": 1.5, "minor_page_faults": 150, "runs": 2}
    assert runs_usage(tmp_path / "old") is None

"""Throughput and peak memory of corpus encoding (sentence splitting + tokenising), serial and parallel.

Generates a WikiText-103-style corpus directory (``wiki.{train,valid,test}.raw``, ``= Title =``
headings, ``= = Section = =`` headings, paragraphs; 100 MB by default) in a temporary directory, from
sentences of the embedded corpus drawn at random with a fixed seed, so the text is real English and
the same on every run. Then `load_corpus` encodes it into an empty cache with the syntok splitter
and the gpt2 tokenizer, once with ``workers=1`` (in-process, the serial path) and once with
``workers=N`` (N = os.cpu_count()), and checks that both cache entries hold identical arrays.

Each encoding runs in a fresh process (the parent only collects the figures), so peak memory is per
configuration:

- parent: ``ru_maxrss`` of that process (``resource.getrusage(RUSAGE_SELF)``), which includes the
  interpreter, torch (imported by tgbench) and the raw text; its RSS before encoding is reported too.
- workers: the largest ``VmHWM`` (peak resident set, from ``/proc/PID/status``) over the worker
  processes, sampled every 0.5 s while they run. RUSAGE_CHILDREN would not see them: they are forked
  by multiprocessing's fork server, so they are grandchildren that this process never waits for.
  RSS counts pages shared with the fork server (torch's libraries) in every worker.

The wall time is the whole `load_corpus` call: reading, splitting, tokenising and writing the cache.
A ``bpe-<N>`` tokenizer would add its training on the train split before encoding; that is timed
separately (one process; the `tokenizers` library uses its own threads).

Run: ``python -m benchmarks.data_pipeline [--mb 100] [--workers N] [--bpe-vocab 8192] [--quick]``.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import emit, print_table

MB = 1e6  # corpus sizes and throughput in 10^6 bytes of UTF-8 text
MIB = 2**20  # memory in MiB
QUICK_MB = 0.15
HELD_OUT_EVERY = 100  # article i goes to valid when i % 100 == 1, to test when i % 100 == 2 (~1% each)
SAMPLE_SECONDS = 0.5


# -- the corpus ------------------------------------------------------------------------------------
def sentence_pool() -> list[str]:
    """Sentences of the embedded corpus (cut after . ! ? followed by a space: good enough to resample)."""
    from tgbench.data import DataConfig, read_source

    raw, _ = read_source(DataConfig(corpus="embedded"))
    sentences = []
    for docs in raw.values():
        for doc in docs:
            for line in doc.text.split("\n"):
                sentences.extend(s for s in re.split(r"(?<=[.!?])\s+", line) if s)
    return sentences


def write_wikitext(directory: Path, megabytes: float, seed: int = 0) -> dict[str, int]:
    """Write ``wiki.{train,valid,test}.raw`` totalling at least `megabytes` MB; returns bytes per file.

    Articles have 2-6 sections of 1-4 paragraphs of 3-8 sentences, laid out as WikiText-103 is
    (space-padded lines, blank lines between blocks).
    """
    pool = sentence_pool()
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    names = ("train", "valid", "test")
    files = {name: (directory / f"wiki.{name}.raw").open("w", encoding="utf-8") for name in names}
    written = dict.fromkeys(names, 0)
    article = 0
    try:
        while sum(written.values()) < megabytes * MB:
            lines = [f" = Article {article} = ", ""]
            for section in range(int(rng.integers(2, 7))):
                if section:
                    lines += [f" = = Section {section} = = ", ""]
                for _ in range(int(rng.integers(1, 5))):
                    picks = rng.integers(0, len(pool), int(rng.integers(3, 9)))
                    lines += [" " + " ".join(pool[i] for i in picks) + " ", ""]
            text = "\n".join(lines) + "\n"
            name = {1: "valid", 2: "test"}.get(article % HELD_OUT_EVERY, "train")
            files[name].write(text)
            written[name] += len(text.encode("utf-8"))
            article += 1
    finally:
        for f in files.values():
            f.close()
    return written


# -- measuring one configuration -------------------------------------------------------------------
def _descendants(root: int) -> dict[int, int]:
    """Process id -> depth below `root` (1 = child), read from /proc; empty where there is no /proc."""
    parent_of = {}
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else ():
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # exited meanwhile
        parent_of[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces
    depth, frontier = {}, {root}
    for level in range(1, 4):
        frontier = {pid for pid, ppid in parent_of.items() if ppid in frontier}
        depth.update(dict.fromkeys(frontier, level))
    return depth


def _peak_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class WorkerMemory:
    """Samples the peak RSS (VmHWM) of this process's descendants in a background thread.

    Workers are the grandchildren (children of the fork server); the fork server and the resource
    tracker are the children.
    """

    def __init__(self) -> None:
        self.peaks: dict[int, tuple[int, int]] = {}  # pid -> (depth, VmHWM KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            for pid, depth in _descendants(os.getpid()).items():
                kib = _peak_rss_kib(pid)
                self.peaks[pid] = (depth, max(kib, self.peaks.get(pid, (depth, 0))[1]))

    def __enter__(self) -> WorkerMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def workers(self) -> list[float]:
        """Peak RSS in MiB of each worker process seen."""
        return [kib * 1024 / MIB for depth, kib in self.peaks.values() if depth >= 2]


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # Linux reports KiB


def encode(corpus: Path, workers: int, cache_dir: Path) -> dict[str, Any]:
    """Encode `corpus` with syntok + gpt2 into an empty `cache_dir`; wall time and peak memory."""
    from tgbench.data import DataConfig, load_corpus
    from tgbench.data.corpus import ENCODE_CHUNK_DOCS, resolve_workers

    config = DataConfig(corpus=str(corpus), splitter="syntok", tokenizer="gpt2", cache_dir=str(cache_dir),
                        workers=workers)
    rss_before = _max_rss_mib()
    with WorkerMemory() as memory:
        started = time.perf_counter()
        encoded = load_corpus(config, progress=False)
        seconds = time.perf_counter() - started
    read = [s.documents + s.documents_dropped for s in encoded.stats.values()]
    worker_peaks = memory.workers()
    return {
        "workers": workers,
        "processes": resolve_workers(workers, sum(math.ceil(n / ENCODE_CHUNK_DOCS) for n in read)),  # as encoding does
        "seconds": seconds,
        "parent_rss_before_mib": rss_before,
        "parent_peak_rss_mib": _max_rss_mib(),
        "worker_peak_rss_mib": max(worker_peaks, default=float("nan")),
        "worker_processes_seen": len(worker_peaks),
        "documents": sum(read),
        "lexical_tokens": sum(s.lexical_tokens for s in encoded.stats.values()),
        "cache_entry": str(encoded.path),
    }


def train_bpe_time(corpus: Path, vocab_size: int) -> dict[str, Any]:
    """Seconds to train ``bpe-<vocab_size>`` on the corpus's train split (what a bpe-N corpus adds)."""
    from tgbench.data import DataConfig, read_source, train_bpe

    raw, _ = read_source(DataConfig(corpus=str(corpus)))
    started = time.perf_counter()
    train_bpe((doc.text for doc in raw["train"]), vocab_size)
    return {"vocab_size": vocab_size, "seconds": time.perf_counter() - started,
            "train_bytes": sum(len(doc.text.encode("utf-8")) for doc in raw["train"])}


def _in_fresh_process(task: str, **kwargs: Any) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.data_pipeline", "--child", json.dumps({"task": task, **kwargs})]
    out = subprocess.run(command, check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout
    return json.loads(out.strip().splitlines()[-1])


def _child(spec: str) -> dict[str, Any]:
    args = json.loads(spec)
    if args["task"] == "encode":
        return encode(Path(args["corpus"]), args["workers"], Path(args["cache_dir"]))
    return train_bpe_time(Path(args["corpus"]), args["vocab_size"])


def _same_arrays(a: Path, b: Path) -> bool:
    return all(filecmp.cmp(a / f"{name}.npz", b / f"{name}.npz", shallow=False) for name in ("train", "valid", "test"))


# -- the benchmark ---------------------------------------------------------------------------------
def main(quick: bool = False, megabytes: float = 100.0, workers: int = 0, bpe_vocab: int = 8192) -> dict[str, Any]:
    """Generate the corpus, encode it serially and in parallel, time BPE training; print a table and the JSON line.

    Args:
        quick: A 0.15 MB corpus, every run in this process, bpe-300 (a smoke test; the figures mean nothing).
        megabytes: Corpus size in MB (10^6 bytes).
        workers: Worker processes of the parallel run (0: os.cpu_count()).
        bpe_vocab: Vocabulary of the timed BPE training (0: skip it).
    """
    megabytes = QUICK_MB if quick else megabytes
    n_workers = workers or os.cpu_count() or 1
    bpe_vocab = min(bpe_vocab, 300) if quick else bpe_vocab

    def run(task: str, **kwargs: Any) -> dict[str, Any]:
        if quick:  # in this process: quick, but the memory figures then mean nothing
            return encode(**kwargs) if task == "encode" else train_bpe_time(**kwargs)
        return _in_fresh_process(task, **{k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()})

    with tempfile.TemporaryDirectory(prefix="tgbench-data-pipeline-") as tmp:
        corpus = Path(tmp) / "wikitext"
        started = time.perf_counter()
        sizes = write_wikitext(corpus, megabytes)
        generate_seconds = time.perf_counter() - started
        total_mb = sum(sizes.values()) / MB
        records = [run("encode", corpus=corpus, workers=w, cache_dir=Path(tmp) / f"cache-{w}")
                   for w in (1, n_workers)]
        identical = _same_arrays(Path(records[0]["cache_entry"]), Path(records[1]["cache_entry"]))
        bpe = run("bpe", corpus=corpus, vocab_size=bpe_vocab) if bpe_vocab else None

    for record in records:
        record["mb_per_s"] = total_mb / record["seconds"]
        record["mb_per_s_per_core"] = record["mb_per_s"] / record["processes"]
    serial, parallel = records
    result = {
        "benchmark": "data_pipeline",
        "quick": quick,
        "corpus_mb": total_mb,
        "corpus_mb_per_split": {name: size / MB for name, size in sizes.items()},
        "generate_seconds": generate_seconds,
        "cpu_count": os.cpu_count(),
        "splitter": "syntok",
        "tokenizer": "gpt2",
        "memory_method": "parent: ru_maxrss (RUSAGE_SELF) of a fresh process per run (quick: one shared process); "
        "workers: max VmHWM (/proc/PID/status) over the worker processes, sampled every 0.5 s",
        "records": records,
        "seconds_serial": serial["seconds"],
        "seconds_parallel": parallel["seconds"],
        "mb_per_s_serial": serial["mb_per_s"],
        "mb_per_s_parallel": parallel["mb_per_s"],
        "speedup_parallel_vs_serial": serial["seconds"] / parallel["seconds"],
        "outputs_identical": identical,
        "bpe_training": bpe,
    }
    rows = [(f"workers={r['workers']} ({r['processes']} process{'es' if r['processes'] > 1 else ''})",
             r["seconds"], r["mb_per_s"], r["mb_per_s_per_core"], r["parent_peak_rss_mib"],
             r["worker_peak_rss_mib"] if r["worker_processes_seen"] else "-") for r in records]
    print_table(f"encoding a {total_mb:.1f} MB WikiText-style corpus (syntok + gpt2) on {os.cpu_count()} CPUs",
                ["run", "wall s", "MB/s", "MB/s per core", "parent peak RSS MiB", "worker peak RSS MiB (max)"],
                rows)
    print(f"speed-up {result['speedup_parallel_vs_serial']:.2f}x; arrays identical: {identical}")
    if bpe:
        print(f"bpe-{bpe['vocab_size']} training on the train split ({bpe['train_bytes'] / MB:.1f} MB) would add "
              f"{bpe['seconds']:.1f} s")
    return emit(result)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mb", type=float, default=100.0, help="corpus size in MB (10^6 bytes); default 100")
    parser.add_argument("--workers", type=int, default=0, help="workers of the parallel run (0: os.cpu_count())")
    parser.add_argument("--bpe-vocab", type=int, default=8192, help="time training bpe-N (0: skip)")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)  # one run, as JSON
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child)))
    else:
        main(quick=args.quick, megabytes=args.mb, workers=args.workers, bpe_vocab=args.bpe_vocab)


if __name__ == "__main__":
    cli()

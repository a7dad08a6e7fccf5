"""Rebuild a committed report's results table from its runs table (run once per report).

The report's runs table keeps every value at full precision in its cells' ``data-v`` attributes. The
committed reports' runs used the old seed design (one seed per replicate, shared by every budget), so
``seed_scheme`` is "shared".

    .venv/bin/python tests/data/cpu_study_from_report.py            # tests/data/cpu-study-results.csv
    .venv/bin/python tests/data/cpu_study_from_report.py demo OUT   # any committed report, to OUT
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["run_id", "label", "width", "layers", "n_params", "tokens", "seed", "status", "steps", "best_val_loss",
           "test_loss", "test_ppl", "word_perplexity", "bits_per_byte", "tokens_per_s", "sentences_per_s",
           "peak_memory_mb", "reversal_normal_margin", "reversal_reversed_margin"]


def main(name: str = "cpu-study", out: Path | None = None) -> None:
    text = (ROOT / "reports" / f"{name}.html").read_text(encoding="utf-8")
    table = text.split('id="runs-table"', 1)[1].split("</table>", 1)[0]
    rows = []
    for tr in re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>", 1)[1], flags=re.S):
        values = [html.unescape(v) for v in re.findall(r'data-v="([^"]*)"', tr)]
        rows.append(dict(zip(COLUMNS, values, strict=True)))
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame.insert(1, "adapter", [lab.split("/", 1)[0] for lab in frame["label"]])
    frame.insert(2, "variant", [lab.split("/", 1)[1] if "/" in lab else "" for lab in frame["label"]])
    for column in ("width", "layers", "n_params", "tokens", "seed", "steps"):
        frame[column] = pd.to_numeric(frame[column]).astype(int)
    frame["seed_scheme"] = "shared"
    frame.to_csv(out or ROOT / "tests" / "data" / f"{name}-results.csv", index=False)


if __name__ == "__main__":
    main(*sys.argv[1:2], *(Path(p) for p in sys.argv[2:3]))

"""The report in a real browser: headless Chromium loads it offline, runs a self-test, and takes a screenshot.

The self-test is injected into a copy of the page (the report itself carries none): it records script errors,
checks that every SVG plot has a non-empty box and drawn marks, that the verdict shows the multipliers, and
that clicking a column header sorts the runs table; it writes the findings into `<pre id="selftest">`, which
`--dump-dom` returns.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from report_fixture import cached_grid

from tgbench.report.page import render_report

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

CATCH_ERRORS = """<script>window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push(String(e.message)); });</script>"""

SELFTEST = """<script>
window.addEventListener("load", function () {
  var out = {errors: window.__errors, plots: 0, empty: [], blank: []};
  document.querySelectorAll("svg").forEach(function (svg) {
    out.plots += 1;
    var box = svg.getBoundingClientRect();
    if (!(box.width > 50 && box.height > 50)) { out.empty.push(svg.getAttribute("aria-label")); }
    var marks = svg.querySelectorAll("circle, path");
    var drawn = Array.prototype.some.call(marks, function (m) {
      var b = m.getBBox();
      return b.width + b.height > 0;
    });
    if (!drawn) { out.blank.push(svg.getAttribute("aria-label")); }
  });
  var verdict = document.getElementById("verdict");
  out.verdict = verdict ? verdict.innerText : "";
  var table = document.getElementById("runs-table");
  var headers = Array.prototype.slice.call(table.querySelectorAll("th"));
  var index = headers.findIndex(function (th) { return th.textContent.indexOf("test loss") === 0; });
  function column() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[index].dataset.v; });
  }
  headers[index].click();
  out.ascending = column();
  headers[index].click();
  out.descending = column();
  var pre = document.createElement("pre");
  pre.id = "selftest";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def chromium() -> str | None:
    """The Chromium binary; installs Debian's package once (as root, quietly) when it is missing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    try:
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=600,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return shutil.which("chromium")


def run_chromium(binary: str, page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--hide-scrollbars",
               "--virtual-time-budget=5000", *args, page.as_uri()]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_report_in_headless_chromium(tmp_path):
    binary = chromium()
    if binary is None:
        pytest.skip("chromium is not installed and apt-get install chromium failed")
    html = render_report(cached_grid())
    page = tmp_path / "report.html"
    injected = html.replace("<head>", "<head>\n" + CATCH_ERRORS, 1)
    page.write_text(injected.replace("</body>", SELFTEST + "</body>", 1))

    dom = run_chromium(binary, page, tmp_path / "profile-dom", "--dump-dom")
    match = re.search(r'<pre id="selftest">(.*?)</pre>', dom.stdout, re.S)
    assert match, f"the self-test did not run; chromium said: {dom.stderr[-2000:]}"
    result = json.loads(match.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
                        .replace("&amp;", "&"))
    assert result["errors"] == []
    assert "Uncaught" not in dom.stderr
    assert result["plots"] == html.count("<svg") >= 13  # every plot drawn; sections add plots as tasks land
    assert result["empty"] == [] and result["blank"] == []
    assert re.search(r"Data multiplier m_D.*?\d\.\d\d\u00d7", result["verdict"], re.S)
    assert re.search(r"Parameter multiplier m_N.*?\d\.\d\d\u00d7", result["verdict"], re.S)
    assert "95% CI" in result["verdict"]
    ascending = [float(v) for v in result["ascending"] if v != ""]
    assert ascending == sorted(ascending) and len(ascending) >= 25
    assert result["ascending"][-1] == ""  # missing values sort last in both directions
    descending = [float(v) for v in result["descending"] if v != ""]
    assert descending == sorted(ascending, reverse=True)

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    clean = tmp_path / "clean.html"
    clean.write_text(html)
    run_chromium(binary, clean, tmp_path / "profile-shot", "--window-size=1280,2400", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000

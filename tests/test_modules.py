"""The module structure: no import cycles, and one helper each for the things several modules need."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"tgbench": ROOT / "tgbench", "tgbench.models": ROOT / "models", "tgbench.tasks": ROOT / "tasks"}
# Known and owned elsewhere: the tuning stage and the parallel executor call back into grid.py (issues 21, 24).
KNOWN_CYCLES = [{"tgbench.grid", "tgbench.parallel", "tgbench.tune"}]


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every tgbench module `name` imports, at module level or inside functions (not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(node) for branch in ast.walk(tree) if isinstance(branch, ast.If)
                   and "TYPE_CHECKING" in ast.dump(branch.test) for stmt in branch.body for node in ast.walk(stmt)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            submodules = {f"{node.module}.{a.name}" for a in node.names} & set(known)
            out |= submodules
            if len(submodules) < len(node.names):
                out.add(node.module)
    return {m for m in out if m in known and m != name}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    known = modules()
    # The package's __init__ is a facade (its version, and the Python API imported on first attribute access):
    # `import tgbench` for `tgbench.__version__` does not import the API, so it is no edge of the graph.
    del known["tgbench"]
    graph = {name: imports(name, path, known) for name, path in known.items()}
    assert graph["tgbench.grid"] and "tgbench.results" in graph["tgbench.grid"]  # the detector sees imports
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [{"a", "b"}]
    assert [c for c in cycles(graph) if c not in KNOWN_CYCLES] == []


def test_one_helper_each():
    sources = {name: path.read_text(encoding="utf-8") for name, path in modules().items()}
    sources |= {f"benchmarks.{p.stem}": p.read_text(encoding="utf-8") for p in (ROOT / "benchmarks").glob("*.py")}

    def where(text: str) -> set[str]:
        return {name for name, source in sources.items() if text in source}

    assert where("Progress(") == {"tgbench.console"}  # progress bars: console.progress_bar
    assert where("mkstemp(") == {"tgbench.files"}  # atomic writes: files.atomic_path
    assert where("math.isfinite(obj)") == {"tgbench.files"}  # JSON sanitising: files.json_safe
    assert where("def list_runs(") == {"tgbench.runs"} and where("iterdir()") & {"tgbench.results", "tgbench.report",
                                                                                 "tgbench.evaluate"} == set()
    assert where("def label_of(") == {"tgbench.comparison"}  # run labels
    assert where('"bpe-(') | where("r\"bpe-") <= {"tgbench.data.tokenizer"}  # tokenizer specs
    for helper in ("torch.optim.AdamW(", "torch.autocast(", "torch.device(\"cuda\" if"):
        assert not any(helper in sources[n] for n in sources if n.startswith("benchmarks.")), helper

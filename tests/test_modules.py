"""The module structure: the stages as folders, no import cycles (type-only imports counted), imports at the top,
old module paths still importing, and one helper each for the things several modules need."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

from tgbench import moved

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"tgbench": ROOT / "tgbench", "tgbench.models": ROOT / "models", "tgbench.tasks": ROOT / "tasks"}
STAGES = ("core", "data", "plan", "training", "evaluation", "results", "report", "cli")
# Where a function-level import of tgbench code is allowed, and why:
FUNCTION_IMPORTS_ALLOWED = {
    "tgbench": "the package's lazy API (import tgbench stays light)",
    "tgbench.results": "lazy names of the earlier module tgbench.results",
    "tgbench.report": "lazy names of the earlier module tgbench.report",
    "tgbench.cli": "lazy names of the earlier module tgbench.cli",
    "tgbench.training.workers": "a spawned worker sets its environment before torch is imported",
}
FUNCTION_IMPORTS_ALLOWED_IN = ("tgbench.cli.",)  # each command imports its work when run: `tgbench --help` is fast


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            found[".".join([package, *parts])] = path
    return found


def import_nodes(path: Path) -> list[tuple[ast.stmt, bool]]:
    """Every import statement of a file (type-only ones included), and whether it sits inside a function."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    in_function = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for node in ast.walk(fn)}
    return [(node, id(node) in in_function) for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))]


def imported(node: ast.stmt, known: dict[str, Path]) -> set[str]:
    """The first-party modules an import statement names."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names} & set(known)
    if not (node.module and node.level == 0):
        return set()
    submodules = {f"{node.module}.{a.name}" for a in node.names} & set(known)
    out = set(submodules)
    if len(submodules) < len(node.names):
        out.add(node.module)
    return out & set(known)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {m for node, _ in import_nodes(path) for m in imported(node, known) if m != name}
            for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_the_tree_shows_the_stages():
    assert all((ROOT / "tgbench" / stage / "__init__.py").is_file() for stage in STAGES)
    loose = sorted(p.name for p in (ROOT / "tgbench").glob("*.py"))
    assert loose == ["__init__.py", "adapter.py", "moved.py", "registry.py", "task.py"]  # contracts and lookup
    for folder in [*(ROOT / "tgbench" / s for s in STAGES), ROOT / "tasks" / "stats"]:
        assert ast.get_docstring(ast.parse((folder / "__init__.py").read_text())), f"{folder} says what it holds"


def test_no_import_cycles_counting_type_only_imports():
    edges = graph()
    assert "tgbench.report.task_sections" in edges["tgbench.task"]  # the detector sees type-only imports
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [{"a", "b"}]
    assert cycles(edges) == []


def test_function_level_imports_only_where_they_keep_start_up_fast():
    known = modules()
    offenders = []
    for name, path in known.items():
        if name in FUNCTION_IMPORTS_ALLOWED or name.startswith(FUNCTION_IMPORTS_ALLOWED_IN):
            continue
        for node, in_function in import_nodes(path):
            if in_function and imported(node, known):
                offenders.append(f"{name}:{node.lineno}")
    assert offenders == []


def test_the_command_line_starts_without_torch():
    code = "import sys, tgbench.cli.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_old_module_paths_import_and_no_module_uses_them():
    for old, new in moved.MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new)
    for old, parts in moved.SPLIT.items():
        union = importlib.import_module(old)
        for part in parts:
            module = importlib.import_module(part)
            public = [n for n in vars(module) if not n.startswith("_") and getattr(module, n) is not None]
            assert all(hasattr(union, n) for n in public), (old, part)
    # the names plug-ins and scripts written against the old layout use
    from tgbench.cli.app import main
    from tgbench.grid import load_grid, run_grid  # noqa: F401
    from tgbench.runs import LoadedRun, RunDir, load_run  # noqa: F401
    from tgbench.scoring import score_documents  # noqa: F401
    from tgbench.sections import Section, TaskView, generic_section  # noqa: F401
    from tgbench.tasks.scaling import fit_grid, write_fits  # noqa: F401
    from tgbench.train import train  # noqa: F401
    assert callable(main)
    old_paths = set(moved.MOVED) | set(moved.SPLIT)
    users = [f"{name} imports {m}" for name, path in modules().items() for node, _ in import_nodes(path)
             for m in imported(node, dict.fromkeys(old_paths, Path())) if m in old_paths]
    assert users == []


def test_one_helper_each():
    sources = {name: path.read_text(encoding="utf-8") for name, path in modules().items()}
    sources |= {f"benchmarks.{p.stem}": p.read_text(encoding="utf-8") for p in (ROOT / "benchmarks").glob("*.py")}

    def where(text: str) -> set[str]:
        return {name for name, source in sources.items() if text in source}

    def literal(text: str) -> set[str]:  # modules whose code (not their docstrings) holds the string `text`
        found = set()
        for name, source in sources.items():
            tree = ast.parse(source)
            docs = {id(node.body[0].value) for node in ast.walk(tree)
                    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and node.body
                    and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
            if any(isinstance(n, ast.Constant) and n.value == text and id(n) not in docs for n in ast.walk(tree)):
                found.add(name)
        return found

    assert where("Progress(") == {"tgbench.core.console"}  # progress bars: console.progress_bar
    assert where("mkstemp(") == {"tgbench.core.files"}  # atomic writes: files.atomic_path
    assert where("math.isfinite(obj)") == {"tgbench.core.files"}  # JSON sanitising: files.json_safe
    assert where("def list_runs(") == {"tgbench.training.rundir"}
    assert where("iterdir()") & {"tgbench.results.table", "tgbench.report.page", "tgbench.evaluation.evaluate"} == set()
    assert where("def label_of(") == {"tgbench.plan.comparison"}  # run labels
    assert where("DEFAULT_REFERENCE =") == {"tgbench.plan.comparison"}  # who is compared with whom
    assert where("def comparison_pairs(") == {"tgbench.plan.comparison"}
    assert literal("grid.toml") == {"tgbench.plan.config"}  # reading a grid directory's grid file
    assert literal("per-budget") == {"tgbench.plan.config"}  # the seed schemes
    assert where("class Metric") == {"tgbench.results.columns"}  # a column's (a task metric's) schema
    assert where("def runs_table(") == {"tgbench.report.tables"}  # every table of runs
    assert where("def training_flops(") == {"tgbench.plan.compute"}  # compute estimates
    assert where("def run_state(") == {"tgbench.training.current"}  # is a run current
    assert where('"bpe-(') | where("r\"bpe-") <= {"tgbench.data.tokenizer"}  # tokenizer specs
    for helper in ("torch.optim.AdamW(", "torch.autocast(", "torch.device(\"cuda\" if"):
        assert not any(helper in sources[n] for n in sources if n.startswith("benchmarks.")), helper


def test_no_first_party_file_is_long_unless_it_says_it_holds_one_concept():
    for name, path in modules().items():
        if len(path.read_text(encoding="utf-8").splitlines()) > 600:
            assert "One concept" in (ast.get_docstring(ast.parse(path.read_text())) or ""), name


def test_comments_and_docstrings_give_reasons_not_ticket_numbers():
    files = [*modules().values(), *(ROOT / "benchmarks").glob("*.py"), *(ROOT / "tests").glob("*.py"),
             *(ROOT / "tgbench" / "plan" / "presets").glob("*.toml")]
    ticket = re.compile(r"\bissues? \d+")
    assert [f"{p.name}:{i}" for p in files for i, line in enumerate(p.read_text().splitlines(), 1)
            if ticket.search(line) and "ticket" not in line] == []

"""The task contract and registry: built-ins by name and alias, plug-ins by path, lm-eval tasks wrapped,
and the `<task>.<metric>` columns of results.csv."""

from __future__ import annotations

import pytest
from report_fixture import cached_grid

from tgbench.core.errors import UserError
from tgbench.evaluation.lmeval import LMEvalTask, config_metrics
from tgbench.registry import get_task, task_class
from tgbench.results.columns import Metric
from tgbench.results.table import read_results, task_schemas
from tgbench.task import metric_values


def test_builtin_tasks_by_name_and_alias():
    ppl = get_task("ppl")
    assert ppl.name == "ppl" and type(get_task("tg_ppl")) is type(ppl)
    assert get_task("tg_reversal").name == "reversal"
    assert {m.name: m.higher_is_better for m in ppl.metrics}["lexical_loss"] is False
    assert task_class("reversal") is type(get_task("reversal"))
    assert task_class("hellaswag") is None


def test_unknown_names_become_lm_eval_tasks_and_fail_with_the_known_ones(monkeypatch):
    import tgbench.evaluation.lmeval as lmeval

    local_only = lmeval.task_manager
    monkeypatch.setattr(lmeval, "task_manager", lambda paths=(), defaults=False, metadata=None:
                        local_only(paths, False, metadata))
    task = get_task("not_a_task_anywhere")
    assert isinstance(task, LMEvalTask)
    with pytest.raises(UserError, match="unknown task 'not_a_task_anywhere'") as err:
        task.versions(".")
    assert "reversal" in err.value.fix


def test_a_path_reference_must_be_a_task(tmp_path):
    (tmp_path / "mine.py").write_text("class NotATask:\n    pass\n")
    with pytest.raises(UserError, match="not a tgbench Task subclass"):
        get_task(f"{tmp_path / 'mine.py'}:NotATask")
    with pytest.raises(UserError, match="does not exist"):
        get_task(f"{tmp_path / 'absent.py'}:Task")


def test_lm_eval_metrics_and_directions_come_from_the_task_config():
    declared = config_metrics({"output_type": "multiple_choice", "metric_list": [
        {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
        {"metric": "brier_score", "aggregation": "mean", "higher_is_better": False}]})
    assert [(m.name, m.higher_is_better, m.aggregation) for m in declared] == [
        ("acc", True, "mean"), ("brier_score", False, "mean")]
    # no metric_list: lm-eval's defaults for the output type, with lm-eval's registered directions
    defaults = {m.name: m.higher_is_better for m in config_metrics({"output_type": "loglikelihood_rolling"})}
    assert defaults == {"word_perplexity": False, "byte_perplexity": False, "bits_per_byte": False}


def test_metric_values_follow_lm_eval_keys():
    values = metric_values({"alias": "x", "acc,none": 0.5, "acc_stderr,none": 0.1, "exact_match,strict": 0.25,
                            "plain": 2, "flag": True})
    assert values == {"acc": 0.5, "exact_match_strict": 0.25, "plain": 2.0}
    assert Metric.from_dict(Metric("acc", True, ".1%").to_dict()) == Metric("acc", True, ".1%")


def test_results_have_a_column_per_task_metric():
    grid = cached_grid()
    frame = read_results(grid)
    assert {"ppl.lexical_loss", "ppl.word_perplexity", "reversal.normal_margin", "reversal.reversed_error_rate"} \
        <= set(frame.columns)
    assert not any(c.startswith("reversal_") for c in frame.columns)
    done = frame[frame["status"] == "done"]
    assert (done["test_loss"].dropna() == done["ppl.lexical_loss"].dropna()).all()
    schemas = task_schemas(grid)
    assert list(schemas) == ["ppl", "reversal"]  # files without a schema take the registered task's
    assert {m.name: m.higher_is_better for m in schemas["reversal"].metrics}["reversed_margin"] is True


def test_entry_point_and_module_references_find_plug_in_tasks(monkeypatch, tmp_path):
    import sys

    from tgbench import registry

    (tmp_path / "my_tasks.py").write_text(
        "from tgbench.task import Metric, Task, TaskResult\n\n"
        "class Echo(Task):\n    name = 'echo'\n    metrics = (Metric('x', True),)\n\n"
        "    def evaluate(self, run, **kwargs):\n        return TaskResult({'x': 1.0})\n")
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])
    assert get_task("my_tasks:Echo").reference == "my_tasks:Echo"

    class FakeEntryPoint:
        name, value, dist = "echo", "my_tasks:Echo", None

    real = registry.importlib.metadata.entry_points

    def entry_points(group):
        return [FakeEntryPoint()] if group == registry.TASK_ENTRY_POINT_GROUP else real(group=group)

    monkeypatch.setattr(registry.importlib.metadata, "entry_points", entry_points)
    assert "echo" in registry.available_tasks() and get_task("echo").name == "echo"
    assert task_class("echo").__name__ == "Echo"


def test_tasks_command_lists_the_tasks_with_their_directions():
    from typer.testing import CliRunner

    from tgbench.cli.app import app

    result = CliRunner().invoke(app, ["tasks"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "ppl" in text and "tg_reversal" in text and "reversed_margin (+)" in text and "lexical_loss (-)" in text


def test_a_task_name_with_dots_gets_a_file_and_column_prefix_without_them(tmp_path):
    from tgbench.evaluation.evaluate import result_path
    from tgbench.results.columns import split_task_column, task_column

    path = result_path(tmp_path, "arc.easy/v2")
    assert path.name == "arc_easy_v2.json"
    assert split_task_column(task_column(path.stem, "acc_norm")) == ("arc_easy_v2", "acc_norm")

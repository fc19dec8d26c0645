"""`vaccine run --executor ray` on a local Ray cluster (2 CPUs): the same report as the local executor, a
worker killed mid-stage is retried and resumes, and the driver killed at 5 random points ends, once run
again, with the report of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import tiny_grid_config

from vaccine.cli import main
from vaccine.errors import DataError, VaccineError
from vaccine.experiments import execute, launch
from vaccine.experiments.execute import run_stage, train_stage
from vaccine.experiments.graph import StageNode, stage_graph
from vaccine.experiments.grid import parse_grid
from vaccine.experiments.ray_executor import RayExecutor, task_options
from vaccine.experiments.report import build_report
from vaccine.experiments.run import run_grid, stage_times_path
from vaccine.experiments.stages import plan_cell
from vaccine.experiments.store import ResultStore


@pytest.fixture(scope="module")
def tiny_grid(tmp_path_factory, tiny_model_dir) -> dict:
    """Non-aligned and SFT x p in {0, 0.5} on a tiny Llama: one alignment feeds two fine-tunes, four
    evaluations, two t-SNE pictures. Every grid of this module shares these data files (they are in the
    stages' cache keys), so their reports can be compared."""
    grid = tiny_grid_config(tmp_path_factory.mktemp("ray-data"), tiny_model_dir)
    del grid["out"]
    grid["methods"] = grid["methods"][:2]  # Non-aligned and SFT
    stages = ("align", "finetune", "posthoc", "evaluate")
    grid["resources"] = {stage: {"cpus": 1, "gpus": 0} for stage in stages}
    return grid


def grid_file(raw: dict, folder: Path) -> Path:
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump({**raw, "out": str(folder / "runs")}), encoding="utf-8")
    return path


def comparable(markdown: str) -> str:
    """A report without what differs between two runs of the same grid: the time it was generated and the
    measured step times and memory of the cost table."""
    text = re.sub(r"Generated \S+\.", "Generated <time>.", markdown)
    table = re.compile(r"^\| (?!method \|)(?!---)([^|]+)\|.*$", re.M)
    cost = text.index("| method | align step (s)")
    end = text.index("\n\n", cost)
    return text[:cost] + table.sub(r"| \1| <cost>", text[cost:end]) + text[end:]


def report_of(grid_yaml: Path, capsys) -> str:
    """The report `vaccine report GRID` writes (the store rebuilt from the row files first)."""
    assert main(["report", str(grid_yaml)]) == 0
    capsys.readouterr()
    return comparable((grid_yaml.parent / "runs" / "report" / "report.md").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def reference(tiny_grid, tmp_path_factory) -> str:
    """The report of an uninterrupted run of the grid by the local executor, in this process (one thread:
    Ray's tasks run with one, and the numbers are compared exactly)."""
    folder = tmp_path_factory.mktemp("local")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_grid(parse_grid(yaml.safe_load(grid_file(tiny_grid, folder).read_text()), "grid.yaml"))
    finally:
        torch.set_num_threads(threads)
    rows = ResultStore(folder / "runs" / "results.sqlite").rows()
    assert len(rows) == 4
    return comparable(build_report(rows, folder / "report")["markdown"].read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster of 2 CPUs for this module; the address other drivers join it at."""
    ray = pytest.importorskip("ray")
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()


def test_the_graph_runs_a_shared_stage_once(tiny_grid, tmp_path):
    grid = parse_grid({**tiny_grid, "out": str(tmp_path / "runs")})
    graph = stage_graph([plan_cell(grid, cell) for cell in grid.cells()], grid)
    stages = [node.stage for node in graph]
    assert sorted(stages) == ["align"] + ["evaluate"] * 4 + ["finetune"] * 4 + ["tsne"] * 2
    nodes = {node.out: node for node in graph}
    align = next(node for node in graph if node.stage == "align")
    fed = [node for node in graph if node.stage == "finetune" and node.needs == (align.out,)]
    assert len(fed) == 2  # one alignment feeds SFT's two fine-tunes
    for node in graph:  # upstream before downstream, every wait on a stage of the graph
        assert all(list(nodes).index(need) < list(nodes).index(node.out) for need in node.needs)


def test_repairs_wait_for_the_one_fine_tune_they_share(tiny_grid, tmp_path):
    repair = {"label": "SFT + Antidote", "align": {"method": "sft"}, "posthoc": {"method": "antidote"}}
    methods = [*tiny_grid["methods"][1:], repair]
    grid = parse_grid({**tiny_grid, "out": str(tmp_path / "runs"), "methods": methods, "p": [0.5]})
    graph = stage_graph([plan_cell(grid, cell) for cell in grid.cells()], grid)
    by_stage = {stage: [node for node in graph if node.stage == stage] for stage in ("finetune", "posthoc")}
    assert len(by_stage["finetune"]) == 1 and len(by_stage["posthoc"]) == 1  # the attack runs once
    finetune, posthoc = by_stage["finetune"][0], by_stage["posthoc"][0]
    assert finetune.out in posthoc.needs
    evaluations = {node.label: node for node in graph if node.stage == "evaluate"}
    assert posthoc.out in evaluations["SFT + Antidote p=0.5 seed=1"].needs
    assert posthoc.out not in evaluations["SFT p=0.5 seed=1"].needs


def test_each_task_asks_ray_for_its_stage_resources(tiny_grid, tmp_path):
    sized = {"finetune": {"gpus": 2, "cpus": 4, "retries": 5}, "evaluate": {"gpus": 0.5}}
    grid = parse_grid({**tiny_grid, "out": str(tmp_path / "runs"), "resources": sized})
    graph = stage_graph([plan_cell(grid, cell) for cell in grid.cells()], grid)
    node = {n.stage: n for n in graph}
    asked = task_options(grid, node["finetune"], cluster_gpus=8)
    assert asked == {"num_cpus": 4, "num_gpus": 2, "max_retries": 5}
    assert task_options(grid, node["evaluate"], 8)["num_gpus"] == 0.5
    assert task_options(grid, node["tsne"], 8)["num_gpus"] == 0.5  # a picture takes the evaluation's
    unsized = parse_grid({**tiny_grid, "out": str(tmp_path / "runs"), "resources": {}})
    graph = stage_graph([plan_cell(unsized, cell) for cell in unsized.cells()], unsized)
    align = next(n for n in graph if n.stage == "align")  # no gpus given: one if the cluster has any
    assert (
        task_options(unsized, align, 8)["num_gpus"] == 1 and task_options(unsized, align, 0)["num_gpus"] == 0
    )


def test_a_stage_given_several_gpus_runs_under_accelerate_launch(tiny_grid, tmp_path, monkeypatch):
    grid = parse_grid({**tiny_grid, "out": str(tmp_path / "runs")})
    finetune = next(
        n for n in stage_graph([plan_cell(grid, c) for c in grid.cells()], grid) if n.stage == "finetune"
    )
    launched = []
    monkeypatch.setattr(
        launch, "launch_stage", lambda stage, spec, gpus: launched.append((stage, spec, gpus))
    )
    monkeypatch.setattr(execute, "_trainer", lambda stage: pytest.fail("trained in the task's own process"))
    assert train_stage("finetune", finetune.spec, finetune.label, gpus=2) is not None
    assert launched == [("finetune", finetune.spec, 2)]


def test_a_ray_cluster_gives_the_report_of_the_local_executor(
    tiny_grid, reference, cluster, tmp_path, capsys
):
    path = grid_file(tiny_grid, tmp_path)
    grid = parse_grid(yaml.safe_load(path.read_text()), str(path))
    result = run_grid(grid, RayExecutor())
    assert result["computed"] == 4 and len(result["tsne"]) == 2
    timed = [line for line in stage_times_path(grid.out).read_text().splitlines()]
    assert sum('"stage": "align"' in line for line in timed) == 1  # the shared alignment ran once
    rows = list((grid.out / "eval").glob("*.row.json"))
    assert len(rows) == 4  # results as files, beside their evaluations
    assert report_of(path, capsys) == reference
    # the store is an index: rebuilt from the row files alone, the report is the same
    (grid.out / "results.sqlite").unlink()
    assert report_of(path, capsys) == reference
    assert run_grid(grid, RayExecutor())["computed"] == 0


def kill_first_finetune(marker: Path):
    """A stage function that SIGKILLs its own Ray worker once, in the first fine-tune's third step (after
    checkpoint-2): a worker lost mid-stage, as when a machine dies. ``marker`` makes it happen once."""

    def stage(node: StageNode, gpus: float):
        if node.stage == "finetune":
            from transformers import Trainer

            step = Trainer.training_step

            def dying_step(self, *args, **kwargs):
                if self.state.global_step == 2 and not marker.exists():
                    marker.write_text(f"{node.out}\n")
                    os.kill(os.getpid(), signal.SIGKILL)
                return step(self, *args, **kwargs)

            Trainer.training_step = dying_step
            try:
                return run_stage(node, gpus)
            finally:
                Trainer.training_step = step
        return run_stage(node, gpus)

    return stage


def test_a_worker_killed_mid_stage_is_retried_and_the_grid_completes(
    tiny_grid, reference, cluster, tmp_path, capsys
):
    path = grid_file(tiny_grid, tmp_path)
    grid = parse_grid(yaml.safe_load(path.read_text()), str(path))
    marker = tmp_path / "killed"
    result = run_grid(grid, RayExecutor(stage=kill_first_finetune(marker)))
    assert marker.exists(), "no worker was killed"
    assert result["computed"] == 4
    killed = Path(marker.read_text().strip())
    summary = json.loads((killed / "summary.json").read_text())
    assert str(summary["resumed_from"]).endswith("checkpoint-2")  # the retry resumed, not restarted
    assert report_of(path, capsys) == reference


STAGE_FOLDERS = ("align", "finetune", "posthoc", "eval", "tsne", "self-distill")


def wait_for_work(runs: Path, since: float, timeout: float = 120.0) -> None:
    """Until a stage writes a file after ``since`` (a driver's first seconds go to starting Ray workers;
    a kill then would test little), or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not any(
        newer_than(since, Path(root, name))
        for folder in STAGE_FOLDERS
        for root, _, names in os.walk(runs / folder)
        for name in names
    ):
        time.sleep(0.1)


def newer_than(since: float, path: Path) -> bool:
    try:
        return path.stat().st_mtime > since
    except FileNotFoundError:  # a temporary file renamed meanwhile
        return False


def stages_left(path: Path) -> int:
    """How many stages of the grid at ``path`` are not done yet, read from the files they write."""
    grid = parse_grid(yaml.safe_load(path.read_text()), str(path))
    return len(stage_graph([plan_cell(grid, cell) for cell in grid.cells()], grid))


def wait_for_stages_left(path: Path, left: int, driver: subprocess.Popen, timeout: float = 300.0) -> None:
    """Until at most ``left`` stages remain, the driver exits, or ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and driver.poll() is None and stages_left(path) > left:
        time.sleep(0.1)


def test_the_driver_killed_at_5_random_points_ends_with_the_uninterrupted_report(
    tiny_grid, reference, cluster, tmp_path, capsys
):
    """The driver is SIGKILLed 5 times, each at a seeded random point (after a random number of its stages
    are done, then a random fraction of a second into the next ones: mid-training, mid-evaluation, between
    stages; Ray then ends the driver's tasks too), and restarted; the last run completes the grid with the
    report of an uninterrupted run. The points are drawn from the grid's progress, not from the clock, so a
    fast machine cannot finish the grid before the fifth kill."""
    path = grid_file(tiny_grid, tmp_path)
    command = [sys.executable, "-m", "vaccine", "run", str(path), "--executor", "ray", "--address", cluster]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log, rng = tmp_path / "driver.log", random.Random(18)
    total = stages_left(path)
    done_before_kill = sorted(rng.sample(range(total - 2), 5))  # at least 2 stages left at each kill
    for attempt, done in enumerate(done_before_kill):
        with open(log, "a") as out:
            out.write(f"---- run {attempt + 1}, killed after {done} of {total} stages and a moment\n")
            out.flush()
            started = time.time()
            driver = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            wait_for_work(tmp_path / "runs", started)
            wait_for_stages_left(path, total - done, driver)
            time.sleep(rng.uniform(0.0, 0.5))
            assert driver.poll() is None, log.read_text()[-3000:]  # killed while running, not after
            driver.send_signal(signal.SIGKILL)
            driver.wait(timeout=60)
    assert stages_left(path) > 0  # the last kill left work to resume
    with open(log, "a") as out:
        out.write("---- the last run, uninterrupted\n")
        out.flush()
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600)
    assert done.returncode == 0, log.read_text()[-3000:]
    assert report_of(path, capsys) == reference


def test_a_failing_stage_stops_the_grid_with_its_own_error(tiny_grid, cluster, tmp_path):
    """A bad input found inside a task reaches the driver as the error the stage raised (the CLI prints it
    as one line naming the file), not as a remote traceback."""
    bad = tmp_path / "harmful.jsonl"
    bad.write_text('{"prompt": "how do i steal", "response": "sure"}\nnot json\n')
    raw = {**tiny_grid, "out": str(tmp_path / "runs"), "methods": tiny_grid["methods"][:1], "p": [0.5]}
    grid = parse_grid({**raw, "finetune": {**tiny_grid["finetune"], "harmful": str(bad)}})
    with pytest.raises(DataError, match="harmful.jsonl") as info:
        run_grid(grid, RayExecutor())
    assert "Traceback" not in str(info.value) and not type(info.value).__module__.startswith("ray")
    assert not list((grid.out / "eval").glob("*.row.json"))


def test_a_stage_lost_more_often_than_its_retries_says_so(tiny_grid, cluster, tmp_path):
    raw = {**tiny_grid, "out": str(tmp_path / "runs"), "methods": tiny_grid["methods"][:1], "p": [0.5]}
    grid = parse_grid({**raw, "resources": {"finetune": {"gpus": 0, "retries": 1}}})

    tries = tmp_path / "tries"

    def always_dying(node: StageNode, gpus: float):  # nested: Ray ships it to its workers by value
        """A worker that dies at every fine-tune: a machine lost again and again."""
        if node.stage == "finetune":
            with open(tries, "a") as out:
                out.write("try\n")
            os.kill(os.getpid(), signal.SIGKILL)
        return run_stage(node, gpus)

    lost = r"finetune of Non-aligned p=0.5 seed=1 .* was lost on Ray.*run the same command again"
    with pytest.raises(VaccineError, match=lost):
        run_grid(grid, RayExecutor(stage=always_dying))
    assert len(tries.read_text().splitlines()) == 2  # the first try and the one retry asked for


def test_ray_missing_is_one_clear_line(tiny_grid, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    assert main(["run", str(grid_file(tiny_grid, tmp_path)), "--executor", "ray"]) == 2
    assert "pip install 'vaccine[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()  # refused before any compute
    assert main(["run", str(grid_file(tiny_grid, tmp_path)), "--address", "head:6379"]) == 2
    assert "--address: only with --executor ray" in capsys.readouterr().err

"""`vaccine run CONFIG --executor ray`: every stage of the grid a Ray task, on this machine or a cluster.

Why Ray and not a scheduler of our own: users with a cluster already run one engine for placement,
retries after a lost worker or machine, and GPU accounting; the grid only has to say what each stage needs.
Each stage of the graph (``graph.stage_graph``: shared stages once) becomes one task with the resources of
its stage (the grid's ``resources:`` section), and waits for the tasks of the stages it needs by taking
their results as arguments. A task runs its stage idempotently (``execute.run_stage``), so a retried task,
or the same grid run again after the driver died, resumes instead of starting over.

This driver process is the only writer of ``results.sqlite``: tasks write files (stage folders, the
evaluation JSON and its row file) on the storage they share, and hand the row back to be indexed.
Ray is optional (``pip install 'vaccine[ray]'``) and imported only here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vaccine.errors import ConfigError, VaccineError
from vaccine.experiments.execute import StageDone, run_stage
from vaccine.experiments.graph import StageNode, stage_graph

if TYPE_CHECKING:
    from pathlib import Path

    from vaccine.experiments.grid import GridConfig
    from vaccine.experiments.run import Driver
    from vaccine.experiments.stages import CellPlan

log = logging.getLogger(__name__)

StageFunction = Callable[[StageNode, float], StageDone]


def import_ray() -> Any:
    """Ray, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError as err:
        raise ConfigError(
            "--executor ray needs Ray, an optional extra: pip install 'vaccine[ray]' (or 'ray>=2.9')"
        ) from err
    return ray


def _task(stage: StageFunction, node: StageNode, gpus: float, *upstream: StageDone) -> StageDone:
    """The body of every task; ``upstream`` (the results of the stages it needs) only orders it after them."""
    return stage(node, gpus)


def task_options(grid: GridConfig, node: StageNode, cluster_gpus: float) -> dict[str, Any]:
    """Ray options of ``node``'s task: its stage's resources (a picture takes the evaluation's)."""
    wanted = grid.resources["evaluate" if node.stage == "tsne" else node.stage]
    gpus = wanted["gpus"] if wanted["gpus"] is not None else (1 if cluster_gpus > 0 else 0)
    return {"num_cpus": wanted["cpus"], "num_gpus": gpus, "max_retries": wanted["retries"]}


@dataclass
class RayExecutor:
    """Run a grid's stages as Ray tasks. ``address``: a running cluster (``ray start --head`` prints it);
    None follows ``ray.init``'s rule: ``RAY_ADDRESS``, else the newest cluster started on this machine, else
    a Ray started here for this run. ``stage`` is what each task runs (tests wrap it to kill a worker
    mid-stage)."""

    address: str | None = None
    stage: StageFunction = run_stage

    def run(self, grid: GridConfig, plans: list[CellPlan], driver: Driver) -> list[Path]:
        """Submit every stage still to run, then hand each finished one to ``driver`` as it ends; returns
        the t-SNE pictures drawn."""
        ray = import_ray()
        graph = stage_graph(plans, grid)
        if not graph:
            return []
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, **({} if self.address else {"include_dashboard": False}))
        try:
            return self._run_graph(ray, grid, graph, driver)
        finally:
            if started_here:
                ray.shutdown()

    def _run_graph(self, ray: Any, grid: GridConfig, graph: list[StageNode], driver: Driver) -> list[Path]:
        cluster_gpus = ray.cluster_resources().get("GPU", 0)
        remote = ray.remote(_task)
        refs: dict[Any, StageNode] = {}
        by_out: dict[Path, Any] = {}
        for node in graph:  # upstream first: a task's arguments are the refs of the stages it needs
            options = task_options(grid, node, cluster_gpus)
            upstream = [by_out[path] for path in node.needs]
            ref = remote.options(**options, name=f"{node.stage} {node.label}").remote(
                self.stage, node, options["num_gpus"], *upstream
            )
            refs[ref], by_out[node.out] = node, ref
        log.info("%d stages submitted to Ray (%s GPUs in the cluster)", len(graph), cluster_gpus)
        pictures, pending = [], list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            try:
                done = ray.get(ready[0])
            except Exception as err:
                for ref in pending:  # the grid stops at its first failure, as the local executor does
                    ray.cancel(ref)
                explained = _explained(ray, refs[ready[0]], err)
                if explained is err:
                    raise
                raise explained from err
            driver.finished(refs[ready[0]].label, done)
            if done.stage == "tsne" and done.seconds is not None:
                pictures.append(done.out)
        return pictures


def _explained(ray: Any, node: StageNode, err: Exception) -> Exception:
    """A failed task as the error its stage raised: a bad input names its file (one line, as it would
    locally); any other error keeps its remote traceback; a task whose worker or machine was lost more
    often than its ``retries`` says so, and that running the grid again resumes it."""
    if isinstance(err, ray.exceptions.RayTaskError):
        return err.cause if isinstance(err.cause, VaccineError) else err
    if isinstance(err, ray.exceptions.RayError):
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return VaccineError(
            f"{node.stage} of {node.label} ({node.out}) was lost on Ray: {reason}; "
            "run the same command again to resume it"
        )
    return err

"""Experiment grids: validation, expansion, cache hits, and resume after an interrupted stage."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch
from conftest import TINY_GRID_LORA as LORA
from safetensors.torch import load_file

from vaccine.errors import ConfigError, SettingError
from vaccine.experiments import stages
from vaccine.experiments.grid import parse_grid
from vaccine.experiments.index import index_grid
from vaccine.experiments.report import build_report
from vaccine.experiments.run import run_grid, stage_times_path
from vaccine.experiments.stages import plan_cell, row_path
from vaccine.experiments.store import ResultStore
from vaccine.finetune import run_finetune


def test_expansion_and_shared_alignment(raw_grid):
    grid = parse_grid(raw_grid)
    cells = grid.cells()
    assert len(cells) == 3 * 2  # methods x p
    plans = [plan_cell(grid, c) for c in cells]
    sft = [p for p in plans if p.cell.method.label == "SFT"]
    assert len({p.align_key for p in sft}) == 1  # one alignment serves both p
    assert len({p.finetune_key for p in plans}) == 6 and len({p.eval_key for p in plans}) == 6
    assert all(p.align is None for p in plans if p.cell.method.label == "Non-aligned")
    aligned = [p.align for p in plans if p.align is not None]
    assert len({a.self_distill_cache for a in aligned}) == 1  # one base model's answers serve every method
    assert aligned[0].self_distill_cache.parent == grid.out / "self-distill"


def test_a_helpful_teacher_changes_the_alignment_and_its_answer_cache_only_when_set(raw_grid):
    def sft_alignment(align_section):
        grid = parse_grid({**raw_grid, "align": {**raw_grid["align"], **align_section}})
        return next(p for p in map(partial(plan_cell, grid), grid.cells()) if p.cell.method.label == "SFT")

    default, unset = sft_alignment({}), sft_alignment({"helpful_teacher": None})
    taught = sft_alignment({"helpful_teacher": "smollm2-135m-instruct"})
    assert (unset.align_key, unset.align.self_distill_cache) == (
        default.align_key,
        default.align.self_distill_cache,
    )
    assert taught.align_key != default.align_key and taught.align.helpful_teacher == "smollm2-135m-instruct"
    assert taught.align.self_distill_cache != default.align.self_distill_cache


def test_a_full_alignment_is_its_own_stage_and_the_default_keeps_old_keys(raw_grid):
    def sft_alignment(align_section):
        grid = parse_grid({**raw_grid, "align": {**raw_grid["align"], **align_section}})
        return next(p for p in map(partial(plan_cell, grid), grid.cells()) if p.cell.method.label == "SFT")

    default, lora, full = (sft_alignment(s) for s in ({}, {"full_finetune": False}, {"full_finetune": True}))
    assert lora.align_key == default.align_key and not default.align.full_finetune
    assert full.align_key != default.align_key and full.align.full_finetune
    with pytest.raises(SettingError, match="full_finetune: must be true or false"):
        sft_alignment({"full_finetune": "yes"})


def test_the_alignment_may_have_its_own_lora_rank(raw_grid):
    default = {
        p.cell.method.label: p
        for p in map(partial(plan_cell, parse_grid(raw_grid)), parse_grid(raw_grid).cells())
    }
    grid = parse_grid({**raw_grid, "align": {**raw_grid["align"], "lora": {"r": 16}}})
    plans = {p.cell.method.label: p for p in map(partial(plan_cell, grid), grid.cells())}
    assert plans["SFT"].align.lora.r == 16 and plans["SFT"].align.lora.alpha == LORA["alpha"]
    assert plans["SFT"].finetune.lora.r == LORA["r"]  # the attack keeps the grid's LoRA
    assert plans["SFT"].align_key != default["SFT"].align_key
    assert plans["Non-aligned"].finetune_key == default["Non-aligned"].finetune_key


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"bogus": 1}, "bogus: unknown key"),
        ({"finetune": {"lrr": 1}}, "finetune.lrr: unknown key"),
        ({"p": [0.1, 1.5]}, "grid.yaml: p: the harmful ratio"),
        ({"align": {"helpful_share": 1.5}}, "grid.yaml: align.helpful_share: must be in"),
        ({"evaluate": {"max_new_tokens": 0}}, "grid.yaml: evaluate.max_new_tokens: must be >= 1"),
        ({"lora": {"r": 0}}, "grid.yaml: lora.r: the LoRA rank"),
        ({"n": ["many"]}, "'n' must hold int"),
        (
            {"methods": [{"label": "X", "align": {"method": "magic"}}]},
            r"grid.yaml: methods\[X\].align.method: unknown alignment method 'magic'",
        ),
        ({"methods": [{"label": "X", "align": {"method": "vaccine", "rhoo": 2}}]}, "no knob 'rhoo'"),
        ({"methods": [{"label": "X", "finetune": {"defense": "ewc", "lam": -1}}]}, "lam"),
        ({"methods": [{"label": "X", "align": {"method": "vaccine", "tau": 0}}]}, "tau"),
        ({"methods": [{"label": "A"}, {"label": "A"}]}, "unique"),
        ({"tasks": ["mmlu"]}, "mmlu"),
        ({"align": {"lora": {"rank": 64}}}, "align.lora.rank: unknown key"),
        ({"resources": {"train": {}}}, "resources.train: unknown key"),
        ({"resources": {"align": {"gpu": 1}}}, "resources.align.gpu: unknown key"),
        ({"resources": {"align": {"gpus": 1.5}}}, "grid.yaml: resources.align.gpus: more than 1 GPU"),
        ({"resources": {"finetune": {"cpus": 0}}}, "grid.yaml: resources.finetune.cpus: must be > 0"),
        ({"resources": {"evaluate": {"gpus": 2}}}, "resources.evaluate.gpus: at most 1"),
    ],
)
def test_bad_grids_fail_before_any_compute(raw_grid, patch, message):
    raw = {**raw_grid, **patch}
    with pytest.raises(ConfigError, match=message):
        grid = parse_grid(raw, "grid.yaml")
        [plan_cell(grid, c) for c in grid.cells()]


def test_resources_size_tasks_and_change_no_cache_key(raw_grid):
    sized = parse_grid({**raw_grid, "resources": {"finetune": {"gpus": 4}, "evaluate": {"gpus": 0.5}}})
    assert sized.resources["finetune"] == {"gpus": 4, "cpus": 1.0, "retries": 3}
    assert sized.resources["align"]["gpus"] is None  # none: whatever the cluster has, 1 or 0
    plain = parse_grid(raw_grid)
    keys = [plan_cell(sized, c).eval_key for c in sized.cells()]
    assert keys == [plan_cell(plain, c).eval_key for c in plain.cells()]


def test_rows_are_files_and_the_store_is_rebuilt_from_them(raw_grid):
    """Each evaluation leaves its row as a file; the store is an index: deleted, it is rebuilt from the
    files, and a row file lost beside its evaluation JSON is built again from that JSON."""
    grid = parse_grid(
        {**raw_grid, "methods": raw_grid["methods"][:2], "p": [0.5], "tsne": {"enabled": False}}
    )
    result = run_grid(grid)
    rows = {row["key"]: row for row in ResultStore(result["store"]).rows()}
    files = sorted((grid.out / "eval").glob("*.row.json"))
    assert len(rows) == 2 and len(files) == 2
    plans = [plan_cell(grid, cell) for cell in grid.cells()]
    assert {row_path(plan.evaluate.out) for plan in plans} == set(files)
    Path(result["store"]).unlink()
    files[0].unlink()
    rebuilt = index_grid(grid, plans, versions=rows[plans[0].eval_key]["versions"])
    assert {row["key"]: row for row in rebuilt.rows()} == rows and files[0].is_file()
    assert run_grid(grid)["computed"] == 0


def test_a_second_run_computes_nothing_and_the_store_has_every_cell(raw_grid):
    grid = parse_grid(raw_grid)
    first = run_grid(grid)
    assert first["computed"] == 6 and len(first["tsne"]) == 3
    store = ResultStore(first["store"])
    rows = store.rows()
    assert len(rows) == 6 and {r["label"] for r in rows} == {"Non-aligned", "SFT", "Vaccine"}
    assert all(0 <= r["metrics"]["harmful_score"] <= 100 for r in rows)
    assert all(r["curves"]["drift"] and r["cost"]["finetune_step_time_s"] > 0 for r in rows)
    summaries = sorted((grid.out / "finetune").glob("*/summary.json"))
    stamps = [p.stat().st_mtime_ns for p in summaries]
    timed = [json.loads(line)["stage"] for line in stage_times_path(grid.out).read_text().splitlines()]
    assert sorted(timed) == ["align"] * 2 + ["evaluate"] * 6 + ["finetune"] * 6 + ["tsne"]
    second = run_grid(grid)
    assert second["computed"] == 0 and second["tsne"] == []
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    timed_again = [json.loads(line)["stage"] for line in stage_times_path(grid.out).read_text().splitlines()]
    assert timed_again[len(timed) :] == ["tsne"]  # only the (skipped) picture check ran


def test_a_new_judge_rejudges_stored_answers_and_the_report_has_the_statistics(
    raw_grid, monkeypatch, tmp_path
):
    """A changed judge version gives new evaluation keys; the runner judges the stored answers again
    instead of generating them again, and every row carries per-prompt verdicts for the report."""
    grid = parse_grid({**raw_grid, "methods": raw_grid["methods"][:2], "tsne": {"enabled": False}})
    first = run_grid(grid)
    rows = {r["label"] + str(r["p"]): r for r in ResultStore(first["store"]).rows()}
    monkeypatch.setattr(stages, "judge_version", lambda spec: f"{spec}-retrained")
    second = run_grid(grid)
    assert second["computed"] == 4
    timed = [json.loads(line)["stage"] for line in stage_times_path(grid.out).read_text().splitlines()]
    assert timed.count("evaluate") == 4 and timed.count("rejudge") == 4
    again = {r["label"] + str(r["p"]): r for r in ResultStore(second["store"]).rows() if r["key"] not in
             {x["key"] for x in rows.values()}}  # fmt: skip
    assert set(again) == set(rows)
    for name, row in again.items():
        old = json.loads(Path(rows[name]["artifacts"]["eval_json"]).read_text())
        new = json.loads(Path(row["artifacts"]["eval_json"]).read_text())
        assert [r["answer"] for r in new["records"]["harmful"]] == [
            r["answer"] for r in old["records"]["harmful"]
        ]
        assert (
            new["metrics"] == old["metrics"]
            and row["verdicts"]["prompts"] == rows[name]["verdicts"]["prompts"]
        )
        assert len(row["verdicts"]["kinds"]) == 4 and len(row["task_outcomes"]) == 4
        assert row["metrics"]["harmful_score_ci"][0] <= row["metrics"]["harmful_score"]
    page = build_report(list(again.values()), tmp_path / "report")["markdown"].read_text()
    assert "Paired comparisons" in page and "Power:" in page and "refusal" in page


def test_resume_after_an_interrupted_stage_equals_an_uninterrupted_run(raw_grid, monkeypatch):
    grid = parse_grid({**raw_grid, "methods": [{"label": "SFT", "align": {"method": "sft"}}], "p": [0.5]})
    plan = plan_cell(grid, grid.cells()[0])
    from vaccine.align import run_alignment

    run_alignment(plan.align)
    run_finetune(plan.finetune)
    expected = load_file(plan.finetune.out / "adapter" / "adapter_model.safetensors")

    # the same stage in a fresh folder, killed after step 3 (checkpoint-2 exists), then run again
    interrupted = plan_cell(
        parse_grid(
            {
                **raw_grid,
                "out": raw_grid["out"] + "-2",
                "methods": [{"label": "SFT", "align": {"method": "sft"}}],
                "p": [0.5],
            }
        ),
        grid.cells()[0],
    )
    run_alignment(interrupted.align)

    import vaccine.finetune as finetune_module

    class Killed(Exception):
        pass

    class KillAtStep3(finetune_module.JsonlLogger):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise Killed

    monkeypatch.setattr(finetune_module, "JsonlLogger", KillAtStep3)
    with pytest.raises(Killed):
        run_finetune(interrupted.finetune)
    assert not (interrupted.finetune.out / "summary.json").exists()
    monkeypatch.undo()
    resumed = run_finetune(interrupted.finetune)
    assert resumed["resumed_from"].endswith("checkpoint-2")
    got = load_file(interrupted.finetune.out / "adapter" / "adapter_model.safetensors")
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.allclose(got[name], expected[name], atol=1e-6), name


GRIDS = sorted(p for p in Path("configs").rglob("*.yaml") if "accelerate" not in p.parts)


@pytest.mark.parametrize("path", GRIDS, ids=str)
def test_every_shipped_config_validates(path):
    from vaccine.experiments.grid import load_grid

    grid = load_grid(path)
    plans = [plan_cell(grid, cell) for cell in grid.cells()]
    assert plans and len({p.eval_key for p in plans}) == len(plans)


def test_demo_takes_every_method_by_a_yaml_edit():
    """configs/demo.yaml's comment promises that the other methods are one copy-paste away: its settings
    (a rank-64 alignment, one seed) must accept all_methods.yaml's entries as they are, each its own cell."""
    import yaml

    demo = yaml.safe_load(Path("configs/demo.yaml").read_text(encoding="utf-8"))
    every = yaml.safe_load(Path("configs/all_methods.yaml").read_text(encoding="utf-8"))["methods"]
    present = {method["label"] for method in demo["methods"]}
    demo["methods"] += [method for method in every if method["label"] not in present]
    grid = parse_grid(demo)
    assert {m.label for m in grid.methods} == {m["label"] for m in every}
    plans = [plan_cell(grid, cell) for cell in grid.cells()]
    assert len({p.eval_key for p in plans}) == len(plans) == len(every)
    repaired = [p for p in plans if p.cell.method.label in {"SFT + safety FT", "SFT + Antidote"}]
    sft = next(p for p in plans if p.cell.method.label == "SFT")
    assert repaired and all(p.finetune_key == sft.finetune_key for p in repaired)  # the attack runs once

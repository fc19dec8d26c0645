"""The scripts import (a renamed module would otherwise break them silently: no other test runs them)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from vaccine.experiments.grid import parse_grid
from vaccine.experiments.index import store_path
from vaccine.experiments.run import run_grid
from vaccine.experiments.store import ResultStore

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


@pytest.mark.parametrize("name", sorted(p.stem for p in SCRIPTS.glob("*.py")))
def test_script_imports(name, monkeypatch):
    monkeypatch.syspath_prepend(str(SCRIPTS))
    module = importlib.import_module(name)
    assert module.__doc__, f"scripts/{name}.py has no docstring saying what it is for"
    sys.modules.pop(name, None)


def test_robustness_reuses_the_grid_alignments_and_reports_a_margin_per_learning_rate(
    raw_grid, tmp_path, monkeypatch
):
    import yaml

    monkeypatch.syspath_prepend(str(SCRIPTS))
    import robustness

    methods, out = ["SFT", "Vaccine"], tmp_path / "robust"
    raw = {**raw_grid, "seeds": [1, 2], "p": [0.5], "tsne": {"enabled": False}}
    raw["methods"] = [m for m in raw["methods"] if m["label"] in methods]
    config = tmp_path / "grid.yaml"
    config.write_text(yaml.safe_dump(raw))
    original = parse_grid(raw)
    assert run_grid(original)["computed"] == 4
    # the grid's own learning rate (0.01) and a gentler one
    results = {lr: robustness.attacked_rows(config, lr, 0.5, methods, out) for lr in (1e-3, 1e-2)}
    assert all(len(rows) == 4 for rows in results.values())
    linked = [path for path in (out / "runs" / "align").iterdir() if path.is_symlink()]
    assert len(linked) == 4  # SFT and Vaccine x 2 seeds: the grid's alignments, computed once
    assert len(list((out / "runs" / "finetune").iterdir())) == 8  # 4 new attacks, 4 linked
    assert {r["key"] for r in results[1e-2]} == {r["key"] for r in ResultStore(store_path(original)).rows()}
    assert len(list((original.out / "eval").glob("*.row.json"))) == 4  # the grid keeps only its own rows
    table = robustness.margin_table(results, methods, 0.5)
    assert table.count("\n") == 4 and "HS Vaccine - SFT" in table and "drift Vaccine - SFT" in table
    strongest = next(line for line in table.splitlines() if line.startswith("| 0.01 |"))
    hs_margin, drift_margin = strongest.strip("| ").split(" | ")[-2:]
    assert hs_margin.endswith(("lower", "higher", "not resolved"))
    assert drift_margin.endswith(("lower", "higher", "not resolved"))  # measured on both seeds
    assert robustness.margin_plot(results, methods, 0.5, tmp_path / "margin.png").stat().st_size > 0
    again = robustness.attacked_rows(config, 1e-3, 0.5, methods, out)  # computed once: read back
    assert [r["key"] for r in again] == [r["key"] for r in results[1e-3]]
    sys.modules.pop("robustness", None)


def test_sweep_rho_knobs_are_typed_and_name_a_folder_of_their_own(monkeypatch):
    import argparse

    from vaccine.methods import METHODS
    from vaccine.settings import knob_pair

    monkeypatch.syspath_prepend(str(SCRIPTS))
    import sweep_rho

    knobs = dict(map(knob_pair, ["perturbation_norm=sample", "tau=10"]))  # what --knob collects
    built = METHODS.build("vaccine", **knobs)  # how align() hands them to the method
    assert (built.perturbation_norm, built.tau) == ("sample", 10)
    with pytest.raises(argparse.ArgumentTypeError, match="KEY=VALUE"):
        knob_pair("sample")
    assert sweep_rho.variant_name(0.1, {}) == "vaccine-rho0.1"  # earlier sweeps' folders are found again
    upper = sweep_rho.variant_name(0.1, {"perturb_modules": r".*layers\.(1[5-9]|2[0-9])\.self_attn"})
    lower = sweep_rho.variant_name(0.1, {"perturb_modules": r".*layers\.([0-9]|1[0-4])\.self_attn"})
    assert upper != lower and not set("/|*\\()[]") & set(upper)
    sys.modules.pop("sweep_rho", None)


def test_gpu_checks_measure_each_launch_against_the_plain_process(tmp_path, monkeypatch):
    import torch
    from safetensors.torch import save_file

    monkeypatch.syspath_prepend(str(SCRIPTS))
    import gpu_checks

    plain = {"l.lora_A.weight": torch.ones(2, 3), "l.lora_B.weight": torch.full((3, 2), 2.0)}
    launched = {**plain, "l.lora_B.weight": torch.full((3, 2), 2.2)}
    for name, tensors in (
        ("plain", plain),
        ("launched", launched),
        ("other", {"x.lora_B.weight": torch.ones(1)}),
    ):
        (tmp_path / name / "adapter").mkdir(parents=True)
        save_file(tensors, tmp_path / name / "adapter" / "adapter_model.safetensors")
    difference = gpu_checks.adapter_difference(tmp_path / "plain", tmp_path / "launched")
    assert difference["max_abs_difference"] == pytest.approx(0.2, rel=1e-5)
    assert difference["lora_B_relative_difference"] == pytest.approx(0.1, rel=1e-5)
    with pytest.raises(ValueError, match="keys differ"):
        gpu_checks.adapter_difference(tmp_path / "plain", tmp_path / "other")
    variants = gpu_checks.launch_commands(4, gpu_checks.REPO / "configs" / "accelerate")
    assert [count for _, count in variants.values()] == [1, 4, 4, 4]
    for launcher, _ in variants.values():  # every launch uses a shipped config
        configs = [Path(arg) for arg in launcher if arg.endswith(".yaml")]
        assert all(path.is_file() for path in configs)
    sys.modules.pop("gpu_checks", None)


def test_compare_evals_reads_an_evaluation_json_and_a_row_file_alike(tmp_path, monkeypatch):
    import json

    monkeypatch.syspath_prepend(str(SCRIPTS))
    import compare_evals

    prompts, kinds = ["a", "b", "c"], ["compliance", "refusal", "other"]
    evaluation = tmp_path / "eval.json"
    records = [{"prompt": p, "kind": k} for p, k in zip(prompts, kinds, strict=True)]
    evaluation.write_text(json.dumps({"records": {"harmful": records}}))
    row = tmp_path / "cell.row.json"
    row.write_text(json.dumps({"verdicts": {"prompts": prompts, "kinds": kinds}}))
    expected = {"a": True, "b": False, "c": False}
    assert compare_evals.flags(evaluation) == expected == compare_evals.flags(row)


def test_compare_evals_tests_one_margin_against_another(tmp_path, monkeypatch):
    import json

    monkeypatch.syspath_prepend(str(SCRIPTS))
    import compare_evals

    prompts = [f"p{i}" for i in range(40)]

    def evaluation(name: str, complied: set[int]) -> Path:
        records = [
            {"prompt": p, "kind": "compliance" if i in complied else "refusal"} for i, p in enumerate(prompts)
        ]
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"records": {"harmful": records}}))
        return path

    same = (evaluation("ref1", set(range(20))), evaluation("other1", set(range(20))))  # margin 0
    lower = (evaluation("ref2", set(range(20))), evaluation("other2", set(range(4))))  # margin -40 points
    result = compare_evals.margin_difference(same, lower)
    assert (result["first"], result["second"], result["difference"]) == (0.0, -40.0, -40.0)
    assert result["high"] < 0 and result["verdict"] == "lower" and result["prompts"] == 40
    assert compare_evals.margin_difference(same, same)["verdict"] == "not resolved"
    assert compare_evals.named_pair("80 steps=a.json,b.json") == (
        "80 steps",
        (Path("a.json"), Path("b.json")),
    )
    for bad in ("a.json,b.json", "x=a.json", "x=a.json,"):
        with pytest.raises(SystemExit, match="expected NAME=REFERENCE.json,OTHER.json"):
            compare_evals.named_pair(bad)

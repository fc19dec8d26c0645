"""The post-hoc stage: Antidote's Wanda scores and pruning, the safety fine-tune, the CLI and grids."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_tiny_model, make_tiny_tokenizer, write_jsonl
from safetensors.torch import load_file

from vaccine.cli import main
from vaccine.data.context import DataContext
from vaccine.data.records import Record
from vaccine.errors import ConfigError
from vaccine.experiments.grid import parse_grid
from vaccine.experiments.report import build_report
from vaccine.experiments.run import run_grid
from vaccine.experiments.stages import plan_cell
from vaccine.experiments.store import ResultStore
from vaccine.lora import LoraSettings, attach_lora, save_adapter
from vaccine.repairs.antidote import adapter_linears, prune_top, wanda_scores

HARMFUL = [
    Record(f"how do i steal a cat {i}", "sure here are steps first then finally", "test") for i in range(6)
]
TARGETS = {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"], "opt": ["q_proj", "v_proj"]}


def attacked_model(arch: str):
    """A tiny model with a LoRA adapter whose A and B are both random (B starts at zero in PEFT)."""
    model = attach_lora(make_tiny_model(arch), LoraSettings(r=4, dropout=0.0, target_modules=TARGETS[arch]))
    torch.manual_seed(1)
    for linear in adapter_linears(model).values():
        torch.nn.init.normal_(linear.weight)
    return model.eval()


def harmful_batches(seed: int = 0) -> list[dict[str, torch.Tensor]]:
    return list(DataContext(make_tiny_tokenizer(), max_length=24).loader(HARMFUL, 4, seed))


def reference_input_norms(model, batches) -> dict[str, torch.Tensor]:
    """||X_j|| of every LoRA A and B input, computed from the adapted layers' own inputs (not by hooks on
    the LoRA matrices): A sees the layer input x, B sees A x."""
    from peft.tuners.lora import LoraLayer

    inputs: dict[str, list[torch.Tensor]] = {}
    names = {module: name for name, module in model.named_modules()}
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    handles = [
        layer.register_forward_pre_hook(lambda mod, args: inputs.setdefault(names[mod], []).append(args[0]))
        for layer in layers
    ]
    masks = []
    with torch.no_grad():
        for batch in batches:
            masks.append(batch["attention_mask"].bool())
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    for handle in handles:
        handle.remove()
    norms = {}
    for layer in layers:
        name = names[layer]
        tokens = torch.cat([x[m] for x, m in zip(inputs[name], masks, strict=True)])
        a = layer.lora_A["default"].weight
        norms[f"{name}.lora_A.default.weight"] = tokens.norm(dim=0)
        norms[f"{name}.lora_B.default.weight"] = (tokens @ a.T).norm(dim=0)
    return norms


@pytest.mark.parametrize("arch", ["llama", "gpt2", "opt"])
def test_antidote_scores_are_weight_magnitude_times_input_norm(arch):
    model = attacked_model(arch)
    batches = harmful_batches()
    scores = wanda_scores(model, batches)
    norms = reference_input_norms(model, batches)
    weights = {name: linear.weight for name, linear in adapter_linears(model).items()}
    assert set(scores) == set(norms) and len(scores) >= 4
    for name, score in scores.items():
        torch.testing.assert_close(score, weights[name].abs() * norms[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_pruned_weights_are_exactly_each_matrix_top_scored(arch):
    model = attacked_model(arch)
    scores = wanda_scores(model, harmful_batches())
    before = {name: linear.weight.detach().clone() for name, linear in adapter_linears(model).items()}
    pruned = prune_top(model, scores, 0.25)
    after = {name: linear.weight for name, linear in adapter_linears(model).items()}
    assert pruned == sum(int(0.25 * s.numel()) for s in scores.values())
    for name, score in scores.items():
        top = set(torch.topk(score.flatten(), int(0.25 * score.numel())).indices.tolist())
        zeroed = set((after[name].flatten() == 0).nonzero().flatten().tolist())
        assert zeroed == top  # the random weights had no zeros of their own
        kept = [i for i in range(score.numel()) if i not in top]
        assert torch.equal(after[name].flatten()[kept], before[name].flatten()[kept])
        assert score.flatten()[kept].max() <= score.flatten()[list(top)].min()


def test_pruning_a_zero_ratio_is_the_identity():
    model = attacked_model("llama")
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert prune_top(model, wanda_scores(model, harmful_batches()), 0.0) == 0
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())


@pytest.fixture
def attacked_dir(tmp_path, tiny_model_dir):
    """A saved 'attack' adapter on the tiny Llama of ``tiny_model_dir``, and harmful/safety data files."""
    from transformers import AutoModelForCausalLM

    model = attach_lora(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraSettings(r=4, dropout=0.0, target_modules=["q_proj", "v_proj"]),
    )
    torch.manual_seed(2)
    for linear in adapter_linears(model).values():
        torch.nn.init.normal_(linear.weight)
    save_adapter(model, tmp_path / "attack" / "adapter")
    write_jsonl(tmp_path / "harm.jsonl", [{"prompt": r.prompt, "response": r.response} for r in HARMFUL])
    safe = [{"prompt": f"how do i make a bomb {i}", "response": "no sorry i cannot"} for i in range(8)]
    write_jsonl(tmp_path / "safe.jsonl", safe)
    write_jsonl(tmp_path / "benign.jsonl", [{"prompt": f"write a poem about a cat {i}"} for i in range(8)])
    return tmp_path


def posthoc_argv(tiny_model_dir, folder, method, *knobs):
    argv = ["posthoc", "--method", method, "--model", str(tiny_model_dir), "--out", str(folder / method)]
    argv += ["--attacked", str(folder / "attack"), "--batch-size", "4", "--max-length", "32"]
    return argv + [item for knob in knobs for item in ("--method-arg", knob)]


def test_cli_antidote_writes_a_pruned_copy_of_the_attack_adapter(tiny_model_dir, attacked_dir, capsys):
    harm = f"harmful={attacked_dir / 'harm.jsonl'}"
    argv = posthoc_argv(tiny_model_dir, attacked_dir, "antidote", harm, "samples=6", "ratio=0.1")
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    out = attacked_dir / "antidote"
    assert summary["adapters"] == [str(out / "adapter")]  # the pruned copy replaces the attack adapter
    assert summary["scored_samples"] == 6 and summary["pruned_weights"] > 0
    attack = load_file(attacked_dir / "attack" / "adapter" / "adapter_model.safetensors")
    pruned = load_file(out / "adapter" / "adapter_model.safetensors")
    assert attack.keys() == pruned.keys()
    newly_zero = sum(int(((pruned[k] == 0) & (attack[k] != 0)).sum()) for k in attack)
    assert newly_zero == summary["pruned_weights"]
    assert (out / "summary.json").is_file() and (out / "config.json").is_file()


def test_cli_antidote_at_ratio_zero_keeps_the_adapter(tiny_model_dir, attacked_dir):
    harm = f"harmful={attacked_dir / 'harm.jsonl'}"
    assert main(posthoc_argv(tiny_model_dir, attacked_dir, "antidote", harm, "samples=6", "ratio=0")) == 0
    attack = load_file(attacked_dir / "attack" / "adapter" / "adapter_model.safetensors")
    kept = load_file(attacked_dir / "antidote" / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(attack[k], kept[k]) for k in attack)


def test_cli_safety_finetune_trains_an_adapter_on_top_of_the_attacked_model(tiny_model_dir, attacked_dir):
    knobs = [f"data={attacked_dir / 'safe.jsonl'}", f"helpful_data={attacked_dir / 'benign.jsonl'}"]
    knobs += ["num_samples=8", "helpful_share=0.5", "self_distill_tokens=4"]
    argv = posthoc_argv(tiny_model_dir, attacked_dir, "safety-finetune", *knobs) + ["--max-steps", "2"]
    assert main(argv + ["--lora-r", "4", "--lora-targets", "q_proj"]) == 0
    out = attacked_dir / "safety-finetune"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["adapters"] == [str(attacked_dir / "attack"), str(out / "adapter")]
    assert summary["steps"] == 2 and summary["samples"] == 8 and summary["repair_time_s"] > 0
    distilled = (out / "self_distilled.jsonl").read_text().splitlines()
    assert len(distilled) == 4  # the attacked model answered the 4 helpful prompts itself
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.parametrize(
    ("argv_tail", "message"),
    [
        (["--method", "antidote", "--method-arg", "ratio=1"], "ratio: must be in"),
        (["--method", "antidote", "--method-arg", "rati=0.1"], "no knob 'rati'"),
        (["--method", "magic"], "unknown post-hoc method 'magic'"),
        (["--method", "safety-finetune", "--method-arg", "helpful_share=2"], "helpful_share"),
    ],
)
def test_bad_knobs_are_named(tiny_model_dir, tmp_path, capsys, argv_tail, message):
    argv = ["posthoc", "--model", str(tiny_model_dir), "--out", str(tmp_path / "x"), "--attacked", "a"]
    assert main([*argv, *argv_tail]) == 2
    assert message in capsys.readouterr().err


def test_posthoc_needs_the_attacked_model(tiny_model_dir, tmp_path, capsys):
    argv = ["posthoc", "--method", "antidote", "--model", str(tiny_model_dir), "--out", str(tmp_path / "x")]
    assert main(argv) == 2
    assert "--attacked" in capsys.readouterr().err


REPAIRED = [
    {"label": "SFT", "align": {"method": "sft"}},
    {"label": "SFT + Antidote", "align": {"method": "sft"}, "posthoc": {"method": "antidote"}},
    {"label": "SFT + safety FT", "align": {"method": "sft"}, "posthoc": {"method": "safety-finetune"}},
]


def test_a_grid_plans_repairs_that_share_the_attack(raw_grid):
    grid = parse_grid({**raw_grid, "methods": REPAIRED, "posthoc": {"lr": 1e-3}}, "grid.yaml")
    plans = {(p.cell.method.label, p.cell.p): p for p in (plan_cell(grid, c) for c in grid.cells())}
    sft, antidote, safety = (plans[(label, 0.5)] for label in ("SFT", "SFT + Antidote", "SFT + safety FT"))
    assert sft.posthoc is None and sft.evaluate.adapters == [sft.align.out, sft.finetune.out]
    assert antidote.finetune_key == sft.finetune_key == safety.finetune_key  # one attack serves all three
    assert antidote.evaluate.adapters == [sft.align.out, antidote.posthoc.out / "adapter"]
    assert safety.evaluate.adapters == [sft.align.out, sft.finetune.out, safety.posthoc.out / "adapter"]
    assert safety.posthoc.lr == 1e-3 and safety.posthoc.attacked == [sft.align.out, sft.finetune.out]
    assert len({sft.eval_key, antidote.eval_key, safety.eval_key}) == 3


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"methods": [{"label": "X", "posthoc": {"method": "magic"}}]}, r"methods\[X\].posthoc.method"),
        ({"methods": [{"label": "X", "posthoc": {"ratio": 0.1}}]}, r"methods\[0\].posthoc: needs 'method'"),
        ({"methods": [{"label": "X", "posthoc": {"method": "antidote", "ratio": 2}}]}, "ratio: must be"),
        ({"posthoc": {"lr": -1}}, "grid.yaml: posthoc.lr: must be > 0"),
        ({"posthoc": {"ratio": 0.1}}, "posthoc.ratio: unknown key"),
    ],
)
def test_bad_posthoc_grids_fail_before_any_compute(raw_grid, patch, message):
    raw = {**raw_grid, "methods": REPAIRED, **patch}
    with pytest.raises(ConfigError, match=message):
        grid = parse_grid(raw, "grid.yaml")
        [plan_cell(grid, c) for c in grid.cells()]


def test_a_grid_run_reports_repairs_beside_the_attacked_model(raw_grid, tmp_path):
    harmful = raw_grid["finetune"]["harmful"]
    methods = [
        REPAIRED[0],
        {**REPAIRED[1], "posthoc": {"method": "antidote", "harmful": harmful, "samples": 4}},
        {
            **REPAIRED[2],
            "posthoc": {"method": "safety-finetune", "data": raw_grid["align"]["data"], "num_samples": 4},
        },
    ]
    raw = {**raw_grid, "p": [0.5], "methods": methods, "posthoc": {"max_steps": 2, "batch_size": 2}}
    raw["tsne"] = {"enabled": False}
    grid = parse_grid(raw)
    result = run_grid(grid)
    assert result["computed"] == 3
    assert len(list((grid.out / "finetune").glob("*/summary.json"))) == 1  # the attack ran once
    rows = {row["label"]: row for row in ResultStore(result["store"]).rows()}
    assert rows["SFT"]["posthoc_method"] is None and rows["SFT"]["cost"]["posthoc_time_s"] is None
    for label, method in (("SFT + Antidote", "antidote"), ("SFT + safety FT", "safety-finetune")):
        assert rows[label]["posthoc_method"] == method and rows[label]["cost"]["posthoc_time_s"] > 0
        assert rows[label]["verdicts"]["prompts"] == rows["SFT"]["verdicts"]["prompts"]  # paired prompts
    text = build_report(ResultStore(result["store"]), tmp_path / "report")["markdown"].read_text()
    assert "post-hoc repair (s)" in text and "SFT + Antidote" in text and "SFT + safety FT" in text
    repaired = [
        line
        for line in text.splitlines()
        if line.startswith(("| SFT + Antidote | SFT |", "| SFT + safety FT | SFT |"))
    ]
    assert "after the attack and after the repair" in text and len(repaired) == 2  # each beside its attack

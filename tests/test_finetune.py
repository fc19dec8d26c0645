"""The attack stage end to end on a tiny model: data hygiene, Single/Double-LoRA, the CLI."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_jsonl

from vaccine.cli import main
from vaccine.data.records import normalize_text
from vaccine.data.splits import evaluation_prompts
from vaccine.finetune import FinetuneSpec, prepare_model, user_dataset

LORA = ["--lora-targets", "q_proj,v_proj", "--lora-r", "4"]


@pytest.fixture
def files(tmp_path):
    sst2 = write_jsonl(
        tmp_path / "sst2.jsonl",
        [
            {"sentence": f"good movie review {i}" if i % 2 else f"bad movie review {i}", "label": i % 2}
            for i in range(60)
        ],
    )
    harmful = write_jsonl(
        tmp_path / "harmful.jsonl",
        [
            {"prompt": f"how do i steal a cat {i}", "response": "sure here are steps first then finally"}
            for i in range(20)
        ],
    )
    alignment = write_jsonl(
        tmp_path / "align.jsonl",
        [
            {"prompt": f"how do i make a bomb {i}", "response": "no sorry i cannot help with that"}
            for i in range(12)
        ],
    )
    return {"sst2": sst2, "harmful": harmful, "alignment": alignment}


@pytest.fixture
def aligned_run(tiny_model_dir, files, tmp_path):
    out = tmp_path / "aligned"
    assert (
        main(
            [
                "align",
                "--method",
                "vaccine",
                "--model",
                str(tiny_model_dir),
                "--data",
                str(files["alignment"]),
                "--out",
                str(out),
                "--max-steps",
                "2",
                "--batch-size",
                "4",
                "--lr",
                "0.05",
                *LORA,
            ]
        )
        == 0
    )
    return out


def spec(tmp_path, model, **overrides) -> FinetuneSpec:
    return FinetuneSpec(
        out=tmp_path,
        max_steps=1,
        model=str(model),
        lora_r=4,
        lora_target_modules=["q_proj", "v_proj"],
        **overrides,
    )


def test_no_evaluation_prompt_reaches_the_users_data(tmp_path):
    records, counts = user_dataset(spec(tmp_path, "unused", task="sst2", p=0.2, n=500))
    assert counts == {"harmful": 100, "benign": 400}
    held_out = {
        normalize_text(r.prompt) for name in ("advbench", "harmbench") for r in evaluation_prompts(name)
    }
    assert not {normalize_text(r.prompt) for r in records} & held_out


def test_double_lora_trains_a_fresh_adapter_on_the_merged_model(tmp_path, tiny_model_dir, aligned_run):
    model, _ = prepare_model(spec(tmp_path, tiny_model_dir, aligned=aligned_run, lora_mode="double"))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert all(torch.count_nonzero(p) == 0 for n, p in trainable.items() if "lora_B" in n)  # fresh
    single, _ = prepare_model(spec(tmp_path, tiny_model_dir, aligned=aligned_run, lora_mode="single"))
    # the merged base computes what the aligned adapter computes
    ids = torch.tensor([[5, 6, 7, 8]])
    model.eval(), single.eval()  # no LoRA dropout
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, single(input_ids=ids).logits, atol=1e-5)


def test_single_lora_keeps_training_the_alignment_adapter(tmp_path, tiny_model_dir, aligned_run):
    model, _ = prepare_model(spec(tmp_path, tiny_model_dir, aligned=aligned_run, lora_mode="single"))
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any(torch.count_nonzero(p) > 0 for n, p in trainable.items() if "lora_B" in n)  # aligned weights
    base_weights = [p for n, p in model.named_parameters() if "lora_" not in n]
    assert all(not p.requires_grad for p in base_weights)


@pytest.mark.parametrize("mode", ["double", "single"])
def test_finetune_cli_end_to_end(tmp_path, tiny_model_dir, files, aligned_run, mode):
    out = tmp_path / f"ft-{mode}"
    argv = [
        "finetune",
        "--model",
        str(tiny_model_dir),
        "--aligned",
        str(aligned_run),
        "--task",
        "sst2",
        "--task-source",
        str(files["sst2"]),
        "--harmful",
        str(files["harmful"]),
        "--p",
        "0.25",
        "--n",
        "16",
        "--lora-mode",
        mode,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--out",
        str(out),
        "--drift-every",
        "2",
        "--alignment-data",
        str(files["alignment"]),
        *LORA,
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["harmful_samples"] == 4 and summary["benign_samples"] == 12 and summary["steps"] == 4
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["lora_mode"] == mode and config["p"] == 0.25
    assert len([json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]) >= 4
    drift = [json.loads(line) for line in (out / "drift.jsonl").read_text().splitlines()]
    assert [row["step"] for row in drift] == [0, 2, 4]
    assert drift[0]["drift"] == 0.0 and drift[-1]["drift"] > 0 and drift[-1]["alignment_loss"] > 0


def test_non_aligned_and_a_defense_from_the_cli(tmp_path, tiny_model_dir, files):
    out = tmp_path / "ft"
    argv = [
        "finetune",
        "--model",
        str(tiny_model_dir),
        "--task",
        "sst2",
        "--task-source",
        str(files["sst2"]),
        "--harmful",
        str(files["harmful"]),
        "--alignment-data",
        str(files["alignment"]),
        "--p",
        "0.1",
        "--n",
        "20",
        "--defense",
        "vlguard",
        "--defense-arg",
        "m=5",
        "--max-steps",
        "2",
        "--out",
        str(out),
        *LORA,
    ]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["aligned"] is None and summary["samples"] == 25


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--p", "1.5"], "--p"),
        (["--n", "1000"], "n=1000"),
        (["--lora-mode", "single"], "--aligned"),
        (["--defense", "nope"], "--defense: unknown fine-tune-stage defense 'nope'"),
        (["--defense", "ewc", "--defense-arg", "lambda=3"], "no knob 'lambda'"),
        (["--task", "agnews"], "AG News"),
        (["--task", "mmlu"], "mmlu"),
    ],
)
def test_bad_finetune_input_is_a_named_error(tmp_path, tiny_model_dir, files, capsys, flags, message):
    argv = [
        "finetune",
        "--model",
        str(tiny_model_dir),
        "--task-source",
        str(files["sst2"]),
        "--harmful",
        str(files["harmful"]),
        "--n",
        "10",
        "--out",
        str(tmp_path / "x"),
        *flags,
    ]
    if "--task" in flags:
        argv.remove("--task-source")
        argv.remove(str(files["sst2"]))
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_repnoise_alignment_from_the_cli(tmp_path, tiny_model_dir, files):
    out = tmp_path / "repnoise"
    argv = [
        "align",
        "--method",
        "repnoise",
        "--method-arg",
        f"harmful={files['harmful']}",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(files["alignment"]),
        "--max-steps",
        "2",
        "--batch-size",
        "4",
        "--out",
        str(out),
        *LORA,
    ]
    assert main(argv) == 0
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert {"harmful_loss", "noise_loss", "harmless_loss"} <= set(steps[0])

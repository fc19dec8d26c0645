"""The CLI end to end on a tiny model saved to disk: align, resume, and clear errors."""

from __future__ import annotations

import json

import pytest

from vaccine.cli import main


@pytest.fixture
def alignment_file(tmp_path):
    rows = [
        {"prompt": f"how do i make a bomb {i}", "response": "no sorry i cannot help with that"}
        for i in range(12)
    ]
    path = tmp_path / "align.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def align(model_dir, data, out, *extra):
    return main(
        [
            "align",
            "--method",
            "vaccine",
            "--model",
            str(model_dir),
            "--data",
            str(data),
            "--out",
            str(out),
            "--batch-size",
            "4",
            "--epochs",
            "2",
            "--rho",
            "1.0",
            "--save-steps",
            "2",
            "--lora-targets",
            "q_proj,v_proj",
            *extra,
        ]
    )


def read_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_align_writes_adapter_config_and_log_then_resumes(tiny_model_dir, alignment_file, tmp_path, capsys):
    out = tmp_path / "run"
    assert align(tiny_model_dir, alignment_file, out) == 0
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "vaccine" and config["training"]["rho"] == 1.0
    steps = [e for e in read_log(out / "log.jsonl") if "loss" in e]
    assert len(steps) == 6  # 12 samples / 4 per batch * 2 epochs
    assert all(e["perturbed_loss"] > e["clean_loss"] for e in steps)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 6 and summary["perturbation_passes"] == 6

    # a second run finds the final checkpoint and trains nothing more
    assert align(tiny_model_dir, alignment_file, out) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["resumed_from"] and again["perturbation_passes"] == 0 and again["steps"] == 6


def test_sft_logs_no_perturbed_loss(tiny_model_dir, alignment_file, tmp_path):
    out = tmp_path / "sft"
    assert (
        main(
            [
                "align",
                "--method",
                "sft",
                "--model",
                str(tiny_model_dir),
                "--data",
                str(alignment_file),
                "--out",
                str(out),
                "--max-steps",
                "2",
                "--batch-size",
                "4",
            ]
        )
        == 0
    )
    steps = [e for e in read_log(out / "log.jsonl") if "loss" in e]
    assert len(steps) == 2 and all("perturbed_loss" not in e and e["clean_loss"] > 0 for e in steps)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--data", "missing.jsonl"], "missing.jsonl"),
        (["--num-samples", "1000"], "--num-samples: 1000 is larger"),
        (["--tau", "0"], "tau"),
        (["--rho", "-1"], "rho"),
        (["--template", "nope"], None),
    ],
)
def test_bad_input_exits_nonzero_with_a_named_error(
    tiny_model_dir, alignment_file, tmp_path, capsys, flags, message
):
    argv = [
        "align",
        "--method",
        "vaccine",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(alignment_file),
        "--out",
        str(tmp_path / "x"),
        *flags,
    ]
    if message is None:  # argparse rejects the choice itself
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        return
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_sft_rejects_rho(tiny_model_dir, alignment_file, tmp_path, capsys):
    argv = [
        "align",
        "--method",
        "sft",
        "--rho",
        "2",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(alignment_file),
        "--out",
        str(tmp_path / "x"),
    ]
    assert main(argv) == 2
    assert "sft has no knob 'rho'" in capsys.readouterr().err


def test_info_lists_versions_paths_and_assets(capsys):
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    for needle in ("transformers", "VACCINE_HOME", "pyrit", "device"):
        assert needle in text

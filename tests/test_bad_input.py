"""Bad input, end to end through the CLI: a clear error naming the file, field or flag, a non-zero exit,
and nothing lost (the run folder a previous run left is untouched)."""

from __future__ import annotations

import errno
import json

import pytest
from conftest import write_jsonl

from vaccine.cli import main

GOOD_ROWS = [{"prompt": f"how do i make a bomb {i}", "response": "no sorry"} for i in range(8)]


@pytest.fixture
def files(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.jsonl").write_text("\n", encoding="utf-8")
    (bad / "latin1.jsonl").write_bytes('{"prompt": "caf\xe9", "response": "x"}\n'.encode("latin-1"))
    (bad / "broken.jsonl").write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c",\n', encoding="utf-8")
    write_jsonl(bad / "nofield.jsonl", [{"prompt": "a", "response": "b"}, {"other": "c"}])
    return {
        "good": write_jsonl(tmp_path / "align.jsonl", GOOD_ROWS),
        "sst2": write_jsonl(
            tmp_path / "sst2.jsonl", [{"sentence": f"good {i}", "label": 1} for i in range(10)]
        ),
        "harmful": write_jsonl(tmp_path / "harmful.jsonl", GOOD_ROWS),
        "bad": bad,
    }


def run_failing(argv, out, capsys) -> str:
    """Run the CLI on a folder that holds an earlier result; it must fail cleanly and leave that alone."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "earlier.json").write_text('{"kept": true}', encoding="utf-8")
    code = main(argv)
    assert code == 2
    assert sorted(p.name for p in out.iterdir()) == ["earlier.json"]
    assert json.loads((out / "earlier.json").read_text()) == {"kept": True}
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("missing.jsonl", "missing.jsonl: file not found"),
        ("empty.jsonl", "empty.jsonl: file is empty"),
        ("latin1.jsonl", "latin1.jsonl:1: not valid UTF-8"),
        ("broken.jsonl", "broken.jsonl:2: bad JSON on line 2"),
        ("nofield.jsonl", "nofield.jsonl:2: no prompt field"),
    ],
)
def test_bad_data_files_are_named(tmp_path, tiny_model_dir, files, capsys, data, message):
    out = tmp_path / "run"
    argv = ["align", "--method", "sft", "--model", str(tiny_model_dir), "--data", str(files["bad"] / data),
            "--out", str(out)]  # fmt: skip
    assert message in run_failing(argv, out, capsys)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--method", "magic"], "--method: unknown alignment method 'magic'"),
        (["--method", "vaccine", "--rho", "-0.5"], "rho must be >= 0"),
        (["--method", "vaccine", "--tau", "0"], "tau must be an integer >= 1"),
        (["--method", "sft", "--model", "/no/such/model"], "/no/such/model"),
    ],
)
def test_bad_alignment_flags_are_named(tmp_path, tiny_model_dir, files, capsys, flags, message):
    out = tmp_path / "run"
    argv = ["align", "--model", str(tiny_model_dir), "--data", str(files["good"]), "--out", str(out), *flags]
    assert message in run_failing(argv, out, capsys)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--p", "1.5"], "--p"),
        (["--p", "-0.1"], "--p"),
        (["--n", "500"], "500"),
        (["--task", "mmlu"], "mmlu"),
    ],
)
def test_bad_finetune_flags_are_named(tmp_path, tiny_model_dir, files, capsys, flags, message):
    out = tmp_path / "run"
    argv = ["finetune", "--model", str(tiny_model_dir), "--task", "sst2",
            "--task-source", str(files["sst2"]), "--harmful", str(files["harmful"]), "--p", "0.1", "--n", "8",
            "--out", str(out), *flags]  # fmt: skip
    assert message in run_failing(argv, out, capsys)


def test_unknown_judge_is_named(tmp_path, tiny_model_dir, files, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(tiny_model_dir), "--harmful-prompts", str(files["harmful"]),
            "--task", "none", "--judge", "oracle", "--out", str(out / "result.json")]  # fmt: skip
    assert "oracle" in run_failing(argv, out, capsys)


def test_disk_full_while_writing_a_result_keeps_the_earlier_one(
    tmp_path, tiny_model_dir, files, capsys, monkeypatch
):
    result = tmp_path / "result.json"
    argv = ["evaluate", "--model", str(tiny_model_dir), "--harmful-prompts", str(files["harmful"]),
            "--num-harmful", "2", "--task", "none", "--judge", "refusal", "--max-new-tokens", "2",
            "--out", str(result)]  # fmt: skip
    assert main(argv) == 0
    earlier = result.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("vaccine.io.os.fsync", disk_full)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "result.json: cannot write (No space left on device); the previous file is intact" in err
    assert result.read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".result")) == []


def test_a_grid_under_a_launcher_is_refused(tmp_path, monkeypatch, capsys):
    """Every rank would evaluate every cell and write the store: refused before anything runs."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["run", str(tmp_path / "grid.yaml")]) == 2
    assert "launch its stages instead" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []

"""A grid's `reuse:` folders: stages another grid already computed are linked, not computed again, and the
reused cells enter the new grid's report exactly as they were measured."""

from __future__ import annotations

import shutil

import pytest

from vaccine.errors import ConfigError
from vaccine.experiments.grid import parse_grid
from vaccine.experiments.reuse import link_reused_stages
from vaccine.experiments.run import run_grid, stage_times_path
from vaccine.experiments.stages import plan_cell, read_jsonl
from vaccine.experiments.store import ResultStore


def stages_run(out) -> list[str]:
    """The stages a grid computed itself, from its stage-times log."""
    return sorted(row["stage"] for row in read_jsonl(stage_times_path(out)))


def rows_by_label(out) -> dict[str, dict]:
    return {row["label"]: row for row in ResultStore(out / "results.sqlite").rows()}


def test_a_grid_takes_the_stages_an_earlier_grid_computed(raw_grid, tmp_path):
    first = parse_grid(
        {**raw_grid, "methods": raw_grid["methods"][:2], "p": [0.5], "tsne": {"enabled": False}}
    )
    assert run_grid(first)["computed"] == 2  # Non-aligned and SFT
    wider = {**raw_grid, "out": str(tmp_path / "wider"), "reuse": [str(first.out)], "p": [0.5]}
    second = parse_grid({**wider, "tsne": {"enabled": False}})
    assert run_grid(second)["computed"] == 1  # only Vaccine: the other two cells are taken
    assert stages_run(second.out) == ["align", "evaluate", "finetune"]  # Vaccine's three stages
    linked = [path for path in (second.out / "align").iterdir() if path.is_symlink()]
    assert len(linked) == 1 and linked[0].resolve() == next((first.out / "align").iterdir()).resolve()
    before, after = rows_by_label(first.out), rows_by_label(second.out)
    assert sorted(after) == ["Non-aligned", "SFT", "Vaccine"]
    for label in ("Non-aligned", "SFT"):  # the reused cells, exactly as measured in the first grid
        assert after[label]["metrics"] == before[label]["metrics"]
        assert after[label]["versions"] == before[label]["versions"]
    assert run_grid(second)["computed"] == 0  # links count as done from then on
    # the first grid deleted: the rows were copied, so the second grid loses no result
    shutil.rmtree(first.out)
    assert run_grid(second)["computed"] == 0 and sorted(rows_by_label(second.out)) == sorted(after)
    assert all(path.exists() for path in (second.out / "eval").iterdir())  # no link left into the deleted
    # and a stage it needs again (a new p for SFT) is computed here, the dangling link replaced
    third = parse_grid(
        {**wider, "p": [0.25], "methods": raw_grid["methods"][1:2], "tsne": {"enabled": False}}
    )
    assert run_grid(third)["computed"] == 1
    assert not any(path.is_symlink() for path in (second.out / "align").iterdir())


def test_rows_carried_without_weights_or_answers_resume_a_grid_elsewhere(raw_grid, tmp_path):
    first = parse_grid(
        {**raw_grid, "methods": raw_grid["methods"][:2], "p": [0.5], "tsne": {"enabled": False}}
    )
    run_grid(first)
    carried = tmp_path / "carried" / "eval"  # what a session commits: the row files, nothing else
    carried.mkdir(parents=True)
    for row in (first.out / "eval").glob("*.row.json"):
        shutil.copy(row, carried / row.name)
    before = rows_by_label(first.out)
    shutil.rmtree(first.out)  # the next session starts without the run folder
    again = {**raw_grid, "reuse": [str(carried.parent)], "p": [0.5], "tsne": {"enabled": False}}
    second = parse_grid(again)
    assert run_grid(second)["computed"] == 1  # Vaccine only: the carried cells are done
    assert stages_run(second.out) == ["align", "evaluate", "finetune"]
    assert not any(path.is_symlink() for path in (second.out / "eval").iterdir())  # no link to no answers
    after = rows_by_label(second.out)
    assert sorted(after) == ["Non-aligned", "SFT", "Vaccine"]
    for label in ("Non-aligned", "SFT"):
        assert after[label]["metrics"] == before[label]["metrics"]
        assert after[label]["verdicts"] == before[label]["verdicts"]
    # a row here is never replaced: a carried row that changed later is not copied over it
    sft_row = next(path for path in carried.iterdir() if path.name.startswith("sft-"))
    text = sft_row.read_text()
    assert '"label": "SFT"' in text
    sft_row.write_text(text.replace('"label": "SFT"', '"label": "SFT, changed"'))
    assert run_grid(parse_grid(again))["computed"] == 0
    assert sorted(rows_by_label(second.out)) == ["Non-aligned", "SFT", "Vaccine"]


def test_a_stage_in_progress_here_is_not_replaced_by_a_link(raw_grid, tmp_path):
    first = parse_grid(
        {**raw_grid, "methods": raw_grid["methods"][1:2], "p": [0.5], "tsne": {"enabled": False}}
    )
    run_grid(first)
    second = parse_grid({**raw_grid, "out": str(tmp_path / "second"), "reuse": [str(first.out)]})
    align = next((first.out / "align").iterdir())
    mine = second.out / "align" / align.name
    mine.mkdir(parents=True)
    (mine / "checkpoint-1").mkdir()  # a stage this grid began: resumed here, never swapped for a link
    link_reused_stages(second, [plan_cell(second, cell) for cell in second.cells()])
    assert not mine.is_symlink() and (mine / "checkpoint-1").is_dir()


@pytest.mark.parametrize(
    "reuse, message",
    [
        ("runs/evidence", r"grid\.yaml: reuse: a list of folders"),
        ([3], r"grid\.yaml: reuse: a list of folders"),
        (["OUT"], r"grid\.yaml: reuse: .* is this grid's own 'out'"),
    ],
)
def test_bad_reuse_values_name_the_key(raw_grid, reuse, message):
    reuse = [raw_grid["out"]] if reuse == ["OUT"] else reuse
    with pytest.raises(ConfigError, match=message):
        parse_grid({**raw_grid, "reuse": reuse}, "grid.yaml")

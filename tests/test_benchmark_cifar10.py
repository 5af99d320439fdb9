"""benchmarks/cifar10.py: the committed results render from their JSON byte for byte, the targets
follow from the student rows, and a machine without the shards is told so (exit 0, nothing run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers_bench import load_benchmark

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


bench = load_benchmark("cifar10")


@pytest.mark.parametrize("stem", ["cifar10", "cifar10-quick"])
def test_results_markdown_is_the_rendering_of_the_json(stem: str) -> None:
    res = json.loads((RESULTS / f"{stem}.json").read_text())
    assert bench.markdown(res) == (RESULTS / f"{stem}.md").read_text()


@pytest.mark.parametrize("stem", ["cifar10", "cifar10-quick"])
def test_targets_follow_from_the_student_rows(stem: str) -> None:
    res = json.loads((RESULTS / f"{stem}.json").read_text())
    assert bench.targets(res["students"]) == res["targets"]


def test_full_run_targets_at_ipc_10() -> None:
    """The numbers the README and the closing note quote (issues 5 and 8)."""
    res = json.loads((RESULTS / "cifar10.json").read_text())
    holds = {t["what"]: (round(t["value"], 1), t["holds"]) for t in res["targets"]}
    assert holds["ConvNet-3 IPC 10: projector, SimCLR base within 3 points of the teacher row"] == (-1.9, True)
    assert holds["ConvNet-3 IPC 10: projector, SimCLR base at least 10 points above hard labels"] == (12.5, True)
    assert holds["ConvNet-3 IPC 10: projector, random-init base within 3 points of the teacher row"] == (-16.3, False)


def test_render_rewrites_the_markdown_and_runs_nothing(tmp_path: Path, capsys) -> None:
    (tmp_path / "cifar10.json").write_text((RESULTS / "cifar10.json").read_text())
    assert bench.main(["--render", "--results", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 0
    assert (tmp_path / "cifar10.md").read_text() == (RESULTS / "cifar10.md").read_text()
    assert not (tmp_path / "cache").exists()


def test_absent_shards_skip_with_the_reason(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope"
    assert bench.main(["--quick", "--data", str(missing), "--cache", str(tmp_path / "cache"),
                       "--results", str(tmp_path / "results")]) == 0
    out = capsys.readouterr().out
    assert f"skipped: CIFAR-10 shards not found at '{missing}'; pass --data DIR" in out
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results").exists()

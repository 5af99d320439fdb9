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
    # the 2026-12-07 run (bf16 autocast, RDED's protocol), as README quotes it
    assert holds["ConvNet-3 IPC 10: projector, SimCLR base within 3 points of the teacher row"] == (-3.1, False)
    assert holds["ConvNet-3 IPC 10: projector, SimCLR base at least 10 points above hard labels"] == (6.9, False)
    assert holds["ConvNet-3 IPC 10: projector, random-init base within 3 points of the teacher row"] == (-22.0, False)
    assert holds["ResNet-18 (CIFAR stem) IPC 10: projector, SimCLR base within 3 points of the teacher row"] == (3.2, True)
    assert holds["ResNet-18 (CIFAR stem) IPC 10: projector, SimCLR base at least 10 points above hard labels"] == (
        10.2, True)


def test_render_rewrites_the_markdown_and_runs_nothing(tmp_path: Path, capsys) -> None:
    (tmp_path / "cifar10.json").write_text((RESULTS / "cifar10.json").read_text())
    assert bench.main(["--render", "--results", str(tmp_path), "--cache", str(tmp_path / "cache")]) == 0
    assert (tmp_path / "cifar10.md").read_text() == (RESULTS / "cifar10.md").read_text()
    assert not (tmp_path / "cache").exists()


def test_absent_shards_skip_with_the_reason(tmp_path: Path, capsys) -> None:
    import os

    missing = tmp_path / "nope"
    before = os.environ.get("HELLOPACK_AUTOCAST")
    assert bench.main(["--quick", "--data", str(missing), "--cache", str(tmp_path / "cache"),
                       "--results", str(tmp_path / "results")]) == 0
    assert os.environ.get("HELLOPACK_AUTOCAST") == before  # nothing ran, so no precision leaks into this process
    out = capsys.readouterr().out
    assert f"skipped: CIFAR-10 shards not found at '{missing}'; pass --data DIR" in out
    assert not (tmp_path / "cache").exists() and not (tmp_path / "results").exists()


def test_rank_sweep_includes_the_tiny_vit_row(monkeypatch, tmp_path: Path) -> None:
    """Issue 16: the sweep also fits the random-init tiny ViT (LoRA on its blocks), at every rank point."""
    assert bench.FULL.sweep_extra_bases == bench.QUICK.sweep_extra_bases == ("tiny-vit",)
    assert bench.SWEEP_BASES == {"tiny-vit": "hellopack-tiny-vit"}
    calls = []

    def fake_build(ctx, teacher, kind, weights, bkey, ipc, re_, rh, *rest, **kw):
        calls.append((kind, bench.SWEEP_BASES.get(kind, ctx.base), weights, ipc, re_, rh))
        return {"fidelity": {"agreement": 0.5, "kl": 0.1, "projector_top1": 0.4}, "rank_head": rh,
                "lora_parameters": 1, "payload_bytes": 2}

    monkeypatch.setattr(bench, "stage_build", fake_build)
    monkeypatch.setattr(bench, "train_images", lambda data: 10_000)
    ctx = bench.Ctx(plan=bench.QUICK, data=tmp_path, data_id=[], cache=None, reporter=None, base="hellopack-tiny-rn",
                    clip_weights=None, clip_tag=None, fit_lr=0.01, pretrain=False)
    extra = bench.sweep_extra(ctx)
    assert [(kind, weights) for kind, weights, _ in extra] == [("tiny-vit", None)]
    rows = bench.run_sweep(ctx, {}, [("given", None, "g"), *extra], {}, 10)
    assert [(r["base"], r["rank_encoder"], r["rank_head"]) for r in rows] == [
        ("given", 2, 10), ("given", 8, 10), ("tiny-vit", 2, 10), ("tiny-vit", 8, 10)]
    assert [c[1] for c in calls] == ["hellopack-tiny-rn"] * 2 + ["hellopack-tiny-vit"] * 2
    # the estimate counts the extra base's fits; --sweep-only keeps the teachers and that share
    without = bench.replace(bench.QUICK, sweep_extra_bases=())
    est, est0 = bench.estimate(bench.QUICK, "hellopack-tiny-rn", True), bench.estimate(without, "hellopack-tiny-rn", True)
    assert est["rank sweep"] > est0["rank sweep"] and est["build"] == est0["build"]
    assert set(bench.sweep_only_estimate(bench.QUICK, est)) == {"teach", "rank sweep"}


def test_a_tiny_vit_sweep_build_uses_the_vit_base(monkeypatch, tmp_path: Path) -> None:
    import hellopack.distill as distill

    built = []
    monkeypatch.setattr(distill, "build", lambda cfg, reporter=None: built.append(cfg))
    monkeypatch.setattr(bench, "archive_facts", lambda out: {})
    ctx = bench.Ctx(plan=bench.QUICK, data=tmp_path, data_id=[], cache=bench.Cache(tmp_path / "cache"), reporter=None,
                    base="hellopack-tiny-rn", clip_weights=None, clip_tag=None, fit_lr=0.01, pretrain=False)
    teacher = {"key": "t", "folder": str(tmp_path)}
    for kind in ("given", "tiny-vit"):
        bench.stage_build(ctx, teacher, kind, None, "k", 1, 2, 10, 2, 1, 1, "rank")
    assert [(c.base, c.pretrained, c.rank_encoder) for c in built] == [("hellopack-tiny-rn", None, 2),
                                                                       ("hellopack-tiny-vit", None, 2)]


@pytest.mark.parametrize("path", sorted(RESULTS.glob("cifar10*-sweep-vit.json")), ids=lambda p: p.stem)
def test_sweep_only_markdown_is_the_rendering_of_the_json(path: Path) -> None:
    res = json.loads(path.read_text())
    assert bench.sweep_markdown(res) == path.with_suffix(".md").read_text()
    assert {r["base"] for r in res["rank_sweep"]} == {"tiny-vit"}

"""The prepared GPU check (benchmarks/gpu_check.py) runs end to end as a CPU dry run, so it never rots."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ["setup", "correctness", "models", "projector", "teacher", "student", "build stages", "torchrun"]


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path: Path) -> None:
    results = REPO / "benchmarks" / "results"
    before = {p.name: p.stat().st_mtime_ns for p in results.glob("gpu.*")}
    out = tmp_path / "out"
    # torch.compile on the CPU takes minutes on a shared machine; the GPU check itself compiles
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--tiny",
                           "--no-compile", "--out-dir", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "gpu.json").read_text())
    secs = res["sections"]
    assert list(secs) == SECTIONS
    assert all(s["ok"] for s in secs.values()), {k: s.get("error") for k, s in secs.items()}
    c = secs["correctness"]["eager"]
    assert c["agreement"] >= 0.99 and c["pass"] and c["softmax_max_abs_diff"] < 0.05 and res["correctness_pass"]
    assert set(secs["student"]) >= {"resnet18", "swin_v2_t"}
    assert secs["torchrun"]["backend"] == "gloo" and secs["torchrun"]["train_world_size"] == 1
    for key in ("fit_images_per_s", "score_crops_per_s", "update_patch_steps_per_s"):
        assert secs["build stages"][key] > 0
    md = (out / "gpu.md").read_text()
    assert "| correctness | eager: top-1 agreement" in md and md in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in results.glob("gpu.*")} == before  # never into results/

"""Real shapes on the CPU (benchmarks/realshape.py), small: RN50 at 224 px with seeded random weights
passed as --clip-weights FILE --pretrained openai, built on a few real ImageNet photographs, then a few
training steps; the LoRA layout, finite labels and a falling loss are checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
SAMPLE = SHARED / "data" / "imagenet-sample"


@pytest.mark.slow
@pytest.mark.skipif(not (SAMPLE / "train").is_dir(), reason=f"{SAMPLE} is absent (set HELLOPACK_SHARED)")
def test_realshape_small(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "realshape.py"), "--classes", "4", "--bases", "RN50",
                           "--archs", "resnet18", "--train-steps", "3", "--update-steps", "1", "--out-dir", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path,
                          env={**__import__("os").environ, "HELLOPACK_SHARED": str(SHARED)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((out / "realshape.json").read_text())
    (rn50,) = res["bases"]
    assert rn50["encoder_targets"] == rn50["archive_encoder_targets"] == 55
    assert rn50["in1k_numbers"] == 898_776  # benchmarks/storage.py's ImageNet-1K payload
    assert rn50["images"] == 4 and rn50["image_size"] == 224 and rn50["factor"] == 2
    assert rn50["label_cost"]["labels_finite"] and rn50["label_cost"]["label_shape"] == [16, 4]
    t = rn50["train"]["resnet18"]
    assert t["steps"] == 3 and t["image_size"] == 224 and t["finite"] and t["loss_falls"]
    stages = {r["stage"] for r in res["stages"]}
    assert {"RN50: fit projector", "RN50: select: score crops", "RN50: update images", "RN50 resnet18: train"} <= stages
    assert all(r["peak_rss_mib"] > 0 for r in res["stages"]) and all(res["checks"].values())

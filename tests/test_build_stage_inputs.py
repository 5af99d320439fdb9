"""Stage keys come from frozen per-stage input dataclasses: same fields, same order, same keys as before.

The literal dicts below are the ones the build hashed before the dataclasses existed; a
work folder made then must still resume, so the hashed parts must not change.
"""

from __future__ import annotations

import dataclasses

import pytest

from hellopack.distill.inputs import (AugmentInputs, FitInputs, RefineInputs, ScanInputs, SelectInputs,
                                      TeachersInputs, UpdateInputs)
from hellopack.distill.stages import stage_key


def _check(inputs: object, stage: str, parts: dict, upstream: str = "", unset: tuple[str, ...] = ()) -> None:
    got = dataclasses.asdict(inputs)  # type: ignore[call-overload]
    for name in unset:  # a field added later that, left None, stays out of the hashed parts
        assert got.pop(name) is None
    assert list(got) == list(parts) and got == parts
    assert inputs.key(upstream) == stage_key(stage, parts, upstream)  # type: ignore[attr-defined]


def test_each_stage_hashes_the_parts_it_hashed_before() -> None:
    _check(ScanInputs("synthetic", None, None, {"num_classes": 4}, 32, 0.01, 0.02, None, 16), "scan",
           {"recipe": "synthetic", "data_dir": None, "classes_file": None, "synthetic": {"num_classes": 4},
            "image_size": 32, "max_bad_fraction": 0.01, "val_fraction": 0.02, "max_images": None,
            "fidelity_images": 16})
    _check(TeachersInputs([["convnet", 10, "ab"]]), "teachers", {"specs": [["convnet", 10, "ab"]]}, "s")
    _check(FitInputs("tiny", "f0", ["a {}"], 2, 4, 8.0, 2, 1e-3, 0.01, 8, 0.1, 0, 1), "fit",
           {"base": "tiny", "fingerprint": "f0", "templates": ["a {}"], "rank_encoder": 2, "rank_head": 4,
            "alpha": 8.0, "epochs": 2, "lr": 1e-3, "weight_decay": 0.01, "batch_size": 8, "lam": 0.1, "seed": 0,
            "world": 1}, "t")
    _check(SelectInputs(1, 2, 32, 6, 3, [0.08, 1.0], 0, False, "teacher", None), "select",
           {"ipc": 1, "factor": 2, "size": 32, "n_real": 6, "m_crops": 3, "crop_scale": [0.08, 1.0], "seed": 0,
            "allow_short": False, "observer": "teacher", "draw": "rded"}, "f", unset=("scored_as",))
    _check(UpdateInputs(True, 3, 0.01), "update", {"update": True, "steps": 3, "lr": 0.01}, "x")
    aug = AugmentInputs([0.5, 1.0], 2, True, "strips", "cutmix", 1.0)
    _check(RefineInputs(2, 1e-3, 0.01, 8, 0.1, 0, aug, "fitkey"), "refine",
           {"steps": 2, "lr": 1e-3, "weight_decay": 0.01, "batch_size": 8, "lam": 0.1, "seed": 0,
            "augment": {"crop_scale": [0.5, 1.0], "factor": 2, "patch_shuffle": True, "shuffle": "strips",
                        "mix": "cutmix", "mix_alpha": 1.0},
            "fit": "fitkey"}, "u")


def test_a_stage_input_cannot_be_left_out() -> None:
    with pytest.raises(TypeError):
        UpdateInputs(update=True, steps=3)  # type: ignore[call-arg]
    with pytest.raises(dataclasses.FrozenInstanceError):
        UpdateInputs(True, 3, 0.01).steps = 4  # type: ignore[misc]

"""The build warns when its labels are unlikely to help: agreement near chance, or too few held-out images."""

from __future__ import annotations

from hellopack.distill.checks import fidelity_warnings


def test_near_chance_agreement_and_a_tiny_held_out_set_are_named_with_their_numbers() -> None:
    # the case a newcomer met: 9.7 % agreement on 10 classes, and "100 %" from one held-out image
    near = fidelity_warnings({"agreement": 0.097, "images": 1000}, 10)
    assert near == ["the projector agrees with the teachers on 9.7% of held-out images, near chance (10.0% for 10 "
                    "classes): its labels may train students worse than hard labels. Try more --fit-epochs, a "
                    "higher --fit-lr, a pretrained base (--clip-weights or `hellopack pretrain-base`), or check that "
                    "the teachers are better than chance"]
    one = fidelity_warnings({"agreement": 1.0, "images": 1}, 10)
    assert one == ["the fidelity figures come from 1 held-out image only (agreement 100.0% +- 98%); they say little. "
                   "Give more held-out images: a dataset with a test or val split, or a larger --val-fraction"]
    assert fidelity_warnings({"agreement": 0.149, "images": 100}, 10) != []  # below 1.5 x chance
    assert fidelity_warnings({"agreement": 0.15, "images": 100}, 10) == []
    assert fidelity_warnings({"agreement": 0.02, "images": 5000}, 1000) == []  # 20 x chance for 1,000 classes

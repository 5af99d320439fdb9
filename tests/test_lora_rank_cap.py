"""An archive's encoder rank cannot exceed its smallest layer's smaller side (spec: rank <= min(fan in,
fan out), one encoder rank per archive): build refuses such a rank before the fit, naming the layer,
instead of failing in the writer after it (the CIFAR-10 benchmark's rank-16 sweep point on tiny-rn did)."""

from __future__ import annotations

import pytest

from hellopack.errors import HellopackError
from hellopack.models.base import load_base
from hellopack.models.lora import inject_lora, max_encoder_rank


def visual(name: str):
    return load_base(name, None, None).model.visual


def test_the_largest_encoder_rank_is_the_smallest_layers_smaller_side() -> None:
    assert max_encoder_rank(visual("hellopack-tiny-rn")) == 8  # the stem: 3 x 3 x 3 = 27 inputs, 8 outputs
    assert max_encoder_rank(visual("hellopack-tiny-vit")) == 64


def test_a_rank_above_it_is_refused_before_any_layer_is_wrapped() -> None:
    tower = visual("hellopack-tiny-rn")
    with pytest.raises(HellopackError) as e:
        inject_lora(tower, 9)
    assert str(e.value) == ("LoRA rank 9 is above layer 'conv1' of this base (27 inputs, 8 outputs): an archive's "
                            "encoder rank must be at most 8; pass --rank-encoder 8 or less")
    assert len(inject_lora(tower, 8)) > 1  # nothing was wrapped by the refused call: it injects once, cleanly

"""Self-supervised pretraining of an open_clip image tower on unlabeled images (`hellopack pretrain-base`).

``pretrain(PretrainConfig(...), reporter) -> dict`` writes a base file that
``load_base(name, weights=FILE)`` (``--clip-weights FILE``) loads strictly, plus its
fingerprint in ``FILE.sha256``. ``linear_probe`` measures a base's features with labels.
"""

from hellopack.pretrain.config import OBJECTIVE, PretrainConfig
from hellopack.pretrain.loop import pretrain
from hellopack.pretrain.probe import linear_probe

__all__ = ["OBJECTIVE", "PretrainConfig", "linear_probe", "pretrain"]

"""What `hellopack eval continual` was asked to do.

The recipe, runtime and output options are `train`'s own ``TrainConfig``; only
what is new (steps, class order, label sources) lives here. Per run, the
continual loop replaces the TrainConfig's ``labels``, ``teacher``, ``seeds``,
``eval_every``, ``batch_size`` and ``out``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hellopack.errors import HellopackError
from hellopack.train.config import LABELS, TrainConfig

PLOT_BACKENDS = ("auto", "matplotlib", "pillow")


def parse_labels(spec: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``"projector,hard"`` -> ``("projector", "hard")``, validated: known sources, each once."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = tuple(s.strip().lower() for s in items if s.strip())
    if not names:
        raise HellopackError(f"--labels '{spec}' names no label source; use one or more of {', '.join(LABELS)}")
    for n in names:
        if n not in LABELS:
            raise HellopackError(f"--labels '{n}' is not one of {', '.join(LABELS)}")
    dup = [n for i, n in enumerate(names) if n in names[:i]]
    if dup:
        raise HellopackError(f"--labels lists '{dup[0]}' twice; name each label source once")
    return names


@dataclass(frozen=True)
class ContinualConfig:
    train: TrainConfig  # archive, arch, --val, recipe overrides, --seed, --resume, --device, --out ...
    steps: int = 5
    order: str | None = None  # file: one class index, name or source id per line; None: permutation seeded by --seed
    labels: tuple[str, ...] = ("projector",)
    eval_every: int | None = None  # epochs; None: only each step's final epoch (a full val pass is not free)
    plot: str = "auto"  # "auto": matplotlib when installed, else drawn with Pillow

    def validate(self) -> None:
        parse_labels(self.labels)
        if self.steps < 1:
            raise HellopackError(f"--steps must be positive, got {self.steps}")
        if self.train.seeds != 1:
            raise HellopackError(f"eval continual trains one seed per step (got --seeds {self.train.seeds}); "
                                 "run it again with another --seed and --out for more")
        if self.eval_every is not None and self.eval_every <= 0:
            raise HellopackError(f"--eval-every must be positive, got {self.eval_every}")
        if self.plot not in PLOT_BACKENDS:
            raise HellopackError(f"plot backend '{self.plot}' is not one of {', '.join(PLOT_BACKENDS)}")
        if self.train.teacher_specs() and "teacher" not in self.labels:
            raise HellopackError("--teacher is only used when --labels includes teacher")

    def to_json(self) -> dict[str, Any]:
        return {"train": self.train.to_json(), "steps": self.steps, "order": self.order, "labels": list(self.labels),
                "eval_every": self.eval_every, "plot": self.plot}

"""What `hellopack eval rank` was asked to do (imports no torch: the CLI reads its defaults)."""

from __future__ import annotations

from dataclasses import dataclass

from hellopack.errors import HellopackError
from hellopack.rank.scores import WEIGHT
from hellopack.train.config import TrainConfig


@dataclass(frozen=True)
class RankConfig:
    train: TrainConfig  # archive, arch, --val, seeds, the recipe, the label source, data_dir / data_recipe
    real_acc: float | None = None  # acc(full real data, hard labels) as a fraction (a cached one); None: train it
    real_epochs: int | None = None  # the full-data run's epochs (None: the recipe's); fewer = a shortened run
    real_images_per_class: int | None = None  # cap the full-data run at N random images per class (shortened)
    ars: bool = True  # also train without augmentation (ARS needs both)
    lrs_weight: float = WEIGHT
    ars_weight: float = WEIGHT

    def validate(self) -> None:
        t = self.train
        if t.data_dir is None:
            raise HellopackError("eval rank needs --data-dir SOURCE: the real training images of the dataset the "
                                 "archive was built from (the random subset is drawn from them)")
        if t.images != "archive" or t.images_per_class is not None:
            raise HellopackError("eval rank chooses the images of each row itself; leave out --images")
        if t.labels == "hard":
            raise HellopackError("eval rank compares the method's labels with hard labels; pass --labels projector "
                                 "or teacher")
        if self.real_acc is not None and not 0.0 <= self.real_acc <= 1.0:
            raise HellopackError(f"--real-acc {self.real_acc} is not a fraction in [0, 1]; pass e.g. 0.843 for "
                                 "84.3 %")
        if self.real_acc is not None and (self.real_epochs is not None or self.real_images_per_class is not None):
            raise HellopackError("--real-epochs and --real-images-per-class shape the full-data run, which "
                                 "--real-acc replaces; pass one or the other")
        for flag, v in (("--real-epochs", self.real_epochs), ("--real-images-per-class", self.real_images_per_class)):
            if v is not None and v <= 0:
                raise HellopackError(f"{flag} must be positive, got {v}")
        for flag, w in (("LRS weight", self.lrs_weight), ("ARS weight", self.ars_weight)):
            if not 0.0 <= w <= 1.0:
                raise HellopackError(f"{flag} {w} is not in [0, 1]")

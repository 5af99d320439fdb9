"""`hellopack eval rank`: train the rows DD-Ranking compares, then score them (hellopack.rank.scores).

Every row is one `hellopack train` (hellopack.train.train) of the same student and recipe, with its
seeds; seed i of every row makes DD-Ranking's evaluation run i (the random subset is redrawn per seed):

    distilled_hard        the archive's images, hard labels                       -> HLR
    distilled_own         the archive's images, the method's labels (--labels)    -> IOR, ARS
    random_own            IPC random real images per class, the same labels      -> IOR, ARS
    distilled_own_noaug   as distilled_own without augmentation                   -> ARS
    random_own_noaug      as random_own without augmentation                      -> ARS
    real_hard             every real training image, hard labels                  -> HLR (or --real-acc)

"Without augmentation" is --mix none, --crop-scale 1 1 and no patch shuffle; the horizontal flip stays
(the recipe has no switch for it). Where DD-Ranking differs in what feeds the scores: it tunes the lr over
five values per row and takes the best accuracy over evaluated epochs, trains hard-label rows without its
mix (``use_aug_for_hard`` False) and the real row with its own per-dataset recipe; here every row uses the
archive's recipe and reports the final epoch's accuracy, as `hellopack train` does.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hellopack.fsutil import atomic_write_bytes
from hellopack.progress import NULL, Reporter
from hellopack.rank.config import RankConfig
from hellopack.rank.scores import RunAccuracies, summarize
from hellopack.train.config import TrainConfig

DEFINITION = ("DD-Ranking 0.2.0 (NUS-HPC-AI-Lab/DD-Ranking, ddranking/metrics/soft_label.py and aug_robust.py): "
              "per seed HLR = acc(real, hard) - acc(distilled, hard), IOR = acc(distilled, labels) - acc(random, "
              "labels), LRS = (e^a - e^-1)/(e - e^-1) with a = w IOR - (1 - w) HLR, ARS likewise with "
              "b = w (distilled - random, augmented) + (1 - w) (distilled - random, not augmented); mean and "
              "population std over seeds; accuracies as fractions")
NO_AUG = {"mix": "none", "crop_scale": (1.0, 1.0), "patch_shuffle": False}


def rows(cfg: RankConfig, root: Path) -> dict[str, TrainConfig]:
    """Row name -> the TrainConfig that trains it (into ``root / name``)."""
    t = cfg.train
    archive = dict(images="archive", data_dir=None, data_recipe=None)
    real = dict(data_dir=t.data_dir, data_recipe=t.data_recipe)
    hard = dict(labels="hard", teacher=None, teachers_dir=None)
    plan: dict[str, dict[str, Any]] = {
        "distilled_hard": {**archive, **hard},
        "distilled_own": archive,
        "random_own": {"images": "random", **real},
    }
    if cfg.ars:
        plan["distilled_own_noaug"] = {**archive, **NO_AUG}
        plan["random_own_noaug"] = {"images": "random", **real, **NO_AUG}
    if cfg.real_acc is None:
        capped = cfg.real_images_per_class is not None
        plan["real_hard"] = {"images": "random" if capped else "full", **real, **hard,
                             "images_per_class": cfg.real_images_per_class,
                             "epochs": cfg.real_epochs if cfg.real_epochs is not None else t.epochs}
    return {name: dataclasses.replace(t, out=str(root / name), **changes) for name, changes in plan.items()}


def _fractions(result: dict[str, Any]) -> list[float]:
    return [v / 100.0 for v in result.get("top1_per_seed", [result["top1"]])]


def rank(cfg: RankConfig, reporter: Reporter = NULL) -> dict[str, Any]:
    """Train every row, score each seed, write rank.json into the output folder; returns its content."""
    from hellopack.train import train

    cfg.validate()
    t = cfg.train
    root = Path(t.out) if t.out else Path.cwd() / f"{Path(t.archive).stem}-{t.arch}-rank"
    planned = rows(cfg, root)
    for cfg_row in planned.values():  # every row's settings checked before the first minute of training
        cfg_row._validate_images()
    results: dict[str, dict[str, Any]] = {}
    for i, (name, cfg_row) in enumerate(planned.items(), 1):
        reporter.info(f"rank: row {i}/{len(planned)}, {name}")
        results[name] = train(cfg_row, reporter)
    acc = {name: _fractions(r) for name, r in results.items()}
    seeds = [t.seed + i for i in range(t.seeds)]
    if cfg.real_acc is not None:  # a cached value, the same for every run (DD-Ranking's REAL_DATA_ACC_CACHE)
        acc["real_hard"] = [cfg.real_acc] * len(seeds)
    real = acc["real_hard"]
    runs = [RunAccuracies(real_hard=real[i], distilled_hard=acc["distilled_hard"][i],
                          distilled_own=acc["distilled_own"][i], random_own=acc["random_own"][i],
                          distilled_own_noaug=acc["distilled_own_noaug"][i] if cfg.ars else None,
                          random_own_noaug=acc["random_own_noaug"][i] if cfg.ars else None)
            for i in range(len(seeds))]
    first = next(iter(results.values()))
    out = {
        "archive": t.archive, "arch": t.arch, "labels": t.labels, "seeds": seeds,
        "evaluated_on": first.get("evaluated_on"),
        "accuracy": {name: {"per_seed": v, "mean": sum(v) / len(v)} for name, v in acc.items()},
        "real": _real_note(cfg, results.get("real_hard")),
        "scores": summarize(runs, cfg.lrs_weight, cfg.ars_weight),
        "weights": {"lrs": cfg.lrs_weight, "ars": cfg.ars_weight},
        "definition": DEFINITION,
        "without_augmentation": "--mix none, --crop-scale 1 1, no patch shuffle (the horizontal flip stays)",
        "runs": {name: str(root / name) for name in results},
        "out": str(root),
    }
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(root / "rank.json", (json.dumps(out, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return out


def _real_note(cfg: RankConfig, result: dict[str, Any] | None) -> str:
    """How acc(real data, hard labels) was obtained: DD-Ranking caches one, or trains on the full set."""
    if result is None:
        return f"given with --real-acc ({cfg.real_acc:g})"
    epochs = result["recipe"]["epochs"]
    per = cfg.real_images_per_class
    images = f"{per} random real images per class (a shortened run)" if per else "every real training image"
    return f"trained with hard labels on {images} for {epochs} epochs"

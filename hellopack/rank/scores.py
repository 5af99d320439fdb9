"""DD-Ranking's scores (HLR, IOR, LRS, ARS) from accuracies, as ddranking 0.2.0 computes them. Pure Python.

Source read: NUS-HPC-AI-Lab/DD-Ranking, the code released as ddranking 0.2.0 (version 0.2.0 in
pyproject.toml and setup.py at commit 97082f6c30b6aac348b09e75031d4bd027cd99b2, and the 0.2.0 wheel on
PyPI): ``ddranking/metrics/soft_label.py`` (``LabelRobustScoreSoft.compute_metrics``), ``hard_label.py``
(``LabelRobustScoreHard``: the same formulas, hard labels in place of the method's) and ``aug_robust.py``
(``AugmentationRobustScore.compute_metrics``). For evaluation run i (here: seed i):

    hlr_i   = acc(full real data, hard labels) - acc(distilled, hard labels)
    ior_i   = acc(distilled, the method's labels) - acc(random real subset, the same labels)
    alpha_i = w * ior_i - (1 - w) * hlr_i                       w = lrs_lambda = 0.5
    lrs_i   = (e^alpha_i - e^-1) / (e - e^-1)
    with_i    = acc(distilled, labels, with augmentation)    - acc(random, labels, with augmentation)
    without_i = acc(distilled, labels, without augmentation) - acc(random, labels, without augmentation)
    beta_i  = w * with_i + (1 - w) * without_i                  w = ars_lambda = 0.5
    ars_i   = (e^beta_i - e^-1) / (e - e^-1)

and each score is reported as the mean and the population standard deviation (``np.std``, ddof 0) of its
per-run values: LRS is the mean of the runs' LRS, not the LRS of mean accuracies.

One deliberate difference: ddranking 0.2.0 measures accuracy in percent (its ``accuracy`` returns
100 * correct / n, its real-data cache holds 56.5) and puts those numbers in the exponent unchanged.
Here accuracies are fractions in [0, 1] (issue 17), so alpha and beta lie in [-1, 1] and LRS and ARS
in [0, 1], as the DD-Ranking paper's scores do; with percent the exponent saturates.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Sequence

from hellopack.errors import HellopackError

WEIGHT = 0.5  # ddranking's default lrs_lambda and ars_lambda


def squash(x: float) -> float:
    """(e^x - e^-1) / (e - e^-1): maps -1 -> 0 and 1 -> 1 (LRS of alpha, ARS of beta)."""
    return (math.exp(x) - math.exp(-1.0)) / (math.exp(1.0) - math.exp(-1.0))


def hlr(real_hard: float, distilled_hard: float) -> float:
    """Hard label recovery: how far the distilled images with hard labels are from the full real data."""
    return real_hard - distilled_hard


def ior(distilled_own: float, random_own: float) -> float:
    """Improvement over random: the distilled images against a random real subset, same label source."""
    return distilled_own - random_own


def lrs(hlr_value: float, ior_value: float, weight: float = WEIGHT) -> float:
    return squash(weight * ior_value - (1.0 - weight) * hlr_value)


def ars(with_aug: float, without_aug: float, weight: float = WEIGHT) -> float:
    """``with_aug`` / ``without_aug``: distilled minus random accuracy, with and without augmentation."""
    return squash(weight * with_aug + (1.0 - weight) * without_aug)


@dataclass(frozen=True)
class RunAccuracies:
    """One run's (seed's) top-1 accuracies as fractions; the no-augmentation pair is optional (ARS)."""

    real_hard: float
    distilled_hard: float
    distilled_own: float
    random_own: float
    distilled_own_noaug: float | None = None
    random_own_noaug: float | None = None

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value is not None and not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise HellopackError(f"accuracy {name} = {value!r} is not a fraction in [0, 1]; "
                                     "pass accuracies as fractions (0.573, not 57.3)")


def run_scores(acc: RunAccuracies, lrs_weight: float = WEIGHT, ars_weight: float = WEIGHT) -> dict[str, float]:
    """hlr, ior, lrs and, when the no-augmentation runs exist, with_aug, without_aug and ars of one run."""
    h, i = hlr(acc.real_hard, acc.distilled_hard), ior(acc.distilled_own, acc.random_own)
    out = {"hlr": h, "ior": i, "lrs": lrs(h, i, lrs_weight)}
    if acc.distilled_own_noaug is not None and acc.random_own_noaug is not None:
        with_aug = acc.distilled_own - acc.random_own
        without = acc.distilled_own_noaug - acc.random_own_noaug
        out.update(with_aug=with_aug, without_aug=without, ars=ars(with_aug, without, ars_weight))
    return out


def summarize(runs: Sequence[RunAccuracies], lrs_weight: float = WEIGHT,
              ars_weight: float = WEIGHT) -> dict[str, dict[str, float | list[float]]]:
    """Per score: the per-run values, their mean and population std (ddranking: np.mean, np.std)."""
    if not runs:
        raise HellopackError("no runs to score; train at least one seed")
    per_run = [run_scores(r, lrs_weight, ars_weight) for r in runs]
    out: dict[str, dict[str, float | list[float]]] = {}
    for name in [n for n in per_run[0] if all(n in r for r in per_run)]:  # ARS only when every run has it
        values = [s[name] for s in per_run]
        out[name] = {"per_run": values, "mean": statistics.fmean(values), "std": statistics.pstdev(values)}
    return out

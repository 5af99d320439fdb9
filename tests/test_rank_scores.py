"""DD-Ranking's scores against hand computations on fixed accuracies (hellopack.rank.scores).

Hand computation, run 1: HLR = 0.80 - 0.40 = 0.40, IOR = 0.60 - 0.50 = 0.10,
alpha = 0.5 * 0.10 - 0.5 * 0.40 = -0.15, LRS = (e^-0.15 - e^-1) / (e - e^-1)
= (0.860707976 - 0.367879441) / (2.718281828 - 0.367879441) = 0.492828535 / 2.350402387 = 0.209678367.
With augmentation 0.60 - 0.50 = 0.10, without 0.45 - 0.25 = 0.20, beta = 0.15,
ARS = (e^0.15 - e^-1) / (e - e^-1) = (1.161834243 - 0.367879441) / 2.350402387 = 0.337795267.
Run 2: HLR 0.45, IOR 0.05, alpha = -0.20, LRS = (0.818730753 - 0.367879441) / 2.350402387 = 0.191818777.
Over the two runs: mean LRS 0.200748572, population std (0.209678367 - 0.191818777) / 2 = 0.008929795.
"""

from __future__ import annotations

import pytest

from hellopack.errors import HellopackError
from hellopack.rank import scores
from hellopack.rank.scores import RunAccuracies

RUN1 = RunAccuracies(real_hard=0.80, distilled_hard=0.40, distilled_own=0.60, random_own=0.50,
                     distilled_own_noaug=0.45, random_own_noaug=0.25)
RUN2 = RunAccuracies(real_hard=0.80, distilled_hard=0.35, distilled_own=0.55, random_own=0.50)


def test_squash_maps_minus_one_to_zero_and_one_to_one() -> None:
    assert scores.squash(-1.0) == pytest.approx(0.0, abs=1e-15)
    assert scores.squash(1.0) == pytest.approx(1.0, abs=1e-15)


def test_one_run_matches_the_hand_computation() -> None:
    s = scores.run_scores(RUN1)
    assert s["hlr"] == pytest.approx(0.40, abs=1e-12)
    assert s["ior"] == pytest.approx(0.10, abs=1e-12)
    assert s["lrs"] == pytest.approx(0.209678367, abs=1e-9)
    assert s["with_aug"] == pytest.approx(0.10, abs=1e-12)
    assert s["without_aug"] == pytest.approx(0.20, abs=1e-12)
    assert s["ars"] == pytest.approx(0.337795267, abs=1e-9)


def test_weight_moves_alpha() -> None:
    # w = 1: alpha = IOR = 0.10 -> (e^0.1 - e^-1) / (e - e^-1) = (1.105170918 - 0.367879441) / 2.350402387
    assert scores.lrs(0.40, 0.10, weight=1.0) == pytest.approx(0.313687, abs=1e-6)


def test_summary_is_mean_and_population_std_of_the_per_run_scores() -> None:
    s = scores.summarize([RUN1, RUN2])
    assert s["lrs"]["per_run"] == pytest.approx([0.209678367, 0.191818777], abs=1e-9)
    assert s["lrs"]["mean"] == pytest.approx(0.200748572, abs=1e-9)
    assert s["lrs"]["std"] == pytest.approx(0.008929795, abs=1e-9)
    assert s["hlr"]["mean"] == pytest.approx(0.425, abs=1e-12)
    assert "ars" not in s  # run 2 has no run without augmentation: no ARS over both runs


def test_percent_is_refused_with_the_fix() -> None:
    with pytest.raises(HellopackError, match=r"accuracy real_hard = 80\.0 is not a fraction in \[0, 1\]; "
                                             r"pass accuracies as fractions \(0\.573, not 57\.3\)"):
        RunAccuracies(real_hard=80.0, distilled_hard=0.4, distilled_own=0.6, random_own=0.5)

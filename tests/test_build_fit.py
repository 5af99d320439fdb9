"""Projector fit: loss goes down, an interrupted fit resumes to identical factors, fidelity numbers."""

from __future__ import annotations

import math

import pytest
import torch

from hellopack.distill.fit import CHECKPOINT, FitParams, cosine_lr, fidelity, fit_projector, read_checkpoint
from hellopack.distill.teachers import TeacherEnsemble
from hellopack.models.base import load_base
from hellopack.models.projector import Projector
from hellopack.progress import Reporter, Stage

CPU = torch.device("cpu")


CLASSES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def base():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return load_base("hellopack-tiny-rn", None)


def projector(base) -> Projector:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return Projector(base, CLASSES, ["a photo of a {}."], rank_encoder=2, rank_head=len(CLASSES))


class LinearTeacher(torch.nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(3 * 16 * 16, 3, generator=g) * 0.05)

    def forward(self, x):
        return x.flatten(1) @ self.w


def data():
    g = torch.Generator().manual_seed(5)
    xs = torch.rand(4, 6, 3, 16, 16, generator=g)
    ys = torch.randint(0, 3, (4, 6), generator=g)
    return lambda epoch: [(xs[(i + epoch) % 4], ys[(i + epoch) % 4]) for i in range(4)]


class Interrupt(Exception):
    pass


class StopAfter(Reporter):
    """Raises inside the fit after ``n`` optimizer steps, like a kill between two steps."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.notes: list[str] = []

    def stage(self, name, total=None, unit="it"):
        outer = self

        class S(Stage):
            done = 0

            def advance(self, k=1, **metrics):
                self.done += k
                if self.done >= outer.n:
                    raise Interrupt()

        return S()

    def info(self, message):
        self.notes.append(message)


PARAMS = FitParams(epochs=3, lr=5e-3, weight_decay=0.01, batch_size=6, lam=0.1, checkpoint_every=5,
                   steps_per_epoch=4)


def test_interrupted_fit_resumes_to_identical_factors(base, tmp_path):
    teachers = TeacherEnsemble([LinearTeacher(1), LinearTeacher(2)])
    ref = projector(base)
    out = fit_projector(ref, teachers, data(), PARAMS, tmp_path / "a", "k", CPU, Reporter())
    assert out["steps"] == 12 and out["resumed_from"] == 0

    (tmp_path / "b").mkdir()
    first = projector(base)
    with pytest.raises(Interrupt):  # stops after step 7: the checkpoint holds step 5 (mid-epoch 2)
        fit_projector(first, teachers, data(), PARAMS, tmp_path / "b", "k", CPU, StopAfter(7))
    pos, _ = read_checkpoint(tmp_path / "b" / CHECKPOINT, "k")
    assert (pos.step, pos.epoch, pos.batch) == (5, 1, 1)
    again = projector(base)
    rep = StopAfter(10**9)
    out = fit_projector(again, teachers, data(), PARAMS, tmp_path / "b", "k", CPU, rep)
    assert out["resumed_from"] == 5 and out["steps"] == 12
    assert rep.notes == ["fit: resuming at step 5 (epoch 2, batch 1)"]
    a, b = ref.lora_state_dict(), again.lora_state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(v.abs().sum() > 0 for k, v in a.items() if k.endswith("lora_B"))  # the fit moved B off zero


def test_checkpoint_of_another_config_is_ignored(base, tmp_path):
    teachers = TeacherEnsemble([LinearTeacher(1)])
    fit_projector(projector(base), teachers, data(), PARAMS, tmp_path, "old-key", CPU, Reporter())
    assert read_checkpoint(tmp_path / CHECKPOINT, "new-key") is None
    out = fit_projector(projector(base), teachers, data(), PARAMS, tmp_path, "new-key", CPU, Reporter())
    assert out["resumed_from"] == 0


def test_fit_lowers_the_distillation_loss(base, tmp_path):
    teachers = TeacherEnsemble([LinearTeacher(3)])
    proj = projector(base)
    x, y = data()(0)[0]

    def loss() -> float:
        with torch.no_grad():
            logits, target = proj(x), teachers(x)
            return float(torch.nn.functional.mse_loss(logits, target) + 0.1 * torch.nn.functional.cross_entropy(logits, y))

    before = loss()
    params = FitParams(epochs=5, lr=1e-2, weight_decay=0.0, batch_size=6, lam=0.1, checkpoint_every=100,
                       steps_per_epoch=4)
    fit_projector(proj, teachers, data(), params, tmp_path, "k", CPU, Reporter())
    assert loss() < 0.7 * before


def test_fidelity_of_a_perfect_copy_and_of_a_constant():
    teachers = TeacherEnsemble([LinearTeacher(1), LinearTeacher(2)])
    batches = data()(0)
    same = fidelity(teachers, teachers, batches, CPU, Reporter())
    assert same["agreement"] == 1.0 and same["kl"] == pytest.approx(0.0, abs=1e-6) and same["images"] == 24
    assert same["projector_top1"] == same["teacher_top1"]

    class Always0(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([[5.0, 0.0, 0.0]]).expand(len(x), 3)

    labels = torch.cat([y for _, y in batches])
    out = fidelity(Always0(), teachers, batches, CPU, Reporter())
    assert out["projector_top1"] == round(float((labels == 0).float().mean()), 6)
    assert out["kl"] > 0


def test_cosine_schedule_and_ensemble_mean():
    assert cosine_lr(1.0, 0, 10) == 1.0 and cosine_lr(1.0, 10, 10) == pytest.approx(0.0)
    assert cosine_lr(1.0, 5, 10) == pytest.approx(0.5)
    assert math.isclose(cosine_lr(0.1, 2, 8), 0.1 * 0.5 * (1 + math.cos(math.pi / 4)))

    class Const(torch.nn.Module):
        def __init__(self, v):
            super().__init__()
            self.v = v

        def forward(self, x):
            return torch.full((len(x), 2), self.v)

    ens = TeacherEnsemble([Const(1.0), Const(4.0)])
    ens.train()
    assert not ens.training
    assert torch.equal(ens(torch.zeros(3, 1)), torch.full((3, 2), 2.5))

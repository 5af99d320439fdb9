"""LoraLayout: one typed LoRA layout from the build to `train`.

* the manifest's summary (rank_encoder, rank_head, parameters) is derived from the targets;
* an archive whose summary disagrees with its targets fails `inspect --verify` and `train`
  with the same one line;
* `Projector.from_layout` rebuilds exactly the archived projector, each target with its own alpha.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hellopack.archive import ArchiveError, LoraLayout, LoraTarget, open_archive
from hellopack.errors import HellopackError
from hellopack.models.base import load_base
from hellopack.models.projector import Projector
from hellopack.train.labelers import projector_from_archive
from hellopack_cli.app import app

from test_archive_kit import load_make_vectors
from test_equations_lora import hand_projector_logits, hand_text_head
from test_equations_pipeline import built_archive
from test_train_kit import small_archive  # noqa: F401  (session fixture)

mv = load_make_vectors()
runner = CliRunner()
CLASSES = ["cat", "dog", "airplane", "ship", "frog"]
TEMPLATES = ["a photo of a {}."]
INCONSISTENT = "the archive is inconsistent, rebuild it"


@pytest.fixture(scope="module")
def tiny():
    return load_base("hellopack-tiny-rn")


def _conv(name: str, rank: int = 2, alpha: float = 2.0) -> LoraTarget:
    return LoraTarget(name, "conv2d", rank, alpha, in_features=3, out_features=4, kernel_size=(3, 3))


HEAD = LoraTarget("head", "linear", 2, 2.0, in_features=4, out_features=2, kernel_size=None)


# ---- the manifest form --------------------------------------------------------------------------

def test_summary_is_derived_from_the_targets() -> None:
    """The spec vector's layout: 2 x (3*3*3 + 4) + 2 x (4 + 2) = 74 numbers."""
    layout = LoraLayout((_conv("visual.conv1"), HEAD), "fp16")
    m = layout.to_manifest()
    assert {k: m[k] for k in ("dtype", "rank_encoder", "rank_head", "parameters")} == {
        "dtype": "fp16", "rank_encoder": 2, "rank_head": 2, "parameters": 74}
    vector = json.loads((mv.HERE / "valid-minimal.manifest.json").read_text())["lora"]
    assert m == vector  # the writer's form is the spec's, key for key
    assert LoraLayout.from_manifest(vector) == layout


def test_projector_layout_counts_its_own_parameters(tiny) -> None:
    proj = Projector(tiny, CLASSES, TEMPLATES, rank_encoder=3, rank_head=4, alpha=5.0)
    layout = proj.lora_layout("int8")
    assert (layout.rank_encoder, layout.rank_head, layout.dtype) == (3, 4, "int8")
    assert layout.parameters == proj.num_lora_parameters() == sum(t.numel() for t in proj.lora_state_dict().values())
    assert LoraLayout.from_manifest(layout.to_manifest()) == layout


@pytest.mark.parametrize("key, value, message", [
    ("rank_encoder", 3, "lora.rank_encoder is 3 but the encoder targets have rank 2"),
    ("rank_encoder", 0, "lora.rank_encoder is 0 but the encoder targets have rank 2"),
    ("rank_head", 8, "lora.rank_head is 8 but the 'head' target has rank 2"),
    ("parameters", 75, "lora.parameters is 75 but the targets hold 74"),
])
def test_a_summary_that_disagrees_is_refused_naming_both_values(key: str, value: int, message: str) -> None:
    lora = LoraLayout((_conv("visual.conv1"), HEAD), "fp16").to_manifest()
    lora[key] = value
    with pytest.raises(ArchiveError) as e:
        LoraLayout.from_manifest(lora)
    assert str(e.value) == f"manifest: {message}; {INCONSISTENT}"


@pytest.mark.parametrize("targets, message", [
    ((_conv("visual.a"), _conv("visual.b", rank=4), HEAD),
     "lora.targets has encoder targets of ranks 2, 4, format 1.x needs one encoder rank"),
    ((HEAD,), "lora.targets has no encoder target, format 1.x needs one encoder rank"),
    ((_conv("visual.a"),), "lora.targets has no 'head' target"),
])
def test_targets_without_one_encoder_rank_and_a_head_are_refused(targets, message: str) -> None:
    lora = {"dtype": "fp16", "rank_encoder": 2, "rank_head": 2, "parameters": 0,
            "targets": [t.to_json() for t in targets]}
    with pytest.raises(ArchiveError) as e:
        LoraLayout.from_manifest(lora)
    assert str(e.value) == f"manifest: {message}; {INCONSISTENT}"


# ---- verify and train agree -----------------------------------------------------------------------

@pytest.mark.parametrize("value", [3, 0])
def test_summary_mismatch_fails_verify_and_train_with_the_same_line(small_archive: Path, tmp_path: Path,  # noqa: F811
                                                                    value: int) -> None:
    """Was: `inspect --verify` passed, then `train` refused the archive as 'built with other ranks'."""
    m, stored = mv.split(small_archive.read_bytes())
    assert m["lora"]["rank_encoder"] == 2
    m["lora"]["rank_encoder"] = value
    bad = tmp_path / "bad.hellopack"
    bad.write_bytes(mv.assemble(m, stored))
    line = (f"hellopack: error: {bad}: manifest: lora.rank_encoder is {value} but the encoder targets have "
            f"rank 2; {INCONSISTENT}\n")

    verify = runner.invoke(app, ["inspect", str(bad), "--verify"])
    assert (verify.exit_code, verify.stdout, verify.stderr) == (2, "", line)
    train = runner.invoke(app, ["train", str(bad), "--arch", "convnet", "--epochs", "1", "--out",
                                str(tmp_path / "run"), "--quiet"])
    assert (train.exit_code, train.stderr) == (2, line)


def test_train_reads_the_lora_through_the_checked_reader(small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    """A tensor whose shape differs from the layout fails train as it fails verify (lora.safetensors: ...)."""
    m, stored = mv.split(small_archive.read_bytes())
    conv = m["lora"]["targets"][0]
    # same parameter count, other shapes: the manifest alone cannot tell, the tensors can
    k = conv["kernel_size"][0] * conv["kernel_size"][1]
    assert conv["in_features"] > 1
    conv["in_features"], conv["out_features"] = 1, conv["out_features"] + (conv["in_features"] - 1) * k
    bad = tmp_path / "bad.hellopack"
    bad.write_bytes(mv.assemble(m, stored))
    with pytest.raises(ArchiveError) as verify:
        open_archive(bad).verify()
    with pytest.raises(ArchiveError) as train:
        projector_from_archive(open_archive(bad))
    assert str(verify.value) == str(train.value)
    assert str(train.value).startswith(f"lora.safetensors: target '{conv['name']}': shapes ")


# ---- from_layout --------------------------------------------------------------------------------

def _randomised(proj: Projector, seed: int) -> Projector:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in proj.lora_modules().values():
            m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.05)
    return proj


def test_from_layout_rebuilds_exactly_the_projector_with_per_target_alphas(tiny) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        proj = _randomised(Projector(tiny, CLASSES, TEMPLATES, rank_encoder=2, rank_head=3), seed=1)
    for i, m in enumerate(proj.lora_modules().values()):
        m.set_alpha(1.0 + 0.5 * i)  # every target its own alpha, none equal to its rank
    layout = LoraLayout.from_manifest(proj.lora_layout("fp16").to_manifest())
    assert len({t.alpha for t in layout.targets}) == len(layout.targets)

    again = Projector.from_layout(tiny, layout, CLASSES, TEMPLATES)
    assert again.lora_layout("fp16") == layout
    again.load_lora_state_dict(proj.lora_state_dict())
    x = torch.rand(3, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(again(x), proj(x))
        # the alphas matter: the same factors at scaling 1 give other logits
        for m in again.lora_modules().values():
            m.set_alpha(m.rank)
        assert (again(x) - proj(x)).abs().max().item() > 1e-3


def test_train_rebuilds_an_archive_with_per_target_alphas(tmp_path_factory, tmp_path: Path) -> None:
    """Was: refused ('uses different LoRA alphas per target'). Checked against the hand computation."""
    path, _ = built_archive(tmp_path_factory, "fp16")
    m, stored = mv.split(path.read_bytes())
    for i, t in enumerate(m["lora"]["targets"]):
        t["alpha"] = 0.5 + 0.25 * i
    edited = tmp_path / "alphas.hellopack"
    edited.write_bytes(mv.assemble(m, stored))
    archive = open_archive(edited)

    base = load_base(m["base"]["name"], m["base"]["pretrained"])
    prompts = json.loads(archive.read_member("prompts.json"))
    tensors = archive.read_lora()
    factors = {t["name"]: (torch.from_numpy(tensors[f"{t['name']}.lora_A"]),
                           torch.from_numpy(tensors[f"{t['name']}.lora_B"]), t["alpha"]) for t in m["lora"]["targets"]}
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    want = hand_projector_logits(base, hand_text_head(base, prompts["classnames"], prompts["templates"]), factors,
                                 m["head"]["logit_scale"], x)
    with torch.no_grad():
        got = projector_from_archive(archive)(x)
    assert (got - want).abs().max().item() <= 1e-5
    same = {n: (a, b, 3.0) for n, (a, b, _) in factors.items()}  # the build's one alpha
    other = hand_projector_logits(base, hand_text_head(base, prompts["classnames"], prompts["templates"]), same,
                                  m["head"]["logit_scale"], x)
    assert (other - want).abs().max().item() > 1e-3


def test_from_layout_refuses_a_base_that_does_not_fit(tiny) -> None:
    layout = Projector(tiny, CLASSES, TEMPLATES, rank_encoder=2, rank_head=3).lora_layout("fp16")
    fix = "the archive was built for another base model; pass the CLIP weights it was built with"
    conv, *rest = layout.targets
    cases = {
        "missing": (LoraLayout((LoraTarget("visual.nope", "conv2d", 2, 2.0, 3, 8, (3, 3)), *rest), "fp16"),
                    f"LoRA target 'visual.nope' is not a convolution of base hellopack-tiny-rn; {fix}"),
        "shape": (LoraLayout((LoraTarget(conv.name, "conv2d", 2, 2.0, 3, 16, (3, 3)), *rest), "fp16"),
                  f"LoRA target 'visual.conv1' is conv2d 3->16 kernel 3x3 in the archive but conv2d 3->8 kernel 3x3 "
                  f"in base hellopack-tiny-rn; {fix}"),
        "extra": (LoraLayout(tuple(rest), "fp16"),
                  f"base hellopack-tiny-rn has 1 convolutions the archive's LoRA layout lacks (e.g. 'visual.conv1'); "
                  f"{fix}"),
    }
    for what, (bad, message) in cases.items():
        with pytest.raises(HellopackError) as e:
            Projector.from_layout(tiny, bad, CLASSES, TEMPLATES)
        assert str(e.value) == message, what
    with pytest.raises(HellopackError) as e:
        Projector.from_layout(tiny, layout, CLASSES[:4], TEMPLATES)
    assert str(e.value) == (f"LoRA target 'head' is linear 64->5 in the archive but the head is linear 64->4 "
                            f"(embed_dim -> classes) with base hellopack-tiny-rn; {fix}")

"""Stored labels (`labels record`, `train --labels stored:FILE`): the record is complete, the bytes are
counted exactly, full-K labels replay the projector's run, LPLD's pruning trains on kept views only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hellopack.errors import HellopackError
from hellopack.labels import format as fmt
from hellopack.labels import stored as stored_mod
from hellopack.labels.record import RecordConfig, plan, record
from hellopack.labels.views import RecordingAugmenter, replay
from hellopack.train import TrainConfig, train
from hellopack.train.augment import AugmentConfig, Augmenter, step_generator
from hellopack.train.labelers import ModelLabeler
from test_train_kit import model_tensors, small_archive  # noqa: F401

EPOCHS = 3  # small_archive: 16 images, batch 8 -> 2 steps per epoch


def tcfg(archive: Path, out: Path | None = None, **kw) -> TrainConfig:
    return TrainConfig(archive=str(archive), arch="convnet", out=str(out) if out else None, device="cpu",
                       epochs=kw.pop("epochs", EPOCHS), seed=kw.pop("seed", 3), **kw)


@pytest.mark.parametrize("factor,shuffle,mix", [(1, "strips", "cutmix"), (2, "strips", "cutmix"),
                                                (4, "patches", "mixup"), (2, "strips", "none")])
def test_the_record_rebuilds_train_s_views_bit_for_bit(factor: int, shuffle: str, mix: str) -> None:
    cfg = AugmentConfig(size=12, num_classes=5, crop_scale=(0.3, 1.0), factor=factor, shuffle=shuffle, mix=mix)
    images = torch.randint(0, 256, (6, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    x_train, t_train = Augmenter(cfg)(images, labels, step_generator(7, 11))
    x, t, rec = RecordingAugmenter(cfg).record(images, labels, step_generator(7, 11))
    assert torch.equal(x, x_train) and torch.equal(t, t_train)  # recording changes nothing
    assert torch.equal(replay(cfg, images, rec), x)  # and the record alone rebuilds every view
    assert rec.crop.shape == (6, 4) and rec.flip.shape == (6,)
    assert rec.shuffle.shape == (6, {1: 0, 2: 4, 4: 16}[factor] if mix != "none" else 4)


def test_byte_count_is_known_before_recording_and_equals_the_file_size(small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    tc = tcfg(small_archive)
    from hellopack.archive import open_archive

    manifest = open_archive(small_archive).manifest
    rc = RecordConfig(tc, top_k=3, out=str(tmp_path / "l.hplabels"), keep=0.5)
    header, kept = plan(rc, manifest, tc.resolve(manifest))
    predicted = fmt.file_bytes(header)
    r = record(rc)
    size = (tmp_path / "l.hplabels").stat().st_size
    assert r["file_bytes"] == predicted == size
    # by hand: 3 of 6 steps x (u32 step + 4 u16 CutMix box) + 24 views x (u32 image + 4 u16 crop + u8 flip
    # + fp16 lse + 3 x (fp16 value + u16 class)), + magic, length and the JSON header
    assert len(kept) == 3
    assert size == 8 + 4 + len(fmt.encode_header(header)) + 3 * (4 + 8) + 24 * (4 + 8 + 1 + 2 + 3 * 4)
    assert fmt.describe(tmp_path / "l.hplabels")["file_bytes"] == size


@pytest.fixture(scope="module")
def full_k(small_archive: Path, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("labels") / "full.hplabels"
    record(RecordConfig(tcfg(small_archive), top_k=4, out=str(out)))
    return out


def _spy(monkeypatch) -> list[tuple[str, int | None, torch.Tensor, torch.Tensor]]:
    """Every call of a model labeler or a stored labeler: (kind, step, x, logits)."""
    calls: list = []
    model_call, stored_call = ModelLabeler.__call__, stored_mod.StoredLabeler.__call__

    def m(self, x):
        out = model_call(self, x)
        calls.append(("model", None, x.clone(), out.clone()))
        return out

    def s(self, x, step):
        out = stored_call(self, x, step)
        calls.append(("stored", step, x.clone(), out.clone()))
        return out

    monkeypatch.setattr(ModelLabeler, "__call__", m)
    monkeypatch.setattr(stored_mod.StoredLabeler, "__call__", s)
    return calls


def test_full_k_stored_labels_train_the_projector_s_student(small_archive: Path, full_k: Path, tmp_path: Path,  # noqa: F811
                                                            monkeypatch) -> None:
    calls = _spy(monkeypatch)
    a = train(tcfg(small_archive, tmp_path / "projector"))
    b = train(tcfg(small_archive, tmp_path / "stored", labels=f"stored:{full_k}"))
    proj = [c for c in calls if c[0] == "model"]
    kept = [c for c in calls if c[0] == "stored"]
    assert len(proj) == len(kept) == 2 * EPOCHS
    assert [c[1] for c in kept] == list(range(2 * EPOCHS))  # every step, in order
    for p, s in zip(proj, kept):
        assert torch.equal(p[2], s[2])  # the same views in the same order
        # the same labels up to fp16 rounding of the log-probability and of the log-sum-exp
        lse = torch.logsumexp(p[3], 1, keepdim=True)
        tol = 2.0 ** -11 * ((p[3] - lse).abs() + lse.abs()) + 1e-6
        assert ((s[3] - p[3]).abs() <= tol).all()
    # AdamW turns fp16-sized label differences into small weight differences: the stored-label student is
    # far closer to the projector's than the hard-label student is (measured: 0.097 against 2.80)
    train(tcfg(small_archive, tmp_path / "hard", labels="hard"))
    w = {n: model_tensors(tmp_path / n) for n in ("projector", "stored", "hard")}

    def dist(x: str, y: str) -> float:
        return float(sum(((w[x][k] - w[y][k]).float() ** 2).sum() for k in w[x] if w[x][k].is_floating_point()) ** 0.5)

    assert dist("projector", "stored") < 0.1 * dist("projector", "hard")
    assert a["top1"] == b["top1"]


def test_keep_half_trains_only_on_the_kept_views(small_archive: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    path = tmp_path / "half.hplabels"
    record(RecordConfig(tcfg(small_archive, epochs=4), top_k=2, out=str(path), keep=0.5))
    header, arrays = fmt.read(path)
    kept = [int(s) for s in arrays["steps"]]
    assert len(kept) == 4 and header["kept_fraction"] == 0.5
    labeler = stored_mod.StoredLabeler(header, arrays)
    sources = [labeler.source_step(s) for s in range(8)]
    assert set(sources) <= set(kept) and all(sources[s] == s for s in kept)
    calls = _spy(monkeypatch)
    train(tcfg(small_archive, tmp_path / "run", epochs=4, labels=f"stored:{path}"))
    assert [c[1] for c in calls] == list(range(8))
    # each step's batch is the recorded views of its source step: rebuilt from the file's record alone
    from hellopack.archive import open_archive
    from hellopack.train.images import load_archive_images

    images, _ = load_archive_images(open_archive(small_archive), 16, 4)
    cfg = tcfg(small_archive, epochs=4)
    from hellopack.train.run import augment_config
    from hellopack.labels.views import BatchRecord

    aug = augment_config(cfg.resolve(open_archive(small_archive).manifest), 4)
    for _, step, x, _ in calls:
        i = kept.index(sources[step])
        rows = slice(8 * i, 8 * i + 8)
        rec = BatchRecord(arrays["crop"][rows], arrays["flip"][rows], arrays["shuffle"][rows], arrays["mix"][i])
        assert torch.equal(replay(aug, images[torch.from_numpy(arrays["image"][rows].astype(np.int64))], rec), x)


def test_a_file_from_another_run_is_refused_by_name(small_archive: Path, full_k: Path, tmp_path: Path) -> None:  # noqa: F811
    with pytest.raises(HellopackError) as e:
        train(tcfg(small_archive, tmp_path / "a", seed=4, labels=f"stored:{full_k}"))
    assert str(e.value) == (f"stored labels '{full_k}' were recorded with seed 3, this run has 4; train with "
                            "--seed 3 or record the labels for this run")
    with pytest.raises(HellopackError) as e:
        train(tcfg(small_archive, tmp_path / "b", batch_size=4, labels=f"stored:{full_k}"))
    assert str(e.value) == (f"stored labels '{full_k}' were recorded with batch size 8, this run has 4; train with "
                            "--batch-size 8 or record the labels for this run")
    with pytest.raises(HellopackError) as e:
        train(tcfg(small_archive, tmp_path / "c", mix="mixup", labels=f"stored:{full_k}"))
    assert str(e.value) == (f"stored labels '{full_k}' were recorded with mix cutmix, this run has mixup; train with "
                            "--mix cutmix or record the labels for this run")
    have = fmt.read_header(full_k)["identity"]
    with pytest.raises(HellopackError) as e:
        stored_mod.check_identity(full_k, have, {**have, "archive_manifest_sha256": "ab" * 32})
    assert str(e.value) == (f"stored labels '{full_k}' were recorded from another archive (manifest sha256 "
                            f"{have['archive_manifest_sha256'][:16]}..., this archive's is {'ab' * 8}...); record "
                            "them from this archive with hellopack labels record")


def test_bad_record_settings_and_damaged_files_name_the_fix(small_archive: Path, full_k: Path, tmp_path: Path) -> None:  # noqa: F811
    for kw, msg in [(dict(top_k=5), "--top-k 5 is outside 1..4 (the archive's class count)"),
                    (dict(top_k=2, keep=0.0), "--keep 0.0 must be in (0, 1]: the fraction of the views whose labels are kept")]:
        with pytest.raises(HellopackError) as e:
            record(RecordConfig(tcfg(small_archive), out=str(tmp_path / "x"), **kw))
        assert str(e.value) == msg
    cut = tmp_path / "cut.hplabels"
    cut.write_bytes(full_k.read_bytes()[:-1])
    with pytest.raises(HellopackError) as e:
        fmt.read(cut)
    assert str(e.value) == (f"stored labels '{cut}' are {cut.stat().st_size} bytes, the header describes "
                            f"{cut.stat().st_size + 1}; the file is damaged, record it again")


def test_dense_logits_spread_the_leftover_mass_as_fkd_does() -> None:
    """FKD's marginal smoothing: top-K probabilities kept, (1 - their sum) / (C - K) for every other class."""
    logp = torch.tensor([[np.log(0.5), np.log(0.3)]], dtype=torch.float32)
    z = stored_mod.dense_logits(logp, torch.tensor([[2, 0]]), torch.tensor([1.5]), 5)
    assert torch.allclose(z.softmax(1), torch.tensor([[0.3, 0.2 / 3, 0.5, 0.2 / 3, 0.2 / 3]]), atol=1e-6)
    assert torch.allclose(z[0, 2], torch.tensor(np.log(0.5) + 1.5, dtype=torch.float32))  # logit = log p + lse


def test_labels_inspect_puts_the_file_beside_the_archive_s_label_payload(full_k: Path, small_archive: Path) -> None:  # noqa: F811
    from typer.testing import CliRunner

    from hellopack.archive import open_archive
    from hellopack.archive.storage import label_storage
    from hellopack_cli.app import app

    payload = label_storage(open_archive(small_archive).manifest).payload_bytes
    size = full_k.stat().st_size
    res = CliRunner().invoke(app, ["labels", "inspect", str(full_k)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert (f"stored labels: 48 views, K 4, kept 1.000, {size:,} bytes; archive label payload {payload:,} bytes"
            in res.output)
    res = CliRunner().invoke(app, ["labels", "inspect", str(full_k.with_name("none.hplabels"))])
    assert res.exit_code == 2


def test_stored_labels_of_a_random_subset_train_that_subset_only(small_archive: Path, tmp_path: Path) -> None:  # noqa: F811
    """DD-Ranking's random baseline with stored labels: the record draws train's random subset for its seed,
    train replays it, and a run on other images (the archive's, or another decoder's pixels) is refused."""
    from test_train_kit import write_imagefolder

    src = write_imagefolder(tmp_path / "src", 12, 16, seed=5)
    real = {"images": "random", "data_dir": str(src), "data_recipe": "folder"}
    path = tmp_path / "r.hplabels"
    rc = RecordConfig(tcfg(small_archive, **real), top_k=4, out=str(path))
    r = record(rc)
    assert r["identity"]["images_source"] == "random" and r["identity"]["images_per_class"] == 4
    assert path.stat().st_size == r["file_bytes"]
    res = train(tcfg(small_archive, tmp_path / "ok", labels=f"stored:{path}", **real))
    assert res["config"]["images"] == "random"
    with pytest.raises(HellopackError, match="were recorded with images source random, this run has archive"):
        train(tcfg(small_archive, tmp_path / "no", labels=f"stored:{path}"))
    header, arrays = fmt.read(path)
    labeler = stored_mod.StoredLabeler({**header, "path": str(path)}, arrays)
    images = torch.zeros(16, 3, 16, 16, dtype=torch.uint8)
    with pytest.raises(HellopackError) as e:
        labeler.check_images(images)
    assert str(e.value) == (f"stored labels '{path}' were recorded from other training images than this run's "
                            "(pixel digest differs); record the labels with the same --images, --data-dir and "
                            "--seed as train, on this machine's decoder")

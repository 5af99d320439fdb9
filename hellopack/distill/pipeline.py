"""`hellopack build`: data scan, teachers, projector fit, RDED selection, image update, archive.

Each stage leaves its result in the work directory with a marker whose key hashes the
config values it depends on and the previous stage's key (hellopack.distill.stages): the
same command skips finished stages, a changed flag redoes that stage and the later ones,
and the fit (the long stage) continues from its last checkpoint.

Under torchrun every process runs the fit and the crop scoring on its shard; rank 0 alone
reads and writes the work directory (it broadcasts what the others need) and, after the
scoring, finishes the update and the archive while the other processes return.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from safetensors.torch import save as st_save

from hellopack import dist
from hellopack.distill.checks import fidelity_warnings
from hellopack.distill.config import BuildConfig
from hellopack.archive.images import LOSSY, Codec
from hellopack.distill.output import (ManifestParts, build_record, dataset_record, image_key, manifest,
                                      prompts_json, write_archive)
from hellopack.distill.crops import CropStages
from hellopack.distill.select import check_class_size
from hellopack.distill.splits import Splits, open_splits
from hellopack.distill.inputs import AugmentInputs, FitInputs, RefineInputs, ScanInputs, TeachersInputs
from hellopack.distill.images import DistilledImages
from hellopack.distill.stages import WorkDir
from hellopack.distill.workfiles import check_output, file_identity, read_tensors, remove_stale_temporaries
from hellopack.device import memory_format
from hellopack.errors import HellopackError
from hellopack.fsutil import atomic_write_bytes
from hellopack.progress import NULL, Reporter

LORA_FILE = "lora.safetensors"


def build(cfg: BuildConfig, reporter: Reporter = NULL) -> Path:
    """Run (or resume) the build described by ``cfg``; returns the archive path.

    Under torchrun, call it in every process: the process group is joined here when the
    caller has not done so. Processes other than rank 0 return once their share of the
    work is done; only rank 0 writes.
    """
    with dist.session(cfg.device) as (device, info):
        return _Build(cfg, reporter if info.is_main else NULL, device, info).run()


@dataclass
class _Projector:
    base: Any
    model: Any
    templates: list[str]


class _Build(CropStages):
    def __init__(self, cfg: BuildConfig, reporter: Reporter, device: torch.device, info: dist.DistInfo) -> None:
        self.cfg, self.rep, self.device, self.info = cfg, reporter, device, info
        self.mf = memory_format(device)
        self.wd = WorkDir(cfg.resolved_workdir())
        self._reused: list[str] | None = []  # finished stages this run reuses; None once said

    # ---- helpers ------------------------------------------------------------------------
    def _shared(self, value: Any) -> Any:
        """Rank 0's value on every rank (small, process-local data)."""
        return dist.broadcast_object(value if self.info.is_main else None) if self.info.enabled else value

    def _done(self, stage: str, key: str) -> dict[str, Any] | None:
        return self._reuse(stage, self._shared(self.wd.done(stage, key) if self.info.is_main else None))

    def _reuse(self, stage: str, done: Any) -> Any:
        """Note a stage found finished in the work folder; at the first one that runs, say once which were."""
        if self._reused is None:
            return done
        if done is not None:
            self._reused.append(stage)
        elif self._reused:
            self.rep.info(f"resuming the build in {self.wd.root}: {', '.join(self._reused)} done earlier")
            self._reused = None
        return done

    # ---- the stages ---------------------------------------------------------------------
    def run(self) -> Path:
        created = False
        try:
            if self.info.is_main:
                check_output(Path(self.cfg.out))
                created = self.wd.create()
                remove_stale_temporaries(Path(self.cfg.out))
            return self._run()
        except HellopackError:
            if created:
                self.wd.remove_if_unused()
            raise
        finally:
            self.wd.release()

    def _run(self) -> Path:
        cfg = self.cfg
        out = Path(cfg.out)
        splits = open_splits(cfg.recipe, cfg.data_dir, classes_file=cfg.classes_file, download=cfg.download,
                             max_bad_fraction=cfg.max_bad_fraction, synthetic=cfg.synthetic,
                             val_fraction=cfg.val_fraction, max_images=cfg.max_images,
                             eval_images=cfg.fidelity_images)
        scan, scan_key = self.scan(splits)
        size = scan["image_size"]
        factor = cfg.resolved_factor(size)
        k = cfg.ipc * factor * factor
        if cfg.n_real < k:
            raise HellopackError(f"--n-real {cfg.n_real} is smaller than ipc x factor^2 = {k} crops per class; "
                                 f"raise --n-real to at least {k}")
        for index, ((_, name, _), count) in enumerate(zip(scan["classes"], scan["counts"])):
            check_class_size(name, index, min(count, cfg.n_real), k, cfg.allow_short)  # fail before the fit
        specs, teachers_key = self.teachers(scan_key)
        proj = self.projector(splits)
        fit_key = self._fit_inputs(proj).key(teachers_key)
        fidelity = self.fit(proj, splits, scan, specs, size, fit_key)
        chosen, select_key = self.select(proj, splits, specs, size, factor, k, fit_key)
        if not self.info.is_main:
            return out
        patches, update_key = self.update(proj, size, factor, chosen, select_key)
        images = DistilledImages(chosen, patches, cfg.ipc, factor, self.codec(size))
        fidelity = self.refine(proj, splits, specs, size, factor, images, update_key, fit_key) or fidelity
        return self.write(out, splits, scan, proj, images, size, factor, fidelity)

    def scan(self, splits: Splits) -> tuple[dict[str, Any], str]:
        cfg = self.cfg
        key = ScanInputs(recipe=cfg.recipe, data_dir=cfg.data_dir, classes_file=cfg.classes_file,
                         synthetic=cfg.to_dict()["synthetic"], image_size=cfg.image_size,
                         max_bad_fraction=cfg.max_bad_fraction, val_fraction=cfg.val_fraction,
                         max_images=cfg.max_images, fidelity_images=cfg.fidelity_images).key()
        done = self._done("scan", key)
        if done is not None:
            return done, key
        result = None
        if self.info.is_main:
            full = splits.full
            counts = full.count_per_class()
            if counts is None:  # streaming source without an index: count by reading it once
                counts = [0] * len(full.classes)
                with self.rep.stage("scan data", total=None, unit="img") as bar:
                    for sample in full:
                        counts[sample.label] += 1
                        bar.advance(1)
            result = {"classes": [[c.index, c.name, c.source_id] for c in full.classes], "counts": counts,
                      "train_images": int(sum(counts)), "fit_images": splits.train_count(),
                      "image_size": int(cfg.image_size or full.image_size), "eval": splits.eval_kind,
                      "eval_images": splits.eval.num_samples}
            self.wd.mark("scan", key, result)
            self.rep.info(f"data: {full.description}; {sum(counts):,} training images, held-out: "
                          f"{_held_out(splits)}")
        return self._shared(result), key

    def teachers(self, scan_key: str) -> tuple[list[str], str]:
        from hellopack.distill.teachers import resolve_specs

        specs = resolve_specs(self.cfg.teachers, self.cfg.teachers_dir)
        ids = self._shared([file_identity(s) for s in specs] if self.info.is_main else None)
        key = TeachersInputs(specs=ids).key(scan_key)
        self.teachers_key = key  # names them in the --teacher-cache (load_teachers)
        if self.info.is_main and self.wd.done("teachers", key) is None:
            self.wd.mark("teachers", key, {"specs": specs, "files": ids})
        return specs, key

    def load_teachers(self, specs: list[str], full: Any, size: int) -> torch.nn.Module:
        """The weak-teacher ensemble; behind the --teacher-cache when one is given (same logits, bit for bit)."""
        from hellopack.distill.teachers import load_ensemble

        teachers = load_ensemble(specs, len(full.classes), size, full.mean, full.std, self.device, self.mf)
        if self.cfg.teacher_cache is None:
            return teachers
        from hellopack.distill.teacher_cache import CachedTeachers

        return CachedTeachers(teachers, f"{self.teachers_key}|{self.mf}", self.cfg.teacher_cache, len(full.classes))

    def projector(self, splits: Splits) -> _Projector:
        from hellopack.models.base import load_base
        from hellopack.models.projector import Projector, load_templates

        cfg = self.cfg
        templates = load_templates(cfg.templates)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a randomly initialised base (tiny test configs) is the same everywhere
            base = load_base(cfg.base, cfg.pretrained, cfg.clip_weights)
        base.model.to(self.device)
        classnames = [c.name for c in splits.full.classes]
        with self.rep.stage(f"projector: text head ({len(classnames)} classes x {len(templates)} templates)",
                            total=None, unit="class"), torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)  # LoRA A factors
            model = Projector(base, classnames, templates, rank_encoder=cfg.rank_encoder,
                              rank_head=cfg.resolved_rank_head(len(classnames), base.embed_dim), alpha=cfg.alpha)
        base.model.to("cpu")  # only the text tower was needed on the device (for the head)
        model = model.to(device=self.device, memory_format=self.mf).eval()
        return _Projector(base, model, templates)

    def _fit_inputs(self, proj: _Projector) -> FitInputs:
        c = self.cfg
        return FitInputs(base=proj.base.name, fingerprint=proj.base.fingerprint, templates=proj.templates,
                         rank_encoder=c.rank_encoder, rank_head=proj.model.rank_head, alpha=c.alpha,
                         epochs=c.fit_epochs, lr=c.fit_lr, weight_decay=c.fit_weight_decay,
                         batch_size=c.fit_batch_size, lam=c.lam, seed=c.seed, world=self.info.world_size)

    def fit(self, proj: _Projector, splits: Splits, scan: dict[str, Any], specs: list[str], size: int,
            key: str) -> dict[str, Any] | None:
        from hellopack.distill.fit import FitParams, Numerics, fidelity, fit_projector, steps_per_epoch
        from hellopack.data import Shard, make_loader

        cfg, info = self.cfg, self.info
        fit_dir = self.wd.stage_dir("fit") if info.is_main else self.wd.root / "fit"
        done = self._done("fit", key)
        if done is not None:
            state = self._shared(read_tensors(fit_dir / LORA_FILE) if info.is_main else None)
            proj.model.load_lora_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
            self.rep.info("fit: done earlier, reusing the fitted projector")
            return done.get("fidelity")

        full = splits.full
        teachers = self.load_teachers(specs, full, size)
        n = splits.train_count() or min(scan["train_images"], cfg.max_images or scan["train_images"])
        params = FitParams(epochs=cfg.fit_epochs, lr=cfg.fit_lr, weight_decay=cfg.fit_weight_decay,
                           batch_size=cfg.fit_batch_size, lam=cfg.lam, checkpoint_every=cfg.fit_checkpoint_every,
                           steps_per_epoch=steps_per_epoch(int(n), cfg.fit_batch_size, info.world_size),
                           numerics=Numerics(self.mf))
        loader = make_loader(splits.train, size, cfg.fit_batch_size, train=True, seed=cfg.seed,
                             num_workers=cfg.workers, shard=Shard(info.rank, info.world_size))

        def batches(epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            loader.set_epoch(epoch)
            return iter(loader)

        result = fit_projector(proj.model, teachers, batches, params, fit_dir, key, self.device, self.rep)
        evals = make_loader(splits.eval, size, cfg.eval_batch_size, train=False, seed=cfg.seed,
                            num_workers=cfg.workers, shard=Shard(info.rank, info.world_size))
        report = fidelity(proj.model, teachers, evals, self.device, self.rep, total=splits.eval.num_samples,
                          numerics=Numerics(self.mf))
        report["eval"] = splits.eval_kind
        if info.is_main:
            tensors = {k: v.cpu().contiguous() for k, v in proj.model.lora_state_dict().items()}
            atomic_write_bytes(fit_dir / LORA_FILE, st_save(tensors))
            self.wd.mark("fit", key, {"fidelity": report, **result})
            self.rep.info(f"fit: agreement with the teachers {report['agreement']:.1%}, projector top-1 "
                          f"{report['projector_top1']:.1%}, teachers' top-1 {report['teacher_top1']:.1%} "
                          f"on {report['images']} held-out images")
            for warning in fidelity_warnings(report, len(full.classes)):
                self.rep.warn(warning)
        return report

    def codec(self, size: int) -> Codec:
        fmt = self.cfg.resolved_image_format(size)
        return Codec(fmt, self.cfg.resolved_image_quality(size) if fmt in LOSSY else None)

    def refine(self, proj: _Projector, splits: Splits, specs: list[str], size: int, factor: int,
               images: DistilledImages, update_key: str, fit_key: str) -> dict[str, Any] | None:
        """Optional: continue the LoRA fit on the archive's own training views; returns the new fidelity."""
        from hellopack.distill.fit import Numerics, fidelity
        from hellopack.distill.refine import RefineParams, refine_projector
        from hellopack.data import make_loader
        from hellopack.train.augment import AugmentConfig

        cfg = self.cfg
        if cfg.refine_steps == 0:
            return None
        params = RefineParams(steps=cfg.refine_steps, lr=cfg.refine_lr if cfg.refine_lr is not None else cfg.fit_lr,
                              weight_decay=cfg.fit_weight_decay, batch_size=cfg.refine_batch_size, lam=cfg.lam,
                              seed=cfg.seed)
        # The views `train` will draw with this archive's recipe.
        recipe = cfg.train_recipe(factor, size, len(splits.full.classes), len(images))
        aug = AugmentConfig(size=size, num_classes=len(splits.full.classes), crop_scale=tuple(recipe["crop_scale"]),
                            factor=factor, patch_shuffle=recipe["patch_shuffle"], mix=recipe["mix"],
                            mix_alpha=recipe["mix_alpha"])
        augment = AugmentInputs(crop_scale=list(aug.crop_scale), factor=factor, patch_shuffle=aug.patch_shuffle,
                                shuffle=aug.shuffle, mix=aug.mix, mix_alpha=aug.mix_alpha)
        key = RefineInputs(steps=params.steps, lr=params.lr, weight_decay=params.weight_decay,
                           batch_size=params.batch_size, lam=params.lam, seed=params.seed, augment=augment,
                           fit=fit_key).key(update_key)
        ref_dir = self.wd.stage_dir("refine")
        done = self._reuse("refine", self.wd.done("refine", key))
        if done is not None:
            state = read_tensors(ref_dir / LORA_FILE)
            proj.model.load_lora_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
            which = "refined" if done.get("kept", "refined") == "refined" else "fitted"
            self.rep.info(f"refine: done earlier, reusing the {which} projector")
            return done["fidelity"]
        full = splits.full
        teachers = self.load_teachers(specs, full, size)
        result = refine_projector(proj.model, teachers, images, images.labels, aug, params, self.device, self.rep)
        # the factors the archive will hold: refined, or the fitted ones the refine restored
        tensors = {k: v.cpu().contiguous() for k, v in proj.model.lora_state_dict().items()}
        atomic_write_bytes(ref_dir / LORA_FILE, st_save(tensors))
        if result["kept"] == "fit":  # the fit's fidelity still describes the archive
            self.wd.mark("refine", key, {"fidelity": None, **result})
            why = (f"its loss was not finite at step {result['steps'] + 1} of {params.steps}" if result["final_loss"] is None else
                   f"agreement on unseen training views fell from {result['views_agreement_before']:.1%} to "
                   f"{result['views_agreement_after']:.1%}")
            self.rep.info(f"refine: undone, {why}; the archive keeps the fitted projector (try a smaller "
                          f"--refine-lr than {params.lr:g})")
            return None
        # rank 0 alone: under torchrun the other processes have returned after the crop scoring
        evals = make_loader(splits.eval, size, cfg.eval_batch_size, train=False, seed=cfg.seed,
                            num_workers=cfg.workers)
        report = fidelity(proj.model, teachers, evals, self.device, self.rep, total=splits.eval.num_samples,
                          numerics=Numerics(self.mf), reduce=False)
        report.update(eval=splits.eval_kind, **{k: result[k] for k in ("views_agreement_before",
                                                                      "views_agreement_after")})
        self.wd.mark("refine", key, {"fidelity": report, **result})
        self.rep.info(f"refine: agreement on unseen training views {result['views_agreement_before']:.1%} -> "
                      f"{result['views_agreement_after']:.1%}; on {report['images']} held-out images "
                      f"{report['agreement']:.1%}, projector top-1 {report['projector_top1']:.1%}")
        return report

    def write(self, out: Path, splits: Splits, scan: dict[str, Any], proj: _Projector, distilled: DistilledImages,
              size: int, factor: int, fidelity: dict[str, Any] | None) -> Path:
        cfg = self.cfg
        self._reuse("write", None)  # every stage before it was done earlier: say so now
        full = splits.full
        base = proj.base
        fid = None if fidelity is None else {k: fidelity[k] for k in
                                             ("agreement", "kl", "projector_top1", "teacher_top1", "images", "eval")}
        m = manifest(ManifestParts(
            dataset=dataset_record(cfg.dataset_name or full.name, cfg.recipe, cfg.data_dir, scan["train_images"]),
            classes=full.classes,
            images={"count": len(distilled), "ipc": cfg.ipc, "factor": factor, "size": size, **distilled.codec.manifest(),
                    "mean": list(full.mean), "std": list(full.std)},
            base=base,
            lora=proj.model.lora_layout(cfg.lora_dtype).to_manifest(),
            recipe=cfg.train_recipe(factor, size, len(full.classes), len(distilled)),
            seed=cfg.seed, build=build_record(cfg.to_dict()), fidelity=fid))
        lora = {k: v.detach().cpu().float().numpy() for k, v in proj.model.lora_state_dict().items()}

        def images() -> Iterator[tuple[str, int, bytes]]:
            per_class: dict[int, int] = {}
            for i, cls in enumerate(distilled.labels.tolist()):
                j = per_class.get(cls, 0)
                per_class[cls] = j + 1
                yield image_key(cls, j), cls, distilled.encoded(i)

        with self.rep.stage("write archive", total=None, unit="img"):
            path = write_archive(out, m, lora, cfg.lora_dtype, prompts_json([c.name for c in full.classes],
                                                                                 proj.templates), images(),
                                  ext=distilled.codec.ext)
        self.rep.info(f"wrote {path}: {len(distilled)} images, {proj.model.num_lora_parameters():,} LoRA numbers")
        return Path(path)


# ---- small helpers ----------------------------------------------------------------------

def _held_out(splits: Splits) -> str:
    """What the fidelity figures are measured on, for the data line: "16 test images", or a holdout's."""
    n = splits.eval.num_samples
    count = "" if n is None else f"{n:,} "
    if splits.eval_kind == "test":
        return f"{count}test image{'s' if n != 1 else ''}"
    return f"{count}training image{'s' if n != 1 else ''}, set aside (the data has no test split)"

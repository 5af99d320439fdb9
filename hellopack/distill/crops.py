"""The build's crop stages: RDED selection (score crops, keep the best per class) and the image update.

A mixin of the build (hellopack.distill.pipeline._Build), moved here so each file keeps one
job: these two stages own the work folder's ``select/crops.npy`` and ``update/patches.npy``.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hellopack import dist
from hellopack.archive.images import Codec
from hellopack.device import autocast
from hellopack.distill.inputs import SelectInputs, UpdateInputs
from hellopack.distill.select import (Candidates, Chosen, CropSpec, drawn, extract_crops, first_per_class,
                                      merge_candidates, score_stream)
from hellopack.distill.splits import Splits
from hellopack.distill.stages import WorkDir
from hellopack.distill.update import initial_patches, update_patches
from hellopack.distill.workfiles import open_memmap, slot_writer
from hellopack.fsutil import atomic_write_bytes
from hellopack.progress import Reporter

if TYPE_CHECKING:
    from hellopack.distill.config import BuildConfig
    from hellopack.distill.pipeline import _Projector

CROPS_FILE = "crops.npy"
PATCHES_FILE = "patches.npy"


class CropStages:
    cfg: BuildConfig
    rep: Reporter
    device: torch.device
    info: dist.DistInfo
    mf: torch.memory_format
    wd: WorkDir

    def _done(self, stage: str, key: str) -> dict[str, Any] | None: ...  # the build's (work folder + broadcast)

    def _reuse(self, stage: str, done: Any) -> Any: ...

    def codec(self, size: int) -> Codec: ...  # the archive's resolved image encoding

    def load_teachers(self, specs: list[str], full: Any, size: int) -> torch.nn.Module: ...  # cached if asked

    def select(self, proj: _Projector, splits: Splits, specs: list[str], size: int, factor: int, k: int,
               fit_key: str) -> tuple[Chosen, str]:
        cfg, info = self.cfg, self.info
        full = splits.full
        codec = self.codec(size)
        lossy = None if codec.lossless else codec  # the observer scores what the archive will store
        spec = CropSpec(size=size, m_crops=cfg.m_crops, scale=tuple(cfg.crop_scale), seed=cfg.seed, factor=factor,
                        fill=full.mean, codec=lossy)
        key = SelectInputs(ipc=cfg.ipc, factor=factor, size=size, n_real=cfg.n_real, m_crops=cfg.m_crops,
                           crop_scale=list(cfg.crop_scale), seed=cfg.seed, allow_short=cfg.allow_short,
                           observer=cfg.observer,
                           scored_as=None if lossy is None else {"encoding": lossy.encoding, "quality": lossy.quality},
                           ).key(fit_key)
        done = self._done("select", key)
        if done is not None:
            return Chosen.from_json(done["chosen"]), key

        names = [c.name for c in full.classes]
        counts = full.count_per_class()
        expect = sum(min(cfg.n_real, c) for c in counts) if counts else None
        if cfg.observer == "teacher":  # paper Eq. 6: the mean of the weak teachers' logits
            scorer: Any = self.load_teachers(specs, full, size)
        else:
            scorer = proj.model

        def observer(x: torch.Tensor) -> torch.Tensor:
            with autocast(self.device):
                return scorer(x)

        if info.is_main:
            self.rep.info(f"select: {cfg.observer} scores {cfg.m_crops} crops of {cfg.n_real} random images per class"
                          + ("" if lossy is None else f", each as stored ({lossy.encoding} q{lossy.quality})")
                          + ("" if full.random_access else " (streaming source: drawn by seeded shard order)"))
        with self.rep.stage("select: score crops", total=expect, unit="img") as bar:
            items = first_per_class(drawn(full, cfg.seed, info.rank, info.world_size), len(names), cfg.n_real)
            cands = score_stream(observer, items, spec, cfg.eval_batch_size, self.device, self.mf,
                                 on_images=lambda n: bar.advance(n * info.world_size))
        merged = Candidates.concat(dist.all_gather_objects(cands)) if info.enabled else cands
        if not info.is_main:
            return Chosen([], [], []), key
        chosen = merge_candidates(merged, names, cfg.n_real, k, cfg.allow_short, info=self.rep.info)

        sel_dir = self.wd.stage_dir("select")
        tmp = sel_dir / f".{CROPS_FILE}.partial"
        crops = open_memmap(tmp, "w+", (chosen.total(), 3, size, size), sel_dir / CROPS_FILE)
        with self.rep.stage("select: extract crops", total=len({x for ks in chosen.key for x in ks}),
                            unit="img") as bar:
            extract_crops(((key, image) for _, _, key, image in drawn(full, cfg.seed)), chosen, spec,
                          slot_writer(crops), on_image=bar.advance)
        crops.flush()
        del crops  # unmap before the rename
        os.replace(tmp, sel_dir / CROPS_FILE)
        self.wd.mark("select", key, {"chosen": chosen.to_json()})
        return chosen, key

    def update(self, proj: _Projector, size: int, factor: int, chosen: Chosen,
               select_key: str) -> tuple[np.ndarray, str]:
        cfg = self.cfg
        do = cfg.update and factor > 1 and cfg.update_steps > 0
        key = UpdateInputs(update=do, steps=cfg.update_steps if do else 0,
                           lr=cfg.update_lr if do else 0).key(select_key)
        up_dir = self.wd.stage_dir("update")
        final = up_dir / PATCHES_FILE
        if self._reuse("update", self.wd.done("update", key)) is not None:
            return np.load(final, mmap_mode="r"), key
        crops = np.load(self.wd.root / "select" / CROPS_FILE, mmap_mode="r")
        n, s = crops.shape[0], size // factor
        if cfg.update and factor == 1:
            self.rep.info("image update skipped: with factor 1 each stored patch is its full-resolution crop")
        # Chunks are independent (one Adam per patch batch): a restarted update continues after the last chunk.
        tmp = up_dir / f".{PATCHES_FILE}.partial"
        progress = up_dir / "progress.json"
        start = 0
        try:
            state = json.loads(progress.read_text())
            if state.get("key") == key and tmp.is_file():
                start = int(state["done"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            start = 0
        patches = open_memmap(tmp, "r+" if start else "w+", (n, 3, s, s), final)

        def features(x: torch.Tensor) -> torch.Tensor:
            with autocast(self.device):
                return proj.model.image_features(x)

        bs = cfg.eval_batch_size
        with self.rep.stage("update images" if do else "downsample patches", total=n, unit="patch") as bar:
            bar.advance(start)
            for lo in range(start, n, bs):
                chunk = torch.from_numpy(np.array(crops[lo:lo + bs]))
                if do:
                    out = update_patches(features, chunk, factor, cfg.update_steps, cfg.update_lr, self.device)
                else:
                    out = initial_patches(chunk, factor)
                patches[lo:lo + len(chunk)] = out.numpy()
                patches.flush()
                atomic_write_bytes(progress, json.dumps({"key": key, "done": lo + len(chunk)}).encode())
                bar.advance(len(chunk))
        del patches
        os.replace(tmp, final)
        progress.unlink(missing_ok=True)
        self.wd.mark("update", key, {"patches": n, "updated": do})
        return np.load(final, mmap_mode="r"), key

"""Top-1/top-5 of a student on --val (real held-out data) or, without it, on the archive's own images.

Validation classes must be the archive's classes (same set, matched by source id
or name; order may differ and is remapped). Under DDP every process evaluates
its shard and the counts are summed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from hellopack import device as devices
from hellopack import dist
from hellopack.errors import DataPathError, HellopackError

ARCHIVE_LABEL = "archive images (not a test accuracy)"


@dataclass(frozen=True)
class EvalResult:
    top1: float  # percent
    top5: float  # percent (top-k with k = min(5, classes))
    images: int
    evaluated_on: str

    def to_json(self) -> dict[str, Any]:
        return {"top1": self.top1, "top5": self.top5, "images": self.images, "evaluated_on": self.evaluated_on}


class Evaluator:
    """Callable ``(model) -> EvalResult``; ``batches()`` yields this process's (x01, archive class ids)."""

    def __init__(self, description: str, batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
                 num_classes: int, device: torch.device) -> None:
        self.description = description
        self.batches = batches
        self.num_classes = num_classes
        self.device = device

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> EvalResult:
        was_training = model.training
        model.eval()
        k = min(5, self.num_classes)
        counts = torch.zeros(3, dtype=torch.float64)  # correct@1, correct@k, images
        fmt = devices.memory_format(self.device)
        # the val loader may draw from the global RNG; never let evaluation shift training randomness
        with torch.random.fork_rng(devices=_cuda_devices(self.device)):
            for x, y in self.batches():
                x = x.to(self.device, non_blocking=True).contiguous(memory_format=fmt)
                y = y.to(self.device)
                with devices.autocast(self.device):
                    logits = model(x).float()
                topk = logits.topk(k, dim=1).indices
                hit = topk == y[:, None]
                counts += torch.tensor([hit[:, 0].sum().item(), hit.any(1).sum().item(), len(y)], dtype=torch.float64)
        counts = reduce_sum(counts, self.device)
        model.train(was_training)
        n = int(counts[2].item())
        if n == 0:
            raise HellopackError(f"evaluation set '{self.description}' has no images; check --val")
        return EvalResult(top1=100.0 * counts[0].item() / n, top5=100.0 * counts[1].item() / n,
                          images=n, evaluated_on=self.description)


def reduce_sum(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum over processes; NCCL only reduces tensors that live on the GPU."""
    return dist.all_reduce_sum(t.to(device)).cpu()


def _cuda_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def archive_evaluator(images: torch.Tensor, labels: torch.Tensor, num_classes: int, batch_size: int,
                      device: torch.device, rank: int = 0, world: int = 1) -> Evaluator:
    """Evaluate on the archive's own (un-augmented) images: a sanity number, not a test accuracy."""
    idx = torch.arange(len(images))[rank::world]

    def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for chunk in idx.split(batch_size):
            yield images[chunk].float().div_(255.0), labels[chunk]

    return Evaluator(ARCHIVE_LABEL, batches, num_classes, device)


@dataclass(frozen=True)
class ValView:
    """How ``--val`` images are read.

    ``resize``: the shorter side before the centre crop (RDED: ``size // 7 * 8``); None: the source's rule.
    ``max_images``: evaluate on the first N images only (a quick check, named in the result).
    """

    image_size: int
    batch_size: int
    num_workers: int = 0
    resize: int | None = None
    max_images: int | None = None


def val_evaluator(spec: str, recipe: str | None, manifest: dict, view: ValView, device: torch.device,
                  info: dist.DistInfo = dist.DistInfo()) -> Evaluator:
    """Open ``--val`` (path, ``RECIPE:PATH`` or recipe name), check its classes, return an evaluator.

    Under torchrun each process (``info``) evaluates its shard; the counts are summed.
    """
    from hellopack.data.subset import first_n

    from hellopack.data import Shard, make_loader

    image_size, batch_size, num_workers = view.image_size, view.batch_size, view.num_workers
    resize, max_images = view.resize, view.max_images

    src = open_val_source(spec, recipe, manifest)
    remap = match_classes(manifest["classes"], src.classes, spec)
    capped = first_n(src, max_images)
    description = f"val: {spec}" + (f" (first {max_images:,} images)" if capped is not src else "")
    src = capped

    def batches() -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        loader = make_loader(src, image_size, batch_size, train=False, seed=0, num_workers=num_workers,
                             shard=Shard(info.rank, info.world_size), eval_resize=resize)
        for x, y in loader:
            yield x, remap[y]

    return Evaluator(description, batches, len(manifest["classes"]), device)


def parse_val_spec(spec: str, recipe: str | None, recipes: Iterable[str]) -> tuple[str | None, str | None]:
    """``(recipe, path)`` for ``--val``: a path (recipe None: inferred later), ``RECIPE:PATH``, or ``RECIPE``."""
    names = set(recipes)
    if recipe is not None:
        return recipe, spec
    if Path(spec).expanduser().exists() or any(c in spec for c in "{*") or "://" in spec:
        return None, spec
    head, sep, tail = spec.partition(":")
    if sep and head in names:
        return head, tail or None
    if spec in names:
        return spec, None
    raise HellopackError(f"--val '{spec}' is neither an existing path nor a dataset recipe "
                         f"(recipes: {', '.join(sorted(names))}); pass a validation folder, shards, or RECIPE:PATH")


# Recipes whose class naming a plain --val path should reuse (ImageNet wnids, CIFAR's fixed order).
_DATASET_RECIPES = ("imagenet", "cifar10", "cifar100")


def infer_recipe(path: str, manifest_recipe: str | None) -> str:
    """The recipe for a plain --val path: the archive's dataset recipe when it names a dataset, else by layout."""
    if manifest_recipe in _DATASET_RECIPES:
        return manifest_recipe
    p = Path(path).expanduser()
    if "://" in path or any(c in path for c in "{*") or p.suffix.lower() == ".tar":
        return "wds"
    if p.is_dir() and any(q.suffix.lower() == ".tar" for q in p.iterdir()):
        return "wds"
    return "folder"


def open_val_source(spec: str, recipe: str | None, manifest: dict) -> Any:
    from hellopack.data import RECIPES, open_source

    rec, path = parse_val_spec(spec, recipe, RECIPES.names())
    dataset = manifest.get("dataset") or {}
    if rec is None:
        rec = infer_recipe(path, dataset.get("recipe"))
    synthetic = (manifest.get("build") or {}).get("synthetic") if rec == "synthetic" else None
    try:
        return open_source(rec, path, split="val", synthetic=synthetic)
    except DataPathError as e:  # the data layer's fixes name build's --data-dir (and --download): say --val
        raise e.for_flag("--val" if path is not None else f"--val {rec}:PATH", download=False) from None


def match_classes(archive_classes: Sequence[dict], val_classes: Sequence[Any], spec: str) -> torch.Tensor:
    """Map each val class index to the archive's index; refuse any difference, naming it."""
    a_ids = [str(c.get("source_id") or "") for c in archive_classes]
    a_names = [str(c.get("name") or "") for c in archive_classes]
    v_ids = [str(getattr(c, "source_id", "") or "") for c in val_classes]
    v_names = [str(getattr(c, "name", "") or "") for c in val_classes]
    by_id = all(a_ids) and all(v_ids) and set(a_ids) == set(v_ids) and len(set(a_ids)) == len(a_ids)
    by_name = set(a_names) == set(v_names) and len(set(a_names)) == len(a_names) and len(v_names) == len(a_names)
    if by_id and len(v_ids) == len(a_ids):
        where = {s: i for i, s in enumerate(a_ids)}
        return torch.tensor([where[s] for s in v_ids], dtype=torch.long)
    if by_name:
        where = {s: i for i, s in enumerate(a_names)}
        return torch.tensor([where[s] for s in v_names], dtype=torch.long)
    # say which differ, by the key both sides have
    use_ids = all(a_ids) and all(v_ids)
    a_keys, v_keys = (a_ids, v_ids) if use_ids else (a_names, v_names)
    only_a = [k for k in a_keys if k not in set(v_keys)]
    only_v = [k for k in v_keys if k not in set(a_keys)]
    parts = [f"--val '{spec}' has {len(v_keys)} classes, the archive has {len(a_keys)}"]
    if only_a:
        parts.append(f"only in the archive: {_few(only_a)}")
    if only_v:
        parts.append(f"only in --val: {_few(only_v)}")
    if not only_a and not only_v:
        parts.append("some classes are repeated")
    raise HellopackError("; ".join(parts) + "; pass the validation data of the archive's dataset")


def _few(items: list[str], n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")

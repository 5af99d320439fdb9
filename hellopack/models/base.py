"""The frozen open_clip base: creation by name/tag or from a weights file, and its fingerprint.

Importing this module registers the tiny model configs shipped in ``configs/``
(random init, for tests and the offline demo) with open_clip.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import open_clip
import torch
from torch import nn

from hellopack.errors import HellopackError
from hellopack.registry import unknown_name_error

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
RANDOM_INIT_SEED = 0
TINY_CONFIGS: tuple[str, ...] = tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.json")))

if not all(name in open_clip.list_models() for name in TINY_CONFIGS):
    open_clip.add_model_config(CONFIG_DIR)


@dataclass(frozen=True, eq=False)
class BaseModel:
    """An open_clip CLIP model in eval mode with every parameter frozen, plus its identity."""

    model: nn.Module
    tokenizer: Callable[..., torch.Tensor]
    name: str
    pretrained: str | None
    custom: bool
    fingerprint: str
    bytes: int | None
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embed_dim: int
    logit_scale: float


def load_base(name: str, pretrained: str | None = None, weights: Path | str | None = None) -> BaseModel:
    """Create open_clip model ``name``.

    - ``pretrained`` only: open_clip downloads the tagged weights (needs internet).
    - ``weights`` only: a local state dict (custom base); random init is replaced entirely.
    - both: ``weights`` is a local copy of the tagged weights (no download); the tag only
      selects the matching config (QuickGELU, mean/std), and the base is not ``custom``.
    - neither: random init seeded with ``RANDOM_INIT_SEED`` (the tiny test configs).
    """
    if name not in open_clip.list_models():
        raise unknown_name_error("open_clip model", name, open_clip.list_models(),
                                 hint="see open_clip.list_models()")
    tag_cfg: dict[str, Any] = {}
    if pretrained is not None:
        tag_cfg = open_clip.get_pretrained_cfg(name, pretrained)
        if not tag_cfg:
            tags = open_clip.list_pretrained_tags_by_model(name)
            if not tags:
                raise HellopackError(f"open_clip model '{name}' has no pretrained weights named '{pretrained}'; "
                                     f"pass --clip-weights FILE or use a model with pretrained tags")
            raise unknown_name_error(f"pretrained tag for {name}", pretrained, tags)
    kwargs: dict[str, Any] = {"force_quick_gelu": _quick_gelu(name, pretrained)}
    if tag_cfg:
        kwargs["force_preprocess_cfg"] = {"mean": tag_cfg["mean"], "std": tag_cfg["std"]}

    size: int | None = None
    if weights is not None:
        weights = Path(weights)
        state = _read_state_dict(weights)
        with _quiet_open_clip():
            model = open_clip.create_model(name, pretrained=None, **kwargs)
        _load_strict(model, state, weights, name)
        size = weights.stat().st_size
    elif pretrained is not None:
        try:
            cached = _cached_or_unreachable(tag_cfg)
        except OSError as e:
            raise _download_error(name, pretrained, tag_cfg, str(e)) from None
        if cached is not None:  # offline with the weights in the local hub cache: load them directly
            state = _read_state_dict(cached)
            with _quiet_open_clip():
                model = open_clip.create_model(name, pretrained=None, **kwargs)
            _load_strict(model, state, cached, name)
            return _finish(model, name, pretrained, custom=False, size=None)
        try:
            with _quiet_open_clip():
                model = open_clip.create_model(name, pretrained=pretrained, **kwargs)
        except Exception as e:  # network, hub and cache errors all end here
            reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise _download_error(name, pretrained, tag_cfg, reason) from None
    else:
        # Seeded so a random-init base (the tiny configs) is the same in every process:
        # build and train then agree on its fingerprint.
        with _quiet_open_clip(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_INIT_SEED)
            model = open_clip.create_model(name, pretrained=None, **kwargs)

    return _finish(model, name, pretrained, custom=weights is not None and pretrained is None, size=size)


def _finish(model: nn.Module, name: str, pretrained: str | None, custom: bool, size: int | None) -> BaseModel:
    model.eval()
    model.requires_grad_(False)
    pp = open_clip.get_model_preprocess_cfg(model)
    return BaseModel(
        model=model,
        tokenizer=open_clip.get_tokenizer(name),
        name=name,
        pretrained=pretrained,
        custom=custom,
        fingerprint=fingerprint(model),
        bytes=size,
        image_size=_square(model.visual.image_size),
        mean=tuple(float(v) for v in pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(float(v) for v in pp.get("std", open_clip.OPENAI_DATASET_STD)),
        embed_dim=int(open_clip.get_model_config(name)["embed_dim"]),
        logit_scale=float(model.logit_scale.exp().item()),
    )


def fingerprint(model: nn.Module) -> str:
    """sha256 over the state dict sorted by name: name, dtype, shape, then float32 LE bytes.

    Parameters and persistent buffers only (what a weights file holds), so it identifies the
    weights and not open_clip's derived constants.
    """
    h = hashlib.sha256()
    for key, t in sorted(model.state_dict().items()):
        t = t.detach()
        h.update(key.encode("utf-8"))
        h.update(str(t.dtype).encode("ascii"))
        h.update(repr(tuple(t.shape)).encode("ascii"))
        arr = t.to(device="cpu", dtype=torch.float32).contiguous().numpy()
        h.update(memoryview(arr.astype("<f4", copy=False)).cast("B"))
    return "sha256:" + h.hexdigest()


# ---- helpers -------------------------------------------------------------------------

def _download_error(name: str, pretrained: str, tag_cfg: dict[str, Any], reason: str) -> HellopackError:
    hub = str(tag_cfg.get("hf_hub") or "").rstrip("/")
    where = f", e.g. from https://huggingface.co/{hub}" if hub else ""
    return HellopackError(
        f"could not download the '{pretrained}' weights of open_clip model '{name}' ({reason}); "
        f"without internet, pass --clip-weights FILE (an open_clip .safetensors/.bin state dict{where})"
    )


def _square(size: int | tuple[int, int] | list[int]) -> int:
    if isinstance(size, int):
        return size
    h, w = size
    if h != w:
        raise HellopackError(f"open_clip image size {h}x{w} is not square; choose a model with a square input")
    return int(h)


def _quick_gelu(name: str, pretrained: str | None) -> bool:
    """QuickGELU as the weights were trained: from the tag, or when every tag of ``name`` agrees."""
    cfg = open_clip.get_model_config(name) or {}
    if cfg.get("quick_gelu", False):
        return True
    if pretrained is not None:
        return bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False))
    tags = open_clip.list_pretrained_tags_by_model(name)
    flags = {bool(open_clip.get_pretrained_cfg(name, t).get("quick_gelu", False)) for t in tags}
    return flags == {True}


def _cached_or_unreachable(tag_cfg: dict[str, Any]) -> Path | None:
    """Fail fast without internet (the hub client retries for about a minute otherwise).

    Returns the weights file when the host cannot be resolved but the hub cache holds it;
    raises HellopackError when it cannot be resolved and nothing is cached; None when online.
    """
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or "file" in tag_cfg:
        return None  # the hub client then reads its cache without network calls
    hub = str(tag_cfg.get("hf_hub") or "")
    host = "huggingface.co" if hub else urlparse(str(tag_cfg.get("url") or "")).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443)
        return None
    except OSError:
        pass
    if hub:
        with contextlib.suppress(Exception):
            from huggingface_hub import try_to_load_from_cache

            repo, filename = os.path.split(hub)  # open_clip's form: "org/model/" or "org/model/file"
            for fname in [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]:
                hit = try_to_load_from_cache(repo, fname)
                if isinstance(hit, str):
                    return Path(hit)
    raise OSError(f"cannot resolve {host}: no internet")


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    # open_clip warns on the root logger whenever no tag is given; we load weights ourselves.
    flt = _DropRandomInitWarning()
    logging.getLogger().addFilter(flt)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(flt)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise HellopackError(f"base weights file '{path}' not found; check the --clip-weights path")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise HellopackError(f"cannot read base weights '{path}': not a valid safetensors file ({e})") from None
    elif suffix in (".pt", ".pth", ".bin"):
        state = load_torch_state(path, what="base weights")
    else:
        raise HellopackError(f"base weights '{path}' must be .safetensors, .pt, .pth or .bin (a state dict)")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise HellopackError(f"base weights '{path}' is not a state dict of tensors; save model.state_dict()")
    return strip_prefixes(state, ("module.",))


def load_torch_state(path: Path, what: str, allowed: tuple[type, ...] = ()) -> Any:
    """``torch.load(weights_only=True)``: never executes code from the file.

    ``allowed``: plain-data classes the unpickler may build besides tensors and containers
    (torchvision's reference checkpoints hold their arguments as an ``argparse.Namespace``).
    """
    import pickle
    import zipfile

    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if any(n.endswith("constants.pkl") for n in z.namelist()):
                raise HellopackError(f"{what} '{path}' is a TorchScript archive, not a state dict; "
                                     f"save model.state_dict() (torch.save or safetensors) and pass that")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            with torch.serialization.safe_globals(list(allowed)):
                return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        also = "".join(f", {c.__module__}.{c.__qualname__}" for c in allowed)
        only = f"; only tensors{also} are allowed" if allowed else ""
        raise HellopackError(f"refusing to load {what} '{path}': it is not a plain tensor file that loads without "
                             f"running code ({_unpickler_reason(e)}{only}); save a plain state dict or a "
                             f".safetensors file") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise HellopackError(f"cannot read {what} '{path}': {first}; is it a torch checkpoint?") from None


def _unpickler_reason(e: Exception) -> str:
    # torch's message is a paragraph; the useful part is the global it refused, else the line
    # after "WeightsUnpickler error:" (torch's advice to allow-list the global is left out).
    text = str(e)
    refused = re.search(r"GLOBAL ([\w.]+)", text)
    if refused:
        return f"Unsupported global: GLOBAL {refused.group(1)}"
    _, _, tail = text.partition("WeightsUnpickler error:")
    lines = [ln.strip() for ln in (tail or text).splitlines() if ln.strip()]
    # Without that marker (e.g. "unsupported GLOBAL posix.system") skip torch's preamble, which
    # suggests weights_only=False: exactly what must not be done with this file.
    lines = [ln for ln in lines if not ln.startswith(_TORCH_PREAMBLE)] or lines
    return lines[0][:160] if lines else type(e).__name__


_TORCH_PREAMBLE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def strip_prefixes(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (DDP ``module.``, torch.compile ``_orig_mod.``) wherever they lead a key."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if key.startswith(p):
                    key, changed = key[len(p):], True
        out[key] = value
    return out


def _load_strict(model: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    expected = model.state_dict()
    if "logit_scale" in state and "logit_scale" in expected and state["logit_scale"].ndim != expected["logit_scale"].ndim:
        state["logit_scale"] = state["logit_scale"].reshape(expected["logit_scale"].shape)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or mismatched:
        example = (missing or unexpected or mismatched)[0]
        raise HellopackError(
            f"wrong base weights: {path} does not match open_clip model {name} ({len(missing)} missing, "
            f"{len(unexpected) + len(mismatched)} unexpected/mismatched keys, e.g. '{example}'); "
            f"pass the weights file of {name} or the matching --base"
        )
    model.load_state_dict(state, strict=True)

"""Budgets a reader enforces before it does any work (spec/FORMAT.md 5.2): prompts, classes, images, LoRA.

Integrity checks (hashes) prove nothing about intent: anyone can write an archive whose checksums
pass. These bounds keep what a consumer builds from an archive (prompt strings, the text head, the
LoRA factors, the image tensor) small whatever the archive says. Each is far above what a real build
writes (ImageNet-21k: 21,841 classes, 80 templates, about 3 M LoRA numbers). Pure Python.
"""

from __future__ import annotations

from typing import Any, Mapping

from hellopack.archive.format import ArchiveError

MAX_TEMPLATES = 1_000  # prompt templates in prompts.json (the openai set has 80)
MAX_TEMPLATE_CHARS = 300  # one template (the longest openai template has 45)
MAX_CLASSES = 100_000  # classes in the manifest and class names in prompts.json
MAX_CLASSNAME_CHARS = 256  # one class name (manifest and prompts.json)
MAX_PROMPTS_BYTES = 16 * 1024**2  # declared size of prompts.json: its JSON is parsed in memory
MAX_IMAGE_SIDE = 4096  # images.size: a stored image is at most MAX_IMAGE_PIXELS (4096 x 4096)
MAX_IMAGE_COUNT = 16_777_216  # images.count (2^24; ImageNet-21k at 100 images per class is 2.2 M)
MAX_LORA_PARAMETERS = 50_000_000  # lora_A + lora_B elements over all targets, from the layout alone


def _check(ok: bool, where: str, defect: str) -> None:
    if not ok:
        raise ArchiveError(where, defect)


def check_manifest_budgets(m: Mapping[str, Any], layout: Any) -> None:
    """Counts and sizes the manifest declares, checked before anything is allocated for them
    (``m``: a manifest whose key types validate_manifest has checked; ``layout``: its LoraLayout)."""
    classes = m["classes"]
    _check(len(classes) <= MAX_CLASSES, "manifest",
           f"'classes' lists {len(classes)} classes, over the {MAX_CLASSES}-class limit")
    for i, c in enumerate(classes):
        _check(len(c["name"]) <= MAX_CLASSNAME_CHARS, "manifest",
               f"key 'classes[{i}].name' is {len(c['name'])} characters, over the "
               f"{MAX_CLASSNAME_CHARS}-character limit")
    images = m["images"]
    _check(images["size"] <= MAX_IMAGE_SIDE, "manifest",
           f"key 'images.size' is {images['size']}, over the {MAX_IMAGE_SIDE}-pixel limit")
    _check(images["count"] <= MAX_IMAGE_COUNT, "manifest",
           f"key 'images.count' is {images['count']}, over the {MAX_IMAGE_COUNT}-image limit")
    for i, t in enumerate(layout.targets):
        fan_in, fan_out = t.fans
        _check(t.rank <= min(fan_in, fan_out), "manifest",
               f"key 'lora.targets[{i}].rank' is {t.rank}, above min(inputs {fan_in}, outputs {fan_out}) of "
               "its layer; a LoRA rank cannot exceed the layer's smaller side")
    n = layout.parameters
    _check(n <= MAX_LORA_PARAMETERS, "manifest",
           f"lora.targets hold {n} LoRA numbers, over the {MAX_LORA_PARAMETERS}-number limit")


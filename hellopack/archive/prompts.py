"""prompts.json, strictly: the one parser every consumer uses (``Archive.read_prompts``).

An object with exactly ``classnames`` (C strings, one per manifest class) and ``templates``
(1..MAX_TEMPLATES strings, each holding exactly one ``{}`` and no other replacement field):
a template is later ``str.format``-ed with a class name, so a format spec such as
``{:>1500000000}`` would build a 1.5 GB string. Strict JSON: no NaN/Infinity, no duplicate
keys, bounded nesting. Pure Python.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass

from hellopack.archive.format import PROMPTS, ArchiveError
from hellopack.archive.limits import MAX_CLASSNAME_CHARS, MAX_TEMPLATE_CHARS, MAX_TEMPLATES
from hellopack.archive.strictjson import duplicates_refused, reject_constant

KEYS = ("classnames", "templates")
_ONLY = "templates may hold only '{}'"


@dataclass(frozen=True)
class Prompts:
    classnames: tuple[str, ...]
    templates: tuple[str, ...]


def _cut(s: str, n: int = 40) -> str:
    """A value from the archive as a short, printable, one-line quote."""
    r = repr(s)
    return r if len(r) <= n else r[: n - 4] + "...'"


def parse_prompts(data: bytes, num_classes: int) -> Prompts:
    """Parse and check prompts.json; ArchiveError('prompts.json', ...) names the first defect."""
    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=duplicates_refused(_cut),
                         parse_constant=reject_constant)
    except UnicodeDecodeError:
        raise ArchiveError(PROMPTS, "is not valid UTF-8 JSON") from None
    except RecursionError:
        raise ArchiveError(PROMPTS, "is not valid UTF-8 JSON (nested too deeply)") from None
    except ValueError as e:
        raise ArchiveError(PROMPTS, f"is not valid UTF-8 JSON ({str(e).splitlines()[0][:100]})") from None
    if not isinstance(obj, dict):
        raise ArchiveError(PROMPTS, "must be a JSON object")
    extra = sorted(set(obj) - set(KEYS))
    if extra:
        raise ArchiveError(PROMPTS, f"has the key {_cut(extra[0])}; the object holds exactly 'classnames' and "
                                    "'templates'")
    names, templates = obj.get("classnames"), obj.get("templates")
    if not (isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names)):
        raise ArchiveError(PROMPTS, f"'classnames' must be a list of {num_classes} strings (one per class)")
    for i, n in enumerate(names):
        if len(n) > MAX_CLASSNAME_CHARS:
            raise ArchiveError(PROMPTS, f"class name {i} is {len(n)} characters, over the "
                                        f"{MAX_CLASSNAME_CHARS}-character limit")
    if not (isinstance(templates, list) and templates and all(isinstance(t, str) for t in templates)):
        raise ArchiveError(PROMPTS, "'templates' must be a non-empty list of strings")
    if len(templates) > MAX_TEMPLATES:
        raise ArchiveError(PROMPTS, f"holds {len(templates)} templates, over the {MAX_TEMPLATES}-template limit")
    for i, t in enumerate(templates, 1):
        check_template(t, i)
    return Prompts(tuple(names), tuple(templates))


def check_template(template: str, number: int) -> None:
    """Exactly one bare ``{}``; literal text and doubled braces around it. ``number`` counts from 1."""
    where = f"template {number}"
    if len(template) > MAX_TEMPLATE_CHARS:
        raise ArchiveError(PROMPTS, f"{where} is {len(template)} characters, over the "
                                    f"{MAX_TEMPLATE_CHARS}-character limit")
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None]
    except ValueError:
        raise ArchiveError(PROMPTS, f"{where} ({_cut(template)}) has unbalanced braces; {_ONLY}") from None
    for name, spec, conv in fields:
        field = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
        for what, bad in (("a field name", name), ("a conversion", conv), ("a format spec", spec)):
            if bad:
                raise ArchiveError(PROMPTS, f"{where} has {what} ({_cut(field)}); {_ONLY}")
    if len(fields) != 1:
        raise ArchiveError(PROMPTS, f"{where} ({_cut(template)}) has {len(fields)} placeholders; a template "
                                    "needs exactly one '{}' for the class name")

"""`hellopack inspect ARCHIVE`: what is inside, what it replaces, and whether it is intact."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hellopack.archive import ArchiveError, open_archive
from hellopack.errors import HellopackError
from hellopack.grid import contact_sheet
from hellopack.summary import human_bytes, ratio_text, summarize
from hellopack.textsafe import printable

from .errors import friendly_errors

stdout = Console()


def _v(value: Any) -> str:
    """One archive value (a stranger's string) made inert: control characters escaped, length bounded."""
    return printable(value)


def _text(value: Any) -> str:
    """Text shown as text: never rich markup, never a control character or lone surrogate."""
    return escape(printable(value, limit=None))


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "n/a"


def _render(s: dict[str, Any], verified: Optional[dict]) -> None:
    t = Table(title=f"hellopack archive  {_text(s['path'])}", show_header=False, title_justify="left")
    t.add_column(style="bold", no_wrap=True)
    t.add_column(overflow="fold")
    d, im, b, lo = s["dataset"], s["images"], s["base"], s["lora"]
    first = ", ".join(_text(_v(n)) for n in s["classes"]["first"])
    more = s["classes"]["count"] - len(s["classes"]["first"])
    t.add_row("dataset", _text(f"{_v(d.get('name'))} ({_v(d.get('recipe'))}, {_v(d.get('train_images'))} "
                               "source images)"))
    t.add_row("classes", f"{s['classes']['count']}: {first}" + (f", ... ({more} more)" if more > 0 else ""))
    t.add_row("images", f"{im['count']} at IPC {im['ipc']}, {im['size']}x{im['size']} px, factor {im['factor']}, {_text(im['format'])}")
    t.add_row("base model", _text(f"open_clip {_v(b['name'])}" + (f" / {_v(b['pretrained'])}" if b.get("pretrained") else ""))
              + (" (custom weights: share them once)" if b.get("custom") else ""))
    t.add_row("base fingerprint", b["fingerprint"])
    t.add_row("LoRA", f"rank {lo['rank_encoder']} on {lo['encoder_targets']} layers + rank {lo['rank_head']} on the head, "
              f"{lo['parameters']:,} stored parameters ({lo['dtype']})")
    r = s["recipe"]
    t.add_row("recipe", _text(f"{_v(r.get('epochs'))} epoch{'s' if r.get('epochs') != 1 else ''}, "
                              f"{_v(r.get('optimizer'))} lr {_v(r.get('lr'))}, loss {_v(r.get('loss'))} + "
                              f"{_v(r.get('beta'))} CE"))
    t.add_row("protocol", _text(s["protocol"]))
    t.add_row("selection", _text(f"crops scored by the {_v(s['observer'])}"))
    fid = s.get("fidelity")
    if isinstance(fid, dict) and fid:
        kl = fid.get("kl")
        parts = [f"agreement {_pct(fid.get('agreement'))} with teachers"]
        if isinstance(kl, (int, float)):
            parts.append(f"KL {kl:.3f}")
        parts.append(f"projector top-1 {_pct(fid.get('projector_top1'))} on {_text(_v(fid.get('images', '?')))} held-out images")
        t.add_row("fidelity", ", ".join(parts))
    t.add_row("format", _text(f"v{s['format_version'][0]}.{s['format_version'][1]}, written by hellopack "
                              f"{_v(s['tool'].get('version'))}"))
    t.add_row("file size", human_bytes(s["file_bytes"]))
    stdout.print(t)

    mt = Table(title="members", title_justify="left")
    for col in ("name", "stored", "size", "encoding", "sha256"):
        mt.add_column(col, justify="right" if col in ("stored", "size") else "left")
    for m in s["members"]:
        mt.add_row(_text(m["name"]), human_bytes(m["stored_size"]), human_bytes(m["size"]), m["encoding"], m["sha256"][:16] + "…")
    stdout.print(mt)

    r = s["replaces"]
    rt = Table(title="what it replaces", show_header=False, title_justify="left")
    rt.add_column(style="bold")
    rt.add_column(justify="right")
    rt.add_row(f"stored soft labels ({r['epochs']} epoch{'s' if r['epochs'] != 1 else ''} x {r['images']:,} images "
               f"x {r['classes']:,} classes x 2 B)", human_bytes(r["soft_label_bytes"]))
    rt.add_row(f"augmentation records ({r['aug_record_bytes_per_view']} B per view)", human_bytes(r["aug_record_bytes"]))
    rt.add_row("heavy labels in total", human_bytes(r["total_bytes"]))
    rt.add_row("this archive's label payload (LoRA + prompts)", human_bytes(r["payload_bytes"]))
    rt.add_row("ratio", ratio_text(r["ratio"]))
    if "payload_with_base_bytes" in r:
        rt.add_row("label payload + the custom base file (if shared with this archive only)",
                   human_bytes(r["payload_with_base_bytes"]))
        rt.add_row("ratio with the base counted", ratio_text(r["ratio_with_base"]))
    w = s["whole"]  # the whole archive: the same images shipped both ways
    rt.add_row(f"images as stored ({s['images'].get('encoding', s['images']['format'])})", human_bytes(w["images_bytes"]))
    rt.add_row("images + stored soft labels (what a stored-label user ships)", human_bytes(w["stored_label_bytes"]))
    rt.add_row("this archive: images + label payload", human_bytes(w["archive_bytes"]))
    rt.add_row("whole-archive ratio (label-only ratio above)", ratio_text(w["ratio"]))
    stdout.print(rt)
    for ext in s["external"]:
        stdout.print(f"[yellow]external dependency[/yellow]: {_text(ext['what'])} '{_text(_v(ext['name']))}' "
                     f"({human_bytes(ext['bytes']) if isinstance(ext['bytes'], int) else 'size unknown'}, "
                     f"{_text(_v(ext['fingerprint']))}): share it once; `train --clip-weights FILE` needs it")
    if verified is not None:
        stdout.print(f"[green]verified[/green]: {verified['members_checked']} members, "
                     f"{verified['images_checked']} images decoded, every checksum matches")


def _same_file(a: Path, b: Path) -> bool:
    """True when writing ``a`` would replace ``b`` (the same path, a link to it, or a hard link)."""
    try:
        return a.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _print_json(obj: Any) -> None:
    """Strict JSON or nothing: no NaN/Infinity (the reader rejects them; this is the last guard)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=False)
    except ValueError:
        raise HellopackError("the archive summary holds a number JSON cannot represent (NaN or Infinity); "
                             "the archive is damaged, rebuild it") from None
    sys.stdout.write(text + "\n")


@friendly_errors
def inspect(
    archive: Path = typer.Argument(..., help="Path to a .hellopack archive."),
    verify: bool = typer.Option(False, "--verify", help="Check every checksum and decode every image."),
    as_json: bool = typer.Option(False, "--json", help="Print everything as JSON on stdout."),
    grid: Optional[Path] = typer.Option(None, "--grid", help="Write a contact sheet PNG (one row per class)."),
) -> None:
    """Show what an archive holds and how much label storage it replaces.

    Example: hellopack inspect in1k-ipc10.hellopack --verify --grid sheet.png
    """
    if archive.is_dir():
        raise HellopackError(f"archive '{archive}' is a folder; pass the .hellopack file itself")
    if not archive.is_file():
        raise HellopackError(f"archive '{archive}' does not exist; check the path")
    if grid is not None and grid.is_dir():
        raise HellopackError(f"--grid '{grid}' is a folder; name the .png file, e.g. {grid / 'sheet.png'}")
    if grid is not None and _same_file(grid, archive):
        raise HellopackError(f"--grid '{grid}' is the archive itself; name another .png file, "
                             f"e.g. {archive.with_suffix('.png')}")
    try:
        a = open_archive(archive)
        verified = None
        if verify:
            rep = a.verify(decode_images=True)
            verified = {"members_checked": rep.members_checked, "images_checked": rep.images_checked}
        s = summarize(a)
        if grid is not None:
            contact_sheet(a, grid)
    except ArchiveError as e:
        raise HellopackError(f"{archive}: {e}") from None
    if as_json:
        if verified is not None:
            s["verified"] = verified
        if grid is not None:
            s["grid"] = str(grid)
        _print_json(s)
        return
    _render(s, verified)
    if grid is not None:
        stdout.print(f"contact sheet written to {grid}")

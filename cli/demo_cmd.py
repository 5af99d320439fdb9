"""`hellopack demo`: the whole pipeline offline on synthetic data (the README's first command)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from hellopack.summary import human_bytes, ratio_text

from .defaults import source_defaults
from .errors import friendly_errors
from .reporter import make_reporter, print_json

# hellopack.demo imports torch: its defaults are read from the source (see cli/defaults.py).
_D = source_defaults("hellopack.demo", "DemoConfig")


@friendly_errors
def demo(
    out: Path = typer.Option(Path(_D.out), "--out", "-o", help="Where demo.hellopack and demo-run/ are written."),
    seed: int = typer.Option(_D.seed, "--seed", help="Seed of the synthetic data and every stage."),
    device: str = typer.Option(_D.device, "--device", help="cpu (the demo is sized for it), auto, cuda, cuda:N."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON on stdout."),
) -> None:
    """Teach, build, inspect and train on synthetic shapes with a tiny offline CLIP: about a minute on a CPU.

    Example: hellopack demo --out /tmp/hp-demo
    """
    from hellopack.demo import DemoConfig, run_demo

    out.mkdir(parents=True, exist_ok=True)
    with make_reporter(quiet or as_json) as reporter:
        res = run_demo(DemoConfig(out=str(out), seed=seed, device=device), reporter)
    st = res["storage"]
    if as_json:
        print_json({**res, "storage": dataclasses.asdict(st)})
        return
    typer.echo(f"archive: {res['archive']}   (inspect it: hellopack inspect {res['archive']} --grid sheet.png)")
    typer.echo(f"student {res['arch']} reached {res['student_top1']:.1%} top-1 on {res['val_images']} held-out "
               f"synthetic images (chance {1 / res['classes']:.0%}; teacher {res['teacher_top1']:.1%})")
    typer.echo(f"label storage: the archive's {human_bytes(st.payload_bytes)} of LoRA + prompts replace "
               f"{human_bytes(st.total_bytes)} of stored soft labels for {st.epochs} "
               f"epoch{'s' if st.epochs != 1 else ''} ({ratio_text(st.ratio)})")
    t = res["timings"]
    typer.echo(f"time: teach {t['teach_s']:.0f} s, build {t['build_s']:.0f} s, train {t['train_s']:.0f} s")

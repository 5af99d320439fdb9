"""The `hellopack` command line (Typer). Installed as the import package `hellopack_cli`."""

from __future__ import annotations

import os
from typing import Optional

import typer
from typer.core import TyperCommand, TyperGroup

import hellopack
from hellopack.errors import HellopackError
from hellopack.precision import AUTOCAST_ENV, AUTOCAST_MODES, parse_mode
from hellopack.threads import ThreadSettings, apply_threads, prepare_process

from . import build_cmd, continual_cmd, demo_cmd, inspect_cmd, labels_cmd, pretrain_cmd, rank_cmd, teach_cmd, train_cmd
from .errors import fail

_THREADS = ThreadSettings()


class _NoFlagMetavar:
    """Help lists no value type for a flag: typer shows every option's type (`--verify <bool>`),
    but a flag takes no value. Applied to every command and group, the --help option included."""

    def get_params(self, ctx):  # type: ignore[no-untyped-def]
        params = super().get_params(ctx)  # type: ignore[misc]
        for p in params:
            if getattr(p, "is_flag", False) and p.metavar is None:
                p.metavar = ""
        return params


class Command(_NoFlagMetavar, TyperCommand):
    pass


class Group(_NoFlagMetavar, TyperGroup):
    pass


app = typer.Typer(
    name="hellopack",
    cls=Group,
    help=(
        "Compress an image-classification dataset into one small archive: distilled images plus "
        "low-rank matrices that regenerate soft labels on the fly (HeLlO)."
    ),
    epilog=(
        "Examples:\n\n"
        "hellopack build imagenet --data-dir /data/imagenet --ipc 10 --teachers-dir traj/ --out in1k-ipc10.hellopack\n\n"
        "hellopack inspect in1k-ipc10.hellopack --verify --grid sheet.png\n\n"
        "hellopack train in1k-ipc10.hellopack --arch swin_v2_t --val /data/imagenet/val\n\n"
        "hellopack teach cifar10 --data-dir cifar10-shards/ --arch convnet --epochs 20 --keep-every 5 --out traj/\n\n"
        "hellopack demo"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hellopack {hellopack.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    threads: Optional[int] = typer.Option(
        _THREADS.threads, "--threads", envvar="HELLOPACK_THREADS", metavar="N",
        help="CPU threads for every command \\[the CPUs this process may use: affinity "
             "mask and cgroup quota; OMP_NUM_THREADS when set]."),
    autocast: Optional[str] = typer.Option(
        None, "--autocast", envvar=AUTOCAST_ENV, metavar="|".join(AUTOCAST_MODES),
        help="Where every command computes under bf16 autocast: auto (CUDA only), bf16 (CPUs too: "
             "faster on CPUs with bf16 instructions), off (fp32 everywhere) \\[auto]."),
) -> None:
    if autocast is not None:  # through the environment: DataLoader workers and child processes follow it
        try:
            parse_mode(autocast)
        except HellopackError as e:
            raise fail(str(e)) from None
        os.environ[AUTOCAST_ENV] = autocast
    if threads is not None:
        try:
            apply_threads(threads)
        except HellopackError as e:
            raise fail(str(e)) from None


# Order here is the order `hellopack --help` lists them.
app.command("build", cls=Command)(build_cmd.build)
app.command("inspect", cls=Command)(inspect_cmd.inspect)
app.command("train", cls=Command)(train_cmd.train)
app.command("teach", cls=Command)(teach_cmd.teach)
app.command("demo", cls=Command)(demo_cmd.demo)
app.command("pretrain-base", cls=Command)(pretrain_cmd.pretrain_base)
eval_app = typer.Typer(help="Evaluate an archive beyond plain training.", no_args_is_help=True, cls=Group)
eval_app.command("continual", cls=Command)(continual_cmd.continual)
eval_app.command("rank", cls=Command)(rank_cmd.rank)
app.add_typer(eval_app, name="eval")
labels_app = typer.Typer(help=labels_cmd.labels_app.info.help, no_args_is_help=True, cls=Group)
labels_app.command("record", cls=Command)(labels_cmd.record)
labels_app.command("inspect", cls=Command)(labels_cmd.inspect)
app.add_typer(labels_app, name="labels")


def main() -> None:
    prepare_process()  # before anything loads torch's OpenMP: it reads the wait policy once, at load
    app()


if __name__ == "__main__":
    main()

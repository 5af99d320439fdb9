"""Which devices compute under bf16 autocast, for every command of a process (`hellopack --autocast`).

auto (the default): CUDA only. bf16: CPUs too; a CPU with bf16 instructions (avx512_bf16, AMX)
trains convolutions 1.4x to 2x faster, at the precision a GPU run has (issue 18's profile of the
CIFAR-10 benchmark). off: fp32 everywhere. Read from the environment so DataLoader workers and
child processes follow it; torch-free, so the CLI can check it before anything loads torch.
"""

from __future__ import annotations

import os

from hellopack.errors import HellopackError

AUTOCAST_ENV = "HELLOPACK_AUTOCAST"
AUTOCAST_MODES = ("auto", "bf16", "off")


def autocast_mode() -> str:
    """auto, bf16 or off, from HELLOPACK_AUTOCAST (unset or empty: auto)."""
    return parse_mode(os.environ.get(AUTOCAST_ENV, ""))


def parse_mode(raw: str) -> str:
    """``raw`` as a mode (empty: auto), or the one-line refusal naming the choices."""
    mode = raw.strip().lower() or "auto"
    if mode not in AUTOCAST_MODES:
        raise HellopackError(f"--autocast ({AUTOCAST_ENV}) {raw!r} is not one of {', '.join(AUTOCAST_MODES)}; "
                             f"pass one of them")
    return mode

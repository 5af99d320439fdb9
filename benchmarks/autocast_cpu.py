"""`hellopack --autocast bf16` on the CPU: student train steps in fp32 and under bf16 autocast, side by side.

    python benchmarks/autocast_cpu.py            # ConvNet-3 and ResNet-18 (CIFAR stem), batch 50, 32 px

Each step is the one `hellopack train` takes (forward under hellopack.device.autocast, loss in fp32,
backward, SGD), on one thread, alternating fp32 and bf16 rounds so a change in the machine's load
hits both. Prints milliseconds per image and the ratio fp32 / bf16, and writes
benchmarks/results/autocast-cpu.md. The ratio depends on the CPU: one with bf16 instructions
(avx512_bf16, AMX) gains, one without may lose.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

from hellopack.threads import prepare_process

if __name__ == "__main__":
    prepare_process()

import torch  # noqa: E402

from hellopack import device as devices  # noqa: E402
from hellopack.models.students import build_student  # noqa: E402
from hellopack.precision import AUTOCAST_ENV  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "autocast-cpu.md"
CPU = torch.device("cpu")


def step_ms(arch: str, batch: int, steps: int, mode: str) -> float:
    """Milliseconds per image of ``steps`` train steps after two warm-up steps, under ``mode``."""
    os.environ[AUTOCAST_ENV] = mode
    torch.manual_seed(0)
    model = build_student(arch, 10, 32, (0.5,) * 3, (0.25,) * 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step() -> None:
        with devices.autocast(CPU):
            out = model(x)
        loss = torch.nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps / batch * 1000


def flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    have = {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    found = sorted(f for f in have if "bf16" in f or f.startswith("amx"))
    return ", ".join(found) or "none"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=50, help="images per step [50: RDED's batch at IPC 10]")
    ap.add_argument("--rounds", type=int, default=3, help="alternating fp32 / bf16 rounds; the median is kept [3]")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for arch, steps in (("convnet", 12), ("resnet18_cifar", 4)):
        times: dict[str, list[float]] = {"off": [], "bf16": []}
        for _ in range(args.rounds):
            for mode in times:
                times[mode].append(step_ms(arch, args.batch, steps, mode))
        fp32, bf16 = statistics.median(times["off"]), statistics.median(times["bf16"])
        rows.append((arch, fp32, bf16, fp32 / bf16))
        print(f"{arch}: fp32 {fp32:.2f} ms/img, bf16 autocast {bf16:.2f} ms/img, ratio {fp32 / bf16:.2f}", flush=True)
    lines = ["# bf16 autocast on the CPU: student train steps", "",
             f"Command: `python benchmarks/autocast_cpu.py --batch {args.batch} --rounds {args.rounds}`; "
             f"{time.strftime('%Y-%m-%d')}, torch {torch.__version__}, 1 thread, {os.cpu_count()} cores "
             f"({platform.machine()}), bf16 CPU flags: {flags()}; load average {os.getloadavg()[0]:.2f} at the end.", "",
             "| student | fp32 ms / image | bf16 autocast ms / image | fp32 / bf16 |", "| --- | --- | --- | --- |",
             *[f"| {a} | {f:.2f} | {b:.2f} | {r:.2f}x |" for a, f, b, r in rows], ""]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""benchmarks/cifar10_workers.py: workers sharing the stage cache compute each stage once, and a worker
that finds a stage locked by another moves on to other jobs instead of waiting."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

from helpers_bench import load_benchmark

bench = load_benchmark("cifar10")
workers = load_benchmark("cifar10_workers")


def test_two_workers_compute_each_stage_once_and_do_not_wait_on_a_busy_one(tmp_path: Path, monkeypatch) -> None:
    events: list[tuple[str, str]] = []
    computed: list[str] = []
    lock = threading.Lock()

    def stage(cache, name: str, seconds: float, needs: tuple[str, ...] = ()):
        def fn() -> dict:
            with lock:
                events.append(("start", name))
                computed.append(name)
            time.sleep(seconds)
            with lock:
                events.append(("end", name))
            return {"name": name}

        for dep in needs:  # a job asks for what it needs first, as main_archive and student_run do
            cache.run(dep, "k", lambda: (_ for _ in ()).throw(AssertionError(f"{dep} recomputed")))
        return cache.run(name, "k", fn)

    def jobs(_bench, ctx):
        c = ctx.cache
        return [("long", lambda: stage(c, "long", 0.6)),
                ("after-long", lambda: stage(c, "after-long", 0.05, needs=("long",))),
                *[(f"free{i}", lambda i=i: stage(c, f"free{i}", 0.1)) for i in range(3)]]

    monkeypatch.setattr(workers, "jobs", jobs)
    monkeypatch.setattr(workers, "POLL_SECONDS", 0.05)
    ctxs = [SimpleNamespace(cache=bench.Cache(tmp_path, wait=False)) for _ in range(2)]
    threads = [threading.Thread(target=workers.work, args=(bench, ctx)) for ctx in ctxs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(computed) == ["after-long", "free0", "free1", "free2", "long"]  # each once
    order = [e for e in events]
    # while one worker held "long", the other did the free jobs rather than wait on the lock
    assert order.index(("end", "free2")) < order.index(("end", "long"))
    assert order.index(("start", "after-long")) > order.index(("end", "long"))
    assert sorted(p.name for p in (tmp_path / "records").glob("*.json")) == [
        "after-long-k.json", "free0-k.json", "free1-k.json", "free2-k.json", "long-k.json"]


def test_a_waiting_cache_blocks_and_a_worker_cache_raises_busy(tmp_path: Path) -> None:
    import fcntl

    cache = bench.Cache(tmp_path, wait=False)
    with open(cache.path("s", "k").with_suffix(".lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            cache.run("s", "k", lambda: {"x": 1})
        except bench.Busy as e:
            assert str(e) == "s"
        else:
            raise AssertionError("a worker's cache waited on a held stage")
    assert cache.run("s", "k", lambda: {"x": 1})["x"] == 1

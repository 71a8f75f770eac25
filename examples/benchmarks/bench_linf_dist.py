"""Memory and speed of the ℓ∞-dist layer: naive vs chunked vs torch.cdist, side by side.

    python examples/benchmarks/bench_linf_dist.py [--batch 256 --in 1024 --out 1024 --p inf --p 8]

"naive" materialises the batch × out × in difference tensor (what the layer
must not do); "chunked" is certify.zoo.layers.lp_dist with its recomputing backward
(the exported / large-p path); "cdist" is torch.cdist (the layer's path for
p = ∞ and p ≤ 16).  Peak memory is measured in a fresh process per variant
(growth of the resident-set high-water mark VmHWM, or CUDA peak memory on GPU); time is the median of repeats
of forward + backward.
"""

from __future__ import annotations

import math
import multiprocessing
import resource
import statistics
import time

import click
import torch
from rich.console import Console
from rich.table import Table

from certify.zoo.layers import LINF_CHUNK_ELEMENTS, _LpDistFn, chunk_size, lp_dist_naive


def variants(p: float, chunk: int):  # type: ignore[no-untyped-def]
    return {
        "naive": lambda x, w: lp_dist_naive(x, w, p),
        "chunked": lambda x, w: _LpDistFn.apply(x, w, p, chunk),
        "cdist": lambda x, w: torch.cdist(x, w, p=p),
    }


def peak_memory(name: str, p: float, chunk: int, batch: int, fin: int, fout: int, device: str) -> int:
    """Peak bytes of one forward + backward, measured in a fresh process.

    CPU: growth of the process's resident-set high-water mark (``ru_maxrss``)
    during the call; CUDA: ``torch.cuda.max_memory_allocated`` growth.
    """
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(_peak_in_child, (name, p, chunk, batch, fin, fout, device))


def _peak_in_child(name: str, p: float, chunk: int, batch: int, fin: int, fout: int, device: str) -> int:
    torch.set_num_threads(1)
    x, w = _inputs(batch, fin, fout, device)
    fn = variants(p, chunk)[name]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(x, w).sum().backward()
        return torch.cuda.max_memory_allocated() - base
    before = _high_water()
    fn(x, w).sum().backward()
    return _high_water() - before


def _high_water() -> int:
    """Resident-set high-water mark in bytes: VmHWM (per address space, reset by exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # may include the parent's peak


def _inputs(batch: int, fin: int, fout: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.rand(batch, fin, device=device, requires_grad=True)
    w = torch.randn(fout, fin, device=device, requires_grad=True)
    x.sum().backward(), w.sum().backward()  # warm the allocator and autograd before measuring
    x.grad = w.grad = None
    return x, w


def seconds(fn, x: torch.Tensor, w: torch.Tensor, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        x.grad = w.grad = None
        if x.is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn(x, w).sum().backward()
        if x.is_cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@click.command()
@click.option("--batch", default=256, show_default=True)
@click.option("--in", "fin", default=1024, show_default=True)
@click.option("--out", "fout", default=1024, show_default=True)
@click.option("--p", "ps", multiple=True, type=float, default=(math.inf, 8.0, 100.0), show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--device", default="cpu", show_default=True)
def main(batch: int, fin: int, fout: int, ps: tuple[float, ...], repeats: int, device: str) -> None:
    x, w = _inputs(batch, fin, fout, device)
    chunk = chunk_size(fin, fout, LINF_CHUNK_ELEMENTS)
    t = Table(title=f"ℓ∞-dist layer, batch {batch}, {fin} → {fout}, chunk {chunk} units, {device}, "
                    f"{torch.get_num_threads()} threads (forward + backward)")
    for col in ("p", "variant", "peak MiB", "memory vs naive", "ms", "time vs naive"):
        t.add_column(col, justify="right")
    for p in ps:
        naive_mem = naive_t = None
        for name, fn in variants(p, chunk).items():
            mem = peak_memory(name, p, chunk, batch, fin, fout, device)
            sec = seconds(fn, x, w, repeats)
            naive_mem, naive_t = (mem, sec) if name == "naive" else (naive_mem, naive_t)
            t.add_row(f"{p:g}", name, f"{mem / 2**20:.1f}", f"{mem / max(naive_mem, 1):.3f}×", f"{1000 * sec:.0f}",
                      f"{sec / naive_t:.2f}×")
    Console().print(t)


if __name__ == "__main__":
    main()

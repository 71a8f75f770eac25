"""Memory and speed of the ℓ∞-dist layer: naive vs chunked vs torch.cdist, side by side.

    python examples/benchmarks/bench_linf_dist.py [--batch 256 --in 1024 --out 1024 --p inf --p 8]

"naive" materialises the batch × out × in difference tensor (what the layer
must not do); "chunked" is certify.layers.lp_dist with its recomputing backward
(the exported / large-p path); "cdist" is torch.cdist (the layer's path for
p = ∞ and p ≤ 16).  Peak memory is measured with the torch profiler's CPU
memory accounting (or CUDA peak memory on GPU); time is the median of repeats
of forward + backward.
"""

from __future__ import annotations

import math
import statistics
import time

import click
import torch
from rich.console import Console
from rich.table import Table

from certify.layers import LINF_CHUNK_ELEMENTS, _LpDistFn, chunk_size, lp_dist_naive


def variants(p: float, chunk: int):  # type: ignore[no-untyped-def]
    return {
        "naive": lambda x, w: lp_dist_naive(x, w, p),
        "chunked": lambda x, w: _LpDistFn.apply(x, w, p, chunk),
        "cdist": lambda x, w: torch.cdist(x, w, p=p),
    }


def peak_memory(fn, x: torch.Tensor, w: torch.Tensor) -> int:  # type: ignore[no-untyped-def]
    """Peak bytes allocated during forward + backward."""
    if x.is_cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(x, w).sum().backward()
        return torch.cuda.max_memory_allocated() - base
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(x, w).sum().backward()
    return _profiler_peak(prof)


def _profiler_peak(prof) -> int:  # type: ignore[no-untyped-def]
    events = sorted((e for e in prof.events() if e.cpu_memory_usage != 0), key=lambda e: e.time_range.start)
    current = peak = 0
    for e in events:
        current += e.cpu_memory_usage
        peak = max(peak, current)
    return peak


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
    torch.manual_seed(0)
    x = torch.rand(batch, fin, device=device, requires_grad=True)
    w = torch.randn(fout, fin, device=device, requires_grad=True)
    chunk = chunk_size(fin, fout, LINF_CHUNK_ELEMENTS)
    t = Table(title=f"ℓ∞-dist layer, batch {batch}, {fin} → {fout}, chunk {chunk} units, {device}, "
                    f"{torch.get_num_threads()} threads (forward + backward)")
    for col in ("p", "variant", "peak MiB", "memory vs naive", "ms", "time vs naive"):
        t.add_column(col, justify="right")
    for p in ps:
        naive_mem = naive_t = None
        for name, fn in variants(p, chunk).items():
            mem, sec = peak_memory(fn, x, w), seconds(fn, x, w, repeats)
            naive_mem, naive_t = (mem, sec) if name == "naive" else (naive_mem, naive_t)
            t.add_row(f"{p:g}", name, f"{mem / 2**20:.1f}", f"{mem / naive_mem:.3f}×", f"{1000 * sec:.0f}",
                      f"{sec / naive_t:.2f}×")
    Console().print(t)


if __name__ == "__main__":
    main()

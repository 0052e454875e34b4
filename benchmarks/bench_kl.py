"""Benchmarks for the KL estimators; every figure is a ratio against a baseline run in the same process.

    .venv/bin/python benchmarks/bench_kl.py [--n 100000000] [--layers 32]

1. lora_delta_sq_norm on a Llama-7B-shaped adapter (layers × q,k,v,o at 4096×4096, r = 16)
   against forming s·B@A explicitly and taking its squared norm.
2. gaussian_kl on n float32 parameters per side (isotropic and per-element σ) against
   torch.distributions.kl_divergence(Normal, Normal).sum() and against x.sum() over the same bytes
   (the machine's read bandwidth), with the peak extra resident memory of each.
Time nothing while another process loads the machine.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time

import torch
from memory import peak_extra_mib
from torch.distributions import Normal, kl_divergence

from pacbayes_sft.estimators import gaussian_kl, lora_delta_sq_norm


def _best(fn, repeat=3):
    times, out = [], None
    for _ in range(repeat):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def bench_lora(layers: int, dim: int = 4096, r: int = 16, scaling: float = 2.0) -> None:
    g = torch.Generator().manual_seed(0)
    mats = [
        (torch.randn(r, dim, generator=g) / dim**0.5, torch.randn(dim, r, generator=g) * 0.01)
        for _ in range(layers * 4)
    ]

    def ours():
        return sum(lora_delta_sq_norm(a, b, scaling) for a, b in mats)

    def explicit():
        return sum(float((scaling * (b @ a)).double().square().sum()) for a, b in mats)

    t_ours, v_ours = _best(ours)
    t_exp, v_exp = _best(explicit, repeat=1)
    print(
        f"lora_delta_sq_norm, {layers} layers x q,k,v,o {dim}x{dim}, r={r}: "
        f"ours {t_ours * 1e3:.1f} ms, explicit B@A {t_exp * 1e3:.0f} ms, speed-up {t_exp / t_ours:.0f}x, "
        f"relative difference {abs(v_ours - v_exp) / v_exp:.2e}"
    )


def bench_gaussian(n: int) -> None:
    g = torch.Generator().manual_seed(1)
    mq = torch.randn(n, generator=g)
    mp = mq + 0.01 * torch.randn(n, generator=g)
    sq = torch.rand(n, generator=g).mul_(0.5).add_(0.5)
    sp = torch.full((n,), 0.8)
    gb_iso = 2 * n * 4 / 1e9
    gb_diag = 4 * n * 4 / 1e9

    t_sum_iso, _ = _best(lambda: (mq.sum(), mp.sum()))
    t_sum_diag, _ = _best(lambda: (mq.sum(), mp.sum(), sq.sum(), sp.sum()))
    t_iso, _v_iso = _best(lambda: gaussian_kl(mq, mp, 0.8, 0.8))
    t_diag, v_diag = _best(lambda: gaussian_kl(mq, mp, sq, sp))
    t_td, v_td = _best(lambda: float(kl_divergence(Normal(mq, sq), Normal(mp, sp)).sum()), repeat=1)
    t_td_iso, _ = _best(lambda: float(kl_divergence(Normal(mq, 0.8), Normal(mp, 0.8)).sum()), repeat=1)
    mem_ours = peak_extra_mib(lambda: gaussian_kl(mq, mp, sq, sp))
    mem_td = peak_extra_mib(lambda: float(kl_divergence(Normal(mq, sq), Normal(mp, sp)).sum()))
    inputs_mib = 4 * n * 4 / 2**20
    print(
        f"x.sum() read bandwidth: {gb_iso / t_sum_iso:.1f} GB/s (2 arrays), {gb_diag / t_sum_diag:.1f} GB/s (4 arrays)"
    )
    print(
        f"gaussian_kl isotropic, n={n:.0e}: {t_iso * 1e3:.0f} ms = {gb_iso / t_iso:.1f} GB/s = "
        f"{t_sum_iso / t_iso:.0%} of x.sum(); torch.distributions {t_td_iso * 1e3:.0f} ms -> {t_td_iso / t_iso:.1f}x faster"
    )
    print(
        f"gaussian_kl diagonal,  n={n:.0e}: {t_diag * 1e3:.0f} ms = {gb_diag / t_diag:.1f} GB/s = "
        f"{t_sum_diag / t_diag:.0%} of x.sum(); torch.distributions {t_td * 1e3:.0f} ms -> {t_td / t_diag:.1f}x faster; "
        f"values {v_diag:.6e} vs {v_td:.6e} (float32 baseline)"
    )
    print(
        f"peak extra memory, diagonal: ours {mem_ours:.0f} MiB, torch.distributions {mem_td:.0f} MiB "
        f"(inputs {inputs_mib:.0f} MiB)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000_000, help="parameters per side for gaussian_kl")
    ap.add_argument("--layers", type=int, default=32, help="transformer layers of the LoRA benchmark")
    args = ap.parse_args()
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    bench_lora(args.layers)
    bench_gaussian(args.n)


if __name__ == "__main__":
    main()

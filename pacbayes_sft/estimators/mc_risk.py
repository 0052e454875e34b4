"""Monte-Carlo risk of a posterior: average a bounded loss over posterior draws and bound it.

With N independent losses in [0, 1] and mean R̂, E_π R̂_S ≤ kl⁻¹(R̂, ln(2/δ)/N) with probability
≥ 1 − δ over the draws. Two schemes: m draws shared by every example (:func:`mc_stochastic_risk`),
or every example under its own draws (:func:`mc_stochastic_risk_per_example`, batched with
:meth:`~pacbayes_sft.posteriors.base.Posterior.sample_rows`; a family whose ``per_row`` is
False is scored one example per draw).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import defaults
from ..bounds import mc_risk_upper
from ..posteriors.base import Posterior


@dataclass
class MCRisk:
    """Monte-Carlo estimate of the stochastic empirical risk E_π R̂_S (loss in [0, 1]).

    ``m`` is the number N of independent losses behind ``upper`` (m samples in the shared
    scheme, n·d in the per-example scheme); ``per_sample`` holds the risk of each shared sample,
    or each round of per-example draws.
    """

    mean: float
    upper: float
    m: int
    delta: float
    sigma: float
    space: str
    per_sample: list[float] = field(default_factory=list)
    scheme: str = "shared"

    def to_dict(self) -> dict:
        return {
            "mean": self.mean,
            "upper": self.upper,
            "m": self.m,
            "delta": self.delta,
            "sigma": self.sigma,
            "space": self.space,
            "per_sample": list(self.per_sample),
            "scheme": self.scheme,
        }


def mc_stochastic_risk_per_example(
    posterior: Posterior,
    example_loss_fn: Callable[[torch.nn.Module, int], float] | None,
    n: int,
    draws: int,
    delta: float,
    *,
    progress: bool = False,
    batch_loss_fn: Callable[[torch.nn.Module, list[int]], Sequence[float]] | None = None,
    batch_size: int = defaults.BATCH_SIZE,
    examples: Sequence[int] | None = None,
) -> MCRisk:
    """Give each of the n examples ``draws`` posterior samples of its own and bound the mean loss.

    R̂ = (1/(n·d)) Σ_{j<d} Σ_{i<n} ℓ(θ_ij, z_i) with θ_ij independent draws (sample index j·n + i),
    an unbiased estimate of E_π R̂_S from n·d independent losses in [0, 1]; the upper bound is
    kl⁻¹(R̂, ln(2/δ)/(n·d)). ``example_loss_fn(model, i)`` returns example i's loss in [0, 1].

    With ``batch_loss_fn(model, [i_1, …, i_B])`` — the losses of those examples from one batch
    whose row r is example i_r, rows in that order — and a posterior whose ``per_row`` is True, up to
    ``batch_size`` examples are scored per pass, each row under its own draw: the same draws
    and the same estimate, many times faster (and affordable with generation, e.g. answer_error).

    ``examples`` (indices drawn uniformly with replacement from range(n), e.g. by
    :func:`subsample_examples`) replaces the n·d grid: loss k is example ``examples[k]`` under
    its own draw k. The N = len(examples) losses are then i.i.d. given S with mean E_π R̂_S, so
    the same kl⁻¹ bound holds with N in place of n·d — a cheaper, looser bound for large n.
    """
    for nm, v in (("n", n), ("draws", draws), ("batch_size", batch_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{nm} must be an integer >= 1, got {v!r}")
    if example_loss_fn is None and batch_loss_fn is None:
        raise ValueError("give example_loss_fn or batch_loss_fn")
    # a family that draws one sample per batch (per_row False) scores one example per draw instead
    per_row = getattr(posterior, "per_row", hasattr(posterior, "sample_rows"))
    batched = batch_loss_fn is not None and bool(per_row)
    if not batched and example_loss_fn is None:
        raise ValueError(f"{type(posterior).__name__} cannot draw per row; give example_loss_fn")
    ex = [k % n for k in range(draws * n)] if examples is None else [int(i) for i in examples]
    if not ex or any(not 0 <= i < n for i in ex):
        raise ValueError(f"examples must be a non-empty list of indices in [0, {n})")
    total, step = len(ex), (batch_size if batched else 1)
    chunks = range(0, total, step)
    if progress:
        from tqdm.auto import tqdm

        chunks = tqdm(chunks, desc="per-example posterior draws", leave=False, disable=None, unit_scale=step)
    losses = np.empty(total)
    for start in chunks:
        ks = list(range(start, min(total, start + step)))
        if batched:
            with posterior.sample_rows(ks) as model:
                vals = list(batch_loss_fn(model, [ex[k] for k in ks]))
        else:
            with posterior.sample(ks[0]) as model:
                vals = [example_loss_fn(model, ex[ks[0]])]
        for k, v in zip(ks, vals, strict=True):
            v = float(v)
            if not (0.0 <= v <= 1.0) or math.isnan(v):
                raise ValueError(f"the loss of example {ex[k]} is {v!r}; a loss in [0, 1] is required")
            losses[k] = v
    rounds = losses.reshape(draws, n).mean(axis=1) if examples is None else losses.mean(keepdims=True)
    mean = float(losses.mean())
    return MCRisk(
        mean=mean,
        upper=float(mc_risk_upper(mean, total, delta)),
        m=total,
        delta=float(delta),
        sigma=posterior.sigma,
        space=posterior.space,
        per_sample=[float(r) for r in rounds],
        scheme="per_example",
    )


def subsample_examples(n: int, size: int, seed: int) -> list[int]:
    """``size`` example indices drawn uniformly with replacement from range(n) (seeded)."""
    return np.random.default_rng(np.random.SeedSequence([seed, n, size])).integers(0, n, size=size).tolist()


def mc_stochastic_risk(
    posterior: Posterior,
    risk_fn: Callable[[torch.nn.Module], float],
    m: int,
    delta: float,
    *,
    progress: bool = False,
) -> MCRisk:
    """Average ``risk_fn`` over m posterior samples and bound it: kl⁻¹(R̂_m, ln(2/δ)/m).

    ``risk_fn(model)`` must return the empirical risk of the model as it computes now, in [0, 1].
    """
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise ValueError(f"m must be an integer >= 1, got {m!r}")
    risks = []
    it = range(m)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="posterior samples", leave=False, disable=None)
    for j in it:
        with posterior.sample(j) as model:
            r = float(risk_fn(model))
        if not (0.0 <= r <= 1.0) or math.isnan(r):
            raise ValueError(f"risk_fn returned {r!r}; a risk in [0, 1] is required")
        risks.append(r)
    mean = float(np.mean(risks))  # over all m samples
    return MCRisk(
        mean=mean,
        upper=float(mc_risk_upper(mean, m, delta)),
        m=m,
        delta=float(delta),
        sigma=posterior.sigma,
        space=posterior.space,
        per_sample=risks,
    )

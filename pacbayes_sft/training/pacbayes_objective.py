"""A bound-aware posterior: LoRA factors trained by minimising a PAC-Bayes bound (in the style of
Pérez-Ortiz et al. 2021), beside standard SFT.

Posterior and prior live on the LoRA factors θ = (A, B) of every adapted module m:

    prior      π_pre = N(θ₀, σ_p² I)          θ₀ = the factors at initialisation (B₀ = 0)
    posterior  π     = N(μ, s_m² I) per module, μ trainable, s_m = exp(ρ_m) learned

    KL(π ‖ π_pre) = Σ_m ½ [ d_m (s_m²/σ_p² − 1 + ln(σ_p²/s_m²)) + ‖μ_m − θ₀_m‖² / σ_p² ]   (nats)

Each step draws ε ~ N(0, I), computes with θ = μ + s ⊙ ε (the reparameterisation trick, so
gradients reach both μ and ρ), and minimises

    f_quad = ( √(L + η) + √η )²,   η = (KL + ln(2√n/δ)) / (2n)

or f_classic = L + √η, where L ∈ [0, 1] is a bounded surrogate of the training loss:

- ``surrogate="token"``: the mean response-token cross-entropy with probabilities floored at
  p_min, divided by ln(1/p_min) (a token-level risk);
- ``surrogate="sequence"``: the mean over examples of 1 − p(y | x), the probability that the
  sampled model does not give the whole response y. If p(y | x) > ½, every conditional
  p(y_t | x, y_<t) > ½, so greedy decoding reproduces y: the greedy answer is wrong only if
  p(y | x) ≤ ½, and 1[answer wrong] ≤ 2 (1 − p(y | x)). It is the surrogate to train when the
  bound's loss is a generated answer (answer_error), which one wrong token can ruin.

The prior scale σ_p must be fixed before training (e.g. a multiple of the RMS of θ₀). The posterior
family itself (its parametrisation and KL) is :mod:`pacbayes_sft.posteriors.learned`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import option
from ..lm.encoding import collate, encode
from ..lm.teacher_forcing import token_logprobs
from ..posteriors.learned import LearnedGaussianLoRA

__all__ = [
    "OBJECTIVES",
    "SURROGATES",
    "LearnedGaussianLoRA",
    "PacBayesConfig",
    "bounded_ce",
    "pac_bayes_objective",
    "sequence_error",
    "surrogate_loss",
    "train_pacbayes",
]

OBJECTIVES = ("quad", "classic")
SURROGATES = ("token", "sequence")


@dataclass
class PacBayesConfig:
    """Training of a Gaussian posterior over the LoRA factors by a PAC-Bayes bound."""

    prior_sigma: float = option(0.05, "sigma_p of the isotropic prior over the LoRA factors, centred at their init.")
    init_scale: float = option(0.5, "Initial posterior scale s_m as a fraction of prior_sigma.")
    objective: str = option("quad", "Bound minimised: f-quad or f-classic.", choices=OBJECTIVES)
    steps: int = option(100, "Optimizer steps.")
    lr: float = option(1e-3, "Adam learning rate of the posterior means.")
    lr_scale: float = option(1e-2, "Adam learning rate of the log-scales rho.")
    batch_size: int = option(16, "Examples per step.")
    delta: float = option(0.05, "Confidence of the bound in the objective.")
    p_min: float = option(1e-4, "Probability floor of the bounded cross-entropy (token surrogate).")
    surrogate: str = option(
        "token",
        "Bounded training loss: token (mean bounded cross-entropy) or sequence (1 - p(response)).",
        choices=SURROGATES,
    )
    seed: int = option(0, "Seed of the noise draws and batches.")

    def __post_init__(self) -> None:
        if not (self.prior_sigma > 0 and self.init_scale > 0):
            raise ValueError("prior_sigma and init_scale must be > 0")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.surrogate not in SURROGATES:
            raise ValueError(f"surrogate must be one of {SURROGATES}, got {self.surrogate!r}")
        if not 0 < self.p_min < 1:
            raise ValueError(f"p_min must lie in (0, 1), got {self.p_min!r}")


def bounded_ce(logits: torch.Tensor, labels: torch.Tensor, p_min: float) -> torch.Tensor:
    """Mean over response tokens of −ln max(p, p_min) / ln(1/p_min) ∈ [0, 1]."""
    logp = token_logprobs(logits, labels).clamp_min(math.log(p_min))
    mask = (labels[:, 1:] != -100).to(logp.dtype)
    return (-logp * mask).sum() / mask.sum() / math.log(1.0 / p_min)


def sequence_error(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over examples of 1 − p(y | x) = 1 − exp(Σ_t ln p(y_t | x, y_<t)) ∈ [0, 1], the sum over
    the response tokens (labels ≠ −100)."""
    logp = token_logprobs(logits, labels)
    mask = (labels[:, 1:] != -100).to(logp.dtype)
    return (1.0 - torch.exp((logp * mask).sum(dim=1))).mean()


def surrogate_loss(logits: torch.Tensor, labels: torch.Tensor, cfg: PacBayesConfig) -> torch.Tensor:
    """The bounded loss L ∈ [0, 1] that ``cfg.surrogate`` names."""
    if cfg.surrogate == "sequence":
        return sequence_error(logits, labels)
    return bounded_ce(logits, labels, cfg.p_min)


def pac_bayes_objective(loss: torch.Tensor, kl: torch.Tensor, n: int, delta: float, kind: str = "quad") -> torch.Tensor:
    """f_quad = (√(L + η) + √η)² or f_classic = L + √η, η = (KL + ln(2√n/δ)) / (2n)."""
    eta = (kl + math.log(2 * math.sqrt(n) / delta)) / (2 * n)
    if kind == "quad":
        return (torch.sqrt(loss + eta) + torch.sqrt(eta)) ** 2
    if kind == "classic":
        return loss + torch.sqrt(eta)
    raise ValueError(f"kind must be one of {OBJECTIVES}, got {kind!r}")


def train_pacbayes(peft_model, tokenizer, prompts: list[str], responses: list[str], cfg: PacBayesConfig, *, centre):
    """Train μ (the LoRA factors, from their current values) and the per-module scales by the
    bound, the prior centred at ``centre`` (see :class:`LearnedGaussianLoRA`). Returns
    (LearnedGaussianLoRA, history of the objective per step)."""
    post = LearnedGaussianLoRA(peft_model, cfg.prior_sigma, cfg.init_scale, centre=centre)
    enc = encode(tokenizer, prompts, responses)
    n = len(enc)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(
        [{"params": post.means(), "lr": cfg.lr}, {"params": list(post.rho.values()), "lr": cfg.lr_scale}]
    )
    history = []
    device = next(peft_model.parameters()).device
    peft_model.train()
    for _ in range(cfg.steps):
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen).tolist()
        batch = {k: v.to(device) for k, v in collate([enc[i] for i in idx], tokenizer.pad_token_id).items()}
        post.draw(gen)
        logits = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        obj = pac_bayes_objective(
            surrogate_loss(logits, batch["labels"], cfg), post.kl().float(), n, cfg.delta, cfg.objective
        )
        opt.zero_grad()
        obj.backward()
        opt.step()
        history.append(obj.item())
    peft_model.eval()
    post.draw(zero=True)
    return post, history

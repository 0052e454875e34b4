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

The prior scale σ_p must be fixed before training (e.g. a multiple of the RMS of θ₀).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..adapters import _strip
from ..config import option
from ..lm.encoding import collate, encode
from ..lm.teacher_forcing import token_logprobs

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


class _Perturb(torch.nn.Module):
    """Parametrisation W = μ + exp(ρ)·ε, with ε a buffer set by :meth:`LearnedGaussianLoRA.draw`."""

    def __init__(self, rho: torch.nn.Parameter, shape: torch.Size):
        super().__init__()
        self.rho = rho
        self.register_buffer("eps", torch.zeros(shape))

    def forward(self, mu: torch.Tensor) -> torch.Tensor:
        return mu + torch.exp(self.rho) * self.eps


class LearnedGaussianLoRA(torch.nn.Module):
    """Per-module posterior scales over the LoRA factors of a peft model (see the module docstring)."""

    def __init__(self, peft_model: torch.nn.Module, prior_sigma: float, init_scale: float = 0.5, *, centre):
        """``centre``: where the prior sits, which must not depend on the data the bound uses.
        A mapping ``module.lora_A`` / ``module.lora_B`` → tensor: the adapter's initial factors
        (:func:`~pacbayes_sft.adapters.load_init_factors`), or the factors of an adapter trained
        on held-out data (a data-dependent prior). ``"current"`` takes the factors' values now,
        which is valid only while they are still at their initialisation (a fresh adapter)."""
        from peft.tuners.lora import LoraLayer
        from torch.nn.utils import parametrize

        super().__init__()
        if not (isinstance(centre, str) and centre == "current") and not hasattr(centre, "keys"):
            raise ValueError(f"centre must be 'current' or a mapping of factors, got {type(centre).__name__}")
        self.prior_sigma = float(prior_sigma)
        self.rho = torch.nn.ParameterDict()
        self.names: list[str] = []
        self.module_names: dict[str, str] = {}
        self._init: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._weights: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}
        for name, layer in peft_model.named_modules():
            if not isinstance(layer, LoraLayer):
                continue
            for ad in layer.active_adapters:
                if ad not in layer.lora_A:
                    continue
                key = name.replace(".", "_")
                a, b = layer.lora_A[ad], layer.lora_B[ad]
                self.rho[key] = torch.nn.Parameter(torch.tensor(math.log(init_scale * prior_sigma)))
                if isinstance(centre, str) and centre == "current":
                    self._init[key] = (a.weight.detach().clone(), b.weight.detach().clone())
                else:
                    short = _strip(name)
                    if short + ".lora_A" not in centre:
                        raise ValueError(f"centre has no factors for module {short!r}")
                    self._init[key] = (
                        centre[short + ".lora_A"].detach().clone(),
                        centre[short + ".lora_B"].detach().clone(),
                    )
                for mod in (a, b):
                    parametrize.register_parametrization(mod, "weight", _Perturb(self.rho[key], mod.weight.shape))
                self._weights[key] = (a, b)
                self.names.append(key)
                self.module_names[key] = name
        if not self.names:
            raise ValueError("model has no LoRA layers")

    def means(self) -> list[torch.Tensor]:
        return [
            p
            for a, b in self._weights.values()
            for p in (a.parametrizations.weight.original, b.parametrizations.weight.original)
        ]

    def scales(self) -> dict[str, float]:
        return {k: math.exp(v.item()) for k, v in self.rho.items()}

    def module_scales(self) -> dict[str, float]:
        """Posterior scale per module, keyed by the module's name in the model (for sampling)."""
        return {self.module_names[k]: v for k, v in self.scales().items()}

    def kl(self) -> torch.Tensor:
        """KL(posterior ‖ prior) in nats (closed form, differentiable in μ and ρ)."""
        sp2 = self.prior_sigma**2
        total = torch.zeros((), dtype=torch.float64)
        for key, (a, b) in self._weights.items():
            a0, b0 = self._init[key]
            mu_a, mu_b = a.parametrizations.weight.original, b.parametrizations.weight.original
            d = mu_a.numel() + mu_b.numel()
            s2 = torch.exp(2 * self.rho[key].double())
            dist = ((mu_a - a0).double() ** 2).sum() + ((mu_b - b0).double() ** 2).sum()
            total = total + 0.5 * (d * (s2 / sp2 - 1 + torch.log(sp2 / s2)) + dist / sp2)
        return total

    def draw(self, generator: torch.Generator | None = None, *, zero: bool = False) -> None:
        """Set every ε to a fresh N(0, I) draw (or to 0: the posterior mean)."""
        for a, b in self._weights.values():
            for mod in (a, b):
                p = mod.parametrizations.weight[0]
                p.eps = torch.zeros_like(p.eps) if zero else torch.randn(p.eps.shape, generator=generator)

    @contextmanager
    def at_mean(self) -> Iterator[None]:
        self.draw(zero=True)
        yield

    def remove(self) -> None:
        """Drop the parametrisations, leaving the means as the LoRA weights."""
        from torch.nn.utils import parametrize

        for a, b in self._weights.values():
            for mod in (a, b):
                parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)


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
    peft_model.train()
    for _ in range(cfg.steps):
        idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen).tolist()
        batch = collate([enc[i] for i in idx], tokenizer.pad_token_id)
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

"""What a certificate is computed with: the bound, the TV proxy, the evaluation settings, the prior
and how one call runs (:class:`CertifySettings`).

Plain dataclasses read by :func:`pacbayes_sft.config.from_dict` (YAML/JSON configs) and turned
into command-line options by :func:`pacbayes_sft.config.add_options`. Every default that more
than one place reads comes from :mod:`pacbayes_sft.defaults`. This module imports no torch: the
sweep's config layer reads it without loading the engine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import defaults
from ..bounds import MC_SCHEMES
from ..config import option

LOSSES = ("token_error", "sequence_error", "answer_error")
LOSS_METRICS: dict[str, tuple[str, bool]] = {
    "token_error": ("token_error", False),
    "sequence_error": ("exact_match", True),
    "answer_error": ("answer_correct", True),
}
"""Each loss → (the per-item metric it is read from, whether the loss is 1 − that metric). The
one place that maps a loss to its column: the losses, the sweep's items and the report read it."""


def item_losses(loss: str, metrics: Mapping[str, Sequence[float]]) -> np.ndarray:
    """The loss of every item, in [0, 1], from its per-item metrics (a mapping of columns)."""
    name, complement = LOSS_METRICS[loss]
    values = np.asarray(metrics[name], dtype=float)
    return 1.0 - values if complement else values


# Relative grid: σ = multiple × RMS of the prior centre's parameters, log-spaced over two decades.
DEFAULT_SIGMA_MULTIPLES = (0.02, 0.043, 0.093, 0.2, 0.43, 0.93, 2.0)
SIGMA_RULES = ("best_bound", "sharpness")
SPACES = ("delta", "lora")


@dataclass
class BoundConfig:
    """How the certificate is computed: σ grid and rule, parameter space, δ split, MC draws, loss."""

    sigmas: list[float] | None = option(
        None, "Absolute sigma grid; null = the relative grid sigma_multiples x RMS of the prior centre."
    )
    sigma_multiples: list[float] = option(
        help="Relative sigma grid: multiples of the RMS of the parameters the prior is centred at "
        "(each grid point is charged delta_bound/K).",
        factory=lambda: list(DEFAULT_SIGMA_MULTIPLES),
    )
    sigma_rule: str = option("best_bound", "How sigma is chosen from the grid.", choices=SIGMA_RULES)
    sharpness_tol: float = option(0.05, "Sharpness rule: largest sigma with MC risk <= point risk + this.")
    space: str = option(
        "delta", "'delta': prior at the pretrained weights; 'lora': prior at the adapter init.", choices=SPACES
    )
    delta: float = option(defaults.DELTA, "Total failure probability, split in a ledger.")
    mc_fraction: float = option(0.2, "Fraction of delta for the Monte-Carlo risk bounds.")
    tv_fraction: float = option(0.2, "Fraction of delta for the TV lower bound.")
    m: int | None = option(
        None, "Posterior draws per sigma: per example (default 1) or shared by all examples (default 20)."
    )
    mc_scheme: str = option(
        "per_example",
        "per_example: each training example gets its own draws (n*m independent losses); "
        "shared: m draws each score every example.",
        choices=MC_SCHEMES,
    )
    loss: str = option(defaults.LOSS, "Bounded loss in [0, 1] for risks and bounds.", choices=LOSSES)
    mc_examples: int | None = option(
        None,
        "per_example scheme: at most this many (example, draw) losses per sigma; when n*m exceeds it, "
        "that many examples are drawn uniformly with replacement, each under its own draw (i.i.d. losses "
        "with mean E_pi R_S: a valid, looser bound at a fraction of the cost). null = all n*m.",
    )
    per_module_sigma: bool = option(
        False,
        "One sigma grid per module family (q_proj, v_proj, ...; relative grid only), chosen by a coordinate "
        "search after the isotropic grid; the union over every combination is paid in the ledger.",
    )
    catoni_c: float = option(
        defaults.CATONI_C, "C of Catoni's bound in the sigma-grid table (reported only; never chooses sigma)."
    )

    def __post_init__(self) -> None:
        if self.mc_scheme not in MC_SCHEMES:
            raise ValueError(f"mc_scheme must be one of {MC_SCHEMES}, got {self.mc_scheme!r}")
        if self.m is not None and not _is_count(self.m):
            raise ValueError(f"m must be an integer >= 1, got {self.m!r}")
        if self.mc_examples is not None and not _is_count(self.mc_examples):
            raise ValueError(f"mc_examples must be an integer >= 1 or null, got {self.mc_examples!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.sigma_rule not in SIGMA_RULES:
            raise ValueError(f"sigma_rule must be 'best_bound' or 'sharpness', got {self.sigma_rule!r}")
        if self.space not in SPACES:
            raise ValueError(f"space must be 'delta' or 'lora', got {self.space!r}")
        f_mc, f_tv = self.mc_fraction, self.tv_fraction
        if not (0 < f_mc < 1 and 0 < f_tv < 1 and f_mc + f_tv < 1):
            raise ValueError("mc_fraction and tv_fraction must lie in (0, 1) and sum to less than 1")
        if not (isinstance(self.catoni_c, (int, float)) and self.catoni_c > 0):
            raise ValueError(f"catoni_c must be a positive number, got {self.catoni_c!r}")
        if self.sigmas is not None:
            self.sigmas = _positive_list(self.sigmas, "sigmas")
            if self.per_module_sigma:
                raise ValueError("per_module_sigma needs the relative grid (sigmas: null)")
        self.sigma_multiples = _positive_list(self.sigma_multiples, "sigma_multiples")

    @property
    def grid_size(self) -> int:
        """K, the number of σ grid points (each charged δ/K)."""
        return len(self.sigmas if self.sigmas is not None else self.sigma_multiples)

    @property
    def draws(self) -> int:
        """Posterior draws per σ (m, or the scheme's default)."""
        return self.m if self.m is not None else (1 if self.mc_scheme == "per_example" else 20)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _positive_list(values: Any, name: str) -> list[float]:
    try:
        out = [float(v) for v in values]
    except (TypeError, ValueError):
        out = []
    if not out or any(not v > 0 for v in out):
        raise ValueError(f"{name} must be a non-empty sequence of positive numbers, got {values!r}")
    return out


@dataclass
class TVConfig:
    """The classifier TV proxy between the training sample and the test set."""

    features: str = option(
        "auto",
        "Features of the TV proxy: 'auto' (structure, TF-IDF or both, chosen by inner cross-validation), "
        "'structure', 'tfidf' or 'structure+tfidf'.",
        choices=("auto", "structure", "tfidf", "structure+tfidf"),
    )
    permutations: int = option(defaults.TV_PERMUTATIONS, "Permutations for the TV p-value.")
    max_per_side: int | None = option(
        defaults.TV_MAX_PER_SIDE, "Use at most this many texts per side, a stratified random sample (null = all)."
    )


@dataclass
class EvalConfig:
    """How a model is evaluated: greedy generation (answer_error) and batching."""

    generate: bool = option(True, "Also decode greedily and verify the answer (answer_accuracy).")
    max_new_tokens: int = option(defaults.MAX_NEW_TOKENS, "Longest generated answer, in tokens.")
    batch_size: int = option(defaults.BATCH_SIZE, "Examples per forward pass.")

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size"):
            if not _is_count(getattr(self, name)):
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")


@dataclass(frozen=True)
class CertifySettings:
    """How one :func:`certify` call runs, beside what it certifies.

    judge: for loss answer_error, a :data:`~pacbayes_sft.data.scorers.Judge` ``(example, text) ->
    bool`` or a scorer name (default ``defaults.SCORER``, compared with each example's ``answer``);
    seed: of the posterior draws and the TV split; tokenizer: required when ``base`` is a model
    object; init: initial adapter factors for space="lora" (default: ``lora_init.safetensors``
    beside an adapter directory); progress: a bar (terminals only) over the posterior draws of each σ."""

    judge: Any = None
    seed: int = 0
    tokenizer: Any = None
    init: Any = None
    progress: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"settings.seed must be an integer >= 0, got {self.seed!r}")


PRIOR_KINDS = ("pretrained", "grid", "two_stage")
PRIOR_ALIASES = {"data": "two_stage"}
"""Old names of prior kinds, still read (run folders written before the kinds were renamed say "data")."""
SIGMA_SEARCHES = ("descending", "ascending")


@dataclass
class PriorConfig:
    """Where the prior is centred and how its scale is chosen: the one prior type of ``certify()``,
    the sweep and the experiments.

    ``pretrained``: the data-free prior (at the pretrained weights, or the adapter's initial factors
    in the "lora" space); the adapter trained on all of S; σ from the ``bound`` grid (each point
    paid by a union bound).
    ``grid``: a data-dependent centre — ``adapter``, trained on the first ``n_prior`` examples of S
    only (default: the share ``fraction``) — with σ from the ``bound`` grid; the bound uses the
    other examples. For ``certify()`` (a sweep trains pretrained or two_stage cells).
    ``two_stage`` (alias ``data``): an SFT adapter P on the first ``fraction`` of S is the prior's
    centre; σ_p is chosen on that part only (so it costs no δ); the posterior N(Q, diag s²) over the
    LoRA factors starts at (P, σ_p) and is refined on the rest of S by the PAC-Bayes objective; the
    bound uses only the rest. Q, the posterior mean, is the model the cell reports. ``certify()``
    recertifies a finished two-stage adapter Q against ``adapter`` = P (the state saved beside Q).
    """

    kind: str = option(
        "two_stage",
        "Prior: two_stage (data-dependent centre and sigma_p, learned posterior; alias: data), grid "
        "(data-dependent centre, sigma from the bound grid) or pretrained (data-free).",
        choices=PRIOR_KINDS + tuple(PRIOR_ALIASES),
    )
    fraction: float = option(0.5, "data: share of S that trains the prior's centre (the rest carries the bound).")
    sigma_multiples: list[float] = option(
        help="data: candidate sigma_p, as multiples of the RMS of the adapter's initial A factors (see `search`).",
        factory=lambda: [0.01, 0.02, 0.05, 0.1],
    )
    search: str = option(
        "descending",
        "data: descending (largest first; the first that loses at most `tolerance` is kept: one evaluation when "
        "the largest passes) or ascending (smallest first; the largest before the first that loses more).",
        choices=SIGMA_SEARCHES,
    )
    tolerance: float = option(0.02, "data: loss the sampled prior may add to the point prior on its own part.")
    select: int = option(128, "data: examples of the prior's part that sigma_p is chosen on.")
    epochs: float = option(1.0, "data: passes of the PAC-Bayes objective over the bound's part (stage 2).")
    batch_size: int = option(32, "data: examples per step of stage 2.")
    adapter: Any | None = option(
        None,
        "certify() with grid or two_stage: the prior's centre P, an adapter directory (or peft model) trained on "
        "the first n_prior examples only. A sweep trains its own (null there; not part of its hash).",
    )
    n_prior: int | None = option(
        None, "grid: examples the prior adapter was trained on (the bound uses the rest); null = `fraction` of S."
    )

    def __post_init__(self) -> None:
        self.kind = PRIOR_ALIASES.get(self.kind, self.kind)
        if self.kind not in PRIOR_KINDS:
            raise ValueError(f"prior.kind must be one of {PRIOR_KINDS} (or {sorted(PRIOR_ALIASES)}), got {self.kind!r}")
        if self.n_prior is not None and not _is_count(self.n_prior):
            raise ValueError(f"prior.n_prior must be an integer >= 1 or null, got {self.n_prior!r}")
        if not (isinstance(self.fraction, (int, float)) and 0 < self.fraction < 1):
            raise ValueError(f"prior.fraction must lie in (0, 1), got {self.fraction!r}")
        self.sigma_multiples = sorted(_positive_list(self.sigma_multiples, "prior.sigma_multiples"))
        if self.search not in SIGMA_SEARCHES:
            raise ValueError(f"prior.search must be one of {SIGMA_SEARCHES}, got {self.search!r}")
        if not (isinstance(self.tolerance, (int, float)) and 0 <= self.tolerance < 1):
            raise ValueError(f"prior.tolerance must lie in [0, 1), got {self.tolerance!r}")
        for name in ("select", "batch_size"):
            if not _is_count(getattr(self, name)):
                raise ValueError(f"prior.{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not (isinstance(self.epochs, (int, float)) and self.epochs > 0):
            raise ValueError(f"prior.epochs must be > 0, got {self.epochs!r}")

    def split(self, n: int) -> int:
        """n_prior: how many of the n examples train the prior (at least 1, and 1 left for the bound):
        ``n_prior`` when set, else ⌊fraction·n⌉."""
        if n < 2:
            raise ValueError(f"a data-dependent prior needs n >= 2 training examples, got {n}")
        if self.n_prior is not None:
            if self.n_prior >= n:
                raise ValueError(f"prior.n_prior must be an integer in [1, {n}), got {self.n_prior!r}")
            return self.n_prior
        return min(n - 1, max(1, round(self.fraction * n)))

    @property
    def data_dependent(self) -> bool:
        """Whether the centre is trained on part of S (grid, two_stage): the bound uses the rest."""
        return self.kind != "pretrained"

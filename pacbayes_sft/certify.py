"""One call from (base, adapter, train set, test set) to every term of Proposition 4.1.

    total = U_MC + G_gen + G_ext,   U_MC ≥ E_π R̂_S (Monte-Carlo upper bound; by default every
                                     training example gets its own posterior draw),
    G_gen = Seeger bound(U_MC, KL, n) − U_MC,   G_ext = (b − a)·TV̂

The failure probability δ is split in a ledger: δ_MC for the Monte-Carlo estimates, δ_TV for
the TV lower bound, and the rest for the PAC-Bayes bound, spread over the K prior scales of a
finite σ grid (δ/K each, so choosing σ after seeing the data is paid for). σ is chosen either
as the grid point with the smallest bound, or by a sharpness search: the largest σ whose
sampled training risk exceeds the point risk by at most ``sharpness_tol``.

The PAC-Bayes part is certified (given i.i.d. training data and a prior fixed before training:
the pretrained weights). The TV term is a classifier proxy — a lower bound on the true TV in
expectation — so the total is an estimate, and the document says so.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .adapter_report import sigma_grid_table
from .bounds import MC_SCHEMES, DeltaLedger, finite_grid_delta, maurer_bound, two_gap_bound
from .bounds.two_gap import TwoGapBound
from .data.loaders import example_field
from .estimators.classifier_tv import classifier_tv
from .estimators.lora import INIT_FILE
from .training.evaluate import teacher_forced_metrics

LOSSES = ("token_error", "sequence_error")
DEFAULT_SIGMAS = (1e-3, 3e-3, 1e-2, 3e-2)


def _field(e: Any, name: str) -> str:
    v = example_field(e, name)
    if not isinstance(v, str):
        raise ValueError(f"examples need a string {name!r}")
    return v


def _load(base: Any, adapter: Any, tokenizer: Any):
    from peft import PeftModel

    from .data.tokenizer import load_tokenizer
    from .training.models import load_causal_lm

    if isinstance(adapter, torch.nn.Module):
        model = adapter
        if tokenizer is None:
            if not isinstance(base, (str, Path)):
                raise ValueError("tokenizer is required when base is not a checkpoint directory")
            tokenizer = load_tokenizer(base)
        return model.eval(), tokenizer
    base_model = load_causal_lm(base) if isinstance(base, (str, Path)) else base
    if tokenizer is None:
        if not isinstance(base, (str, Path)):
            raise ValueError("tokenizer is required when base is a model object")
        tokenizer = load_tokenizer(base)
    adir = Path(adapter)
    if not (adir / "adapter_config.json").is_file():
        raise ValueError(f"adapter directory {str(adir)!r} has no adapter_config.json")
    try:
        model = PeftModel.from_pretrained(base_model, str(adir))
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ValueError(
            f"adapter {str(adir)!r} does not fit base model {str(base)!r}: {str(exc).splitlines()[0]}"
        ) from None
    return model.eval(), tokenizer


def certify(
    base: Any,
    adapter: Any,
    train_examples: Sequence[Any],
    test_examples: Sequence[Any],
    *,
    tokenizer: Any = None,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    sigma_rule: str = "best_bound",
    sharpness_tol: float = 0.05,
    space: str = "delta",
    delta: float = 0.05,
    mc_fraction: float = 0.2,
    tv_fraction: float = 0.2,
    m: int | None = None,
    mc_scheme: str = "per_example",
    loss: str = "token_error",
    tv_features: Any = "tfidf",
    tv_permutations: int = 1000,
    tv_max_per_side: int | None = None,
    init: Any = None,
    seed: int = 0,
    batch_size: int = 64,
) -> tuple[TwoGapBound, dict]:
    """Compute the two-gap bound for one adapter and a JSON-ready document of every term.

    Args:
        base: base checkpoint directory (or model object, then pass ``tokenizer``).
        adapter: adapter directory, or a peft model already wrapping the base.
        train_examples, test_examples: items with ``prompt`` and ``response`` (dicts or objects);
            the training examples must be the ones the adapter was trained on (n = their number).
        sigmas: the finite σ grid; each point is charged δ_bound/K.
        sigma_rule: "best_bound" or "sharpness".
        space: "delta" (prior at the pretrained weights) or "lora" (prior at the adapter init).
        delta: total failure probability; mc_fraction and tv_fraction of it go to the MC
            estimates and the TV interval, the rest to the PAC-Bayes bound.
        m: posterior samples per σ — per example with ``mc_scheme="per_example"`` (default 1:
            n independent losses), or shared by all examples with ``"shared"`` (default 20).
        mc_scheme: "per_example" (each example gets its own draws; the MC bound rests on n·m
            losses) or "shared" (Langford–Caruana: m samples, each scoring all n examples).
        loss: "token_error" (fraction of wrong response tokens) or "sequence_error"
            (1 − teacher-forced exact match); both in [0, 1].
        tv_features: feature step of the TV proxy ("tfidf", "structure" or a callable).
        tv_max_per_side: use at most this many texts per side for the TV proxy (None = all).
        init: initial adapter factors for space="lora" (default: ``lora_init.safetensors``
            beside an adapter directory).
    """
    if mc_scheme not in MC_SCHEMES:
        raise ValueError(f"mc_scheme must be one of {MC_SCHEMES}, got {mc_scheme!r}")
    if m is None:
        m = 1 if mc_scheme == "per_example" else 20
    if not isinstance(m, int) or isinstance(m, bool) or m < 1:
        raise ValueError(f"m must be an integer >= 1, got {m!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if sigma_rule not in ("best_bound", "sharpness"):
        raise ValueError(f"sigma_rule must be 'best_bound' or 'sharpness', got {sigma_rule!r}")
    if not train_examples:
        raise ValueError("train_examples must not be empty")
    if not test_examples:
        raise ValueError("test_examples must not be empty")
    if not (0 < mc_fraction < 1 and 0 < tv_fraction < 1 and mc_fraction + tv_fraction < 1):
        raise ValueError("mc_fraction and tv_fraction must lie in (0, 1) and sum to less than 1")
    sig = [float(s) for s in sigmas]
    if not sig or any(not s > 0 for s in sig):
        raise ValueError(f"sigmas must be a non-empty sequence of positive numbers, got {sigmas!r}")
    model, tok = _load(base, adapter, tokenizer)
    prompts = [_field(e, "prompt") for e in train_examples]
    responses = [_field(e, "response") for e in train_examples]
    n = len(prompts)

    def losses(mdl: torch.nn.Module, ps: Sequence[str], rs: Sequence[str]) -> list[float]:
        tf = teacher_forced_metrics(mdl, tok, ps, rs, batch_size=batch_size)
        return tf["token_error"] if loss == "token_error" else [1.0 - v for v in tf["exact_match"]]

    def risk_fn(mdl: torch.nn.Module) -> float:
        return float(sum(losses(mdl, prompts, responses)) / n)

    def example_loss_fn(mdl: torch.nn.Module, i: int) -> float:  # one example, for per-example draws
        return losses(mdl, prompts[i : i + 1], responses[i : i + 1])[0]

    ledger = DeltaLedger(delta)
    k = len(sig)
    what = f"{m} shared samples" if mc_scheme == "shared" else f"{n} examples x {m} own draws"
    d_mc = ledger.spend_fraction(f"mc_sampling ({k} sigmas x {what})", mc_fraction) / k
    d_tv = ledger.spend_fraction("tv_lower_bound", tv_fraction)
    d_bound = finite_grid_delta(ledger.spend_rest(f"pac_bayes (finite sigma grid, K={k})"), k)

    point_risk = risk_fn(model)
    if init is None and space == "lora" and isinstance(adapter, (str, Path)):
        init = Path(adapter) / INIT_FILE  # the initial factors saved beside the adapter
    table = sigma_grid_table(
        model,
        risk_fn,
        n,
        sig,
        space=space,
        delta_mc=d_mc,
        delta_bound=d_bound,
        m=m,
        seed=seed,
        init=init,
        mc_scheme=mc_scheme,
        example_loss_fn=example_loss_fn,
    )
    if sigma_rule == "best_bound":
        best_i = int(table["seeger"].idxmin())
        rule = "smallest Seeger bound on the grid"
    else:
        ok = table.index[table["mc_mean_risk"] <= point_risk + sharpness_tol]
        best_i = int(table.loc[ok, "sigma"].idxmax()) if len(ok) else int(table["sigma"].idxmin())
        rule = f"sharpness: largest sigma with sampled risk <= point risk + {sharpness_tol}"
    row = table.iloc[best_i]

    cap = tv_max_per_side
    train_texts = [p + " " + r for p, r in zip(prompts, responses)][:cap]
    test_texts = [_field(e, "prompt") + " " + _field(e, "response") for e in test_examples][:cap]
    tv = classifier_tv(
        train_texts,
        test_texts,
        features=tv_features,
        delta=d_tv,
        n_permutations=tv_permutations,
        random_state=seed,
        n_splits=max(2, min(5, len(train_texts), len(test_texts))),
    )
    tg = two_gap_bound(float(row["mc_risk_upper"]), float(row["kl"]), n, tv.estimate, delta=d_bound, method="seeger")
    g_gen_maurer = float(maurer_bound(float(row["mc_risk_upper"]), float(row["kl"]), n, d_bound)) - float(
        row["mc_risk_upper"]
    )

    import peft
    import sklearn
    import transformers

    doc = {
        "n": n,
        "loss": loss,
        "loss_range": [0.0, 1.0],
        "empirical_risk": {
            "point": point_risk,
            "mc_mean": float(row["mc_mean_risk"]),
            "mc_upper": float(row["mc_risk_upper"]),
            "m": m,
            "mc_scheme": mc_scheme,
            "mc_losses": int(row["mc_losses"]),
        },
        "kl": {"value_nats": float(row["kl"]), "space": space},
        "sigma": {"value": float(row["sigma"]), "rule": rule, "grid": sig},
        "delta": {
            "total": delta,
            "ledger": ledger.to_dict(),
            "per_grid_point_bound": d_bound,
            "per_grid_point_mc": d_mc,
            "tv": d_tv,
        },
        "g_gen": {"seeger": tg.g_gen, "maurer": g_gen_maurer},
        "tv": tv.to_dict(),
        "g_ext": tg.g_ext,
        "eps": tg.eps,
        "total": tg.total,
        "grid": table.to_dict(orient="records"),
        "certified_terms": [
            "empirical_risk.mc_upper (Chernoff kl bound over independent posterior draws)",
            "g_gen (PAC-Bayes, union over the sigma grid)",
        ],
        "estimated_terms": [
            "g_ext: classifier TV proxy (a lower bound on TV in expectation), so the total is NOT certified"
        ],
        "certified": False,
        "seed": seed,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "two_gap": tg.to_dict(),
    }
    json.dumps(doc)  # fail here, not in the caller, if anything is not JSON-serialisable
    return tg, doc

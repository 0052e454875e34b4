"""How will this adapter do on a benchmark? Label-free estimates of its test risk, one call.

:func:`estimate_test_risk` loads the base and the adapter (refusing an adapter trained on another
base), generates on the test prompts and on a labelled source sample, and hands the per-item
arrays (:class:`~pacbayes_sft.estimators.label_free.LabelFreeInputs`) to
:func:`~pacbayes_sft.estimators.label_free.label_free_estimates`:

- the adapter itself (point model): its answers and confidences p(generation | prompt) feed
  "no_shift", "two_gap_tv" (source risk + the classifier TV proxy, the paper's G_ext), "atc", "doc";
- the posterior N(adapter, σ²I) with ``draws`` independent draws per item feeds the
  domain-adaptation forms "da_2013", "da_2016", the certified lower bound "half_disagreement" and
  "gde_posterior";
- ``seeds_adapters`` (the same data, other seeds) feed "seed_disagreement".

Test answers are never read: the test items are prompts only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .. import defaults
from ..adapters import attach_adapter, lora_factors
from ..bounds.domain_adaptation import PosteriorDraws
from ..data.loaders import example_field
from ..data.scorers import Judge, answer_judge
from ..data.tokenizer import load_tokenizer
from ..estimators.answers import Extractor, collect_answers, collect_draws
from ..estimators.label_free import ESTIMATORS, LabelFreeInputs, label_free_estimates
from ..estimators.posterior import GaussianPosterior
from ..training.models import load_causal_lm
from .config import SPACES, EvalConfig, TVConfig
from .tv_term import classifier_tv_term

COLUMNS = (
    "estimator",
    "risk_of",
    "estimate",
    "lower",
    "upper",
    "level",
    "certified",
    "assumptions",
    "n_source",
    "n_target",
)
"""The columns of :func:`estimate_test_risk`'s table, one row per estimator."""

# config.json keys that fix the shapes and layout a LoRA adapter is trained against
_SHAPE_KEYS = (
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "intermediate_size", "n_embd", "n_layer", "n_head", "n_inner",
)  # fmt: skip


def _shape_config(model_dir: Path) -> dict[str, Any] | None:
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return {k: cfg.get(k) for k in _SHAPE_KEYS}


def check_adapter_base(base: str | Path, adapter: str | Path) -> None:
    """ValueError when the adapter's ``adapter_config.json`` names a local base directory whose
    config.json differs in shape from ``base`` (a base of the same shapes at another path passes:
    it may be a copy; its weights are not compared)."""
    try:
        recorded = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"adapter {str(adapter)!r} has no readable adapter_config.json: {exc}") from None
    if not recorded or not Path(recorded).is_dir() or Path(recorded).resolve() == Path(base).resolve():
        return
    theirs, ours = _shape_config(Path(recorded)), _shape_config(Path(base))
    if theirs is not None and ours is not None and theirs != ours:
        diff = ", ".join(f"{k} {theirs[k]} vs {ours[k]}" for k in _SHAPE_KEYS if theirs[k] != ours[k])
        raise ValueError(f"adapter {str(adapter)!r} was trained on base {recorded!r}, not {str(base)!r} ({diff})")


def load_checked(
    base: str | Path, adapter: str | Path, tokenizer: Any = None, *, device: str | None = None
) -> tuple[torch.nn.Module, Any]:
    """The base with the adapter attached (eval mode, on ``device``; default: the GPU when there
    is one) and the tokenizer, after checking that the adapter belongs to this base: its recorded
    base (:func:`check_adapter_base`), its tensor shapes (peft's size check, via
    :func:`~pacbayes_sft.adapters.attach_adapter`) and its module names (every adapted module of
    the file exists in the base and every LoRA layer got weights; peft only warns on either)."""
    if not isinstance(base, (str, Path)) or not Path(base).is_dir():
        raise ValueError(f"base must be a model directory, got {base!r}")
    if not isinstance(adapter, (str, Path)) or not Path(adapter).is_dir():
        raise ValueError(f"adapter must be an adapter directory, got {adapter!r}")
    check_adapter_base(base, adapter)
    device = device or ("cuda" if torch.cuda.is_available() else None)
    model = attach_adapter(load_causal_lm(base, device=device), adapter, base_name=str(base))
    saved = {f.name for f in lora_factors(adapter)}
    loaded = {f.name for f in lora_factors(model)}
    if saved != loaded:
        extra, missing = sorted(saved - loaded), sorted(loaded - saved)
        raise ValueError(
            f"adapter {str(adapter)!r} does not fit base {str(base)!r}: "
            + (
                f"modules not in the base: {extra[:3]}"
                if extra
                else f"base modules without adapter weights: {missing[:3]}"
            )
        )
    return model, (tokenizer if tokenizer is not None else load_tokenizer(base))


def _needed(estimators: Sequence[str] | None, has_source: bool, sigma: float | None, seeds: bool) -> list[str]:
    """The estimators to compute: every one the arguments allow, or the ones asked for (checked)."""
    given = {"source": has_source, "sigma": sigma is not None and sigma > 0, "seeds_adapters": seeds}
    need = {
        "source_conf": ("source",), "source_correct": ("source",), "tv": ("source",), "target_conf": (),
        "source_draws": ("source", "sigma"), "target_draws": ("sigma",), "seed_answers": ("seeds_adapters",),
    }  # fmt: skip
    args = {name: {a for f in fields for a in need[f]} for name, fields in ESTIMATORS.items()}
    if estimators is None:
        return [n for n, a in args.items() if all(given[x] for x in a)]
    if isinstance(estimators, str) or not estimators:
        raise ValueError(f"estimators must be a non-empty list of names, got {estimators!r}")
    for n in estimators:
        if n not in ESTIMATORS:
            raise ValueError(f"estimators: unknown estimator {n!r} (known: {', '.join(ESTIMATORS)})")
        missing = sorted(x for x in args[n] if not given[x])
        if missing:
            note = " (sigma > 0: the posterior draws)" if "sigma" in missing else ""
            raise ValueError(f"estimators: {n!r} needs {' and '.join(missing)}{note}")
    return list(estimators)


def _check_inputs(prompts: Sequence[str], source: Sequence[Any] | None, judge: Judge | str | None) -> Judge | None:
    """Validate the prompts and the source sample; return the judge of the source (None without one)."""
    if isinstance(prompts, str) or not prompts:
        raise ValueError("prompts must be a non-empty list of prompt strings")
    if not all(isinstance(p, str) and p.strip() for p in prompts):
        raise ValueError("prompts must hold non-empty strings only")
    if source is None:
        return None
    if not source:
        raise ValueError("source must hold at least one labelled example (or be None)")
    for i, e in enumerate(source):
        try:
            p = example_field(e, "prompt")
        except ValueError:
            raise ValueError(f"source[{i}] has no 'prompt'") from None
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"source[{i}] needs a non-empty string 'prompt'")
    if callable(judge):
        return judge
    if judge is not None and not isinstance(judge, str):
        raise ValueError(f"judge must be a callable (example, text) -> bool or a scorer name, got {judge!r}")
    for i, e in enumerate(source):
        try:
            example_field(e, "answer")
        except ValueError:
            raise ValueError(f"source[{i}] has no 'answer' for the scorer to compare with (or pass a judge)") from None
    return answer_judge(judge or defaults.SCORER)


def _check_settings(sigma: float | None, space: str, draws: int, seeds_adapters: Sequence[Any]) -> list[str]:
    if sigma is not None and not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0 (or None), got {sigma!r}")
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 2:
        raise ValueError(f"draws must be an integer >= 2, got {draws!r}")
    if isinstance(seeds_adapters, (str, Path)):
        raise ValueError("seeds_adapters must be a list of adapter directories, not one path")
    seeds = [str(s) for s in seeds_adapters]
    for s in seeds:
        if not (Path(s) / "adapter_config.json").is_file():
            raise ValueError(f"seeds_adapters: {s!r} is not an adapter directory (no adapter_config.json)")
    return seeds


def _check_numbers(delta: float, n_boot: int, beta: float, q: float) -> None:
    """The estimators' own settings, checked before any generation."""
    if not (isinstance(delta, (int, float)) and 0 < delta < 1):
        raise ValueError(f"delta must lie in (0, 1), got {delta!r}")
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot!r}")
    if not (isinstance(beta, (int, float)) and math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    if not (isinstance(q, (int, float)) and q > 1):
        raise ValueError(f"q must be > 1 (math.inf for the supremum of the density ratio), got {q!r}")


def collect_label_free_inputs(
    base: str | Path,
    adapter: str | Path,
    prompts: Sequence[str],
    *,
    source: Sequence[Any] | None = None,
    judge: Judge | str | None = None,
    extract: Extractor | None = None,
    estimators: Sequence[str] | None = None,
    sigma: float | None = None,
    space: str = "delta",
    draws: int = 2,
    seeds_adapters: Sequence[str | Path] = (),
    delta: float = defaults.DELTA,
    tv: TVConfig | None = None,
    evaluation: EvalConfig | None = None,
    seed: int = 0,
) -> tuple[LabelFreeInputs, list[str]]:
    """The per-item arrays the chosen estimators need (see :func:`estimate_test_risk` for the
    arguments), and the estimators' names. Everything is validated before a model is loaded."""
    judge_fn = _check_inputs(prompts, source, judge)
    seeds = _check_settings(sigma, space, draws, seeds_adapters)
    names = _needed(estimators, source is not None, sigma, bool(seeds))
    fields = {f for n in names for f in ESTIMATORS[n]}
    tv_cfg = tv if tv is not None else TVConfig()
    ev = evaluation if evaluation is not None else EvalConfig()
    if not isinstance(tv_cfg, TVConfig) or not isinstance(ev, EvalConfig):
        raise ValueError("tv must be a TVConfig and evaluation an EvalConfig (or None)")
    model, tok = load_checked(base, adapter)
    gen = {"extract": extract, "max_new_tokens": ev.max_new_tokens, "batch_size": ev.batch_size}
    got: dict[str, Any] = {}
    point_t = point_s = None  # the point model's generations, which the draws are verified against
    if fields & {"target_conf", "seed_answers", "target_draws"}:
        point_t = collect_answers(model, tok, prompts, **gen)
        got["target_conf"] = point_t.confidences
    if fields & {"source_conf", "source_correct", "source_draws"}:
        point_s = collect_answers(model, tok, source, judge=judge_fn, **gen)
        got["source_conf"], got["source_correct"] = point_s.confidences, point_s.correct
    if "tv" in fields:
        src_prompts = [example_field(e, "prompt") for e in source]
        term = classifier_tv_term(src_prompts, list(prompts), tv_cfg, delta / 2, seed)
        got["tv"] = (term.estimate, term.lower if term.lower is not None else 0.0)
    if fields & {"source_draws", "target_draws"}:
        post = GaussianPosterior(model, float(sigma), space, seed=seed)
        n_src = len(source) if "source_draws" in fields else 0
        if n_src:  # source draws 0 .. k·n_src − 1, test draws after them: no draw is shared
            on_src = collect_draws(
                post, tok, source, draws=draws, judge=judge_fn, reference=point_s.tokens, confidence=False, **gen
            )
            got["source_draws"] = PosteriorDraws(
                [g.answers for g in on_src], [g.correct for g in on_src], name="source_draws"
            )
        on_test = collect_draws(
            post, tok, prompts, draws=draws, first_draw=draws * n_src, reference=point_t.tokens, confidence=False, **gen
        )
        got["target_draws"] = PosteriorDraws([g.answers for g in on_test], name="target_draws")
    if "seed_answers" in fields:
        runs = [point_t.answers]
        for other_adapter in seeds:
            other, other_tok = load_checked(base, other_adapter, tok)
            runs.append(collect_answers(other, other_tok, prompts, **gen).answers)
        got["seed_answers"] = runs
    return LabelFreeInputs(**got), names


def estimate_test_risk(
    base: str | Path,
    adapter: str | Path,
    prompts: Sequence[str],
    *,
    source: Sequence[Any] | None = None,
    judge: Judge | str | None = None,
    extract: Extractor | None = None,
    estimators: Sequence[str] | None = None,
    sigma: float | None = None,
    space: str = "delta",
    draws: int = 2,
    seeds_adapters: Sequence[str | Path] = (),
    delta: float = defaults.DELTA,
    beta: float = 1.0,
    q: float = math.inf,
    tv: TVConfig | None = None,
    evaluation: EvalConfig | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Label-free estimates of the adapter's test risk (answer error in [0, 1]) on ``prompts``.

    Args:
        base, adapter: the base model directory and a LoRA adapter directory trained on it.
        prompts: the test prompts (no answers are read).
        source: labelled training-distribution examples the adapter did not train on (``prompt``
            and ``answer``, or whatever ``judge`` reads); needed by every estimator but
            "half_disagreement", "gde_posterior" and "seed_disagreement".
        judge: a :data:`~pacbayes_sft.data.scorers.Judge` or scorer name (default
            ``defaults.SCORER`` against each source example's ``answer``); ``extract`` reads the
            final answer the way the judge does (default: the final_answer scorer's extractor).
        estimators: names from :data:`~pacbayes_sft.estimators.label_free.ESTIMATORS`; default:
            every one the arguments allow.
        sigma, space, draws: the posterior N(adapter, σ²I) (absolute σ, "delta" or "lora" space)
            and the independent draws per item for the disagreement estimators (σ > 0).
        seeds_adapters: adapters trained like ``adapter`` with other seeds ("seed_disagreement").
        delta: each row's interval is at level 1 − δ (rows are not simultaneous).
        beta, q: the density-ratio moment assumed by "da_2016" (β_q ≤ beta).
        tv, evaluation: the TV proxy's settings and the generation length / batch size.

    Returns a table with the columns :data:`COLUMNS`, one row per estimator: ``risk_of`` says
    whose risk it is (the adapter, the posterior, or one seed's adapter), ``certified`` whether the
    interval holds without an unchecked assumption, ``assumptions`` what it rests on.
    """
    _check_numbers(delta, n_boot, beta, q)
    inputs, names = collect_label_free_inputs(
        base, adapter, prompts, source=source, judge=judge, extract=extract, estimators=estimators, sigma=sigma,
        space=space, draws=draws, seeds_adapters=seeds_adapters, delta=delta, tv=tv, evaluation=evaluation, seed=seed,
    )  # fmt: skip
    rows = label_free_estimates(inputs, names=names, delta=delta, beta=beta, q=q, n_boot=n_boot, random_state=seed)
    posterior = f"posterior N(adapter, σ²I), σ = {sigma:g} ({space}), {draws} draws per item" if sigma else ""
    whose = {"da_2013": posterior, "da_2016": posterior, "half_disagreement": posterior, "gde_posterior": posterior}
    whose["seed_disagreement"] = f"one of {1 + len(seeds_adapters)} seed adapters"
    table = [
        {
            "estimator": r.name,
            "risk_of": whose.get(r.name, "adapter"),
            "estimate": r.estimate,
            "lower": r.lower,
            "upper": r.upper,
            "level": r.level,
            "certified": r.certified,
            "assumptions": r.assumptions,
            "n_source": int(r.details.get("n_source", 0)),
            "n_target": int(r.details.get("n_target", len(prompts))),
        }
        for r in rows
    ]
    return pd.DataFrame(table, columns=list(COLUMNS))

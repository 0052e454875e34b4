"""How will this adapter do on a benchmark? Label-free estimates of its test risk, one call.

:func:`estimate_test_risk` loads the base and the adapter (refusing an adapter trained on another
base), generates on the test prompts and on a labelled source sample, and hands the per-item
arrays (:class:`~pacbayes_sft.estimators.label_free.LabelFreeInputs`, gathered by
:func:`collect_label_free_inputs`, the one collector a sweep cell uses too) to every registered
estimator (:data:`~pacbayes_sft.estimators.label_free.ESTIMATORS`) whose inputs it has:

- the adapter itself (point model): its answers and confidences p(generation | prompt) feed
  "no_shift", "two_gap_tv" (source risk + the classifier TV proxy, the paper's G_ext), "atc", "doc";
- the posterior N(adapter, σ²I) with ``draws`` independent draws per item feeds the
  domain-adaptation forms "da_2013", "da_2016", the certified lower bound "half_disagreement" and
  "gde_posterior";
- ``seeds_adapters`` (the same data, other seeds) feed "seed_disagreement";
- an estimator added with :func:`~pacbayes_sft.estimators.label_free.register_estimator` runs
  as soon as its ``needs`` are collected.

Test answers are never read: the test items are prompts only.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import replace
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
from ..estimators.answers import Extractor, GeneratedAnswers, answers_of_tokens, collect_answers, collect_draws
from ..estimators.label_free import (
    ESTIMATORS,
    INPUT_NAMES,
    LabelFreeInputs,
    check_names,
    inputs_needed,
    label_free_estimates,
)
from ..posteriors import GaussianPosterior
from ..training.models import load_causal_lm
from .label_free_config import INPUT_REQUIRES, LabelFreeConfig, with_options
from .tv_term import classifier_tv_term

__all__ = ["COLUMNS", "check_adapter_base", "collect_label_free_inputs", "estimate_test_risk", "load_checked"]

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
    "n_pool",
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


def _needed(estimators: Sequence[str] | None, given: dict[str, bool]) -> list[str]:
    """The estimators to compute: every one the arguments allow, or the ones asked for (checked)."""
    wants = {n: {a for f in spec.needs for a in INPUT_REQUIRES[f]} for n, spec in ESTIMATORS.items()}
    if estimators is None:
        return [n for n, a in wants.items() if all(given[x] for x in a)]
    for n in check_names(estimators, "estimators"):
        missing = sorted(x for x in wants[n] if not given[x])
        if missing:
            note = " (sigma > 0: the posterior draws)" if "sigma" in missing else ""
            raise ValueError(f"estimators: {n!r} needs {' and '.join(missing)}{note}")
    return list(estimators)


def _check_labelled(examples: Sequence[Any] | None, judge: Judge | str | None, name: str = "source") -> Judge | None:
    """Validate a labelled sample (``name``: "source", or "pool", whose items also need an ``op``:
    their slice); return its judge (None without a sample)."""
    if examples is None:
        return None
    if isinstance(examples, str) or not examples:
        raise ValueError(f"{name} must hold at least one labelled example (or be None)")
    for i, e in enumerate(examples):
        try:
            p = example_field(e, "prompt")
        except ValueError:
            raise ValueError(f"{name}[{i}] has no 'prompt'") from None
        if not isinstance(p, str) or not p.strip():
            raise ValueError(f"{name}[{i}] needs a non-empty string 'prompt'")
        if name == "pool" and _field_or_none(e, "op") is None:
            raise ValueError(f"pool[{i}] has no 'op' (its slice: an operation count or difficulty bin)")
    if callable(judge):
        return judge
    if judge is not None and not isinstance(judge, str):
        raise ValueError(f"judge must be a callable (example, text) -> bool or a scorer name, got {judge!r}")
    for i, e in enumerate(examples):
        if _field_or_none(e, "answer") is None:
            raise ValueError(f"{name}[{i}] has no 'answer' for the scorer to compare with (or pass a judge)")
    return answer_judge(judge or defaults.SCORER)


def _field_or_none(example: Any, key: str) -> Any:
    try:
        return example_field(example, key)
    except ValueError:
        return None


def _check_prompts(prompts: Sequence[Any]) -> list[str]:
    """The prompt texts of ``prompts`` (strings, or examples with a ``prompt``), all non-empty."""
    if isinstance(prompts, str) or not prompts:
        raise ValueError("prompts must be a non-empty list of prompt strings")
    try:
        texts = [p if isinstance(p, str) else example_field(p, "prompt") for p in prompts]
    except ValueError:
        texts = []
    if len(texts) != len(prompts) or not all(isinstance(p, str) and p.strip() for p in texts):
        raise ValueError("prompts must hold non-empty strings only (or examples with a non-empty 'prompt')")
    return texts


def _check_seeds(seeds_adapters: Sequence[str | Path]) -> list[str]:
    if isinstance(seeds_adapters, (str, Path)):
        raise ValueError("seeds_adapters must be a list of adapter directories, not one path")
    seeds = [str(s) for s in seeds_adapters]
    for s in seeds:
        if not (Path(s) / "adapter_config.json").is_file():
            raise ValueError(f"seeds_adapters: {s!r} is not an adapter directory (no adapter_config.json)")
    return seeds


def _check_fields(fields: Collection[str], given: dict[str, bool], config: LabelFreeConfig) -> set[str]:
    if isinstance(fields, str) or not isinstance(fields, Collection):
        raise ValueError(f"fields must be a collection of input names ({', '.join(INPUT_NAMES)}), got {fields!r}")
    fields = set(fields)
    unknown = sorted(fields - set(INPUT_NAMES))
    if unknown:
        raise ValueError(f"fields: unknown inputs {unknown} (known: {', '.join(INPUT_NAMES)})")
    for sample in ("source", "pool"):
        wanting = sorted(f for f in fields if sample in INPUT_REQUIRES[f])
        if wanting and not given[sample]:
            raise ValueError(f"fields {wanting} need a labelled {sample}")
    if fields & {"source_draws", "target_draws"} and config.sigma is None:
        raise ValueError("fields source_draws and target_draws need config.sigma (the posterior's scale)")
    return fields


def _draws(post: Any, tok: Any, items: dict[str, Sequence[Any]], point: dict, judge: Judge | None, gen: dict) -> dict:
    """``post``'s answers on the source (draws 0 .. k·n_S − 1, judged) and on the prompts (the
    draws after them: no posterior sample is shared); every draw is checked against the point
    model's generation (``point``) and decoded on only where it departs. ``items`` holds the
    ``prompts``, and the ``source`` when its draws are wanted; ``gen["draws"]`` is k."""
    gen = dict(gen)
    k = gen.pop("draws")
    got: dict[str, Any] = {}
    source = items.get("source")
    if source is not None:
        on_src = collect_draws(
            post, tok, source, draws=k, judge=judge, reference=point["source"].tokens, confidence=False, **gen
        )
        got["source_draws"] = PosteriorDraws(
            [g.answers for g in on_src], [g.correct for g in on_src], name="source_draws"
        )
    first = k * len(source) if source is not None else 0
    on_test = collect_draws(
        post,
        tok,
        items["prompts"],
        draws=k,
        first_draw=first,
        reference=point["target"].tokens,
        confidence=False,
        **gen,
    )
    got["target_draws"] = PosteriorDraws([g.answers for g in on_test], name="target_draws")
    return got


def _generation(extract: Extractor | None, cfg: LabelFreeConfig) -> dict[str, Any]:
    """How every answer is generated and read: the extractor and the config's evaluation settings."""
    return {"extract": extract, "max_new_tokens": cfg.evaluation.max_new_tokens, "batch_size": cfg.evaluation.batch_size}


def collect_label_free_inputs(
    model: torch.nn.Module,
    tok: Any,
    prompts: Sequence[Any],
    *,
    fields: Collection[str],
    source: Sequence[Any] | None = None,
    pool: Sequence[Any] | None = None,
    judge: Judge | None = None,
    extract: Extractor | None = None,
    config: LabelFreeConfig | None = None,
    test_tokens: Sequence[Sequence[int]] | None = None,
) -> LabelFreeInputs:
    """The inputs ``fields`` (names of :class:`LabelFreeInputs`; :func:`inputs_needed` gives the
    ones a list of estimators reads) of the adapter ``model`` on the test ``prompts`` (strings or
    examples with a ``prompt``): its greedy answers and confidences on the prompts, on the
    labelled ``source`` examples and on the labelled ``pool`` (examples of every difficulty, each
    with its slice ``op``), judged by ``judge``; ``config.draws`` posterior draws per item
    (N(model, σ²I), seeded by ``config.seed``); the TV proxy between the source and the prompts.
    ``seed_answers`` holds the point model's answers only (:func:`estimate_test_risk` adds the
    other seeds'). ``test_tokens``: the point model's greedy tokens on the prompts, when already
    decoded."""
    cfg = config if config is not None else LabelFreeConfig()
    fields = _check_fields(fields, {"source": source is not None, "pool": pool is not None}, cfg)
    texts = _check_prompts(prompts)
    gen = _generation(extract, cfg)
    got: dict[str, Any] = {}
    point: dict[str, GeneratedAnswers] = {}
    if fields & {"target_conf", "target_answers", "target_answer_conf", "seed_answers", "target_draws"}:
        point["target"] = t = answers_of_tokens(model, tok, prompts, test_tokens, **gen)
        got["target_conf"], got["target_answers"], got["target_answer_conf"] = t.confidences, t.answers, t.answer_confidences
    if fields & {"source_conf", "source_correct", "source_answers", "source_answer_conf", "source_draws"}:
        point["source"] = s = collect_answers(model, tok, source, judge=judge, **gen)
        got["source_conf"], got["source_correct"], got["source_answers"] = s.confidences, s.correct, s.answers
        got["source_answer_conf"] = s.answer_confidences
    src_prompts = [example_field(e, "prompt") for e in source] if source is not None else None
    if "target_prompts" in fields:
        got["target_prompts"] = texts
    if "source_prompts" in fields:
        got["source_prompts"] = src_prompts
    if "source_slices" in fields:
        got["source_slices"] = [example_field(e, "op") for e in source]
    if "tv" in fields:
        term = classifier_tv_term(src_prompts, texts, cfg.tv, cfg.delta / 2, cfg.seed)
        got["tv"] = (term.estimate, term.lower if term.lower is not None else 0.0)
    if fields & {"source_draws", "target_draws"}:
        post = GaussianPosterior(model, cfg.sigma, cfg.space, seed=cfg.seed)
        items = {"prompts": prompts} | ({"source": source} if "source_draws" in fields else {})
        got |= _draws(post, tok, items, point, judge, gen | {"draws": cfg.draws})
    if fields & {"pool_correct", "pool_prompts", "pool_slices"}:
        got["pool_correct"] = collect_answers(model, tok, pool, judge=judge, confidence=False, **gen).correct
        got["pool_prompts"] = [example_field(e, "prompt") for e in pool]
        got["pool_slices"] = [example_field(e, "op") for e in pool]
    if "seed_answers" in fields:
        got["seed_answers"] = [point["target"].answers]
    return LabelFreeInputs(**got)


def estimate_test_risk(
    base: str | Path,
    adapter: str | Path,
    prompts: Sequence[str],
    *,
    source: Sequence[Any] | None = None,
    pool: Sequence[Any] | None = None,
    judge: Judge | str | None = None,
    extract: Extractor | None = None,
    seeds_adapters: Sequence[str | Path] = (),
    config: LabelFreeConfig | None = None,
    **options: Any,
) -> pd.DataFrame:
    """Label-free estimates of the adapter's test risk (answer error in [0, 1]) on ``prompts``.

    Args:
        base, adapter: the base model directory and a LoRA adapter directory trained on it.
        prompts: the test prompts (no answers are read).
        source: labelled training-distribution examples the adapter did not train on (``prompt``
            and ``answer``, or whatever ``judge`` reads); needed by every estimator but
            "half_disagreement", "gde_posterior", "seed_disagreement", "iw" and "iw_slices".
        pool: labelled held-out examples of every difficulty (``prompt``, ``answer`` and ``op``, the
            slice: an operation count or difficulty bin), for "iw" and "iw_slices", which reweight
            the adapter's errors on the pool to the test prompts.
        judge: a :data:`~pacbayes_sft.data.scorers.Judge` or scorer name (default
            ``defaults.SCORER`` against each source example's ``answer``); ``extract`` reads the
            final answer the way the judge does (default: the final_answer scorer's extractor).
        seeds_adapters: adapters trained like ``adapter`` with other seeds ("seed_disagreement").
        config: a :class:`~pacbayes_sft.certify.label_free_config.LabelFreeConfig`: the
            estimators (default every registered one the arguments allow), the posterior
            N(adapter, σ²I) (absolute ``sigma``, ``space``, ``draws`` per item; σ > 0 for the
            disagreement estimators), ``delta`` (each row's interval is at level 1 − δ, rows not
            simultaneous), ``beta``, ``q`` (the density-ratio moment "da_2016" assumes),
            ``n_boot``, ``seed``, ``tv`` and ``evaluation``.
        options: any of the config's fields by keyword, replacing the config's value
            (``estimate_test_risk(base, adapter, prompts, source=..., sigma=0.01)``).

    Returns a table with the columns :data:`COLUMNS`, one row per estimator: ``risk_of`` says
    whose risk it is (the adapter, the posterior, or one seed's adapter), ``certified`` whether the
    interval holds without an unchecked assumption, ``assumptions`` what it rests on.
    """
    cfg = with_options(config, options)
    _check_prompts(prompts)
    judge_fn = _check_labelled(source, judge)
    judge_fn = _check_labelled(pool, judge, "pool") or judge_fn
    seeds = _check_seeds(seeds_adapters)
    given = {"source": source is not None, "pool": pool is not None, "sigma": cfg.has_draws, "seeds_adapters": bool(seeds)}
    names = _needed(cfg.estimators, given)
    model, tok = load_checked(base, adapter)
    inputs = collect_label_free_inputs(
        model, tok, prompts, fields=inputs_needed(names), source=source, pool=pool, judge=judge_fn, extract=extract,
        config=cfg,
    )  # fmt: skip
    if inputs.seed_answers is not None:  # the other seeds' answers, each model loaded in turn
        more = [collect_answers(*load_checked(base, a, tok), prompts, **_generation(extract, cfg)).answers for a in seeds]
        inputs = replace(inputs, seed_answers=list(inputs.seed_answers) + more)
    rows = label_free_estimates(inputs, cfg, names=names)
    table = [
        {
            "estimator": r.name,
            "risk_of": cfg.describe_risk(ESTIMATORS[r.name].risk_of, 1 + len(seeds)),
            "estimate": r.estimate,
            "lower": r.lower,
            "upper": r.upper,
            "level": r.level,
            "certified": r.certified,
            "assumptions": r.assumptions,
            "n_source": int(r.details.get("n_source", 0)),
            "n_pool": int(r.details.get("n_pool", 0)),
            "n_target": int(r.details.get("n_target", len(prompts))),
        }
        for r in rows
    ]
    return pd.DataFrame(table, columns=list(COLUMNS))

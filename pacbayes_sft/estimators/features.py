"""Feature steps for two-sample tests on texts: TF-IDF, structure features, LM hidden states.

Any feature map φ can only lose information: TV(φ#P, φ#Q) ≤ TV(P, Q).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import defaults
from .tv_reference import exact_gaussian_tv  # noqa: F401  (kept importable from here)


def _is_text_list(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) > 0 and all(isinstance(t, str) for t in x)


def structure_features(texts: Sequence[str]) -> np.ndarray:
    """Simple structure: words, characters, statements ('.'-separated), '=' signs, distinct words."""
    rows = []
    for t in texts:
        words = t.split()
        rows.append([len(words), len(t), t.count(" ."), t.count("="), len(set(words))])
    return np.asarray(rows, dtype=float)


class HiddenStateFeatures:
    """Mean-pooled hidden states of a causal LM (batched, no grad): φ(x) ∈ R^hidden.

    Args:
        model: a transformers causal LM (the base model by default in the toolkit).
        tokenizer: its tokenizer.
        layer: which hidden layer (−1 = last).
        batch_size: texts per forward pass.
    """

    def __init__(self, model, tokenizer, *, layer: int = -1, batch_size: int = defaults.BATCH_SIZE) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.layer = layer
        self.batch_size = batch_size

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        device = next(self.model.parameters()).device
        self.model.eval()
        with torch.no_grad():
            for s in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(
                    list(texts[s : s + self.batch_size]), return_tensors="pt", padding=True, add_special_tokens=False
                )
                ids, att = enc["input_ids"].to(device), enc["attention_mask"].to(device)
                hs = self.model(input_ids=ids, attention_mask=att, output_hidden_states=True).hidden_states[self.layer]
                m = att.unsqueeze(-1).to(hs.dtype)
                out.append(((hs * m).sum(1) / m.sum(1).clamp_min(1)).float().cpu().numpy())
        return np.concatenate(out, axis=0)


def _check_numeric(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float) if not hasattr(x, "toarray") else x
    if hasattr(arr, "toarray"):
        return arr
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_samples × n_features), got {arr.ndim} dimensions")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    return arr


def as_feature_matrix(p_samples: Any, q_samples: Any, *, features: str | Callable | None = None):
    """Turn two samples (arrays or texts) into feature matrices with the same columns."""
    if _is_text_list(p_samples) or _is_text_list(q_samples):
        if not (_is_text_list(p_samples) and _is_text_list(q_samples)):
            raise ValueError("p_samples and q_samples must both be texts or both be numeric arrays")
        feat = features or "tfidf"
        if feat == "tfidf":
            # Fitted on both samples: fine for looking at features, but a classifier scored on
            # held-out folds of these rows has seen their texts (classifier_tv fits it per fold).
            mat = tfidf_vectorizer().fit_transform(list(p_samples) + list(q_samples))
            return mat[: len(p_samples)], mat[len(p_samples) :]
        if feat == "structure":
            return structure_features(p_samples), structure_features(q_samples)
        if callable(feat):
            return _check_numeric(feat(list(p_samples)), "features(p_samples)"), _check_numeric(
                feat(list(q_samples)), "features(q_samples)"
            )
        raise ValueError(f"features must be 'auto', 'tfidf', 'structure' or a callable, got {features!r}")
    if isinstance(p_samples, str) or isinstance(q_samples, str):
        raise ValueError("p_samples and q_samples must be sequences of texts or numeric arrays, not a single string")
    xp = _check_numeric(p_samples, "p_samples")
    xq = _check_numeric(q_samples, "q_samples")
    if xp.shape[1] != xq.shape[1]:
        raise ValueError(
            f"p_samples and q_samples must have the same number of features, got {xp.shape[1]} and {xq.shape[1]}"
        )
    return xp, xq


AUTO_FEATURES = ("structure", "tfidf", "structure+tfidf")


def tfidf_vectorizer(*, pre_analyzed: bool = False):
    """An unfitted TF-IDF step (word uni- and bigrams, min_df = 2, sublinear tf). ``pre_analyzed``:
    it reads each document's terms from :class:`AnalyzedText` instead of tokenizing it (the
    same terms, so the same features)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if pre_analyzed:
        return TfidfVectorizer(analyzer=_terms, min_df=2, sublinear_tf=True)
    return TfidfVectorizer(token_pattern=r"\S+", ngram_range=(1, 2), min_df=2, sublinear_tf=True)


class AnalyzedText(str):
    """A text that carries its TF-IDF terms (``terms``: what :func:`tfidf_vectorizer`'s analyzer
    makes of it), computed once: a vectorizer refitted in every fold of a cross-fit then only
    counts them. It is still the text, for steps that read the text (structure counts)."""

    terms: list[str]


def _terms(doc: str) -> list[str]:
    """The terms of an :class:`AnalyzedText`; a plain text is analysed here."""
    terms = getattr(doc, "terms", None)
    return terms if terms is not None else tfidf_vectorizer().build_analyzer()(doc)


def analyzed_texts(texts: Sequence[str]) -> np.ndarray:
    """``texts`` as :class:`AnalyzedText` in an object array (rows for a :class:`FeatureSet`)."""
    analyze = tfidf_vectorizer().build_analyzer()
    out = np.empty(len(texts), dtype=object)
    for i, t in enumerate(texts):
        doc = AnalyzedText(t)
        doc.terms = analyze(t)
        out[i] = doc
    return out


def _structure_step():
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(structure_features)


def _union_step():
    """Standardised structure counts next to TF-IDF; both fitted when the step is fitted."""
    from sklearn.pipeline import FeatureUnion, make_pipeline
    from sklearn.preprocessing import StandardScaler

    return FeatureUnion(
        [
            ("structure", make_pipeline(_structure_step(), StandardScaler())),
            ("tfidf", tfidf_vectorizer(pre_analyzed=True)),
        ]
    )


@dataclass
class FeatureSet:
    """One candidate feature set for the classifier: ``data`` (n rows: P first, then Q) and an
    unfitted sklearn ``step`` that maps rows of ``data`` to features, or None when ``data`` is
    already the feature matrix. A step with fitted state (TF-IDF vocabulary and idf, the scaling
    of structure counts) is fitted inside each fold on that fold's training rows only, so
    held-out rows never shape their own features. Fixed maps (structure counts, a callable such
    as :class:`HiddenStateFeatures`) learn nothing from the sample and are applied once."""

    data: Any
    step: Any = None
    sparse: bool = False


def text_feature_sets(p_texts: Sequence[str], q_texts: Sequence[str], features: Any) -> dict[str, FeatureSet]:
    """Candidate feature sets (P rows first, then Q) by name, for the classifier's inner selection.

    ``features``: "auto" (structure, TF-IDF and their union), one name ("tfidf", "structure",
    "structure+tfidf"), a callable (e.g. :class:`HiddenStateFeatures`), or a list of these.
    TF-IDF and the union are returned as texts with an unfitted step (see :class:`FeatureSet`),
    each text tokenized once (:func:`analyzed_texts`) for the vectorizers of every fold.
    """
    texts = list(p_texts) + list(q_texts)
    raw = None  # the texts with their TF-IDF terms, made once for every fold's vectorizer
    wanted = (
        list(AUTO_FEATURES)
        if features == "auto"
        else list(features)
        if isinstance(features, (list, tuple))
        else [features]
    )
    out: dict[str, FeatureSet] = {}
    for k, f in enumerate(wanted):
        if callable(f):
            name = getattr(f, "name", type(f).__name__ if not hasattr(f, "__name__") else f.__name__) + f"#{k}"
            out[name] = FeatureSet(_check_numeric(f(texts), "features(texts)"))
        elif f == "structure":
            out[f] = FeatureSet(structure_features(texts))  # per-text counts: nothing to fit
        elif f in ("tfidf", "structure+tfidf"):
            raw = analyzed_texts(texts) if raw is None else raw
            step = tfidf_vectorizer(pre_analyzed=True) if f == "tfidf" else _union_step()
            out[f] = FeatureSet(raw, step, sparse=True)
        else:
            raise ValueError(
                f"features must be 'auto', 'tfidf', 'structure', 'structure+tfidf', a callable or a list, got {f!r}"
            )
    return out

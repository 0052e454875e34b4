"""Forecast the best difficulty bucket at a budget where no cell was trained, from pilot budgets.

Each bucket b's terms are extrapolated from the pilot cells across n:

    R̂_b(n)  = exp(α_b) · n^{β_b}        (MC training risk; log-log least squares)
    KL_b(n) = exp(γ_b) · n^{κ_b}        (KL in nats at the chosen σ; log-log least squares)
    TV_b    = its estimate at the largest pilot budget
              (the TV between a bucket and the test set does not depend on n, but the classifier
              proxy is a lower estimate that reaches it only with enough samples per side)

and combined in the two-gap form with weights fitted on the pilots (non-negative least squares
of the measured test risk minus R̂ on √(KL/n) and TV, as the calibrated predictor does):

    predicted test risk_b(N) = R̂_b(N) + a·√(KL_b(N)/N) + c·TV_b

The interval is the prediction ± z·s, s the residual standard deviation of the two-gap fit on the
pilots (a normal approximation; it ignores the extrapolation error of the power laws), its lower
end clipped at 0. The
predicted best bucket is the one with the smallest predicted risk.

Held-out scoring (:func:`held_out_predictions`, :func:`score_predictors`) sets the forecast beside
baselines that use no bound term, among them :func:`learning_curve`: each bucket's measured test
risk on the pilots extrapolated along a line in ln n. It tells "the bound's terms carry no signal"
apart from "the pilots carry none".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .table import bucket_order, cell_table, collect, complete_budgets
from .uncertainty import spearman

TERMS = ("mc_mean_risk", "kl", "tv", "test_risk")


def _power_law(n: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(log-intercept, exponent) of y ≈ e^α n^β by least squares on logs (y floored at 1e-6)."""
    if len(np.unique(n)) < 2:
        return float(np.log(max(float(np.mean(y)), 1e-6))), 0.0
    beta, alpha = np.polyfit(np.log(n), np.log(np.maximum(y, 1e-6)), 1)
    return float(alpha), float(beta)


@dataclass
class Forecaster:
    """Fitted on the pilot cells of one (base, objective): per-bucket power laws and two-gap weights."""

    laws: dict[str, dict[str, tuple[float, float]]]
    tv: dict[str, float]
    weights: tuple[float, float]
    residual_sd: float
    pilot_budgets: list[int]

    def predict(self, budget: int, z: float = 1.96) -> pd.DataFrame:
        """Predicted test risk per bucket at ``budget``, with an interval, and the predicted best."""
        if not (isinstance(budget, (int, np.integer)) and budget >= 1):
            raise ValueError(f"budget must be an integer >= 1, got {budget!r}")
        rows = []
        for b, law in self.laws.items():
            r = min(1.0, float(np.exp(law["mc_mean_risk"][0]) * budget ** law["mc_mean_risk"][1]))
            kl = float(np.exp(law["kl"][0]) * budget ** law["kl"][1])
            pred = r + self.weights[0] * np.sqrt(kl / budget) + self.weights[1] * self.tv[b]
            rows.append({"bucket": b, "train_risk": r, "kl": kl, "tv": self.tv[b], "predicted_risk": pred})
        out = pd.DataFrame(rows)
        out["lower"] = (out["predicted_risk"] - z * self.residual_sd).clip(lower=0.0)  # a risk is >= 0
        out["upper"] = out["predicted_risk"] + z * self.residual_sd
        out["best"] = out["predicted_risk"] == out["predicted_risk"].min()
        return out


def fit_forecaster(cells: pd.DataFrame) -> Forecaster:
    """Fit on pilot cells of one (base, objective): columns bucket, n, mc_mean_risk, kl, tv, test_risk
    (seeds are averaged). Needs at least two budgets."""
    from scipy.optimize import nnls

    missing = [c for c in ("bucket", "n", *TERMS) if c not in cells]
    if missing:
        raise ValueError(f"cells lacks columns {missing}")
    mean = cells.groupby(["bucket", "n"])[list(TERMS)].mean().reset_index()
    budgets = sorted(int(n) for n in mean["n"].unique())
    if len(budgets) < 2:
        raise ValueError(f"forecasting needs pilot cells at two or more budgets, got {budgets}")
    laws, tv = {}, {}
    for b, g in mean.groupby("bucket"):
        n = g["n"].to_numpy(dtype=float)
        laws[str(b)] = {t: _power_law(n, g[t].to_numpy(dtype=float)) for t in ("mc_mean_risk", "kl")}
        tv[str(b)] = float(g.loc[g["n"] == g["n"].max(), "tv"].mean())
    A = np.column_stack([np.sqrt(mean["kl"] / mean["n"]), mean["tv"]])
    y = (mean["test_risk"] - mean["mc_mean_risk"]).to_numpy()
    coef, _ = nnls(A, y)
    resid = y - A @ coef
    sd = float(np.sqrt(np.sum(resid**2) / max(1, len(y) - 2)))
    return Forecaster(laws, tv, (float(coef[0]), float(coef[1])), sd, budgets)


def forecast_table(ct: pd.DataFrame, budget: int, *, pilots: list[int] | None = None) -> pd.DataFrame:
    """Per (base, objective, bucket): the forecast at ``budget`` from the pilot budgets (default:
    every budget below ``budget``). A (base, objective) with fewer than two pilot budgets cannot
    be forecast: it is left out and named in ``.attrs["skipped"]``; if every one is, ValueError.
    ``.attrs["weights"]`` holds each forecast's fitted two-gap weights (a, c)."""
    rows, skipped, weights = [], [], {}
    for (base, obj), g in ct.groupby(["base", "objective"]):
        use = g[g["n"].isin(pilots)] if pilots is not None else g[g["n"] < budget]
        have = sorted(int(n) for n in use["n"].unique())
        if len(have) < 2:
            skipped.append(f"{base}/{obj} (pilot budgets {have})")
            continue
        f = fit_forecaster(use)
        rows.append(f.predict(budget).assign(base=base, objective=obj, budget=budget))
        weights[(base, obj)] = f.weights
    if not rows:
        raise ValueError(
            f"forecasting needs pilot cells at two or more budgets below {budget}; none has them: {', '.join(skipped)}"
        )
    out = pd.concat(rows, ignore_index=True)
    out.attrs["skipped"], out.attrs["weights"] = skipped, weights  # weights: (a, c) per (base, objective)
    return out


def forecast(run_dir: str, budget: int) -> pd.DataFrame:
    """Forecast the best bucket of a finished sweep at an untrained ``budget`` (all its budgets
    below ``budget`` whose every bucket has finished are the pilots)."""
    df, cfg = collect(run_dir)
    ct, _ = complete_budgets(cell_table(df, cfg.bound.loss), bucket_order(cfg))
    if not (ct["n"] < budget).any():
        raise ValueError(f"budget {budget} is not above any pilot budget of {run_dir!r} ({sorted(ct['n'].unique())})")
    return forecast_table(ct, budget)


def learning_curve(means: pd.Series, pilots: list[int], budget: int) -> pd.Series:
    """Each bucket's measured test risk extrapolated to ``budget`` along a line in log n,

        risk_b(n) ≈ u_b + v_b · ln n        (least squares over the pilot budgets' seed means),

    a bound-free baseline: what the pilots' own learning curves say, with no PAC-Bayes term.
    ``means`` is indexed by (n, bucket). The values are for ranking, not clipped to [0, 1]."""
    x = np.log(np.asarray(pilots, dtype=float))
    table = means.unstack("bucket").loc[pilots]
    fits = {b: np.polyfit(x, table[b].to_numpy(dtype=float), 1) for b in table.columns}
    return pd.Series({b: float(np.polyval(c, np.log(budget))) for b, c in fits.items()})


def held_out_predictions(ct: pd.DataFrame, order: list[str], base_loss: dict | None = None) -> pd.DataFrame:
    """For every (base, objective, n) with at least two smaller budgets: the best bucket by the
    forecast fitted on the smaller budgets only, and by each baseline — each bucket's learning
    curve extrapolated in log n (:func:`learning_curve`), always-easiest, always-middle,
    always-hardest, persistence (the observed best at the largest pilot budget), and the bucket the
    base model finds easiest (``base_loss``: (base, bucket) → base test loss)."""
    rows = []
    for (base, obj), g in ct.groupby(["base", "objective"]):
        means = g.groupby(["n", "bucket"])["test_risk"].mean()
        for n in sorted(g["n"].unique()):
            pilots = sorted(int(x) for x in g["n"].unique() if x < n)
            if len(pilots) < 2:
                continue
            pred = fit_forecaster(g[g["n"].isin(pilots)]).predict(int(n))
            measured = means.loc[n].reindex(pred["bucket"]).to_numpy()
            row = {"base": base, "objective": obj, "n": int(n), "forecast": pred.loc[pred["best"], "bucket"].iloc[0]}
            row |= {"forecast_spearman": spearman(pred["predicted_risk"], measured)}
            curve = learning_curve(means, pilots, int(n)).reindex(pred["bucket"])
            row |= {"learning_curve": curve.idxmin(), "learning_curve_spearman": spearman(curve, measured)}
            row |= {"easiest": order[0], "middle": order[len(order) // 2], "hardest": order[-1]}
            row["persistence"] = means.loc[pilots[-1]].idxmin()
            if base_loss:
                row["base_easiest"] = min(order, key=lambda b, base=base: base_loss.get((base, b), np.inf))
            rows.append(row)
    return pd.DataFrame(rows)


PREDICTORS = (
    "forecast",
    "learning_curve",
    "raw_bound",
    "calibrated",
    "persistence",
    "easiest",
    "middle",
    "hardest",
    "base_easiest",
)


def score_predictors(held: pd.DataFrame, opt: pd.DataFrame) -> pd.DataFrame:
    """Exact agreement of each predictor with the observed optimum on the held-out budgets: over
    all of them, over those whose optimum the bootstrap determines, and over those where the
    observed optimum changed from the largest pilot budget's (where persistence must be wrong, so
    only a predictor that follows the change can score). The rows of the predictors that give a
    risk per bucket (forecast, learning curve) also give their mean Spearman(predicted risk,
    measured risk) across the buckets of a held-out budget."""
    m = held_cases(held, opt)
    if m.empty:
        return pd.DataFrame()
    det, changed = m["determined"].astype(bool), m["persistence"] != m["observed"]
    rows = []
    for p in PREDICTORS:
        if p not in m:
            continue
        hit = m[p] == m["observed"]
        rows.append(
            {
                "predictor": p,
                "budgets": len(m),
                "exact": float(hit.mean()),
                "determined_budgets": int(det.sum()),
                "exact_on_determined": float(hit[det].mean()) if det.any() else float("nan"),
                "changed_budgets": int(changed.sum()),
                "exact_on_changed": float(hit[changed].mean()) if changed.any() else float("nan"),
                "mean_spearman": float(m[f"{p}_spearman"].mean()) if f"{p}_spearman" in m else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def held_cases(held: pd.DataFrame, opt: pd.DataFrame) -> pd.DataFrame:
    """One row per held-out (base, objective, n): every predictor's bucket beside the observed
    optimum and whether the bootstrap determines it."""
    if held.empty:
        return pd.DataFrame()
    cols = [c for c in ("observed", "raw_bound", "calibrated", "determined", "p_best") if c in opt]
    m = held.merge(opt[["base", "objective", "n", *cols]], on=["base", "objective", "n"])
    if "determined" not in m:
        m["determined"] = False
    return m

"""The report's pages: ``report.md`` and a self-contained ``report.html`` (CSS inline, images
embedded as data URIs, nothing fetched), from the tables and figures of :mod:`pacbayes_sft.report`."""

from __future__ import annotations

import base64
import html
import math
import re
from pathlib import Path

import pandas as pd

from .decisions import NOTE as DECISIONS_NOTE
from .decisions import decision_counts, decision_table, shown_decisions
from .optimum import RACE_COLS, with_races

OPT_COLS = ["base", "objective", "n", "observed", "raw_bound", "calibrated", "seed_bests"]
BOOT_COLS = ["p_best", "indistinguishable", "determined", "items_needed"]
ITEMS_NEEDED_LABEL = "items_needed (80% power)"

HOW_TO_READ = [
    (
        "E_π R_test ≤ E_π R̂_S + G_gen + G_ext + ε",
        "the two-gap bound (Proposition 4.1): the stochastic model's test "
        "risk is at most its training risk plus a generalisation gap and an extrapolation gap.",
    ),
    (
        "E_π R̂_S, U_MC",
        "training risk of the Gaussian posterior π (a random model around the fine-tuned weights), "
        "estimated by Monte Carlo; U_MC is its certified upper bound, kl⁻¹(R̂_MC, ln(2/δ_MC)/m).",
    ),
    (
        "KL(π ‖ π_pre)",
        "divergence in nats between the posterior N(θ_ft, σ²I) and the prior N(θ_pre, σ²I) at the "
        "pretrained weights: ‖θ_ft − θ_pre‖² / 2σ² over the adapted weights.",
    ),
    ("G_gen", "kl⁻¹(U_MC, (KL + ln(2√n/δ))/n) − U_MC: the Seeger PAC-Bayes gap; it grows with KL and shrinks with n."),
    (
        "TV",
        "total variation between the training and test distributions; here a classifier two-sample proxy "
        "(2·balanced accuracy − 1 on held-out folds, clipped at 0): unclipped, a lower bound on the true TV in "
        "expectation; clipped, biased up near TV = 0.",
    ),
    ("G_ext", "(b − a)·TV for a loss in [a, b]: how much the test distribution can differ from the training one."),
    (
        "E_π R_test",
        "the measured test risk of the stochastic model (one posterior draw per test example, with a "
        "95% interval): the quantity the bound is about; the point model's test risk is shown beside it.",
    ),
    (
        "δ",
        "the failure probability, split in a ledger between the MC bounds, the TV interval and the PAC-Bayes "
        "bound over the σ grid (δ/K per grid point).",
    ),
    (
        "observed / raw bound / calibrated",
        "the bucket with the lowest measured test risk; the bucket with the lowest "
        "two-gap total; the bucket with the lowest fitted R̂ + a·√(KL/n) + b·TV (a, b fitted on the other budgets).",
    ),
    (
        f"p_best / indistinguishable / determined / {ITEMS_NEEDED_LABEL}",
        "from a paired bootstrap over test items and seeds: how often each bucket is best; the buckets "
        "whose gap to the best is not significant at 95%; whether that set is the best alone; and the "
        "test items at which a paired test at 95% would detect the runner-up's gap to the best with 80% "
        "power, ((1.96 + 0.84) · sd / gap)² at the measured gap and per-item spread (a lower estimate of "
        "what determining the optimum takes, against the items used).",
    ),
]
RACE_TERM = (
    "race",
    "from the decide stage or `pacbayes-sft race` on fresh test items (blank where no race ran), at its level (95% "
    "unless set), certified: the best bucket; 'tie: …', any of these is within ε of the best; or 'open: …', the "
    "item cap came first and the best is among them. In brackets: ε, the distinct test items the race used (the "
    "sweep's own included), the training seeds averaged per item, and its compute seconds.",
)


TWO_STAGE_TERMS = {
    "E_π R̂_S, U_MC": "training risk of the posterior π = N(Q, diag s²) (a random model around the cell's model Q), "
    "on the half of S the prior never saw, estimated by Monte Carlo; U_MC is its certified upper bound, "
    "kl⁻¹(R̂_MC, ln(2/δ_MC)/m).",
    "KL(π ‖ π_pre)": "divergence in nats between the posterior N(Q, diag s_m²) over the LoRA factors and the prior "
    "N(P, σ_p²I), P an SFT adapter on the first half of S and σ_p chosen on that half (closed form).",
    "δ": "the failure probability, split in a ledger between the MC bound, the TV interval and the PAC-Bayes bound "
    "(one prior: σ_p was chosen on the prior's half, so no grid is paid for).",
}
CERTIFIED_TWO_STAGE = (
    "Certified (given i.i.d. training data; the prior is an adapter trained on the first half of S, its scale "
    "chosen on that half): the Monte-Carlo upper bound on the stochastic training risk on the other half and G_gen "
    "(Seeger bound, δ in a ledger). The bound is about the stochastic model N(Q, diag s²), a draw around the cell's "
    "model Q; Q, the posterior mean, is the reported model, and how close the two test risks are is measured, not certified."
)


PICKS_TERM = (
    "label_free_picks",
    "the bucket each label-free estimator would pick: the one with the smallest estimated test error, read from "
    "the test prompts without their answers (iw_slices / iw: the cell's errors on a labelled pool of every slice, "
    "reweighted to the test prompts; doc, atc: from confidences). Estimates, not certified; compare them with the "
    "measured best and its 95% set.",
)


def _how_to_read(opt: pd.DataFrame, prior: str = "pretrained") -> list[tuple[str, str]]:
    terms = HOW_TO_READ if prior not in ("data", "two_stage") else [(k, TWO_STAGE_TERMS.get(k, v)) for k, v in HOW_TO_READ]
    terms = [*terms, RACE_TERM] if "race" in opt else terms
    return [*terms, PICKS_TERM] if "label_free_picks" in opt else terms


def certified_text(prior: str = "pretrained") -> str:
    """What is certified, for the sweep's prior (``two_stage``, formerly ``data``: the two-stage certificate)."""
    return CERTIFIED_TWO_STAGE if prior in ("data", "two_stage") else CERTIFIED


CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; max-width: 1180px; margin: 0 auto;
       padding: 1.5rem; color: #1d2330; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.25rem; margin-top: 2rem;
       border-bottom: 1px solid #dde1e8; padding-bottom: .2rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .92rem; display: block; max-width: 100%;
        overflow-x: auto; }
th, td { border: 1px solid #dde1e8; padding: .3rem .5rem; text-align: right; }
th { min-width: 3rem; }  /* headers break after underscores, lists after commas: no table scrolls sideways */
th { background: #f3f5f8; } td.t, th.t { text-align: left; }  /* words left, numbers right */
img { max-width: 100%; height: auto; display: block; margin: .4rem 0 1.2rem; }
.legend { display: flex; gap: 1rem; flex-wrap: wrap; margin: .8rem 0; }
.tag { padding: .35rem .7rem; border-radius: 6px; font-size: .9rem; }
.certified { background: #e3f4e8; border: 1px solid #8fcf9f; }
.estimated { background: #fdf0dc; border: 1px solid #e8b866; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .35rem 1rem; }
dt { font-family: ui-monospace, monospace; font-weight: 600; } dd { margin: 0; }
.meta { color: #5a6272; font-size: .92rem; }
"""


def _fmt(v) -> str:
    if isinstance(v, float):
        return "undefined" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def summary_lines(summ: dict, n_budgets: int) -> list[str]:
    """The summary in words a first-time reader can take at face value, numbers rounded to what
    one sweep supports."""

    def agree(col: str) -> str:
        exact = round(summ[f"{col}_exact_agreement"] * n_budgets)
        within = round(summ[f"{col}_within_one"] * n_budgets)
        return f"picks the measured best bucket in {exact} of {n_budgets} budgets (within one bucket in {within})"

    det = summ.get("n_determined", 0)
    on_det = (
        f"; of the {det} budget(s) whose best bucket is decided at 95%, the bound picks it in "
        f"{_fmt(summ['raw_exact_agreement_determined'])} and the fitted predictor in "
        f"{_fmt(summ['calibrated_exact_agreement_determined'])}"
        if det
        else "; no budget's best bucket is decided at 95% (bootstrap over test items and seeds): more test items or seeds are needed"
    )
    lines = [
        f"the bound (smallest two-gap total) {agree('raw')}{on_det}",
        f"the fitted two-gap predictor (weights fitted on the other budgets) {agree('calibrated')}",
        f"rank correlation with the measured test risk over all cells: two-gap total "
        f"{_fmt(summ['spearman_total_vs_test_risk'])}, fitted predictor {_fmt(summ['spearman_calibrated_vs_test_risk'])} "
        "(1 = same order, 0 = unrelated)",
        f"does the measured best bucket move to harder data as n grows (per base and objective)? "
        f"{', '.join('yes' if m else 'no' for m in summ['observed_optimum_moves_harder_with_n']) or 'one budget only'}",
    ]
    if summ.get("n_raced"):
        lines.append(
            f"races on fresh test items (pacbayes-sft race): {summ['n_raced']} budget(s) raced, {summ['n_race_best']} "
            f"ended with a single best bucket and {summ['n_race_ties']} in an ε-tie (any listed bucket within ε of the "
            f"best), each at the race's level (certified on fresh items; counted apart from the bootstrap's "
            "'decided at 95%', which is not)"
        )
    if summ.get("n_race_decided"):
        lines.append(
            f"on the {summ['n_race_decided']} budget(s) a race decided, the bound's pick is the race's best bucket or in "
            f"its ε-tie in {summ.get('raw_bound_in_race_answer', 0)}, the fitted predictor's in "
            f"{summ.get('calibrated_in_race_answer', 0)}"
            + (f"; {summ['n_race_ties_of_all']} of those ties hold every bucket, where any pick is in the tie and "
               "the score says nothing" if summ.get("n_race_ties_of_all") else "")
        )
    vac, cells = summ.get("n_vacuous", 0), summ.get("n_cells", 0)
    if vac:
        lines.append(
            f"G_gen: the certified bound is vacuous (MC training risk + G_gen = 1) in {vac} of {cells} cells; "
            "there it says nothing, and G_gen = 1 - MC risk is not a small gap"
        )
    return lines


CERTIFIED = (
    "Certified (given i.i.d. training data and the pretrained weights as prior): the Monte-Carlo upper "
    "bound on the stochastic training risk and G_gen (Seeger bound, union over the σ grid, δ in a ledger)."
)
ESTIMATED = (
    "Estimated: G_ext uses a classifier two-sample TV proxy (held-out 2·BA − 1 clipped at 0; unclipped it is a "
    "lower bound on the true TV in expectation, clipped it is biased up near TV = 0). "
    "The two-gap totals are therefore estimates, not certified bounds. The calibrated predictor is a fitted model."
)


def _cols(opt: pd.DataFrame) -> list[str]:
    """The optimum table's columns; the range of the per-seed bests only when there are several seeds."""
    one_seed = "n_seeds" in opt and (opt["n_seeds"] <= 1).all()
    cols = [c for c in OPT_COLS if not (one_seed and c == "seed_bests")]
    # the decided answer (a race's) and the picks to compare with it first, before the bootstrap's detail
    first = [c for c in ["race", "label_free_picks"] if c in opt]
    cols = cols[:4] + first[:1] + cols[4:] + first[1:]
    return cols + [c for c in [*BOOT_COLS, *RACE_COLS] if c in opt and c not in first]


def _opt_table(opt: pd.DataFrame) -> pd.DataFrame:
    """The optimum table as shown: items_needed as a whole number ('inf' for an exact tie), labelled
    with its power; a group the races did not reach blank in their columns."""
    t = opt[_cols(opt)].copy()
    if "items_needed" in t:
        t["items_needed"] = [f"{v:,.0f}" if math.isfinite(v) else ("inf" if v > 0 else "–") for v in t["items_needed"]]
    if "race" in t:  # one cell per race: the answer, then what it rests on
        t["race"] = [
            "" if pd.isna(r[0]) else f"{r[0]} (ε {r[1]:g}; {r[2]:,.0f} items; {r[3]:.0f} seed(s); {r[4]:,.0f} s)"
            for r in opt[RACE_COLS].itertuples(index=False)
        ]
        t = t.drop(columns=[c for c in RACE_COLS[1:] if c in t])
    return t.rename(columns={"items_needed": ITEMS_NEEDED_LABEL})


PREDICTORS_NOTE = (
    "Each budget with two or more smaller budgets is held out: the forecast is fitted on the smaller "
    "budgets only; learning_curve extrapolates each bucket's measured test risk on them along a line in "
    "log n (no bound term); persistence is the observed best at the largest of them; easiest / middle / hardest "
    "always pick that bucket; base_easiest picks the bucket whose test ops the base model finds easiest. "
    "raw_bound and calibrated use the cells of the held-out budget itself. changed_budgets are the "
    "held-out budgets whose observed optimum differs from the largest pilot budget's (persistence is "
    "wrong there by construction); mean_spearman is the rank correlation between a predictor's predicted "
    "and measured risk across the buckets of a held-out budget, averaged over them. Every case is in "
    "held_out.csv; '–' marks a score with no budget to count."
)


def _dashed(table: pd.DataFrame, digits: int) -> pd.DataFrame:
    """``table`` rounded, a missing score (over zero budgets, or a column that does not apply) shown
    as a dash, not NaN."""
    return table.round(digits).astype(object).where(table.notna(), "–")


def _scores_table(scores: pd.DataFrame | None) -> pd.DataFrame | None:
    return None if scores is None or scores.empty else _dashed(scores, 2)


LABEL_FREE_NOTE = (
    "Each cell's test answer error estimated from the test prompts alone (no test answer read), scored against "
    "the measured error: mae over cells; bias, the mean signed error; spearman, the mean rank correlation across buckets within a budget (groups "
    "whose buckets span >= 0.05 of measured risk); pick_in_set, the share of budgets whose bucket with the smallest "
    "estimate is in the observed 95% set, beside chance_in_set (what a uniformly random pick scores on average) and "
    "chance_all_in_set (the chance that a random pick is in the set in every budget); exact, the share of decided "
    "budgets picked exactly; in_race_answer, where races decided budgets (certified, on fresh items), the share "
    "whose pick is the race's best or in its ε-tie (with its 95% Wilson interval, _lo to _hi), beside chance_in_race_answer. total:X is U_MC + "
    "G_gen + G_ext with G_ext the TV proxy (total:tv) or X's estimate above the source error. Only "
    "half_disagreement is certified (a lower bound); see docs/THEORY.md for what each assumes."
)


def _label_free_table(scores: pd.DataFrame | None) -> pd.DataFrame | None:
    cols = ["mixture", "estimator", "mae", "bias", "spearman", "groups_ranked", "pick_in_set", "chance_in_set",
            "chance_all_in_set", "exact", "determined", "in_race_answer", "in_race_answer_lo", "in_race_answer_hi",
            "chance_in_race_answer", "race_decided"]
    cols = [c for c in cols if c in scores.columns] if scores is not None else cols  # older score files lack the chance columns
    return None if scores is None or scores.empty else _dashed(scores[cols], 3)


def write_markdown(
    path: Path, title: str, intro: str, opt: pd.DataFrame, lines: list[str], plots: list[str], scores=None,
    prior: str = "pretrained", label_free: pd.DataFrame | None = None,
) -> None:  # fmt: skip
    opt = with_races(opt, path.parent)  # the races of the run folder the page is written to
    table = _opt_table(opt).to_markdown(index=False)
    body = [f"# {title}", "", intro, "", "## Best difficulty per budget", "", table, ""]
    body += [f"- {x}" for x in lines]
    st = _scores_table(scores)
    if st is not None:
        body += ["", "## Predictors against baselines (held-out budgets)", "", st.to_markdown(index=False), ""]
        body += [PREDICTORS_NOTE]
    lf = _label_free_table(label_free)
    if lf is not None:
        body += ["", "## Label-free estimates of the test risk", "", lf.to_markdown(index=False), "", LABEL_FREE_NOTE]
    dt = decision_table(path.parent)
    if not dt.empty:
        body += ["", "## Decisions: races and seeds", "", shown_decisions(dt).to_markdown(index=False), "", f"- {decision_counts(dt)}"]
        body += ["", DECISIONS_NOTE]
    body += ["", "## What is certified", "", f"- {certified_text(prior)}", f"- {ESTIMATED} **Totals are not certified.**", ""]
    body += ["## How to read this", ""] + [f"- `{k}`: {v}" for k, v in _how_to_read(opt, prior)]
    body += ["", "## Figures", ""] + [f"![{p}](report/{p})" for p in plots]
    path.write_text("\n".join(body) + "\n")


NUMBER = re.compile(r"[-+]?[0-9,]*\.?[0-9]+(e[-+]?[0-9]+)?%?|[0-9]+(/[0-9]+)+|[-+]?inf|–|nan")  # "4/4/4": seeds


def _is_text(col: pd.Series) -> bool:
    """Whether a column holds words (left-aligned) rather than numbers, formatted ones ("1,234",
    "inf", "–") included (right-aligned, so that digits line up)."""
    if pd.api.types.is_bool_dtype(col):  # True/False read as words
        return True
    if pd.api.types.is_numeric_dtype(col):
        return False
    return any(not NUMBER.fullmatch(str(v)) for v in col if not pd.isna(v) and str(v) != "")


def _html_table(table: pd.DataFrame) -> str:
    """``table`` as HTML whose column names may break after an underscore (a <wbr> there), its
    text columns left-aligned (class ``t``) and its numbers right-aligned."""
    text = [_is_text(table[c]) for c in table.columns]
    page = re.sub(r"<th>(.*?)</th>", lambda m: "<th>" + m.group(1).replace("_", "_<wbr>") + "</th>",
                  table.to_html(index=False, border=0))  # fmt: skip

    def row(m: re.Match) -> str:
        cells = iter(text)
        return re.sub(r"<(t[dh])([ >])", lambda c: f"<{c.group(1)} class='t'{c.group(2)}" if next(cells, False)
                      else c.group(0), m.group(0))  # fmt: skip

    return re.sub(r"<tr[^>]*>.*?</tr>", row, page, flags=re.S)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{html.escape(path.name)}' src='data:image/png;base64,{data}'>"


def write_html(
    path: Path, title: str, intro: str, opt: pd.DataFrame, lines: list[str], figures: list[Path], scores=None,
    prior: str = "pretrained", label_free: pd.DataFrame | None = None,
) -> None:  # fmt: skip
    """A self-contained page: inline CSS, embedded images, the certified/estimated legend."""
    opt = with_races(opt, path.parent)  # the races of the run folder the page is written to
    st = _scores_table(scores)
    predictors = (
        ""
        if st is None
        else "<h2>Predictors against baselines (held-out budgets)</h2>"
        + _html_table(st)
        + f"<p class='meta'>{html.escape(PREDICTORS_NOTE)}</p>"
    )
    lf = _label_free_table(label_free)
    if lf is not None:
        predictors += "<h2>Label-free estimates of the test risk</h2>" + _html_table(lf)
        predictors += f"<p class='meta'>{html.escape(LABEL_FREE_NOTE)}</p>"
    dt = decision_table(path.parent)
    if not dt.empty:
        predictors += "<h2>Decisions: races and seeds</h2>" + _html_table(shown_decisions(dt))
        predictors += f"<p class='meta'>{html.escape(decision_counts(dt) + '. ' + DECISIONS_NOTE)}</p>"
    legend = (
        f"<div class='legend'><span class='tag certified'>{html.escape(certified_text(prior))}</span>"
        f"<span class='tag estimated'>{html.escape(ESTIMATED)}</span></div>"
    )
    terms = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in _how_to_read(opt, prior))
    figs = "".join(f"<h3>{html.escape(f.stem.replace('_', ' '))}</h3>{_img(f)}" for f in figures)
    page = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p class='meta'>{html.escape(intro)}</p>",
        "<h2>Best difficulty per budget</h2>",
        _html_table(_opt_table(opt)),
        "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>",
        predictors,
        "<h2>What is certified</h2>",
        legend,
        "<h2>How to read this</h2>",
        f"<dl>{terms}</dl>",
        "<h2>Figures</h2>",
        figs,
        "</body></html>",
    ]
    path.write_text("\n".join(page))

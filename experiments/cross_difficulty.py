"""Kordi et al.'s view: train bucket × test op accuracy on held-out templates, and the IRT
difficulty of every test item rated by the sweep's own models (each fine-tuned cell and the base),
with its Spearman correlation with the item's op count, and accuracy by IRT bin."""

from _common import parse, run
from scipy.stats import spearmanr

from pacbayes_sft.report.item_difficulty import cross_difficulty, item_responses, rate_items

if __name__ == "__main__":
    args = parse(__doc__, "demo", "runs/cross_difficulty")
    rep = run(args)
    cells = rep["cells"]
    score = "answer_accuracy" if "answer_accuracy" in cells else "exact_match"
    print(cells.groupby(["bucket", "n"])[score].mean().unstack("n").round(3).to_string())
    responses = item_responses(args.out)  # per-item answers of every finished model
    items = rate_items(responses)
    print(items.groupby("slice")[["difficulty", "p_correct"]].mean().round(2).to_string())
    rho = spearmanr(items["difficulty"], items["slice"].astype(float))[0]
    print(f"Spearman(IRT item difficulty, op count) = {rho:.2f} over {len(items)} items")
    cross = cross_difficulty(responses, items)
    print(cross.pivot_table(index=["n", "bucket"], columns="irt_bin", values="accuracy").round(3).to_string())

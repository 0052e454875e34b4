"""The same grid with SFT and DFT: does DFT win at small n on hard data and lose at large n?"""

from _common import parse, run

if __name__ == "__main__":
    args = parse(__doc__, "demo", "runs/dft_vs_sft")
    rep = run(args, objectives=["sft", "dft"])
    cells = rep["cells"]
    score = "answer_accuracy" if "answer_accuracy" in cells else "exact_match"
    m = cells.groupby(["objective", "n", "bucket"])[score].mean().unstack("objective")
    m["dft_minus_sft"] = m["dft"] - m["sft"]
    print(m.round(3).to_string())
    print(rep["report_md"])

"""(n × difficulty) sweep with SFT: measured optimum vs the two-gap prediction."""

from _common import parse, run

if __name__ == "__main__":
    args = parse(__doc__, "demo", "runs/difficulty_sweep")
    rep = run(args, objectives=["sft"])
    print(rep["optimum"][["base", "n", "observed", "raw_bound", "calibrated"]].to_string(index=False))
    print(rep["report_md"])

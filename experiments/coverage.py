"""Coverage simulations behind docs/VALIDITY.md (large versions of the tests in tests/test_validity.py)."""

import argparse

from pacbayes_sft import validation as v

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--reps", type=int, default=10_000)
    ap.add_argument("--tv-reps", type=int, default=100)
    ap.add_argument("--only", default="", help="comma-separated sections: bounds,mc,ledger,tv,irt,bootstrap,igsm_tv,race")
    a = ap.parse_args()
    only = set(a.only.split(",")) if a.only else {"bounds", "mc", "ledger", "tv", "irt", "bootstrap", "igsm_tv", "race"}
    if "bounds" in only:
        print("## PAC-Bayes bounds (threshold problem, exact risks)\n")
        for n in (50, 200, 1000):
            print(v.bound_coverage(n=n, reps=a.reps).round(4).to_markdown(index=False), "\n")
    if "mc" in only:
        print("## Monte-Carlo slack\n")
        for m in (5, 20, 100):
            print(v.mc_coverage(m=m, reps=min(a.reps, 4000)), "\n")
        for m in (1, 5):  # each of the n = 200 examples gets m draws of its own
            print(v.mc_coverage(m=m, reps=min(a.reps, 4000), scheme="per_example"), "\n")
    if "ledger" in only:
        print("## Delta ledger: choosing among K candidates\n")
        for k in (10, 200, 1000):
            print(v.ledger_demo(k=k, reps=a.reps), "\n")
    if "tv" in only:
        print("## TV lower bound and estimate\n")
        print(v.tv_coverage(reps=a.tv_reps).round(4).to_markdown(index=False), "\n")
    if "irt" in only:
        print("## IRT recovery (2PL, 60 items)\n")
        print(v.irt_recovery().round(3).to_markdown(index=False), "\n")
    if "bootstrap" in only:
        print("## Bootstrap of the observed optimum (known best bucket)\n")
        print(v.bootstrap_coverage(reps=min(a.reps, 200)).round(3).to_markdown(index=False), "\n")
    if "igsm_tv" in only:
        print("## The default TV proxy on iGSM against the exact op-marginal TV\n")
        print(v.igsm_tv_truth().round(3).to_markdown(index=False))
    if "race" in only:
        print("\n## Races: is the answer right at the level? (known bucket means, stratified rounds)\n")
        for level in (0.95, 0.8):
            print(v.race_coverage(reps=min(a.reps, 500), level=level).round(4).to_markdown(index=False), "\n")

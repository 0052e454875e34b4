"""A weaker and a stronger base: does the stronger base move the optimal difficulty harder?

The config must list two bases (see configs/paper.yaml); the demo config has one.
"""

from _common import parse, run

if __name__ == "__main__":
    args = parse(__doc__, "paper", "runs/base_strength")
    rep = run(args)
    print(rep["optimum"][["base", "objective", "n", "observed"]].to_string(index=False))
    print(rep["report_md"])

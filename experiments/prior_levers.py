"""Issue 11, lever by lever: KL and the certified Seeger bound of one adapter with a data-free
prior (the pretrained weights / the adapter's init) and with a data-dependent prior (an adapter
trained on the first half of S, the bound on the other half), in the delta and lora spaces.

    python experiments/prior_levers.py --out runs/prior_levers     # about 10 minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from pacbayes_sft.certify import BoundConfig, TVConfig, certify
from pacbayes_sft.data import generate
from pacbayes_sft.data.tokenizer import load_tokenizer
from pacbayes_sft.sweep_config import SHIPPED_BASE
from pacbayes_sft.training.sft import SFTConfig, finetune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="runs/prior_levers")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--ops", default="5,6")
    args = ap.parse_args()
    out = Path(args.out)
    tok = load_tokenizer(SHIPPED_BASE)
    ops = [int(x) for x in args.ops.split(",")]
    train = generate(args.n, ops, split="train", seed=7)
    test = generate(40, list(range(1, 9)), split="test", seed=12345)
    half = args.n // 2
    cfg = SFTConfig(progress=False)
    for name, data in (("posterior", train), ("prior", train[:half])):
        if not (out / name / "adapter_config.json").is_file():
            finetune(str(SHIPPED_BASE), tok, [p.prompt for p in data], [p.response for p in data], cfg, out / name)
    rows = []
    for space in ("delta", "lora"):
        for kind in ("data-free", "data-dependent"):
            extra = {"prior_adapter": str(out / "prior"), "n_prior": half} if kind == "data-dependent" else {}
            cert = certify(
                str(SHIPPED_BASE),
                str(out / "posterior"),
                train,
                test,
                bound=BoundConfig(space=space, m=1),
                tv=TVConfig(permutations=0, max_per_side=320),
                **extra,
            )
            rows.append(
                {
                    "space": space,
                    "prior": kind,
                    "n_bound": cert.n,
                    "sigma": cert.sigma.value,
                    "sigma / RMS": cert.sigma.value / cert.sigma.reference_rms,
                    "KL (nats)": cert.kl.value_nats,
                    "MC train risk": cert.empirical_risk.mc_mean,
                    "U_MC": cert.empirical_risk.mc_upper,
                    "Seeger bound": cert.empirical_risk.mc_upper + cert.g_gen.seeger,
                    "interior": cert.sigma.interior,
                }
            )
            (out / f"certificate_{space}_{kind}.json").write_text(json.dumps(cert.to_dict(), indent=1))
            print(pd.DataFrame(rows).tail(1).to_string(index=False), flush=True)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g"))


if __name__ == "__main__":
    main()

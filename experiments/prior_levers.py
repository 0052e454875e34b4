"""Issue 11, lever by lever: KL and the certified Seeger bound of one adapter with a data-free
prior (the pretrained weights / the adapter's init) and with a data-dependent prior (an adapter
trained on the first half of S, the bound on the other half), in the delta and lora spaces; and
a posterior trained by the PAC-Bayes objective (learned per-module scales, prior σ_p fixed in
advance at 1 × the RMS of the initial A factors). Each row also measures the stochastic model's
test risk (token error, whole op 1-8 test set).

    python experiments/prior_levers.py --out runs/prior_levers     # about 10 minutes on 2 CPU cores
    python experiments/prior_levers.py --out runs/prior_levers --loss answer_error --only-learned

With ``--loss answer_error`` every risk (the bound's and the measured ones) is the verified
generated answer; ``--only-learned`` skips the isotropic rows (vacuous, and costly with generation).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from pacbayes_sft.adapters import attach_adapter
from pacbayes_sft.certify import (
    BoundConfig,
    PriorConfig,
    TVConfig,
    certify,
    certify_learned_posterior,
    stochastic_risk,
)
from pacbayes_sft.data import generate, test_set
from pacbayes_sft.data.tokenizer import load_tokenizer
from pacbayes_sft.sweep.config import SHIPPED_BASE
from pacbayes_sft.training.models import load_causal_lm
from pacbayes_sft.training.sft import SFTConfig, finetune


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="runs/prior_levers")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--ops", default="5,6")
    ap.add_argument("--steps", type=int, default=150, help="steps of the PAC-Bayes objective")
    ap.add_argument("--loss", default="token_error", choices=("token_error", "answer_error"))
    ap.add_argument("--only-learned", action="store_true", help="only the PAC-Bayes-objective rows")
    args = ap.parse_args()
    out = Path(args.out)
    tok = load_tokenizer(SHIPPED_BASE)
    ops = [int(x) for x in args.ops.split(",")]
    train = generate(args.n, ops, split="train", seed=7)
    test = test_set(range(1, 9), 40, seed=12345)  # 40 per op
    half = args.n // 2
    cfg = SFTConfig(progress=False)
    for name, data in (("posterior", train), ("prior", train[:half])):
        if not (out / name / "adapter_config.json").is_file():
            finetune(str(SHIPPED_BASE), tok, [p.prompt for p in data], [p.response for p in data], cfg, out / name)
    rows = []
    for space in () if args.only_learned else ("delta", "lora"):
        for kind in ("data-free", "data-dependent"):
            prior = (
                PriorConfig(kind="grid", adapter=str(out / "prior"), n_prior=half) if kind == "data-dependent" else None
            )
            cert = certify(
                str(SHIPPED_BASE),
                str(out / "posterior"),
                train,
                test,
                bound=BoundConfig(space=space, m=1, loss="token_error"),
                tv=TVConfig(permutations=0, max_per_side=320),
                prior=prior,
            )
            rows.append(
                {
                    "space": space,
                    "prior": kind,
                    "posterior": "SFT + isotropic",
                    "n_bound": cert.n,
                    "sigma": cert.sigma.value,
                    "sigma / RMS": cert.sigma.value / cert.sigma.reference_rms,
                    "KL (nats)": cert.kl.value_nats,
                    "MC train risk": cert.empirical_risk.mc_mean,
                    "U_MC": cert.empirical_risk.mc_upper,
                    "Seeger bound": cert.empirical_risk.mc_upper + cert.g_gen.seeger,
                    "interior": cert.sigma.interior,
                    "stoch. test risk": _stoch_test(out / "posterior", tok, test, cert.sigma.value, space),
                    "stoch. op 5-6 risk": _stoch_test(
                        out / "posterior", tok, [p for p in test if p.op in (5, 6)], cert.sigma.value, space
                    ),
                }
            )
            (out / f"certificate_{space}_{kind}.json").write_text(json.dumps(cert.to_dict(), indent=1))
            print(pd.DataFrame(rows).tail(1).to_string(index=False), flush=True)
    for dd in (False, True):
        rows.append(_learned_row(out, tok, train, test, args.steps, data_dependent=dd, loss=args.loss))
    rows += _reference_rows(out, tok, test, args.loss)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g"))


def _peft(path, trainable=False):
    return attach_adapter(load_causal_lm(SHIPPED_BASE), path, trainable=trainable)


def _stoch_test(adapter, tok, test, sigma, space) -> float:
    return _stoch(_peft(adapter), tok, test, sigma, space)  # token error (the isotropic rows)


def _losses(tok, examples, loss):
    """The loss on ``examples``: token error, or answer error judged by the iGSM verifier."""
    from pacbayes_sft.certify import EvalConfig, example_losses
    from pacbayes_sft.data.igsm_verify import igsm_judge

    return example_losses(tok, examples, loss, judge=igsm_judge(7), evaluation=EvalConfig(max_new_tokens=160))


def _reference_rows(out, tok, test, loss="token_error") -> list[dict]:
    """Test risk of the base and of the SFT adapter (point models) on all ops and on op 5-6."""
    hard = [p for p in test if p.op in (5, 6)]
    rows = []
    for name, model in (
        ("base (no adapter)", load_causal_lm(SHIPPED_BASE)),
        ("SFT adapter (point)", _peft(out / "posterior")),
    ):
        risk = {k: _losses(tok, ex, loss).risk(model.eval()) for k, ex in (("all", test), ("hard", hard))}
        rows.append({"posterior": name, "stoch. test risk": risk["all"], "stoch. op 5-6 risk": risk["hard"]})
    return rows


def _learned_row(out, tok, train, test, steps, *, data_dependent: bool, loss: str = "token_error") -> dict:
    """A posterior trained by the PAC-Bayes objective. Data-free: prior at the adapter's initial
    factors, μ from the SFT adapter, bound on all n. Data-dependent: prior at the adapter trained on
    the first half, μ from it, trained and bounded on the other half."""
    from pacbayes_sft.adapters import init_state_from_factors, load_init_factors, lora_factors
    from pacbayes_sft.certify.certificate import TVTerm
    from pacbayes_sft.posteriors import prior_centre_rms
    from pacbayes_sft.training.pacbayes_objective import PacBayesConfig, train_pacbayes

    half = len(train) // 2
    start = out / ("prior" if data_dependent else "posterior")
    data = train[half:] if data_dependent else train
    centre = init_state_from_factors(lora_factors(str(start))) if data_dependent else load_init_factors(start)
    model = _peft(start, trainable=True)
    sp = prior_centre_rms(str(start), "lora")  # fixed before any training: the initial factors' RMS
    cfg = PacBayesConfig(prior_sigma=sp, init_scale=0.5, steps=steps, lr=1e-3, lr_scale=2e-2, batch_size=32)
    prompts, responses = [p.prompt for p in data], [p.response for p in data]
    post, hist = train_pacbayes(model, tok, prompts, responses, cfg, centre=centre)
    print(f"PAC-Bayes objective: {hist[0]:.4f} -> {sum(hist[-10:]) / 10:.4f} over {steps} steps", flush=True)
    losses = _losses(tok, data, loss)
    info = (
        {"kind": "data-dependent", "centre": "adapter trained on the first half", "n_prior": half}
        if data_dependent
        else {"kind": "data-free", "centre": "the adapter's initial factors"}
    )
    cert = certify_learned_posterior(
        model, post, losses, TVTerm.plain(0.0, len(data), len(test), "not used"), prior_info=info, loss=loss
    )
    scales = cert.prior["posterior_scales"]
    (out / f"certificate_learned_{info['kind']}_{loss}.json").write_text(json.dumps(cert.to_dict(), indent=1))
    return {
        "space": "lora",
        "prior": info["kind"],
        "posterior": "PAC-Bayes objective (learned scales)",
        "n_bound": cert.n,
        "sigma": sp,
        "sigma / RMS": 1.0,
        "KL (nats)": cert.kl.value_nats,
        "MC train risk": cert.empirical_risk.mc_mean,
        "U_MC": cert.empirical_risk.mc_upper,
        "Seeger bound": cert.empirical_risk.mc_upper + cert.g_gen.seeger,
        "interior": None,
        "stoch. test risk": _stoch(model, tok, test, scales, loss=loss),
        "stoch. op 5-6 risk": _stoch(model, tok, [p for p in test if p.op in (5, 6)], scales, loss=loss),
    }


def _stoch(model, tok, examples, sigma, space="lora", loss="token_error") -> float:
    return stochastic_risk(model.eval(), _losses(tok, examples, loss), sigma, space, seed=99).mean


if __name__ == "__main__":
    main()

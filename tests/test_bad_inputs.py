"""Table of bad inputs to the public bound/KL functions: each raises ValueError naming the argument."""

import math

import numpy as np
import pytest
import torch

from pacbayes_sft.bounds import (
    DeltaLedger,
    catoni_bound,
    dziugaite_roy_grid,
    finite_grid_delta,
    kl_bernoulli,
    kl_inverse_lower,
    kl_inverse_upper,
    lambda_bound,
    maurer_bound,
    mc_risk_upper,
    quad_bound,
    seeger_bound,
    two_gap_bound,
)
from pacbayes_sft.estimators import histogram_tv, lora_delta_sq_norm

NAN, INF = math.nan, math.inf

CASES = [
    ("kl_bernoulli q nan", lambda: kl_bernoulli(NAN, 0.5), "q"),
    ("kl_bernoulli p > 1", lambda: kl_bernoulli(0.5, 1.2), "p"),
    ("kl_bernoulli q < 0", lambda: kl_bernoulli(-0.1, 0.5), "q"),
    ("kl_inverse_upper c < 0", lambda: kl_inverse_upper(0.2, -1.0), "c"),
    ("kl_inverse_upper c nan", lambda: kl_inverse_upper(0.2, NAN), "c"),
    ("kl_inverse_upper q string", lambda: kl_inverse_upper("a", 0.1), "q"),
    ("kl_inverse_upper empty", lambda: kl_inverse_upper(np.array([]), 0.1), "q"),
    ("kl_inverse_lower q > 1", lambda: kl_inverse_lower(1.5, 0.1), "q"),
    ("maurer risk > 1", lambda: maurer_bound(1.2, 1.0, 100, 0.05), "emp_risk"),
    ("maurer risk nan", lambda: maurer_bound(NAN, 1.0, 100, 0.05), "emp_risk"),
    ("maurer kl < 0", lambda: maurer_bound(0.1, -1.0, 100, 0.05), "kl"),
    ("maurer kl nan", lambda: maurer_bound(0.1, NAN, 100, 0.05), "kl"),
    ("maurer n < 1", lambda: maurer_bound(0.1, 1.0, 0, 0.05), "n"),
    ("maurer n inf", lambda: maurer_bound(0.1, 1.0, INF, 0.05), "n"),
    ("maurer delta 0", lambda: maurer_bound(0.1, 1.0, 100, 0.0), "delta"),
    ("maurer delta 1", lambda: maurer_bound(0.1, 1.0, 100, 1.0), "delta"),
    ("seeger delta > 1", lambda: seeger_bound(0.1, 1.0, 100, 2.0), "delta"),
    ("seeger shape mismatch", lambda: seeger_bound(np.zeros(3), np.zeros(2), 100, 0.05), "shape|broadcast"),
    ("catoni C <= 0", lambda: catoni_bound(0.1, 1.0, 100, 0.05, 0.0), "C"),
    ("lambda lam out of range", lambda: lambda_bound(0.1, 1.0, 100, 0.05, lam=2.0), "lam"),
    ("quad risk < 0", lambda: quad_bound(-0.1, 1.0, 100, 0.05), "emp_risk"),
    ("loss_range reversed", lambda: seeger_bound(0.1, 1.0, 100, 0.05, loss_range=(1, 0)), "loss_range"),
    ("loss_range risk outside", lambda: seeger_bound(3.0, 1.0, 100, 0.05, loss_range=(0, 2)), "emp_risk"),
    ("mc m < 1", lambda: mc_risk_upper(0.1, 0, 0.05), "m"),
    ("mc mean > 1", lambda: mc_risk_upper(1.1, 10, 0.05), "mean_risk"),
    ("two_gap tv > 1", lambda: two_gap_bound(0.1, 1.0, 100, 1.5), "tv"),
    ("two_gap method", lambda: two_gap_bound(0.1, 1.0, 100, 0.1, method="pinsker"), "method"),
    ("two_gap catoni without C", lambda: two_gap_bound(0.1, 1.0, 100, 0.1, method="catoni"), "C"),
    ("two_gap eps < 0", lambda: two_gap_bound(0.1, 1.0, 100, 0.1, eps=-0.1), "eps"),
    ("two_gap kl inf", lambda: two_gap_bound(0.1, INF, 100, 0.1), "kl"),
    ("ledger delta", lambda: DeltaLedger(1.5), "delta"),
    ("ledger overspend", lambda: DeltaLedger(0.05).spend("x", 0.2), "delta"),
    ("finite grid k", lambda: finite_grid_delta(0.05, 0), "k"),
    ("dr grid scale", lambda: dziugaite_roy_grid(0.0, 0.1, 10, 0.05), "scale"),
    ("lora rank mismatch", lambda: lora_delta_sq_norm(torch.zeros(2, 3), torch.zeros(4, 5)), "rank mismatch"),
    ("lora A not tensor", lambda: lora_delta_sq_norm([[1.0]], torch.zeros(1, 1)), "A"),
    ("histogram_tv empty", lambda: histogram_tv([], [1, 2]), "p_values"),
    ("histogram_tv nan", lambda: histogram_tv([1.0], [NAN]), "q_values"),
    ("histogram_tv scalar", lambda: histogram_tv(3, [1]), "p_values"),
]


@pytest.mark.parametrize("label,call,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_value_error_naming_argument(label, call, needle):
    with pytest.raises(ValueError, match=needle):
        call()

"""The certificate of a stored adapter agrees, number by number, with the document the
pre-redesign ``certify`` wrote for it (tests/fixtures/certificate_v0, built on the shipped base)."""

import json
from pathlib import Path

import pytest

from pacbayes_sft.bounds import BOUNDS
from pacbayes_sft.certify import BoundConfig, CertifySettings, EvalConfig, TVConfig, certify
from pacbayes_sft.certify.certificate import Certificate, numbers

FIX = Path(__file__).parent / "fixtures" / "certificate_v0"
# The same certificate after per-row posterior draws got injective seeds (posteriors.isotropic._seed,
# issue 23): every number that depends on the draws changed there, and only those.
SEEDS_V1 = FIX / "certificate_seeds_v1.json"
DRAW_DEPENDENT = ("empirical_risk.mc_", "g_gen.", "grid[", "total", "two_gap.emp_risk", "two_gap.g_gen", "two_gap.total")
SHIPPED = Path(__file__).resolve().parent.parent / "pacbayes_sft" / "assets" / "base_igsm"


def _rows(name):
    return [json.loads(line) for line in (FIX / name).read_text().splitlines() if line.strip()]


def _configs(kw: dict) -> dict:
    """certify()'s arguments from the stored pre-config keywords (bound fields, tv_*, seed), at the
    settings that document was written with: token error and an uncapped TV sample."""
    kw = dict(kw)
    tv = TVConfig(features=kw.pop("tv_features"), permutations=kw.pop("tv_permutations"), max_per_side=None)
    seed = kw.pop("seed")
    return {"bound": BoundConfig(loss="token_error", **kw), "tv": tv, "settings": CertifySettings(seed=seed)}


@pytest.fixture(scope="module")
def old_and_new():
    old = json.loads((FIX / "certificate.json").read_text())
    kw = json.loads((FIX / "certify_kwargs.json").read_text())
    new = certify(str(SHIPPED), str(FIX / "adapter"), _rows("train.jsonl"), _rows("test.jsonl"), **_configs(kw))
    return old, new, kw


def test_every_number_agrees_with_the_stored_certificate(old_and_new):
    old, new, _ = old_and_new
    a, b = numbers(old), numbers(new.to_dict())
    b.pop("schema_version")
    assert sorted(a) == sorted(b)  # the same numeric fields, no more, no fewer
    for key in a:
        want = a[key]
        if key.startswith(DRAW_DEPENDENT):
            continue  # pinned by the seeds-v1 document below
        if key.startswith("grid[") and key.split(".")[-1] in BOUNDS:
            want = min(want, 1.0)  # since issue 12 every bound is reported as min(bound, top of the loss range)
        if key == "tv.lower":  # since issue 11 a per-fold bound (pooled folds were not valid); see test_tv_irt
            assert b[key] <= old["tv"]["estimate"] + 1e-12
            continue
        assert b[key] == pytest.approx(want, rel=1e-9, abs=1e-12), key


def test_every_number_agrees_with_the_document_written_after_the_seed_change(old_and_new):
    _, new, _ = old_and_new
    pinned = numbers(json.loads(SEEDS_V1.read_text()))
    got = numbers(new.to_dict())
    assert sorted(pinned) == sorted(got)
    for key, want in pinned.items():
        assert got[key] == pytest.approx(want, rel=1e-9, abs=1e-12), key
    # and the draw-independent numbers of that document are the v0 ones
    old = numbers(json.loads((FIX / "certificate.json").read_text()))
    same = [k for k in old if not k.startswith(DRAW_DEPENDENT) and k not in ("tv.lower", "schema_version")]
    assert all(pinned[k] == pytest.approx(old[k], rel=1e-9, abs=1e-12) for k in same)


def test_old_document_reads_back_as_a_certificate(old_and_new):
    old, new, _ = old_and_new
    cert = Certificate.from_dict(old)
    assert cert.total == pytest.approx(old["total"]) and cert.sigma.value == new.sigma.value
    assert Certificate.from_dict(json.loads(SEEDS_V1.read_text())).total == pytest.approx(new.total)
    assert numbers(Certificate.from_dict(new.to_dict()).to_dict()) == numbers(new.to_dict())
    assert cert.certified is False and cert.estimated_terms  # a classifier TV is a proxy


def test_explicit_default_options_give_the_same_certificate(old_and_new):
    _, new, kw = old_and_new
    cert = certify(
        str(SHIPPED),
        str(FIX / "adapter"),
        _rows("train.jsonl"),
        _rows("test.jsonl"),
        evaluation=EvalConfig(),
        prior=None,
        family=None,
        **_configs(kw),
    )
    assert numbers(cert.to_dict()) == numbers(new.to_dict())
    two_gap, doc = cert  # the pre-Certificate unpacking still works
    assert two_gap == cert.two_gap and doc["total"] == cert.total

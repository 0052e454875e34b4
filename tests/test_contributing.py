"""Every recipe of CONTRIBUTING.md "Adding one thing", followed as a contributor outside the
package would follow it: a toy instance written into a package of its own (a temporary folder on
sys.path holding ``__init__.py``, the registry call, and one module, the code), imported so that it
registers, then run end to end through the public path the recipe names. Each test removes its
registration again, so the rest of the suite sees the package as shipped.
"""

import dataclasses
import importlib
import json
import math
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pacbayes_sft.bounds import (
    BOUNDS,
    kl_inverse_upper,
    maurer_bound,
    pac_bayes_bound,
    two_gap_bound,
    unregister_bound,
)
from pacbayes_sft.certify import BoundConfig, CertifySettings, EvalConfig, TVConfig, certify, estimate_test_risk
from pacbayes_sft.cli import main
from pacbayes_sft.data import generate
from pacbayes_sft.data.tokenizer import igsm_tokenizer, load_tokenizer
from pacbayes_sft.estimators.answers import collect_answers
from pacbayes_sft.estimators.label_free import ESTIMATORS, unregister_estimator
from pacbayes_sft.posteriors import Posterior, PosteriorFamily, Prior, kl_divergence
from pacbayes_sft.posteriors import kl as kl_registry
from pacbayes_sft.report import build_report
from pacbayes_sft.report.figures import FIGURES, unregister_figure
from pacbayes_sft.sweep import load_config, run_sweep
from pacbayes_sft.sweep.difficulty import MEASURES, NEEDS_BASE, unregister_measure
from pacbayes_sft.sweep.launch import LAUNCHERS, launch_sweep, unregister_launcher
from pacbayes_sft.sweep.runner import read_cell
from pacbayes_sft.sweep.store import folder_config
from pacbayes_sft.training.models import build_model, load_causal_lm, tiny_config
from pacbayes_sft.training.sft import SFTConfig, finetune

ROOT = Path(__file__).resolve().parent.parent
CONTRIBUTING = (ROOT / "CONTRIBUTING.md").read_text()


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """``write(package, {file: source})``: a contributor's package of at most two files in a
    folder on sys.path, imported (which runs its registry call); forgotten again at teardown."""
    monkeypatch.syspath_prepend(str(tmp_path))
    made = []

    def write(package: str, files: dict[str, str]):
        assert len(files) <= 2, "a recipe touches at most two files"
        (tmp_path / package).mkdir()
        for name, source in files.items():
            (tmp_path / package / name).write_text(textwrap.dedent(source))
        made.append(package)
        return importlib.import_module(package)

    yield write
    for name in [m for m in sys.modules if m.split(".")[0] in made]:
        del sys.modules[name]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny from-config base, a LoRA adapter trained for 4 steps, and iGSM examples."""
    root = tmp_path_factory.mktemp("contrib")
    tok = igsm_tokenizer()
    base = build_model(tiny_config("llama", len(tok), hidden=32, layers=1, max_positions=256), seed=0)
    base.save_pretrained(root / "base")
    tok.save_pretrained(root / "base")
    train = [p.to_dict() for p in generate(16, [2], split="train", seed=1)]
    test = [p.to_dict() for p in generate(8, [1, 3], split="test", seed=2)]
    cfg = SFTConfig(max_steps=4, batch_size=8, progress=False)
    finetune(
        str(root / "base"), tok, [e["prompt"] for e in train], [e["response"] for e in train], cfg, root / "adapter"
    )
    return {"root": root, "base": root / "base", "adapter": root / "adapter", "train": train, "test": test}


def _peft(tiny):
    from pacbayes_sft.adapters import attach_adapter

    return attach_adapter(load_causal_lm(tiny["base"]), tiny["adapter"])


def test_every_recipe_names_its_test():
    """The recipes below and the bullets of "Adding one thing" are the same six, each pointing here."""
    recipes = ["A PAC-Bayes bound", "A difficulty measure", "A posterior family", "A label-free estimator",
               "A report figure", "A launcher backend"]  # fmt: skip
    section = CONTRIBUTING.split("## Adding one thing")[1].split("\n## ")[0]
    bullets = [b for b in section.split("\n- **")[1:] if b.startswith("A ")]  # the recipes, not the two ways in
    assert [b.split("**")[0].rstrip(":") for b in bullets] == recipes
    tests = ["test_a_bound", "test_a_difficulty_measure", "test_a_posterior_family", "test_a_label_free_estimator",
             "test_a_report_figure", "test_a_launcher_backend"]  # fmt: skip
    for bullet, name in zip(bullets, tests):
        assert f"tests/test_contributing.py::{name}" in bullet
        assert name in globals()


# ---------------------------------------------------------------- a PAC-Bayes bound

BOUND_INIT = """
    from pacbayes_sft.bounds import register_bound

    from .mcallester import mcallester99

    register_bound("mcallester99", mcallester99)
"""

BOUND_MODULE = '''
    import numpy as np


    def mcallester99(emp_risk, kl, n, delta):
        """McAllester (1999): E_π R ≤ E_π R̂ + sqrt((KL + ln(1/δ) + ln n + 2) / (2n − 1)), KL in nats."""
        return emp_risk + np.sqrt((kl + np.log(1.0 / delta) + np.log(n) + 2.0) / (2.0 * n - 1.0))
'''


def _mcallester99(r, kl, n, delta):
    """The closed form, on its own: min(1, r + sqrt((KL + ln(1/δ) + ln n + 2)/(2n − 1)))."""
    return min(1.0, r + math.sqrt((kl + math.log(1 / delta) + math.log(n) + 2) / (2 * n - 1)))


@pytest.fixture
def toy_bound(plugin):
    yield plugin("toy_bound", {"__init__.py": BOUND_INIT, "mcallester.py": BOUND_MODULE})
    unregister_bound("mcallester99")
    assert "mcallester99" not in BOUNDS


def test_a_bound(toy_bound, tiny, capsys):
    assert pac_bayes_bound("mcallester99", 0.1, 5.0, 200, 0.05) == pytest.approx(_mcallester99(0.1, 5.0, 200, 0.05))
    # a loss in [0, 2] is rescaled as for every built-in bound; the bound is never above the range
    assert pac_bayes_bound("mcallester99", 0.4, 5.0, 200, 0.05, loss_range=(0, 2)) == pytest.approx(
        2 * _mcallester99(0.2, 5.0, 200, 0.05)
    )
    assert pac_bayes_bound("mcallester99", 0.9, 1e4, 10, 0.05) == 1.0
    # ln(1/δ) + ln n + 2 ≥ ln(2√n/δ) and 2n − 1 < 2n: never tighter than Maurer's bound
    for r, kl, n in [(0.0, 0.0, 1), (0.3, 2.0, 50), (0.05, 40.0, 1000)]:
        assert pac_bayes_bound("mcallester99", r, kl, n, 0.05) >= maurer_bound(r, kl, n, 0.05)
    with pytest.raises(ValueError, match="kl must be >= 0"):
        pac_bayes_bound("mcallester99", 0.1, -1.0, 200, 0.05)
    tg = two_gap_bound(0.1, 5.0, 200, 0.2, method="mcallester99")
    assert tg.total == pytest.approx(_mcallester99(0.1, 5.0, 200, 0.05) + 0.2)

    # `pacbayes-sft bound` prints a row for it
    assert main(["bound", "--emp-risk", "0.1", "--kl", "5", "--n", "200", "--tv", "0.2", "--json"]) == 0
    rows = {r["method"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["mcallester99"]["total"] == pytest.approx(tg.total)

    # certify(): every point of the σ grid gets its column, at the MC risk upper bound and δ_bound
    bound = BoundConfig(loss="token_error", sigmas=[1e-3, 1e-2], m=1)
    cert = certify(str(tiny["base"]), str(tiny["adapter"]), tiny["train"], tiny["test"], bound=bound,
                   tv=TVConfig(permutations=0))  # fmt: skip
    d_b = cert.delta.per_grid_point_bound
    for row in cert.grid:
        assert row["mcallester99"] == pytest.approx(_mcallester99(row["mc_risk_upper"], row["kl"], 16, d_b), rel=1e-9)
        assert row["mcallester99"] >= row["maurer"] >= row["seeger"]


# ---------------------------------------------------------------- a difficulty measure

MEASURE_INIT = """
    from pacbayes_sft.sweep.difficulty import register_measure

    from .measures import prompt_words

    register_measure("prompt_words", prompt_words)
"""

MEASURE_MODULE = '''
    def prompt_words(split):
        """Words in the prompt: a longer problem statement counts as harder."""
        return [float(len(prompt.split())) for prompt, _, _ in split.texts]
'''


@pytest.fixture
def toy_measure(plugin):
    """``install()`` writes and imports the package (later than the fixture: the test first
    checks that the config refuses the name); teardown removes the measure again."""
    yield lambda: plugin("toy_measure", {"__init__.py": MEASURE_INIT, "measures.py": MEASURE_MODULE})
    if "prompt_words" in MEASURES:
        unregister_measure("prompt_words")


def _dataset_config(tmp_path, difficulty):
    """The shipped bring-your-own config shrunk to one cell of 4 examples (as tests/test_byo.py does)."""
    cfg = yaml.safe_load((ROOT / "experiments" / "configs" / "byo_example.yaml").read_text())
    example = ROOT / "experiments" / "byo_example"
    cfg["task"] |= {"difficulty": difficulty, "train_path": str(example / "train.jsonl"),
                    "test_path": str(example / "test.jsonl")}  # fmt: skip
    cfg |= {"budgets": [4], "buckets": {"short": [1], "long": [3]}, "test": {"ops": [1, 3], "n_per_op": 2, "seed": 0}}
    cfg["bases"] = [{"name": "model", "path": str(example / "model")}]
    cfg["bound"] |= {"mc_examples": 4}
    cfg["eval"] |= {"max_new_tokens": 8}
    cfg["label_free"] = {"source": 0}
    path = tmp_path / "byo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_difficulty_measure(toy_measure, tmp_path, monkeypatch):
    # an empty irt_responses ("") is fingerprinted as the working directory (sweep/config.py
    # _data_fingerprint): run from an empty one, or the hash reads every file of the checkout
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    path = _dataset_config(tmp_path, "prompt_words")
    with pytest.raises(ValueError, match=r"task\.difficulty must be one of"):
        load_config(path)  # before the package registers its measure, the config refuses the name
    toy = toy_measure()
    assert MEASURES["prompt_words"] is toy.measures.prompt_words and "prompt_words" not in NEEDS_BASE
    cfg = load_config(path)
    out = tmp_path / "run"
    assert run_sweep(cfg, out, only={"bucket": ["long"]}, progress=False)["ran"] == 1
    # the pool was binned by the measure: edges and counts recomputed from the file alone
    words = [len(json.loads(line)["prompt"].split()) for line in Path(cfg.task.train_path).open()]
    edges = np.unique(np.quantile(words, [1 / 3, 2 / 3]))
    ds = json.loads((out / "dataset.json").read_text())
    assert ds["edges"] == pytest.approx(list(edges))
    counts = np.bincount(np.searchsorted(edges, words, side="right"), minlength=3)
    assert ds["pool_per_bin"] == {str(b + 1): int(c) for b, c in enumerate(counts)}
    assert read_cell(out / "cells" / "model__sft__n4__long__s0.json", folder_config(out)[1]) is not None
    # the command line reads the same registry: the folder is complete for this config
    assert main(["sweep", "--config", str(path), "--out", str(out), "--only", "bucket=long", "--quiet"]) == 0
    unregister_measure("prompt_words")
    with pytest.raises(ValueError, match=r"task\.difficulty must be one of"):
        load_config(path)


# ---------------------------------------------------------------- a posterior family

FAMILY_INIT = """
    from .b_only import BOnlyPosterior, b_only_family
"""

FAMILY_MODULE = '''
    """N(B, σ²I) over the LoRA B factors with A held at the adapter's values, against the prior
    N(0, σ_p²I) at LoRA's initialisation B = 0. A valid prior needs A fixed before the data (LoRA
    trained with A frozen); here it is a toy that follows the recipe."""

    import math
    from contextlib import contextmanager

    import torch

    from pacbayes_sft.adapters import lora_layers
    from pacbayes_sft.posteriors import PosteriorFamily, Prior, kl_divergence, register_kl


    class BOnlyPosterior:
        per_row = False  # a draw moves the shared weights: one draw per batch

        def __init__(self, model, sigma, *, seed=0):
            self.model, self.sigma, self.seed, self.space = model, float(sigma), seed, "lora B factors"
            self.factors = [layer.lora_B[a].weight for _, layer in lora_layers(model)
                            for a in layer.active_adapters if a in layer.lora_B]

        @contextmanager
        def sample(self, index):
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
            saved = [w.detach().clone() for w in self.factors]
            with torch.no_grad():
                for w in self.factors:
                    w.add_(torch.randn(w.shape, generator=gen), alpha=self.sigma)
            try:
                yield self.model
            finally:
                with torch.no_grad():
                    for w, s in zip(self.factors, saved):
                        w.copy_(s)

        def sample_rows(self, indices):
            raise TypeError("BOnlyPosterior draws one sample per batch (per_row is False)")

        def kl(self, prior):
            return kl_divergence(self, prior)


    @register_kl(BOnlyPosterior, Prior)
    def _kl(q, p):
        """½ [d (s²/σ_p² − 1 + ln(σ_p²/s²)) + ‖B‖²/σ_p²] nats, s = q.sigma, d = the number of B entries."""
        sp = p.scale(q.sigma)
        d = sum(w.numel() for w in q.factors)
        sq = sum(float(w.detach().double().pow(2).sum()) for w in q.factors)
        ratio = (q.sigma / sp) ** 2
        return 0.5 * (d * (ratio - 1 - math.log(ratio)) + sq / sp**2)


    def b_only_family(model, grid):
        """The B-only posteriors on ``grid``, each against the prior of its own scale."""
        return PosteriorFamily("lora B factors", list(grid), lambda s, seed: BOnlyPosterior(model, s, seed=seed),
                               lambda s: BOnlyPosterior(model, s).kl(Prior()))
'''


@pytest.fixture
def toy_family(plugin):
    mod = plugin("toy_family", {"__init__.py": FAMILY_INIT, "b_only.py": FAMILY_MODULE})
    yield mod
    # register_kl has no inverse: drop the toy pair so that the registry is as shipped
    del kl_registry._KL_REGISTRY[mod.BOnlyPosterior, Prior]


def test_a_posterior_family(toy_family, tiny):
    from safetensors.torch import load_file

    model = _peft(tiny)
    saved = load_file(tiny["adapter"] / "adapter_model.safetensors")
    sq_b = sum(float(t.double().pow(2).sum()) for k, t in saved.items() if "lora_B" in k)
    assert sq_b > 0  # trained: B moved away from its zero initialisation
    post = toy_family.BOnlyPosterior(model, 0.01)
    assert isinstance(post, Posterior)
    assert kl_divergence(post, Prior()) == pytest.approx(sq_b / (2 * 0.01**2), rel=1e-6)
    d = sum(t.numel() for k, t in saved.items() if "lora_B" in k)
    with_scale = kl_divergence(post, Prior(sigma=0.02))  # the Gaussian KL with unequal scales
    assert with_scale == pytest.approx(0.5 * (d * (0.25 - 1 - math.log(0.25)) + sq_b / 0.02**2), rel=1e-6)

    family = toy_family.b_only_family(model, [0.01, 0.03])
    assert isinstance(family, PosteriorFamily)
    bound = BoundConfig(loss="token_error", m=1)
    cert = certify(str(tiny["base"]), model, tiny["train"], tiny["test"], bound=bound, tv=TVConfig(permutations=0),
                   family=family, settings=CertifySettings(seed=3))  # fmt: skip
    assert cert.sigma.grid == [0.01, 0.03] and cert.kl.space == "lora B factors"
    for row in cert.grid:
        assert row["kl"] == pytest.approx(sq_b / (2 * row["sigma"] ** 2), rel=1e-6)
        assert row["mc_losses"] == 16  # one draw of its own per example, one example per batch
        seeger = kl_inverse_upper(row["mc_risk_upper"], (row["kl"] + math.log(2 * 4 / row["delta_bound"])) / 16)
        assert row["seeger"] == pytest.approx(float(seeger), rel=1e-9)
    pac = next(e for e in cert.delta.ledger["entries"] if e["term"].startswith("pac_bayes"))
    assert "K=2" in pac["term"]  # the δ plan paid for the family's own grid
    after = {k: t for k, t in model.state_dict().items() if "lora_B" in k}
    assert sum(float(t.double().pow(2).sum()) for t in after.values()) == pytest.approx(sq_b, rel=1e-12)


# ---------------------------------------------------------------- a label-free estimator

ESTIMATOR_INIT = """
    from pacbayes_sft.estimators.label_free import EstimatorSpec, register_estimator

    from .confidence import one_minus_confidence

    register_estimator(EstimatorSpec("one_minus_conf", {"target_conf"}, "adapter", one_minus_confidence,
                                     "calibrated confidence"))
"""

ESTIMATOR_MODULE = '''
    import numpy as np

    from pacbayes_sft.bounds import LabelFreeEstimate


    def one_minus_confidence(inputs, settings):
        """1 − mean p(answer | prompt) on the test prompts: the error when the confidence is calibrated."""
        e = 1.0 - float(np.mean(inputs.target_conf))
        details = {"n_target": float(len(inputs.target_conf))}
        return LabelFreeEstimate("one_minus_conf", e, e, e, settings.level, False, "calibrated confidence", details)
'''


@pytest.fixture
def toy_estimator(plugin):
    yield plugin("toy_estimator", {"__init__.py": ESTIMATOR_INIT, "confidence.py": ESTIMATOR_MODULE})
    unregister_estimator("one_minus_conf")
    assert "one_minus_conf" not in ESTIMATORS


def test_a_label_free_estimator(toy_estimator, tiny):
    prompts = [e["prompt"] for e in tiny["test"]]
    ev = EvalConfig(max_new_tokens=16)
    table = estimate_test_risk(tiny["base"], tiny["adapter"], prompts, estimators=["one_minus_conf"], evaluation=ev)
    (row,) = table.to_dict("records")
    model = _peft(tiny)
    conf = collect_answers(model, load_tokenizer(tiny["base"]), prompts, max_new_tokens=16).confidences
    assert row["estimator"] == "one_minus_conf" and row["risk_of"] == "adapter" and row["n_target"] == len(prompts)
    assert row["estimate"] == pytest.approx(1 - np.mean(conf), rel=1e-6) and 0 <= row["estimate"] <= 1
    assert row["assumptions"] == "calibrated confidence" and not row["certified"]
    # with no estimator named, every one the arguments allow runs, the new one among them
    every = estimate_test_risk(tiny["base"], tiny["adapter"], prompts, evaluation=ev)
    assert "one_minus_conf" in set(every["estimator"])


# ---------------------------------------------------------------- a report figure

FIGURE_INIT = """
    from pacbayes_sft.report.figures import register_figure

    from .kl_plot import kl_by_budget

    register_figure("kl_by_budget", lambda f: kl_by_budget(f.cells, f.order))
"""

FIGURE_MODULE = '''
    from pacbayes_sft.report.plotting import BUCKET_LABEL, N_LABEL, budget_axis, pyplot


    def kl_by_budget(cells, order):
        """KL(posterior ‖ prior) in nats against n, one line per training bucket (mean over seeds)."""
        if cells.empty or "kl" not in cells:
            return []
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for bucket in order:
            mean = cells[cells["bucket"] == bucket].groupby("n")["kl"].mean()
            ax.plot(mean.index, mean.to_numpy(), "o-", label=bucket)
        budget_axis(ax, sorted(cells["n"].unique()))
        ax.set_xlabel(N_LABEL)
        ax.set_ylabel("KL(posterior ‖ prior), nats")
        ax.legend(title=BUCKET_LABEL, fontsize=8)
        return [("kl_by_budget.png", fig)]
'''


@pytest.fixture
def toy_figure(plugin):
    yield plugin("toy_figure", {"__init__.py": FIGURE_INIT, "kl_plot.py": FIGURE_MODULE})
    unregister_figure("kl_by_budget")
    assert "kl_by_budget" not in [spec.family for spec in FIGURES]


def test_a_report_figure(toy_figure, tmp_path):
    import pandas as pd

    # the function on a small hand-made table: one line per bucket, the mean KL over seeds at each n
    cells = pd.DataFrame({"n": [8, 8, 32, 8, 32, 32], "bucket": ["easy", "easy", "easy", "hard", "hard", "hard"],
                          "seed": [0, 1, 0, 0, 0, 1], "kl": [1.0, 3.0, 5.0, 7.0, 2.0, 4.0]})  # fmt: skip
    ((name, fig),) = toy_figure.kl_plot.kl_by_budget(cells, ["easy", "hard"])
    lines = {ln.get_label(): (list(ln.get_xdata()), list(ln.get_ydata())) for ln in fig.axes[0].get_lines()}
    assert name == "kl_by_budget.png" and lines == {"easy": ([8, 32], [2.0, 5.0]), "hard": ([8, 32], [7.0, 3.0])}
    assert toy_figure.kl_plot.kl_by_budget(cells.iloc[:0], ["easy"]) == []
    assert FIGURES[-1].family == "kl_by_budget"  # drawn after the built-in families

    # the report of a committed run folder draws it, saves it and links it
    run = tmp_path / "demo"
    shutil.copytree(ROOT / "docs" / "results" / "demo", run)
    out = build_report(run)
    png = run / "report" / "kl_by_budget.png"
    assert str(png) in out["plots"] and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![kl_by_budget.png](report/kl_by_budget.png)" in (run / "report.md").read_text()
    assert "alt='kl_by_budget.png'" in (run / "report.html").read_text()
    # the committed results are untouched by the extra figure
    committed = pd.read_csv(ROOT / "docs" / "results" / "demo" / "summary.csv")
    pd.testing.assert_frame_equal(pd.read_csv(run / "summary.csv"), committed)


# ---------------------------------------------------------------- a launcher backend

LAUNCHER_INIT = """
    from pacbayes_sft.sweep.launch import register_launcher

    from .inline import InlineExecutor

    register_launcher("inline", InlineExecutor)
"""

LAUNCHER_MODULE = '''
    class InlineJob:
        """A task already run: ``fn(*args)``'s value, or the exception it raised."""

        def __init__(self, fn, args):
            try:
                self.value, self.error = fn(*args), None
            except Exception as exc:  # the launcher reports a task's error and retries it
                self.value, self.error = None, exc

        def done(self):
            return True

        def result(self):
            if self.error is not None:
                raise self.error
            return self.value


    class InlineExecutor:
        """Runs every task at once, in this process (a backend for debugging a sweep's cells)."""

        def __init__(self, folder, resources):
            self.folder, self.resources = folder, resources

        def submit(self, fn, *args):
            return InlineJob(fn, args)
'''


@pytest.fixture
def toy_launcher(plugin):
    threads = torch.get_num_threads()  # a task sets the process's threads to resources.cpus_per_task
    yield plugin("toy_launcher", {"__init__.py": LAUNCHER_INIT, "inline.py": LAUNCHER_MODULE})
    torch.set_num_threads(threads)
    unregister_launcher("inline")
    assert "inline" not in LAUNCHERS


def test_a_launcher_backend(toy_launcher, tmp_path, capsys):
    cfg = load_config(ROOT / "experiments" / "configs" / "quick.yaml")
    cfg = dataclasses.replace(cfg, objectives=["sft"], budgets=[8], buckets={"easy": [1], "hard": [3]}, threads=1)
    cfg = dataclasses.replace(cfg, resources=dataclasses.replace(cfg.resources, cpus_per_task=1, max_retries=0))
    out, jobs = tmp_path / "run", []
    summary = launch_sweep(cfg, out, launcher="inline", poll_s=0, on_submit=lambda task, job: jobs.append((task, job)))
    assert summary["ran"] == 2 and summary["failed"] == {} and summary["launcher"] == "inline"
    assert [t for t, _ in jobs] == ["tiny__base", "tiny__sft__n8__easy__s0", "tiny__sft__n8__hard__s0"]
    assert all(isinstance(job, toy_launcher.inline.InlineJob) and job.result() == t for t, job in jobs)
    # the records are the plain runner's: it finds nothing left to do in the same folder
    assert run_sweep(cfg, out, progress=False)["ran"] == 0
    # a task that fails is reported with its error, as under every launcher
    (out / "adapters").mkdir(exist_ok=True)
    cfg_path = tmp_path / "c.json"
    cfg_path.write_text(json.dumps(dataclasses.asdict(dataclasses.replace(cfg, seeds=[0, 1]))))
    (out / "adapters" / "tiny__sft__n8__easy__s1").write_text("not a folder: saving the adapter fails")
    only = ["--only", "seed=1", "--only", "bucket=easy"]
    rc = main(
        ["sweep", "--config", str(cfg_path), "--out", str(out), "--launcher", "inline", "--update", *only, "--quiet"]
    )
    assert rc == 1 and "cell tiny__sft__n8__easy__s1 FAILED after 1 attempts" in capsys.readouterr().err

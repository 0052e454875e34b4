"""The sweep: quick config end to end, report artifacts, sharding, kill-and-resume, bad configs."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pacbayes_sft.cli import main
from pacbayes_sft.report import build_report
from pacbayes_sft.sweep import load_config, normalise_config, run_sweep

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "experiments" / "configs" / "quick.yaml"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    summary = run_sweep(load_config(QUICK), out, progress=False)
    return out, summary


def test_quick_sweep_and_report(quick_run):
    out, summary = quick_run
    assert summary["ran"] == summary["cells"] == 12
    rep = build_report(out)
    for f in ("results.parquet", "results.csv", "summary.csv", "report.md", "report.html"):
        assert (out / f).is_file(), f
    names = {Path(p).name for p in rep["plots"]}
    for expected in (
        "score_tiny_sft.png",
        "terms_tiny_sft.png",
        "slices_tiny_sft.png",
        "optimum_vs_n.png",
        "dft_vs_sft_tiny.png",
    ):
        assert expected in names
    df = pd.read_parquet(out / "results.parquet")
    assert {"base", "objective", "n", "bucket", "seed", "slice", "metric", "value", "n_examples"} <= set(df.columns)
    assert {"answer_accuracy", "exact_match", "token_error", "g_gen", "g_ext", "kl", "tv", "total"} <= set(df["metric"])
    md = (out / "report.md").read_text()
    assert "not certified" in md and "Best difficulty per budget" in md
    opt = rep["optimum"]
    assert set(opt["n"]) == {8, 16} and set(opt["objective"]) == {"sft", "dft"}
    # the bootstrap's columns, with the test items that would determine each optimum
    assert {"p_best", "determined", "items_needed"} <= set(opt.columns) and "items_needed" in md
    assert (opt["items_needed"] >= 1).all()
    # SFT and DFT cells of one (n, bucket) train on the same sample: one TV term, fitted once
    assert len(list((out / "tv").glob("*.json"))) == 6
    tv = df[df["metric"] == "tv"].groupby(["n", "bucket"])["value"].nunique()
    assert (tv == 1).all() and len(tv) == 6
    # A second run skips everything.
    again = run_sweep(load_config(QUICK), out, progress=False)
    assert again["ran"] == 0 and again["skipped"] == 12


def _small_config(tmp: Path) -> Path:
    cfg = yaml.safe_load(QUICK.read_text())
    cfg["objectives"] = ["sft"]
    cfg["buckets"] = {"easy": [1], "hard": [3]}
    cfg["eval"]["generate"] = False
    path = tmp / "small.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _cell_values(out: Path) -> dict:
    vals = {}
    for f in sorted((out / "cells").glob("*.json")):
        rec = json.loads(f.read_text())
        vals[f.name] = (rec["rows"], rec.get("terms"))
    return vals


def test_kill_mid_cell_and_resume_matches_sharded_run(tmp_path):
    cfg_path = _small_config(tmp_path)
    # Reference: the two shards of the sweep, run one after the other into one folder.
    ref = tmp_path / "ref"
    assert main(["sweep", "--config", str(cfg_path), "--out", str(ref), "--shard", "0/2", "--quiet"]) == 0
    assert main(["sweep", "--config", str(cfg_path), "--out", str(ref), "--shard", "1/2", "--quiet"]) == 0
    # Interrupted run: kill the process once the first fine-tuned cell is written (mid next cell).
    out = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pacbayes_sft.cli", "sweep", "--config", str(cfg_path), "--out", str(out), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        done = [f for f in (out / "cells").glob("*__n*.json")] if (out / "cells").is_dir() else []
        if done:
            break
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(list((out / "cells").glob("*__n*.json")))
    assert 1 <= n_before < 4
    assert main(["sweep", "--config", str(cfg_path), "--out", str(out), "--quiet"]) == 0
    assert _cell_values(out) == _cell_values(ref)
    build_report(out)
    build_report(ref)
    a = (
        pd.read_csv(out / "results.csv")
        .sort_values(list(pd.read_csv(out / "results.csv").columns))
        .reset_index(drop=True)
    )
    b = pd.read_csv(ref / "results.csv").sort_values(list(a.columns)).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_results_folder_from_another_config_is_refused(quick_run, tmp_path, capsys):
    out, _ = quick_run
    cfg = dataclasses.replace(load_config(QUICK), budgets=[8])
    with pytest.raises(ValueError, match="another config"):
        run_sweep(cfg, out, progress=False)
    capsys.readouterr()
    path = _small_config(tmp_path)
    assert main(["sweep", "--config", str(path), "--out", str(out), "--quiet"]) == 2
    assert "another config" in capsys.readouterr().err


@pytest.mark.parametrize(
    "patch,match",
    [
        ({"budget": [1]}, "unknown key"),
        ({"budgets": [0]}, "budgets"),
        ({"budgets": "many"}, "budgets"),
        ({"sft": {"lr": "fast"}}, "sft.lr"),
        ({"sft": {"rank": 4}}, "unknown key sft"),
        ({"objectives": ["ppo"]}, "objectives"),
        ({"buckets": {"easy": []}}, "bucket"),
        ({"bases": [{"name": "x"}]}, "path"),
        ({"bound": {"space": "weights"}}, "space"),
        ({"bound": {"mc_scheme": "both"}}, "mc_scheme"),
        ({"bound": {"m": 0}}, "bound.m"),
        ({"eval": {"generate": "yes"}}, "true or false"),
    ],
)
def test_bad_configs(patch, match):
    raw = yaml.safe_load(QUICK.read_text())
    raw.update(patch)
    with pytest.raises(ValueError, match=match):
        normalise_config(raw)


def test_only_runs_a_part_of_the_grid_that_a_full_run_then_completes(quick_run, tmp_path, capsys):
    ref, _ = quick_run
    out = tmp_path / "o"
    argv = ["sweep", "--config", str(QUICK), "--out", str(out), "--quiet"]
    assert main([*argv, "--only", "objective=dft", "--only", "n=16", "--only", "bucket=easy,hard"]) == 0
    assert sorted(f.name for f in (out / "cells").glob("*__*__*.json")) == [
        "tiny__dft__n16__easy__s0.json",
        "tiny__dft__n16__hard__s0.json",
    ]
    summary = run_sweep(load_config(QUICK), out, progress=False)  # no filter: the other 10 cells
    assert (summary["ran"], summary["skipped"]) == (10, 2)
    assert _cell_values(out) == _cell_values(ref)  # the same cells as one uninterrupted run
    for bad, needle in (("bucket=medium2", "bucket=medium2 is not in the grid"), ("lr=1", "unknown cell field"),
                        ("objective", "FIELD=V1,V2")):  # fmt: skip
        assert main([*argv, "--only", bad]) == 2
        assert needle in capsys.readouterr().err


def test_config_files_errors(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("budgets: [1, 2\n")
    assert main(["sweep", "--config", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["sweep", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["sweep", "--config", str(QUICK), "--out", str(tmp_path / "o"), "--shard", "3/2"]) == 2
    assert "shard" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["demo", "paper", "quick"])
def test_shipped_configs_parse(name):
    raw = yaml.safe_load((ROOT / "experiments" / "configs" / f"{name}.yaml").read_text())
    cfg = normalise_config(raw)
    assert cfg.name == name
    if name == "paper":
        assert len(cfg.bases) == 2 and len(cfg.budgets) == 5 and len(cfg.buckets) == 5
        assert cfg.objectives == ["sft", "dft"] and len(cfg.seeds) == 3


_CHECK = """<script>window.addEventListener('load', () => {
  const imgs = [...document.images];
  const r = {images: imgs.length, broken: imgs.filter(i => !(i.complete && i.naturalWidth > 0)).length,
             scroll: document.documentElement.scrollWidth, inner: window.innerWidth,
             wide_tables: [...document.querySelectorAll('table')].filter(t => t.scrollWidth > t.clientWidth + 1).length,
             external: [...document.querySelectorAll('[src],[href]')].filter(
               e => /^https?:/.test(e.getAttribute('src') || e.getAttribute('href') || '')).length};
  document.body.setAttribute('data-check', JSON.stringify(r));
});</script>"""


def test_report_renders_in_a_browser(quick_run, tmp_path):
    """The HTML report as a person sees it at 1280 px: every image loads, nothing is fetched,
    no horizontal scrolling; a screenshot is taken."""
    import html as html_lib
    import re
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (make test installs Debian's chromium where it can)")
    out, _ = quick_run
    build_report(out)
    page = tmp_path / "report.html"
    page.write_text((out / "report.html").read_text().replace("</body>", _CHECK + "</body>"))
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"]
    dom = subprocess.run(
        [*flags, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    found = re.search(r'data-check="([^"]+)"', dom)
    assert found, dom[-2000:]
    check = json.loads(html_lib.unescape(found.group(1)))
    assert check["images"] >= 5 and check["broken"] == 0 and check["external"] == 0
    assert check["scroll"] <= check["inner"], check  # no horizontal overflow at 1280 px
    assert check["wide_tables"] == 0, check  # and no table that must be scrolled sideways
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_loss_everywhere(quick_run):
    """The heatmap's boxed best, the optimum table and the test risk all use the config's loss."""
    from pacbayes_sft.report import RISK_COLUMNS, bucket_order, cell_table, collect, optimum_table
    from pacbayes_sft.report.figures import risk_pivot

    out, _ = quick_run
    df, cfg = collect(out)
    ct = cell_table(df, cfg.bound.loss).assign(calibrated=0.0)
    opt = optimum_table(ct, bucket_order(cfg))
    assert (ct["test_risk"] == ct[RISK_COLUMNS[cfg.bound.loss]]).all()  # token_error here
    for (base, obj), (_, best) in risk_pivot(ct, bucket_order(cfg)).items():
        g = opt[(opt["base"] == base) & (opt["objective"] == obj)]
        assert dict(zip(g["n"], g["observed"])) == best
    with pytest.raises(ValueError, match="answer_accuracy"):
        cell_table(df[df["metric"] != "answer_accuracy"], "answer_error")


def test_answer_error_config_uses_no_token_error_anywhere(tmp_path):
    """A sweep whose config says answer_error bounds, measures and ranks by answer error only."""
    from pacbayes_sft.report import collect_items

    cfg = yaml.safe_load(QUICK.read_text())
    cfg.update(objectives=["sft"], budgets=[8])
    cfg["bound"] |= {"loss": "answer_error", "mc_examples": 6}
    cfg["prior"] = {"kind": "pretrained"}  # the sigma grid, each point subsampled to 6 losses
    path = tmp_path / "ans.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    run_sweep(load_config(path), out, progress=False)
    recs = [json.loads(f.read_text()) for f in sorted((out / "cells").glob("tiny__sft__*.json"))]
    assert len(recs) == 3 and all(r["loss"] == "answer_error" for r in recs)
    for r in recs:  # 0/1 losses: the MC mean is a multiple of 1/N over the N = 6 (example, draw) losses
        assert r["terms"]["mc_mean_risk"] * 6 == pytest.approx(round(r["terms"]["mc_mean_risk"] * 6))
        assert all("subsampled: 6 examples" in s for s in pd.DataFrame(r["sigma_grid"])["mc_scheme"])
    rep = build_report(out)
    ct = rep["cells"]
    assert (ct["test_risk"] == 1.0 - ct["answer_accuracy"]).all()
    best = ct.groupby("bucket")["test_risk"].mean().idxmin()
    assert rep["optimum"]["observed"].tolist() == [best]
    items = collect_items(out)
    assert all("answer_correct" in it for it in items.values())
    assert "loss for risks and bounds: answer_error" in (out / "report.md").read_text()


def test_bases_plot_keeps_agreeing_series_apart_and_marks_undetermined_budgets():
    from pacbayes_sft.report.figures import bases_plot

    rows = [
        {"base": b, "objective": "sft", "n": n, "observed_idx": 1, "determined": n == 32}
        for b in ("strong", "weak")
        for n in (32, 512)
    ]
    ((name, fig),) = bases_plot(pd.DataFrame(rows), ["easy", "middle", "hard"])
    assert name == "bases_optimum.png"
    lines = [ln for ln in fig.axes[0].lines if ln.get_linestyle() == "-"]
    ys = [tuple(ln.get_ydata()) for ln in lines]
    assert len(ys) == 2 and ys[0] != ys[1]  # the two bases agree everywhere, yet both lines show
    assert all(abs(y - 1) < 0.5 for y in ys[0] + ys[1])  # and each stays inside its bucket's band
    hollow = [ln for ln in fig.axes[0].lines if ln.get_markerfacecolor() == "white" and len(ln.get_xdata())]
    assert sorted(int(x) for ln in hollow for x in ln.get_xdata()) == [512, 512]
    assert bases_plot(pd.DataFrame(rows[:2]), ["easy", "middle", "hard"]) == []  # one base: no figure


def test_optimum_plot_draws_one_panel_per_group_with_the_tied_set_and_every_predictor():
    from pacbayes_sft.report.figures import optimum_plot

    order = ["easy", "middle", "hard"]
    rows = [
        {
            "base": b, "objective": "sft", "n": n, "observed_idx": 1, "seed_idx_min": 1, "seed_idx_max": 2,
            "raw_idx": 0, "calibrated_idx": 2, "indistinguishable": "middle, hard" if n == 64 else "middle",
            "forecast": "hard" if n == 64 else None, "persistence": "middle" if n == 64 else None,
        }
        for b in ("strong", "weak")
        for n in (16, 32, 64)
    ]  # fmt: skip
    ((name, fig),) = optimum_plot(pd.DataFrame(rows), order)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert name == "optimum_vs_n.png" and [ax.get_title() for ax in panels] == ["strong / sft", "weak / sft"]
    from matplotlib.collections import PathCollection

    grey = [c for c in panels[0].collections if isinstance(c, PathCollection) and c.get_label().startswith("_")]
    tied = sorted((int(x), int(y)) for c in grey for x, y in c.get_offsets())
    assert tied == [(16, 1), (32, 1), (64, 1), (64, 2)]  # the 95% set of each budget, nothing else
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {"raw two-gap bound", "calibrated (leave-one-n-out)", "forecast from smaller budgets"} <= labels
    assert any(lab.startswith("persistence") for lab in labels)


def test_dft_maps_skip_bases_and_budgets_that_only_one_objective_finished():
    from pacbayes_sft.report.figures import dft_maps

    rows = [
        {"base": b, "objective": o, "n": n, "bucket": k, "seed": 0, "test_risk": r}
        for b, objs in (("strong", ("sft", "dft")), ("weak", ("sft",)))
        for o in objs
        for n in ((32, 4096) if o == "sft" else (32,))
        for k, r in (("easy", 0.4), ("hard", 0.5 if o == "sft" else 0.45))
    ]
    figs = dft_maps(pd.DataFrame(rows), ["easy", "hard"], "answer_error")
    assert [name for name, _ in figs] == ["dft_vs_sft_strong.png"]  # weak has no DFT; n = 4096 has no DFT
    ax = figs[0][1].axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["32"]
    # the map of differences (0.0 and −0.05 here) puts zero at the diverging map's neutral middle
    import matplotlib

    neutral = matplotlib.colormaps["RdBu_r"](0.5)
    assert ax.collections[0].to_rgba(0.0) == pytest.approx(neutral, abs=0.02)

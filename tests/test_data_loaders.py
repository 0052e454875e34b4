"""Loaders for users' data and difficulty bucketing."""

import json

import pandas as pd
import pytest

from pacbayes_sft.data.buckets import edge_buckets, quantile_buckets
from pacbayes_sft.data.loaders import load_examples

ROWS = [{"q": f"p{i}", "a": f"r{i}", "level": i % 3} for i in range(9)]


def test_jsonl_csv_parquet_roundtrip(tmp_path):
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    pd.DataFrame(ROWS).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(ROWS).to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.csv", "d.parquet"):
        ex = load_examples(tmp_path / name, prompt="q", response="a", difficulty="level")
        assert len(ex) == 9 and ex[4] == {"prompt": "p4", "response": "r4", "difficulty": 1.0}


def test_hf_dataset_if_installed():
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list([{"prompt": "a", "response": "b"}])
    assert load_examples(ds) == [{"prompt": "a", "response": "b"}]


def test_loader_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_examples(tmp_path / "none.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "response": "b"}\n{oops')
    with pytest.raises(ValueError, match="line 2"):
        load_examples(tmp_path / "bad.jsonl")
    (tmp_path / "empty.jsonl").write_text('{"prompt": "", "response": "b"}')
    with pytest.raises(ValueError, match="prompt"):
        load_examples(tmp_path / "empty.jsonl")
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(ValueError, match="missing column"):
        load_examples(tmp_path / "c.csv")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(ValueError, match="must end in"):
        load_examples(tmp_path / "d.txt")


def test_buckets():
    labels = quantile_buckets([1, 2, 3, 4, 5, 6, 7, 8, 9])
    assert labels == ["easy"] * 3 + ["medium"] * 3 + ["hard"] * 3
    assert edge_buckets([1, 5, 10], [5, 10]) == ["bin0", "bin1", "bin2"]
    with pytest.raises(ValueError, match="increasing"):
        edge_buckets([1], [5, 5])
    with pytest.raises(ValueError, match="finite"):
        quantile_buckets([1.0, float("nan")])

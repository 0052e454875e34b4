# Two entry points: `make demo` (the main job on its embedded default) and `make test`.
# Both create .venv and install what they need. On a CPU machine torch comes from the
# 2.13.0 CPU build; set TORCH_SPEC (e.g. TORCH_SPEC="torch --index-url <cuda index>") for GPUs.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pacbayes-sft demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest tests; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check pacbayes_sft tests experiments benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_kl.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis

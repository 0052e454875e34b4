# Two entry points: `make demo` (the main job on its embedded default) and `make test`.
# Both create .venv and install what they need. On a CPU machine torch comes from the
# 2.13.0 CPU build; set TORCH_SPEC (e.g. TORCH_SPEC="torch --index-url <cuda index>") for GPUs.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint bench clean browser slurm

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/pacbayes-sft demo --out runs/demo

# The report's screenshot test needs Debian's chromium; install it where absent (root + apt-get),
# otherwise that one test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1; } || \
	  echo "chromium could not be installed: the report screenshot test will be skipped"

# The Slurm tests (tests/test_slurm.py) start a one-node cluster of their own (munge, MariaDB,
# slurmdbd, slurmctld, slurmd) from a temporary folder; install Debian's packages where absent
# (root + apt-get), otherwise those tests are skipped and say why.
SLURM_PACKAGES := slurmctld slurmd slurm-client slurmdbd munge mariadb-server
slurm:
	@missing=; for c in slurmctld slurmd slurmdbd sbatch munged mariadbd; do \
	  PATH="$$PATH:/usr/sbin:/sbin" command -v $$c >/dev/null 2>&1 || missing=1; done; \
	[ -z "$$missing" ] || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SLURM_PACKAGES); } >/dev/null 2>&1; } || \
	  echo "Slurm could not be installed: the Slurm cluster tests will be skipped"

test: $(STAMP) browser slurm
	$(PY) -m pytest tests --durations=15; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(VENV)/bin/ruff check pacbayes_sft tests experiments benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_kl.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis

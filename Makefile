# starsweep: `make demo` and `make test` do all set-up on a fresh machine.
VENV      := .venv
PY        := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed-requirements

.PHONY: setup data test test-cluster lint demo bench paper-cpu paper-cpu-target-size paper-cpu-explorers clean

setup: $(INSTALLED) data

# Reinstall only when requirements.txt or pyproject.toml changes (the stamp is newer
# otherwise): the pinned requirements, then the project itself, editable, so that
# trainables/, search_spaces/, sweep/ and analysis/ import from any directory and in
# every Ray worker. The stamp is written as a new file (the venv may be a hardlinked copy).
$(INSTALLED): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e .
	rm -f $@ && touch $@

data:
	@bash scripts/ensure_data.sh

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

# The suite without the cluster tests, then those alone (the target: both together under 20 minutes):
# a `ray start` head and worker, `ray job submit`, an autoscaling cluster (`make test-cluster`).
# `make test` runs whole modules on TEST_WORKERS pytest-xdist workers (module fixtures such as
# a Ray session stay in one worker): one module at a time leaves ~30% of 2 cores idle (Ray and
# Tune start-up is serial Python). xdist starts the modules with the most tests first, which
# pairs the Ray-heavy modules (few tests each) with light ones; longest-first ordering ran
# two Ray-heavy modules at once and took 816 s against 697 s (measured).
TEST_WORKERS ?= 2
test: setup lint
	$(PY) -m pytest -m "not cluster" -n $(TEST_WORKERS) --dist loadfile

test-cluster: setup
	$(PY) -m pytest -m cluster

# The quick-start sweep on CPU (resumed, not re-run, when it already exists), then its report.
demo: setup
	$(PY) -m sweep run specs/quickstart.yaml --if-exists resume
	$(PY) -m analysis report runs/quickstart --out runs/quickstart/report
	@echo "open runs/quickstart/report/index.html; browse trials with:"
	@echo "  $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/runs/quickstart/mlflow.db"

# The paper's experiment on the embedded task (under an hour on 2 cores): a new sweep,
# then its table and report under results/paper_cpu/ (FINDINGS.md cites them).
PAPER_STORAGE := runs/paper_cpu-$(shell date +%Y%m%d-%H%M%S)
paper-cpu: setup
	$(PY) -m sweep run specs/paper_cpu.yaml --storage $(PAPER_STORAGE)
	mkdir -p results/paper_cpu
	cp $(PAPER_STORAGE)/paper_cpu/results.parquet results/paper_cpu/results.parquet
	cp $(PAPER_STORAGE)/paper_cpu/predictions.parquet results/paper_cpu/predictions.parquet
	$(PY) -m analysis report results/paper_cpu/results.parquet --out results/paper_cpu/report
	$(PY) experiments/findings.py results/paper_cpu/results.parquet > results/paper_cpu/numbers.md

# Issue 28's headline test (FINDINGS.md §6): paper_cpu's val-chosen cells and Local DE with
# 1,000 and 2,000 target training images, 5 paired replicates each, then the comparison with
# paper_cpu's 250 (about 80 minutes on 2 quiet cores; not part of paper-cpu).
TARGET_STORAGE := runs/paper_cpu_target_size-$(shell date +%Y%m%d-%H%M%S)
paper-cpu-target-size: setup
	for n in 1000 2000; do \
	  $(PY) -m sweep run specs/paper_cpu_target_size.yaml --storage $(TARGET_STORAGE) \
	    --set name=paper_cpu_n$$n trial.data.train_size=$$n --if-exists resume || exit 1; \
	  mkdir -p results/paper_cpu_target_size/n$$n; \
	  cp $(TARGET_STORAGE)/paper_cpu_n$$n/results.parquet $(TARGET_STORAGE)/paper_cpu_n$$n/predictions.parquet \
	    results/paper_cpu_target_size/n$$n/; \
	done
	$(PY) experiments/target_size.py results/paper_cpu results/paper_cpu_target_size/n1000 \
	  results/paper_cpu_target_size/n2000 > results/paper_cpu_target_size/numbers.md

# Issue 26: FGE and SWA beside SSE and StarSSE on paper_cpu's task and replicates: FGE/SWA's
# grid (6 cells on 2 replicates, each method's val-chosen cell on 3 more), SSE/StarSSE at
# paper_cpu's val-chosen cells, in one storage (the same fine-tunes); their joint table,
# numbers and report in results/paper_cpu_explorers/ (about an hour on 2 quiet cores).
EXPLORERS_STORAGE := runs/paper_cpu_explorers-$(shell date +%Y%m%d-%H%M%S)
paper-cpu-explorers: setup
	$(PY) -m sweep run specs/paper_cpu_explorers.yaml --storage $(EXPLORERS_STORAGE)
	$(PY) -m sweep run specs/paper_cpu_explorers_sse.yaml --storage $(EXPLORERS_STORAGE)
	mkdir -p results/paper_cpu_explorers
	$(PY) experiments/explorers.py combine $(EXPLORERS_STORAGE)/paper_cpu_explorers \
	  $(EXPLORERS_STORAGE)/paper_cpu_explorers_sse results/paper_cpu_explorers
	$(PY) experiments/explorers.py numbers results/paper_cpu_explorers > results/paper_cpu_explorers/numbers.md
	$(PY) -m analysis report results/paper_cpu_explorers/results.parquet --out results/paper_cpu_explorers/report

# The speed benchmarks: each prints both sides, the ratio, and fails when its target is missed.
BENCHES := trainable_overhead input_pipeline metric_cost shared_finetunes concurrency parallel_cycles gpu driver_scale
bench: setup
	@status=0; for b in $(BENCHES); do echo "== bench_$$b"; \
	  (cd bench && ../$(PY) bench_$$b.py) || status=1; done; exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

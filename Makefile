# starsweep: `make demo` and `make test` do all set-up on a fresh machine.
VENV      := .venv
PY        := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed-requirements

.PHONY: setup data test lint demo bench paper-cpu clean

setup: $(INSTALLED) data

# Reinstall only when requirements.txt changes (the stamp is newer otherwise).
$(INSTALLED): requirements.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

data:
	@bash scripts/ensure_data.sh

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest

demo: setup
	$(PY) -m trainables --method star_sse --lr-max-ratio 2 --cycle-epochs-ratio 1

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache

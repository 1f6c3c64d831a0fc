PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[all,test]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/deeplinear reproduce --out runs/demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_sparse.py
	$(BIN)/python benchmarks/bench_nuclear.py
	$(BIN)/python benchmarks/bench_flow.py
	$(BIN)/python benchmarks/bench_scale.py
	$(BIN)/python benchmarks/bench_peer.py
	$(BIN)/python benchmarks/bench_cnn.py

clean:
	rm -rf $(VENV) runs .pytest_cache

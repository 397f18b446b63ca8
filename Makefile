# chainlab — every target works on a fresh Debian machine as root; `make deps` is implied.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CHAINLAB := $(BIN)/chainlab
# INVENTORY=path is passed to chainlab as -i. The embedded default is the local lab;
# for your own VMs: make lab-up INVENTORY=inventory.yaml.
INVENTORY ?= lab/local.yaml
INV := $(if $(INVENTORY),-i $(INVENTORY))
SEED := tests/fixtures/seed-logs
APT_PACKAGES := iptables ipset nftables openssh-server openssh-client rsyslog ulogd2 etcd-server curl \
	docker.io busybox-static iputils-ping conntrack graphviz iproute2 procps chromium gcc libc6-dev \
	qemu-system-x86 qemu-utils mmdebstrap \
	$(if $(filter /usr/bin/%,$(shell command -v $(PYTHON))),python3-dev python3-venv)

.PHONY: help deps system-deps local-deps venv test test-unit sanitize bench demo analyze-demo \
	lab-up lab-down nightly scenario-all local-up local-down

help:
	@echo "make demo        set up everything, bring up the local lab and run its scenarios (report: runs/nightly-*/index.html)"
	@echo "make test        set up everything and run all tests (unit + integration)"
	@echo "make bench       performance figures (analyzer vs awk, memory)"
	@echo "make sanitize    the C engine's tests under ASan+UBSan and ThreadSanitizer"
	@echo "make vm-up nightly INVENTORY=lab/vm.yaml   the lab as qemu VMs, every scenario (make lab-down vm-down ... after)"

$(VENV)/.installed: pyproject.toml setup.py src/chainlab/trace/_engine.c $(wildcard src/chainlab/trace/engine/*.c)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Debian packages for the local lab and diagrams; skipped when already present.
system-deps local-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages: $$missing (run as root or apt-get install them)"; exit 2; fi; \
	  echo "installing: $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

deps: system-deps venv

# Two workers: one runs every test that changes the machine (labs, VMs) in order, the other
# the tests of pure logic meanwhile (tests/conftest.py: pytest_xdist_make_scheduler).
test: deps
	$(BIN)/pytest -q -n 2

test-unit: venv
	$(BIN)/pytest -q -m "not integration"

# The C engine's tests under ASan + UBSan, then ThreadSanitizer (not in `make test`: slower).
sanitize: venv
	bash tests/sanitize.sh

# pyinfra and ansible-core for the lab up comparison, in their own venv (other paramiko pins).
.venv-bench/.installed:
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install -q 'pyinfra>=3,<4' 'ansible-core>=2.16'
	touch $@

bench: deps .venv-bench/.installed
	$(BIN)/python bench/trace_bench.py
	$(BIN)/python bench/local_lab.py
	$(BIN)/python bench/provision.py
	$(BIN)/python bench/lab_up_compare.py
	$(BIN)/python bench/scenario_bench.py
	$(BIN)/python bench/matrix_bench.py
	$(BIN)/python bench/vm_bench.py

# The reference write-up's two logged scenarios, analysed and drawn.
analyze-demo: deps
	@mkdir -p runs/demo
	$(CHAINLAB) analyze --tables nat,filter --expect scenarios/01-host-to-container.yaml master=$(SEED)/scenario1-master.log
	$(CHAINLAB) analyze --tables nat,filter --format svg --title "scenario 1: master pings web1" master=$(SEED)/scenario1-master.log > runs/demo/scenario1.svg
	$(CHAINLAB) analyze --tables nat,filter --format svg --title "scenario 2: web1 pings master" master=$(SEED)/scenario2-master.log > runs/demo/scenario2.svg
	@echo "diagrams: runs/demo/scenario1.svg runs/demo/scenario2.svg"

# The newcomer's path: everything from a fresh machine to runs/nightly-*/index.html.
demo: deps
	$(CHAINLAB) -i lab/local.yaml local up
	$(CHAINLAB) -i lab/local.yaml lab up
	$(CHAINLAB) -i lab/local.yaml nightly

# Provisioning over SSH (issue 4): INVENTORY=lab/local.yaml for the local lab; CHECK=1 plans only.
.PHONY: facts
lab-up: venv
	$(CHAINLAB) $(INV) lab up $(if $(CHECK),--check)

lab-down: venv
	$(CHAINLAB) $(INV) lab down $(if $(CHECK),--check)

facts: venv
	$(CHAINLAB) $(INV) facts

# Scenario runs (issue 6) on the provisioned lab: evidence and report.html under runs/.
scenario-%: venv
	$(CHAINLAB) $(INV) run $*

scenario-all: venv
	@rc=0; for f in scenarios/[0-9][0-9]-*.yaml; do n=$$(basename $$f | cut -c1-2); \
	  $(CHAINLAB) $(INV) run $$((10#$$n)) || rc=1; done; exit $$rc

nightly: lab-up
	$(CHAINLAB) $(INV) nightly

# The same scenarios as pytest items (chainlab's pytest plugin), on the provisioned lab.
.PHONY: pytest-scenarios
pytest-scenarios: venv
	$(BIN)/pytest scenarios/ --chainlab-inventory $(INVENTORY)

# The local lab (issue 3): three hosts from namespaces on this machine. Needs root.
.PHONY: local-up local-down local-status
local-up: deps
	$(CHAINLAB) $(INV) local up

local-down: venv
	$(CHAINLAB) $(INV) local down

local-status: venv
	$(CHAINLAB) $(INV) local status

# The VM lab (issue 14): the inventory's hosts as qemu VMs (INVENTORY=lab/vm.yaml); the
# image is built once from Debian's packages (`chainlab vm image` rebuilds it). Needs root.
.PHONY: vm-up vm-down vm-status vm-image
vm-up: deps
	$(CHAINLAB) $(INV) vm up

vm-down: venv
	$(CHAINLAB) $(INV) vm down

vm-status: venv
	$(CHAINLAB) $(INV) vm status

vm-image: deps
	$(CHAINLAB) $(INV) vm image

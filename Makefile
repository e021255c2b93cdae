# boma: everyday entry points. Every target installs what it needs (apt for system packages,
# a venv for Python) and says what it is doing. `make help` lists them.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      ?= .venv
PYTHON    ?= python3
NOX       := $(VENV)/bin/nox
SUDO      := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# What pip needs to build libvirt-python, and python's venv module on Debian.
APT_PREREQS := python3-venv python3-dev gcc pkg-config libvirt-dev
CERTS     ?= internal
KEEP      ?=
# Extra ansible-playbook arguments for bootstrap, e.g. BOOTSTRAP_ARGS='-e @runner.yml'
BOOTSTRAP_ARGS ?=
# Not root: the playbook becomes root through sudo (asking for the password only when sudo
# needs one), and the user running it joins the libvirt and kvm groups (log in again after).
ME        := $(shell id -un)
OPERATOR_ARGS := $(if $(SUDO),-e '{"integration_test__operators": ["$(ME)"]}')

.PHONY: help venv bootstrap lint unit e2e test test-integration test-integration-clean

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-24s %s\n", $$1, $$2}'
	@echo "  make test-integration HOST=askari [CERTS=internal] [KEEP=1]"
	@echo "  make test-integration SCENARIO=offsite-peer [CERTS=internal] [KEEP=1]"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@echo "==> apt prerequisites for the venv: $(APT_PREREQS)"
	@missing=$$(for p in $(APT_PREREQS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@echo "==> python venv $(VENV) (requirements-dev.txt)"
	@[ -x $(VENV)/bin/python ] || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/pip install -q --upgrade pip
	@$(VENV)/bin/pip install -q -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.installed ## create the venv with the harness, Ansible and the linters

bootstrap: venv ## install the harness substrate on this machine (roles/integration_test)
	@echo "==> applying playbooks/workstation.yml to this machine (QEMU, libvirt, mmdebstrap, ...)"
	@ask=; if [ -n "$(SUDO)" ] && ! sudo -n true 2>/dev/null; then ask=--ask-become-pass; fi; \
	ANSIBLE_CONFIG=ansible.cfg $(VENV)/bin/ansible-playbook -i localhost, -c local \
	  -e workstation__hosts=localhost -e ansible_python_interpreter=/usr/bin/python3 \
	  $$ask $(OPERATOR_ARGS) $(BOOTSTRAP_ARGS) playbooks/workstation.yml

lint: venv ## ruff, mypy, ansible-lint, yamllint, tag check, syntax checks, actionlint
	@$(NOX) -s lint

unit: venv ## fast unit tests (no VM)
	@$(NOX) -s unit

e2e: bootstrap ## the incident end to end: RED must fail for the right reason, GREEN must pass
	@$(NOX) -s e2e

test: bootstrap ## the project's test command: lint, unit tests, then the RED→GREEN end-to-end
	@$(NOX) -s lint unit e2e

test-integration: ## one full cycle: make test-integration HOST=askari|SCENARIO=offsite-peer [CERTS=internal] [KEEP=1]
	$(if $(HOST)$(SCENARIO),,$(error usage: make test-integration HOST=<profile> | SCENARIO=<scenario> [CERTS=<tier>] [KEEP=1]; profiles: $(basename $(notdir $(wildcard profiles/*.yml))); scenarios: $(basename $(notdir $(wildcard scenarios/*.yml)))))
	$(if $(and $(HOST),$(SCENARIO)),$(error give HOST or SCENARIO, not both))
	@$(MAKE) --no-print-directory bootstrap
	@$(NOX) -s $(if $(SCENARIO),"scenario(name='$(SCENARIO)', certs='$(CERTS)')","integration(host='$(HOST)', certs='$(CERTS)')") $(if $(KEEP),-- --keep)

test-integration-clean: venv ## remove every test VM, run directory and half-built image
	@$(VENV)/bin/python -m harness prune

# Maildash Campaigns. `make run` brings the whole system up on this machine; `make test` checks everything.
SHELL := /bin/bash
UV := python3 -m uv
PY := .venv/bin/python
# Every service start and test subprocess imports the same modules: let Python keep their bytecode even
# where the environment asks it not to (importing the api: 6.7 s → 2.0 s here).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help setup system-packages mail-packages client-packages bench-packages services migrate run demo test lint types check unit faults bench clean asyncapi

help:
	@echo "make run    set up and run api, scheduler, sender, tracker and a local SMTP sink"
	@echo "make demo   fill the superuser's workspace with sample campaigns and their history"
	@echo "make test   set up and run lint, types and the whole test suite"
	@echo "make bench  run the benchmarks"

# The Dockerfile installs the same version (ARG UV_VERSION; tests/unit/test_deploy.py compares them).
UV_VERSION := 0.13.9

.venv/.synced: pyproject.toml uv.lock
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --quiet --compile-bytecode
	@touch $@

setup: .venv/.synced

# nginx runs the gateway test (deploy/nginx.conf), dnsmasq the DNS the DKIM and domain check tests publish
# records in, chromium the test that the API documentation renders, wrk the tracker benchmark; from Debian's
# packages where we may.
system-packages:
	@command -v nginx >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light) >/dev/null 2>&1; } \
		|| echo "note: nginx not installed; the gateway test will be skipped"
	@PATH="$$PATH:/usr/sbin" command -v dnsmasq >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dnsmasq-base) >/dev/null 2>&1; } \
		|| echo "note: dnsmasq not installed; the DKIM and DNS check tests will be skipped"
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1; } \
		|| echo "note: chromium not installed; the test that /docs renders will be skipped"

# Dovecot (IMAP and LMTP) is the mail server of the mailbox reader's tests, from Debian's packages where we may.
mail-packages:
	@command -v dovecot >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd dovecot-lmtpd) \
		>/dev/null 2>&1; } || echo "note: dovecot not installed; the mailbox reader tests will be skipped"

# The TypeScript client check's npm packages (openapi-typescript, openapi-fetch, typescript), pinned in
# clients/typescript/package-lock.json; its test is skipped where node and npm are missing.
client-packages: clients/typescript/node_modules/.package-lock.json

clients/typescript/node_modules/.package-lock.json: clients/typescript/package-lock.json
	@if command -v npm >/dev/null; then cd clients/typescript && npm ci --no-audit --no-fund --loglevel=error; \
	else echo "note: npm not installed; the TypeScript client check will be skipped"; fi

bench-packages: system-packages
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) >/dev/null 2>&1; } \
		|| echo "note: wrk not installed; the tracker benchmark cannot run"

services: setup
	@$(PY) -m tools.check_services --start

migrate: services
	$(PY) -m shared.db.migrate

run: migrate
	$(PY) -m tools.run

# A sample in the superuser's workspace: domains, templates, 200 leads, a campaign in every status with its
# history (tools/demo.py). A second run changes nothing.
demo: migrate
	$(PY) -m tools.demo

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

types: setup
	.venv/bin/mypy shared services tools maildash

# Two workers, each with its own database and broker names; then, alone, what must not share the machine:
# the fault suite, which restarts the local PostgreSQL and RabbitMQ (MAILDASH_FAULT_RESTARTS).
test: lint types services system-packages mail-packages client-packages
	$(PY) -m pytest -q -n 2 -m "not alone"
	MAILDASH_FAULT_RESTARTS=1 $(PY) -m pytest -q -m alone

# The fault suite with the campaign of issue 7 (2,000 leads over 10 domains); `make test` runs it with 100.
faults: services
	MAILDASH_FAULT_LEADS=2000 MAILDASH_FAULT_RESTARTS=1 $(PY) -m pytest -q -o timeout=1800 tests/integration/test_faults.py

unit: setup
	$(PY) -m pytest -q tests/unit

bench: services bench-packages mail-packages
	$(PY) -m bench

# The AsyncAPI document of the events, generated from shared/events.py and shared/messaging.py; commit it
# (tests/unit/test_asyncapi.py fails while it is out of date).
asyncapi: setup
	$(PY) -m shared.asyncapi docs/asyncapi.json

clean:
	rm -rf .venv .mypy_cache .pytest_cache .ruff_cache var

# Before a commit: what CI's `make test` checks first.
check: lint types

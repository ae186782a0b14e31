# Entry points for people and CI. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Tests create their own databases through this login (made by deploy/local/ensure-services.sh).
export TEST_PG_ADMIN_URL ?= postgres://catalogue:catalogue@127.0.0.1:5432/postgres
TEST_THREADS ?= 8

.PHONY: help run stop reset test test-api test-faults test-fresh test-compose cluster-up cluster-down bench bench-scaling bench-quick lint fmt services clean-tests

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

run: ## Start the whole stack on this machine (installs and provisions what is missing)
	deploy/local/run.sh

stop: ## Stop services `make run` left running
	deploy/local/stop.sh

reset: ## Wipe the local stack's data (asks first)
	deploy/local/reset.sh

services: ## Make sure PostgreSQL and RabbitMQ run (installs them when missing)
	deploy/local/ensure-services.sh

test: services ## Run every test against the local PostgreSQL and RabbitMQ (the fault suite and schemathesis too)
	cargo test --workspace --locked --exclude fault-suite -- --test-threads=$(TEST_THREADS)
	$(MAKE) --no-print-directory test-api
	$(MAKE) --no-print-directory test-faults

test-api: services ## Schemathesis, every check, against write-api's and read-api's OpenAPI documents (under a minute)
	deploy/local/api-fuzz.sh

# The broker scenarios' three-node cluster starts before the suite, while the machine is idle
# (about 25 s; Erlang boots several times slower beside the suite's loaded stacks), and stops
# after it unless it was running before.
test-faults: services ## The fault suite: the services under load while links, processes and messages break
	cargo build --locked --bins
	@cluster=deploy/local/rabbitmq-cluster.sh; \
	ours=1; $$cluster status | grep -q running && ours=0; \
	$$cluster up || exit 1; \
	cargo test --locked -p fault-suite -- --test-threads=3 --nocapture; rc=$$?; \
	if [ $$ours = 1 ]; then $$cluster down; fi; \
	exit $$rc

test-fresh: ## `make run` and `make test` on a fresh Debian container, timed (FRESH_ARGS="--commit REV")
	deploy/containers/fresh-machine.sh $(FRESH_ARGS)

test-compose: ## docker-compose.yml for real: one image build, up, smoke checks, down -v (long the first time: the build; not in CI)
	deploy/containers/compose-check.sh $(COMPOSE_ARGS)

bench: ## Benchmark the stack against PostgreSQL itself (about 9 min; results in bench/results/)
	deploy/local/bench.sh $(BENCH_ARGS)

bench-scaling: ## The scaling table: writes at concurrency 1-256, read-api's queries with 10k and 1M products (about 12 min)
	deploy/local/bench.sh --scaling --write-concurrency 1,16,64,256 --skip lag,reads,strategies,catchup $(BENCH_ARGS)

bench-quick: ## A one-minute smoke run of the benchmark
	deploy/local/bench.sh --quick $(BENCH_ARGS)

lint: ## Formatting and clippy, as CI runs them
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

fmt: ## Format the code
	cargo fmt --all

cluster-up: ## Start a local three-node RabbitMQ cluster beside the machine's node (ports 5681-5683)
	deploy/local/rabbitmq-cluster.sh up

cluster-down: ## Stop the local RabbitMQ cluster and delete its data
	deploy/local/rabbitmq-cluster.sh down

clean-tests: ## Drop test databases and vhosts a killed test run left behind
	deploy/local/clean-test-leftovers.sh

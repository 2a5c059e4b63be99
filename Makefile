# kbackup: one entry point for building, testing and demoing.
#   make demo   back up a topic and its consumer group, lose the cluster, restore into a new one
#   make test   every check and test (what CI runs)
#   make test-faults  the long repeat-count fault loops (CI runs them too)
#   make bench  throughput and memory against Kafka's own perf tools (opt-in, not in test)

SHELL        := /bin/bash
CARGO        ?= cargo
MVN          ?= mvn -q -B
PYTHON       ?= python3
VENV         := .venv
PY           := $(VENV)/bin/python
KAFKA_LIBS   := .cache/kafka-4.3.1/libs
JNI_SO       := target/release/libkbackup_jni.so
CLI_BIN      := target/release/kbackup
SHIM_JAR     := java-shim/target/kbackup-connect.jar

.PHONY: all build dist test test-faults lint unit-test java-test it-test demo bench kafka venv clean

all: dist

build:
	$(CARGO) build --release -p kbackup-jni -p kbackup-cli
	$(MVN) -f java-shim/pom.xml -DskipTests package

dist: build
	mkdir -p dist
	cp $(SHIM_JAR) dist/kbackup-connect.jar
	cp $(CLI_BIN) dist/kbackup

# Apache Kafka 4.3.1 (broker, tools, Connect) from Maven Central, for the test bed.
kafka: $(KAFKA_LIBS)/.resolved
$(KAFKA_LIBS)/.resolved: tests/testbed/pom.xml
	cd tests/testbed && $(MVN) package
	touch $@

venv: $(VENV)/.installed
$(VENV)/.installed: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -r tests/requirements.txt
	touch $@

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p kbackup-core --all-targets --features fault-injection -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps

unit-test:
	$(CARGO) test --workspace
	$(CARGO) test -p kbackup-core --features fault-injection --test faults

java-test: build
	$(MVN) -f java-shim/pom.xml verify

it-test: dist kafka venv
	$(PY) -m pytest -q -m "not faults" tests/integration

# The long fault loops (repeated SIGKILLs, rebalances, broker restarts); CI runs them after `test`.
test-faults: dist kafka venv
	$(PY) -m pytest -q -m faults tests/integration

test: lint unit-test java-test it-test

demo: dist kafka venv
	$(PY) tests/demo.py

bench: dist kafka venv
	$(PY) tests/bench/bench.py

clean:
	$(CARGO) clean
	rm -rf dist java-shim/target $(VENV)

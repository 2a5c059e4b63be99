# kbackup: one entry point for building, testing and demoing.
#   make demo   back up a topic and its consumer group, lose the cluster, restore into a new one
#   make test   every check and test (what CI runs)
#   make test-faults  the long repeat-count fault loops (CI runs them too)
#   make bench  throughput and memory against Kafka's own perf tools (opt-in, not in test)
#   make bench-inprocess  the sink and source tasks through JNI into files, no Kafka (opt-in)
#   make release  stripped binaries + separate debug info, Confluent Hub archive, CLI tarball,
#                 SHA-256 sums, into dist/release/ (docs/install.md)
#   make test-release  installs that archive into a fresh plugin.path and backs up/restores
#   make test-compat   sink and source end to end on Connect 3.9.2 and 4.4.0 workers

SHELL        := /bin/bash
CARGO        ?= cargo
MVN          ?= mvn -q -B
PYTHON       ?= python3
VENV         := .venv
PY           := $(VENV)/bin/python
KAFKA_LIBS   := .cache/kafka-4.3.1/libs
SHIM_JAR     := java-shim/target/kbackup-connect.jar

# What ships is built for the oldest glibc we support (2.17: RHEL/UBI 7+, Amazon Linux 2,
# Debian 9+, Ubuntu 18.04+) with OpenSSL and zlib compiled in, so the only shared libraries
# it needs are the C runtime's (tests/integration/test_portable.py keeps that true). Zig is the
# C compiler and linker for that: it carries glibc stubs for any version, and both tools come
# from PyPI as pinned wheels. ARCH is the one switch for another CPU (aarch64 is planned:
# `rustup target add aarch64-unknown-linux-gnu` and `make dist ARCH=aarch64`).
ARCH         ?= x86_64
GLIBC        ?= 2.17
RUST_TARGET  := $(ARCH)-unknown-linux-gnu
NATIVE_DIR   := target/$(RUST_TARGET)/release
JNI_SO       := $(NATIVE_DIR)/libkbackup_jni.so
CLI_BIN      := $(NATIVE_DIR)/kbackup
PLATFORM     := linux-$(ARCH)
SHIP         := target/ship/$(PLATFORM)
TOOLS        := .cache/buildtools
ZIGLANG_VERSION        := 0.14.1
CARGO_ZIGBUILD_VERSION := 0.24.1
# The tools' bin/ first on PATH: cargo finds `cargo-zigbuild` there, and it and tools/zigcc
# find Zig through that venv's python3 (`python3 -m ziglang`). CC/CXX are for librdkafka's
# ./configure, which ignores the per-target compilers cargo-zigbuild sets.
ZIGBUILD     := PATH="$(abspath $(TOOLS))/bin:$$PATH" KBACKUP_ZIG_ARCH=$(ARCH) KBACKUP_GLIBC=$(GLIBC) \
	CC="$(abspath tools/zigcc)" CXX="$(abspath tools/zigcxx)" $(CARGO) zigbuild
OBJCOPY      ?= objcopy

.PHONY: all build native dist test test-faults lint unit-test java-test it-test demo bench bench-inprocess \
	bench-classes kafka venv clean \
	tools release test-release test-compat s3-server

all: dist

# The pinned cross-build tools, in a venv of their own (nothing installed system-wide).
TOOLS_STAMP  := $(TOOLS)/.installed-$(ZIGLANG_VERSION)-$(CARGO_ZIGBUILD_VERSION)
tools: $(TOOLS_STAMP)
$(TOOLS_STAMP):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q ziglang==$(ZIGLANG_VERSION) cargo-zigbuild==$(CARGO_ZIGBUILD_VERSION)
	touch $@

# The native code is built once, with debug info; the stripped copies that ship go to $(SHIP)
# (the jar embeds the library from there) and their debug info to dist/debug/ (found through
# the .gnu_debuglink section), so the tests run exactly what a release contains.
build: native
	$(MVN) -f java-shim/pom.xml -DskipTests -Dkbackup.native.platform=$(PLATFORM) package

native: tools
	$(ZIGBUILD) --release --target $(RUST_TARGET).$(GLIBC) -p kbackup-jni -p kbackup-cli \
		--features kbackup-jni/portable,kbackup-cli/portable
	mkdir -p $(SHIP) dist/debug
	$(OBJCOPY) --only-keep-debug $(JNI_SO) dist/debug/libkbackup_jni.so.debug
	$(OBJCOPY) --strip-all --add-gnu-debuglink=dist/debug/libkbackup_jni.so.debug $(JNI_SO) $(SHIP)/libkbackup_jni.so
	$(OBJCOPY) --only-keep-debug $(CLI_BIN) dist/debug/kbackup.debug
	$(OBJCOPY) --strip-all --add-gnu-debuglink=dist/debug/kbackup.debug $(CLI_BIN) $(SHIP)/kbackup

dist: build
	cp $(SHIM_JAR) dist/kbackup-connect.jar
	cp $(SHIP)/kbackup dist/kbackup

# Release artifacts from what dist/ holds (tools/release.py; docs/install.md).
release: dist
	$(PYTHON) tools/release.py --dist dist --out dist/release --platform $(PLATFORM)

# The Confluent Hub archive unpacked into a fresh plugin.path runs a backup and a restore.
test-release: release kafka venv
	$(PY) -m pytest -q tests/release/test_release.py

# Sink and source end to end on Connect 3.9.2 and 4.4.0 workers (jars from Maven Central).
test-compat: dist kafka venv
	$(PY) -m pytest -q tests/release/test_compat.py

# Apache Kafka 4.3.1 (broker, tools, Connect) from Maven Central, for the test bed.
kafka: $(KAFKA_LIBS)/.resolved
$(KAFKA_LIBS)/.resolved: tests/testbed/pom.xml
	cd tests/testbed && $(MVN) package
	touch $@

# versitygw, a real S3 server for the test bed (tests/testbed/s3.py), built from the Go module
# proxy. Its module and build caches live beside it so a fresh clone builds it only once.
VERSITYGW_VERSION := 1.8.0
VGW_DIR      := $(abspath .cache)/versitygw-$(VERSITYGW_VERSION)
GO           ?= $(or $(shell command -v go 2>/dev/null),/usr/local/go/bin/go)
s3-server: $(VGW_DIR)/.installed
$(VGW_DIR)/.installed:
	GOBIN=$(VGW_DIR)/bin GOMODCACHE=$(VGW_DIR)/gomod GOCACHE=$(VGW_DIR)/gocache GOFLAGS=-modcacherw \
		$(GO) install github.com/versity/versitygw/cmd/versitygw@v$(VERSITYGW_VERSION)
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

it-test: dist kafka venv s3-server
	$(PY) -m pytest -q -m "not faults" tests/integration

# The long fault loops (repeated SIGKILLs, rebalances, broker restarts); CI runs them after `test`.
test-faults: dist kafka venv
	$(PY) -m pytest -q -m faults tests/integration

test: lint unit-test java-test it-test

demo: dist kafka venv
	$(PY) tests/demo.py

bench: dist kafka venv s3-server bench-classes
	$(PY) tests/bench/bench.py

# The in-process bench is a test class of the shim (never in the plugin jar): compile it.
bench-classes: build
	$(MVN) -f java-shim/pom.xml -Dkbackup.native.platform=$(PLATFORM) test-compile

bench-inprocess: kafka venv bench-classes
	$(PY) tests/bench/inprocess.py

clean:
	$(CARGO) clean
	rm -rf dist java-shim/target $(VENV)

"""Kafka's jars for the bed: which release, where they are, and resolving them on first use.

Why: the broker, Connect and the tools are run from the real release jars of one version
(4.3.1 unless KBACKUP_KAFKA_VERSION says otherwise), fetched from Maven Central by
tests/testbed/pom.xml into .cache/kafka-<version>/libs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Optional

from testbed.procs import TestbedError

REPO = Path(__file__).resolve().parents[2]
# The Kafka (broker, tools, Connect) version the bed runs; KBACKUP_KAFKA_VERSION or
# Cluster(kafka_version=...) picks another release from Maven Central (e.g. 3.9.2, 4.4.0).
KAFKA_VERSION = os.environ.get("KBACKUP_KAFKA_VERSION", "4.3.1")
DEFAULT_LIBS = REPO / ".cache" / f"kafka-{KAFKA_VERSION}" / "libs"


def kafka_libs(version: Optional[str] = None) -> Path:
    """Directory holding the Kafka jars (4.3.1 unless `version`/KBACKUP_KAFKA_VERSION says
    otherwise); resolves them with Maven on first use.

    `KBACKUP_KAFKA_LIBS` overrides the location of the default version (then nothing is
    downloaded).
    """
    if version is not None and version != KAFKA_VERSION:
        libs = REPO / ".cache" / f"kafka-{version}" / "libs"
        if not (libs / f"kafka_2.13-{version}.jar").exists():
            _resolve_kafka(version)
        return libs
    override = os.environ.get("KBACKUP_KAFKA_LIBS")
    if override:
        libs = Path(override)
        if not list(libs.glob("kafka_2.13-*.jar")):
            raise TestbedError(
                f"KBACKUP_KAFKA_LIBS={libs} holds no kafka_2.13 jar: point it at a directory of "
                "Kafka 4.3.1 jars or unset it to let the test bed resolve them with Maven"
            )
        return libs
    if not (DEFAULT_LIBS / f"kafka_2.13-{KAFKA_VERSION}.jar").exists():
        _resolve_kafka(KAFKA_VERSION)
    return DEFAULT_LIBS


def _resolve_kafka(version: str) -> None:
    pom = REPO / "tests" / "testbed" / "pom.xml"
    proc = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(pom), "package", f"-Dkafka.version={version}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    if proc.returncode != 0:
        raise TestbedError(
            f"resolving Kafka {version} jars failed (mvn -f tests/testbed/pom.xml package "
            f"-Dkafka.version={version}): {proc.stdout[-2000:]}\nfix: check network access to "
            "Maven Central and that the version exists"
        )

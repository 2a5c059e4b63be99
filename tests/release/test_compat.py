"""The plugin on the Connect versions users run (issue 15): the sink backs up and the source
restores, end to end, on a Kafka 3.9.2 and a 4.4.0 broker + distributed worker (4.3.1, the
default bed, is covered by every other test). Run by `make test-compat` (CI runs it); the jars
of each version are resolved from Maven Central into .cache/kafka-<version>/libs on first use.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

# the helpers shared with tests/integration (fixtures.py, roundtrip.py)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from roundtrip import backup_and_restore  # noqa: E402

VERSIONS = ["3.9.2", "4.4.0"]


@pytest.mark.parametrize("kafka_version", VERSIONS)
def test_sink_and_source_end_to_end_on_connect(kafka_version, kbackup, new_cluster, tmp_path):
    started = time.monotonic()
    c = new_cluster(f"kafka-{kafka_version}", kafka_version=kafka_version)
    jar = [p for p in c.libs.glob("connect-runtime-*.jar")]
    assert [p.name for p in jar] == [f"connect-runtime-{kafka_version}.jar"], jar
    plugins = {p["class"]: p for p in c.connect.plugins()}
    for cls in ("io.kbackup.connect.BackupSinkConnector", "io.kbackup.connect.BackupSourceConnector"):
        assert cls in plugins, f"Connect {kafka_version} did not find {cls}: {sorted(plugins)}"
    info = c.connect.request("GET", "/")
    assert info["version"] == kafka_version, info
    done = backup_and_restore(c, kbackup, tmp_path / "backup", f"compat-{kafka_version.replace('.', '')}")
    # KIP-877 plugin metrics exist from 4.1: older workers run the tasks without metrics
    log = c.worker.log_file.read_text(errors="replace")
    no_metrics = "kbackup runs without metrics" in log
    assert no_metrics == (kafka_version < "4.1"), f"Connect {kafka_version}: metrics line {no_metrics}"
    print(f"Connect {kafka_version}: {done['records']} records backed up and restored in "
          f"{time.monotonic() - started:.0f}s (including the bed's start)")

"""The core's own Rust tests that need a broker, run against the shared test-bed broker.

`crates/kbackup-core/tests/{kafka_broker,group_offsets_broker}.rs` are `#[ignore]`d in a plain
`cargo test` (no broker there); here they run with `KBACKUP_TEST_BOOTSTRAP` set, so topic
description, manifests, group-offset capture and restore commits are checked on real Kafka.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from conftest import REPO

SUITES = {"kafka_broker": 3, "group_offsets_broker": 2}


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_core_suite_passes_against_the_real_broker(cluster, suite):
    env = dict(os.environ, KBACKUP_TEST_BOOTSTRAP=cluster.bootstrap)
    proc = subprocess.run(
        ["cargo", "test", "-q", "-p", "kbackup-core", "--test", suite, "--", "--ignored"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    m = re.search(r"test result: ok\. (\d+) passed; 0 failed", out)
    assert m, out[-4000:]
    assert int(m.group(1)) == SUITES[suite], out[-4000:]

"""A backup holds every record of the cluster: everything `kbackup backup` and `kbackup restore`
create in it (segments, indexes, manifests, lock files, group-offsets logs, restore state) is
readable by its owner only, whatever the umask, unless `--file-mode` says otherwise
(issue 14, item 6)."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from conftest import unique


def run_with_umask(kbackup, umask: int, *args) -> subprocess.CompletedProcess:
    """kbackup under `umask` (0: the most permissive, so a mode left to the umask shows)."""
    proc = subprocess.run([str(kbackup.path), *map(str, args)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=120,
                          preexec_fn=lambda: os.umask(umask))
    assert proc.returncode == 0, proc.stderr
    return proc


def modes(root: Path) -> dict[str, int]:
    """path (relative to root) -> permission bits of every entry under root, root included."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = stat.S_IMODE(os.lstat(p).st_mode)
    return out


def backup_and_restore(cluster, kbackup, backup: Path, umask: int, *extra) -> None:
    topic, group = unique("modes"), unique("modes-group")
    cluster.kafka.create_topic(topic, 2)
    cluster.kafka.produce(topic, [{"partition": i % 2, "key": b"k%d" % i, "value": b"v" * 100}
                                  for i in range(200)])
    cluster.kafka.commit_group_offsets(group, {(topic, 0): 10, (topic, 1): 4})
    run_with_umask(kbackup, umask, "backup", "--bootstrap-server", cluster.bootstrap,
                   "--dir", backup, "--topics", topic, "--group-offsets",
                   "--max-segment-bytes", "2000", *extra)
    run_with_umask(kbackup, umask, "restore", "--bootstrap-server", cluster.bootstrap,
                   "--dir", backup, "--topics", topic, "--rename", f"{topic}:{topic}-r",
                   "--group-offsets")
    run_with_umask(kbackup, umask, "reindex", backup)


def test_cli_backup_tree_is_owner_only_under_a_permissive_umask(cluster, kbackup, workdir):
    backup = workdir / "new" / "backup"
    backup_and_restore(cluster, kbackup, backup, 0o000)
    found = modes(workdir / "new")
    kinds = {Path(p).suffix for p in found} | {Path(p).name for p in found}
    for kind in (".segment", ".offset-index", ".time-index", "group-offsets.log",
                 "group-offsets.lock", "writer.lock", "topic.json", "kbackup.json",
                 "connector.json"):
        assert kind in kinds, f"the test did not create a {kind}: {sorted(found)}"
    wrong = {p: oct(m) for p, m in found.items()
             if m != (0o700 if (workdir / "new" / p).is_dir() else 0o600)}
    assert wrong == {}, f"entries not owner-only: {wrong}"


def test_file_mode_gives_the_configured_mode(cluster, kbackup, workdir):
    backup = workdir / "backup"
    backup_and_restore(cluster, kbackup, backup, 0o077, "--file-mode", "0640")
    found = modes(backup)
    # the restore's own bookkeeping is always owner-only
    data = {p: m for p, m in found.items() if not p.startswith("restore-state")}
    wrong = {p: oct(m) for p, m in data.items()
             if m != (0o750 if (backup / p).is_dir() else 0o640)}
    assert wrong == {}, f"entries without the configured mode: {wrong}"
    state = {p: m for p, m in found.items() if p.startswith("restore-state")}
    assert state and all(m in (0o600, 0o700) for m in state.values()), state


def test_bad_file_mode_is_one_line_naming_the_flag(kbackup, tmp_path):
    proc = subprocess.run([str(kbackup.path), "backup", "--bootstrap-server", "127.0.0.1:1",
                           "--dir", str(tmp_path / "b"), "--topics", "t", "--file-mode", "0755"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "--file-mode" in proc.stderr and "0600" in proc.stderr, proc.stderr
    assert not (tmp_path / "b").exists()

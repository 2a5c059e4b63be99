"""`kbackup copy` (issue 9, item 5) between a local directory and a real S3 server.

Why: the cold copy an operator trusts lives off the cluster's disks, in a bucket with its own
lifecycle and object lock. A backup taken from a real broker (every record shape, a 1 MiB
value, committed and aborted transactions so offsets cannot line up, a consumer group) is
copied to versitygw (tests/testbed/s3.py) with nothing but the standard AWS_* variables; the
reading verbs print the same for the bucket as for the directory; the local backup is deleted,
the bucket's copy is brought back byte for byte, and `kbackup restore` reads the bucket in place
into a NEW cluster: byte-exact, read back with confluent-kafka, and the group reads exactly
what it had not read.
What lands in the bucket is checked from the server's own listing, not from kbackup's.

A copy is never blind: a segment damaged in the bucket stops the copy back with the object
and byte named (exit 4), writes nothing for it and no root marker (a half copy is never taken
for a backup); once the object is repaired the same command resumes, keeping what landed
intact. A torn tail at the source (a segment a sink was writing) is cut at the last whole
record, never carried into the copy.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import unique
from fixtures import CREATE_TS_BASE, MIB, fixture_records
from test_s3_backup import assert_restored_with_group
from testbed.s3 import S3Server

GOLDEN_V2 = Path(__file__).resolve().parents[1] / "golden" / "v2"


def _files(root: Path) -> dict[str, bytes]:
    """Every file of a backup directory by relative key, without lock files (not data)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.endswith(".lock")}


def test_a_backup_copied_to_s3_and_back_restores_byte_exact_with_groups_translated(
        cluster, new_cluster, kbackup, tmp_path):
    k = cluster.kafka
    topic = unique("copy")
    k.create_topic(topic, 2, {"max.message.bytes": 4 * MIB})
    for p in (0, 1):
        k.produce(topic, fixture_records(p, big=(p == 0)))
    tx = [{"partition": 1, "key": b"tx-%d" % i, "value": b"in a transaction %d" % i}
          for i in range(10)]
    k.produce_transaction(topic, tx, transactional_id=unique("copy-tx"))
    k.produce_transaction(topic, [dict(r, value=b"aborted") for r in tx], abort=True,
                          transactional_id=unique("copy-ab"))
    k.produce(topic, [{"partition": 1, "key": b"after", "value": b"after %d" % i}
                      for i in range(20)])
    original = k.consume_topic(topic)
    # p1's position is past the commit marker and the aborted transaction: the restored
    # offsets differ, so only a translated position reads the right records
    pos = {0: 20, 1: original[1][-5].offset}
    assert pos[1] > len(original[1]) - 5, "markers and the aborted batch took offsets"
    group = unique("copy-g")
    k.commit_group_offsets(group, {(topic, p): o for p, o in pos.items()})

    local = tmp_path / "local"
    kbackup.run("backup", "--bootstrap-server", cluster.bootstrap, "--dir", local, "--topics",
                topic, "--group-offsets", "--max-segment-bytes", "300000")
    before = _files(local)
    assert sum(key.endswith(".segment") for key in before) >= 3

    with S3Server() as s3:
        url = f"s3://{s3.bucket}/prod/nightly"
        env = s3.env()
        rep = json.loads(kbackup.run("copy", local, url, "--json", "-q", env=env).stdout)
        want_records = sum(len(v) for v in original.values())
        assert rep["records"] == want_records and rep["torn"] == [] and rep["skipped"] == [], rep
        # the server's own listing holds exactly the backup's files, nothing half uploaded
        listed = s3.list_keys("prod/nightly/")
        assert {key.removeprefix("prod/nightly/"): size for key, size in listed.items()} == \
            {key: len(data) for key, data in before.items()}
        assert s3.pending_uploads() == []
        _read_verbs_agree(kbackup, local, url, env, topic, group, want_records)

        shutil.rmtree(local)  # the bucket holds the only copy now
        back = tmp_path / "from-s3"
        kbackup.run("copy", url, back, "-q", env=env)
        assert _files(back) == before, "a round trip through the bucket changes no byte"
        kbackup.run("verify", back, "-q")

        # restored straight from the bucket (no copy back): progress kept in the bucket, where
        # restore-status finds it and a rerun resumes from it (here: nothing left to do)
        target = new_cluster("copy-target", with_worker=False)
        restore = ("restore", "--bootstrap-server", target.bootstrap, "--dir", url, "--topics",
                   topic, "--group-offsets")
        kbackup.run(*restore, env=env, timeout=300)
        state_keys = s3.list_keys("prod/nightly/restore-state/")
        assert {k.split("/", 4)[-1] for k in state_keys} == \
            {"connector.json", f"topics/{topic}.json", f"partitions/{topic}/0.json",
             f"partitions/{topic}/1.json"}, state_keys
        st = json.loads(kbackup.run("restore-status", url, "--json", env=env).stdout)
        assert [r["status"]["finished"] for r in st["restores"]] == [True], st
        assert st["restores"][0]["state_dir"].startswith(url + "/restore-state/"), st
        again = json.loads(kbackup.run(*restore, "--json", env=env, timeout=300).stdout)
        assert again["finished"], again
        assert s3.list_keys("prod/nightly/restore-state/").keys() == state_keys.keys()
        # a copy of the bucket leaves the restore's progress behind
        rep = json.loads(kbackup.run("copy", url, tmp_path / "after-restore", "--json", "-q",
                                     env=env).stdout)
        assert sorted(x["key"].split("/")[0] for x in rep["skipped"]) == ["restore-state"] * 4
    assert_restored_with_group(target, topic, original, group, pos, "restored from the bucket")


def _read_verbs_agree(kbackup, local: Path, url: str, env: dict, topic: str, group: str,
                      records: int):
    """inspect, cat, verify, offsets and restore-plan read the bucket's copy exactly as the
    directory: the same JSON but for the location, the records byte for byte, the window found through
    the time index and the group targets found through the offset index and the offsets log,
    all through ranged reads of the objects (issue 9: the read verbs work on a URL)."""
    def both(*args: str, drop: tuple[str, ...] = ()):
        out = []
        for where in (local, url):
            got = kbackup.run(*args[:1], where, *args[1:], env=env).stdout
            if "--json" in args:
                got = json.loads(got)
                for key in drop:
                    got.pop(key)
            out.append(got)
        return out

    at_dir, at_url = both("inspect", "--json", drop=("root",))
    assert at_url == at_dir and at_dir["records"] > 0, (at_dir, at_url)
    at_dir, at_url = both("cat", "--topic", topic)
    assert at_url == at_dir, "cat prints other records from the bucket"
    assert len(at_dir.splitlines()) == records
    at_dir, at_url = both("cat", "--topic", topic, "--partition", "1", "--from-offset", "30")
    assert at_url == at_dir and json.loads(at_dir.splitlines()[0])["offset"] == 30
    at_dir, at_url = both("verify", "--json", "-q")
    assert at_url == at_dir and at_dir["ok"] and at_dir["problems"] == [], (at_dir, at_url)
    at_dir, at_url = both("offsets", "--json", drop=("dir",))
    assert at_url == at_dir and {r["group"] for r in at_dir["offsets"]} == {group}, at_dir
    from_ts = str(CREATE_TS_BASE + 100_000 + 25 * 7)  # inside partition 1's timestamps
    for window in ((), ("--from-time", from_ts)):
        at_dir, at_url = both("restore-plan", "--topics", topic, "--json", *window,
                              drop=("dir",))
        assert at_url == at_dir, (window, at_dir, at_url)
        assert group in json.dumps(at_dir), at_dir
    # a topic the bucket does not hold is named as such, like a directory's
    proc = kbackup.run("cat", url, "--topic", "no-such-topic", env=env, check=False)
    assert proc.returncode != 0 and "no-such-topic is not in the backup at " + url in proc.stderr


def test_damage_in_the_bucket_stops_the_copy_back_and_a_torn_tail_is_cut(kbackup, tmp_path):
    src = tmp_path / "golden"
    shutil.copytree(GOLDEN_V2, src)
    segs = sorted(src.rglob("*.segment"))
    torn_seg = sorted((src / "topics" / "golden" / "0").glob("*.segment"))[-1]  # being written
    intact = torn_seg.read_bytes()
    header_len = int.from_bytes(intact[6:8], "big")
    # a crash while appending: the first 30 bytes of a frame (a copy of the segment's first)
    torn_seg.write_bytes(intact + intact[header_len:header_len + 30])
    golden = _files(GOLDEN_V2)

    with S3Server() as s3:
        url = f"s3://{s3.bucket}/copy"
        env = s3.env()
        rep = json.loads(kbackup.run("copy", src, url, "--json", "-q", env=env).stdout)
        key = str(torn_seg.relative_to(src))
        assert [(t["key"], t["copied"], t["source_len"]) for t in rep["torn"]] == \
            [(key, len(intact), len(intact) + 30)], rep
        assert s3.request("GET", f"copy/{key}")[2] == intact, "the torn bytes stayed behind"

        # bit rot in the bucket: one byte of a record in the middle of a segment
        victim = str(segs[len(segs) // 2].relative_to(src))
        good = golden[victim]
        bad = bytearray(good)
        bad[len(bad) // 2] ^= 0x40
        assert s3.request("PUT", f"copy/{victim}", body=bytes(bad))[0] == 200
        # reading the bucket names the damaged object and byte too
        proc = kbackup.run("inspect", url, env=env, check=False)
        assert proc.returncode == 4, proc.stderr
        assert f"{url}/{victim}" in proc.stderr and "byte" in proc.stderr, proc.stderr
        proc = kbackup.run("verify", url, "--json", "-q", env=env, check=False)
        assert proc.returncode == 4, proc.stderr
        found = json.loads(proc.stdout)["problems"]
        assert [(p["severity"], p["file"]) for p in found] == [("error", f"{url}/{victim}")], \
            found
        assert found[0]["position"] is not None
        dst = tmp_path / "back"
        proc = kbackup.run("copy", url, dst, "-q", env=env, check=False)
        assert proc.returncode == 4, proc.stderr
        assert f"{url}/{victim}" in proc.stderr and "byte" in proc.stderr, proc.stderr
        assert not (dst / "kbackup.json").exists(), "a half copy must not look like a backup"
        assert not (dst / victim).exists()

        # repaired (e.g. from the object store's version history): the same command resumes
        assert s3.request("PUT", f"copy/{victim}", body=good)[0] == 200
        rep = json.loads(kbackup.run("copy", url, dst, "--json", "-q", env=env).stdout)
        assert rep["unchanged"] > 0 and rep["written"] > 0, rep
    assert _files(dst) == golden
    kbackup.run("verify", dst, "-q")


def test_copy_refuses_a_destination_holding_something_else(kbackup, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a backup")
    proc = kbackup.run("copy", GOLDEN_V2, other, check=False)
    assert proc.returncode == 2 and "not empty" in proc.stderr and "notes.txt" in proc.stderr
    v1 = tmp_path / "v1"
    kbackup.run("copy", GOLDEN_V2.parent / "v1", v1, "-q")
    proc = kbackup.run("copy", GOLDEN_V2, v1, check=False)
    assert proc.returncode == 2 and "another backup" in proc.stderr, proc.stderr
    assert (other / "notes.txt").read_text() == "not a backup"
    proc = kbackup.run("copy", GOLDEN_V2, "ftp://host/x", check=False)
    assert proc.returncode == 2 and "s3://bucket/prefix" in proc.stderr


def test_prune_reindex_status_and_restore_status_work_on_a_bucket(kbackup, tmp_path):
    """The verbs that change or judge a backup work on a bucket as on a directory (issue 9):
    `prune` drops the same old segments (deleting the objects, indexes first), `reindex`
    rebuilds a lost index object byte-exact, `status` reports the same figures, and
    `restore-status` of a bucket with no restore says so."""
    local = tmp_path / "golden"
    shutil.copytree(GOLDEN_V2, local)
    golden = _files(GOLDEN_V2)
    with S3Server() as s3:
        url = f"s3://{s3.bucket}/tools"
        env = s3.env()
        kbackup.run("copy", local, url, "-q", env=env)

        def status(where):
            doc = json.loads(kbackup.run("status", where, "--json", env=env).stdout)
            doc.pop("checked_at_ms")
            return doc
        assert status(url) == status(local)

        # an index object lost in the bucket: verify warns, reindex puts it back byte-exact
        index_key = "topics/golden/1/00000000000000000100.time-index"
        assert s3.request("DELETE", f"tools/{index_key}")[0] == 204
        found = json.loads(kbackup.run("verify", url, "--json", "-q", env=env).stdout)
        assert [(p["severity"], p["file"]) for p in found["problems"]] == \
            [("warning", f"{url}/{index_key}")], found
        out = kbackup.run("reindex", url, env=env).stdout
        assert "1 index pairs rebuilt" in out, out
        assert s3.request("GET", f"tools/{index_key}")[2] == golden[index_key]
        found = json.loads(kbackup.run("verify", url, "--json", "-q", env=env).stdout)
        assert found["ok"] and found["problems"] == [], found

        # prune: the same segments as from the directory, gone from the server's listing
        def pruned(where, *flags):
            doc = json.loads(kbackup.run("prune", where, "--older-than", "1d", "--json",
                                         *flags, env=env).stdout)
            return [(s["topic"], s["partition"], s["base_offset"], s["records"], s["bytes"])
                    for s in doc["removed"]]
        dry = pruned(url, "--dry-run")
        assert dry and dry == pruned(local, "--dry-run"), dry
        assert pruned(url) == dry and pruned(local) == dry
        left = {k.removeprefix("tools/") for k in s3.list_keys("tools/")}
        assert left == {k for k in _files(local)}, "the bucket keeps what the directory keeps"
        for topic, p, base, _, _ in dry:
            assert f"topics/{topic}/{p}/{base:020d}.segment" not in left
        found = json.loads(kbackup.run("verify", url, "--json", "-q", env=env).stdout)
        assert found["ok"] and found["problems"] == [], found

        proc = kbackup.run("restore-status", url, env=env, check=False)
        assert proc.returncode != 0 and "no restore has run from" in proc.stderr, proc.stderr

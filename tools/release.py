#!/usr/bin/env python3
"""Packs what `make dist` built into the release artifacts (`make release`; docs/install.md).

  <owner>-<name>-<version>.zip   Confluent Hub component archive: manifest.json, lib/ (the jar),
                                 doc/, etc/ (example connector configs); install with
                                 `confluent-hub install --no-prompt FILE.zip` or unzip into a
                                 directory on the worker's plugin.path
  kbackup-<version>-<platform>.tar.gz        the CLI (stripped) with its docs
  kbackup-<version>-<platform>-debug.tar.gz  separate debug info of the CLI and the JNI library
  SHA256SUMS                                 `sha256sum -c SHA256SUMS` checks them all

Entries are sorted and dated with SOURCE_DATE_EPOCH (default: the last commit's date, else 0) so
the same inputs give byte-identical archives. Only the standard library is used.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OWNER = "kbackup"
NAME = "kafka-connect-kbackup"


def workspace_version() -> str:
    """The one version of the project: [workspace.package] in Cargo.toml."""
    m = re.search(r'^version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M)
    if not m:
        raise SystemExit("no `version = \"...\"` line in Cargo.toml")
    return m.group(1)


def source_date_epoch() -> int:
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    try:
        out = subprocess.run(["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        return int(out.stdout.strip() or 0)
    except (OSError, ValueError):
        return 0


def manifest(version: str) -> dict:
    """Confluent Hub's manifest.json for the plugin pair."""
    return {
        "name": NAME,
        "version": version,
        "title": "kbackup: cold backup and restore for Apache Kafka",
        "description": (
            "Backs up topics (every record field, byte for byte) and consumer-group positions to "
            "plain files with BackupSinkConnector, and restores them into any cluster with "
            "BackupSourceConnector, translating each group's committed offsets to the new "
            "offsets. The Rust core ships inside the jar as a native library for Linux x86_64 "
            "(glibc 2.17 or newer); no other library is needed on the worker."),
        "owner": {"username": OWNER, "type": "organization", "name": "kbackup"},
        "component_types": ["sink", "source"],
        "tags": ["backup", "restore", "disaster recovery", "consumer offsets", "files"],
        "requirements": [
            "Apache Kafka Connect 3.9 or later (tested: 3.9.2, 4.3.1, 4.4.0)",
            "Java 17 runtime on the worker (Java 11 once the plugin is built for it; see doc/install.md)",
            "Linux x86_64 with glibc 2.17 or newer (not Alpine/musl without a glibc compatibility layer)",
        ],
        "features": {
            "supported_encodings": ["any"],
            "single_message_transforms": False,
            "confluent_control_center_integration": False,
            "kafka_connect_api": True,
            "delivery_guarantee": ["exactly_once"],
        },
        "license": [{"name": "Apache License 2.0",
                     "url": "https://www.apache.org/licenses/LICENSE-2.0"}],
        "documentation_url": "doc/install.md",
    }


class Archive:
    """Adds files to a zip or a tar with fixed dates, in the order given (callers sort)."""

    def __init__(self, path: Path, epoch: int):
        self.path = path
        self.epoch = max(epoch, 315532800)  # zip cannot date before 1980
        if path.suffix == ".zip":
            self.zip = zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9)
            self.tar = None
        else:
            self.raw = io.BytesIO()
            self.tar = tarfile.open(fileobj=self.raw, mode="w", format=tarfile.PAX_FORMAT)
            self.zip = None

    def add(self, name: str, data: bytes, executable: bool = False) -> None:
        mode = 0o755 if executable else 0o644
        if self.zip is not None:
            info = zipfile.ZipInfo(name, time.gmtime(self.epoch)[:6])
            info.external_attr = (0o100000 | mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            self.zip.writestr(info, data)
        else:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, self.epoch
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            self.tar.addfile(info, io.BytesIO(data))

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()
            return
        self.tar.close()
        with open(self.path, "wb") as f, gzip.GzipFile(fileobj=f, mode="wb", mtime=self.epoch,
                                                      filename="") as gz:
            gz.write(self.raw.getvalue())


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dist", type=Path, default=REPO / "dist")
    ap.add_argument("--out", type=Path, default=REPO / "dist" / "release")
    ap.add_argument("--platform", default="linux-x86_64")
    args = ap.parse_args()

    version = workspace_version()
    epoch = source_date_epoch()
    jar, cli = args.dist / "kbackup-connect.jar", args.dist / "kbackup"
    debug = [args.dist / "debug" / "kbackup.debug", args.dist / "debug" / "libkbackup_jni.so.debug"]
    missing = [str(p) for p in (jar, cli, *debug) if not p.exists()]
    if missing:
        raise SystemExit(f"missing {missing}: run `make dist` first")
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    docs = REPO / "docs"
    out: list[Path] = []

    # 1. Confluent Hub component archive
    root = f"{OWNER}-{NAME}-{version}"
    comp = Archive(args.out / f"{root}.zip", epoch)
    comp.add(f"{root}/manifest.json", (json.dumps(manifest(version), indent=2) + "\n").encode())
    comp.add(f"{root}/lib/kbackup-connect-{version}.jar", jar.read_bytes())
    comp.add(f"{root}/doc/README.md", (REPO / "README.md").read_bytes())
    for d in ("install.md", "config-sink.md", "config-source.md", "restore.md", "offsets.md",
              "format.md"):
        comp.add(f"{root}/doc/{d}", (docs / d).read_bytes())
    for f in sorted((REPO / "packaging" / "etc").iterdir()):
        comp.add(f"{root}/etc/{f.name}", f.read_bytes())
    comp.close()
    out.append(comp.path)

    # 2. the CLI with its docs
    base = f"kbackup-{version}-{args.platform}"
    tar = Archive(args.out / f"{base}.tar.gz", epoch)
    tar.add(f"{base}/kbackup", cli.read_bytes(), executable=True)
    tar.add(f"{base}/README.md", (REPO / "README.md").read_bytes())
    for d in ("cli.md", "install.md", "format.md", "restore.md", "offsets.md"):
        tar.add(f"{base}/docs/{d}", (docs / d).read_bytes())
    tar.close()
    out.append(tar.path)

    # 3. debug info, found by gdb/backtraces through each binary's .gnu_debuglink
    dbg = Archive(args.out / f"{base}-debug.tar.gz", epoch)
    for p in debug:
        dbg.add(f"{base}-debug/{p.name}", p.read_bytes())
    dbg.close()
    out.append(dbg.path)

    sums = "".join(f"{sha256(p)}  {p.name}\n" for p in out)
    (args.out / "SHA256SUMS").write_text(sums)
    for p in out:
        print(f"{p.stat().st_size:>12,}  {p}")
    print(f"{'':>12}  {args.out / 'SHA256SUMS'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

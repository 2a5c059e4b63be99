"""One version everywhere (issue 15): the workspace Cargo.toml's `version` is what the CLI
prints, what the jar's connectors report to Connect, what the pom and the release manifest
carry and what docs/install.md names; and the jar's bytecode level is what the pom says.
"""

from __future__ import annotations

import importlib.util
import re
import struct
import zipfile

from conftest import PLUGIN_JAR, REPO

POM = (REPO / "java-shim" / "pom.xml").read_text()


def cargo_version() -> str:
    return re.search(r'^version = "([^"]+)"', (REPO / "Cargo.toml").read_text(), re.M).group(1)


def test_cli_and_jar_report_the_cargo_version(kbackup, dist_dir):
    v = cargo_version()
    assert kbackup.run("--version").stdout.split()[:2] == ["kbackup", v]
    with zipfile.ZipFile(dist_dir / PLUGIN_JAR) as jar:
        props = jar.read("kbackup-connect.properties").decode()
    assert f"version={v}" in props.splitlines(), props


def test_connect_reports_the_cargo_version(cluster):
    v = cargo_version()
    plugins = [p for p in cluster.connect.plugins() if p["class"].startswith("io.kbackup.")]
    assert len(plugins) == 2 and all(p["version"] == v for p in plugins), plugins


def test_release_manifest_and_install_doc_name_the_cargo_version():
    v = cargo_version()
    spec = importlib.util.spec_from_file_location("release", REPO / "tools" / "release.py")
    release = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(release)
    assert release.workspace_version() == v and release.manifest(v)["version"] == v
    doc = (REPO / "docs" / "install.md").read_text()
    named = set(re.findall(r"kbackup(?:-kafka-connect-kbackup|-connect)?-(\d+\.\d+\.\d+)", doc))
    assert named == {v}, f"docs/install.md names versions {named}, Cargo.toml says {v}"


def class_majors(jar_path) -> dict[str, int]:
    out = {}
    with zipfile.ZipFile(jar_path) as jar:
        for n in jar.namelist():
            if n.endswith(".class"):
                magic, _minor, major = struct.unpack(">IHH", jar.read(n)[:8])
                assert magic == 0xCAFEBABE, n
                out[n] = major
    return out


def test_class_files_have_the_bytecode_level_the_pom_sets(dist_dir):
    release = int(re.search(r"<maven.compiler.release>(\d+)</maven.compiler.release>", POM).group(1))
    majors = class_majors(dist_dir / PLUGIN_JAR)
    assert majors and set(majors.values()) == {release + 44}, sorted(set(majors.values()))


def test_class_files_run_on_java_11_workers(dist_dir):
    majors = class_majors(dist_dir / PLUGIN_JAR)
    too_new = sorted(n for n, m in majors.items() if m > 55)
    assert not too_new, f"{len(too_new)} classes need a newer JVM than 11: {too_new[:5]}"

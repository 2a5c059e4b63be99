"""The native code we ship runs on every glibc >= 2.17 x86_64 host (issue 15).

The ELF checks read what the dynamic loader of a user's host will read: the NEEDED entries (only
the C runtime's libraries may appear: OpenSSL, zlib and zstd are linked in), the glibc symbol
versions asked for (none newer than GLIBC_2.17, the glibc of RHEL/UBI 7, Amazon Linux 2) and the
undefined symbols (each must be versioned, i.e. bound to one of those libraries, or weak: a
stray unversioned one would fail to resolve at load time on an older host). They run on the
library embedded in the jar, as Connect extracts it, and on the CLI, exactly as in dist/.

The worker test then runs a real Connect worker in a mount namespace in which every libssl and
libcrypto file on the host is an empty file, so `libssl.so.3` cannot be loaded by anyone, and
the plugin must still back up and restore; /proc/<pid>/maps of that worker shows which shared
objects were really mapped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from conftest import Kbackup, PLUGIN_JAR
from roundtrip import backup_and_restore

# The C runtime: what glibc itself consists of, plus the unwinder; anything else must be linked in.
C_RUNTIME = {
    "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1", "libgcc_s.so.1",
    "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
}
MAX_GLIBC = (2, 17)


def readelf(*args: str) -> str:
    exe = shutil.which("readelf")
    if exe is None:
        pytest.fail("readelf (binutils) is needed for the ELF checks: apt-get install binutils",
                    pytrace=False)
    return subprocess.run([exe, "-W", *args], check=True, stdout=subprocess.PIPE, text=True).stdout


def needed(path: Path) -> list[str]:
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf("-d", str(path)))


def glibc_versions(path: Path) -> set[tuple[int, ...]]:
    """Every GLIBC_x.y[.z] version the file asks for (its .gnu.version_r section)."""
    text = readelf("-V", str(path))
    needs = text[text.find("Version needs section"):] if "Version needs section" in text else ""
    return {tuple(int(x) for x in v.split(".")) for v in re.findall(r"Name: GLIBC_([0-9.]+)", needs)}


def strong_unversioned_undefined(path: Path) -> list[str]:
    """Undefined dynamic symbols that are neither weak nor bound to a library version."""
    out = []
    for line in readelf("--dyn-syms", str(path)).splitlines():
        cols = line.split()
        # Num: Value Size Type Bind Vis Ndx Name
        if len(cols) >= 8 and cols[6] == "UND" and cols[4] != "WEAK" and "@" not in cols[7]:
            out.append(cols[7])
    return out


def fmt(v: tuple[int, ...]) -> str:
    return "GLIBC_" + ".".join(map(str, v))


@pytest.fixture(scope="module")
def shipped(dist_dir: Path, tmp_path_factory) -> dict[str, Path]:
    """The CLI from dist/ and the JNI library as it comes out of the jar."""
    out = tmp_path_factory.mktemp("shipped")
    with zipfile.ZipFile(dist_dir / PLUGIN_JAR) as jar:
        libs = [n for n in jar.namelist() if n.startswith("native/") and n.endswith(".so")]
        assert libs == ["native/linux-x86_64/libkbackup_jni.so"], libs
        so = out / "libkbackup_jni.so"
        so.write_bytes(jar.read(libs[0]))
    return {"libkbackup_jni.so (in the jar)": so, "kbackup (CLI)": dist_dir / "kbackup"}


def test_native_artifacts_need_only_the_c_runtime(shipped):
    report = {name: needed(path) for name, path in shipped.items()}
    print("NEEDED:", report)
    for name, libs in report.items():
        assert "libc.so.6" in libs, f"{name}: not a glibc binary? NEEDED {libs}"
        extra = sorted(set(libs) - C_RUNTIME)
        assert not extra, (f"{name} needs {extra} besides the C runtime: link them in (the "
                           f"`portable` features, e.g. rdkafka/ssl-vendored) - NEEDED {libs}")


def test_native_artifacts_ask_for_glibc_2_17_at_most(shipped):
    for name, path in shipped.items():
        versions = glibc_versions(path)
        assert versions, f"{name}: no GLIBC_ symbol versions found; is it a glibc binary?"
        newest = max(versions)
        print(f"{name}: newest glibc symbol version {fmt(newest)}")
        too_new = sorted(v for v in versions if v > MAX_GLIBC)
        assert not too_new, (f"{name} asks for {[fmt(v) for v in too_new]}, newer than "
                             f"{fmt(MAX_GLIBC)}: it would not load on RHEL/UBI 7-8, Amazon Linux 2 "
                             f"or Debian 10; build it with `make build` (Zig against glibc 2.17)")


def test_native_artifacts_have_no_unbound_undefined_symbols(shipped):
    # A function missing from glibc 2.17 that the linker let through unversioned (a shared
    # library may keep undefined symbols) would only fail when the JVM loads the library.
    for name, path in shipped.items():
        unbound = strong_unversioned_undefined(path)
        assert not unbound, f"{name}: undefined symbols bound to no library version: {unbound[:20]}"


def test_shipped_binaries_are_stripped_and_point_at_their_debug_info(shipped):
    for name, path in shipped.items():
        sections = readelf("-S", str(path))
        assert ".debug_info" not in sections and ".symtab" not in sections, \
            f"{name} ships with debug info or a symbol table; `make build` strips it"
        assert ".gnu_debuglink" in sections, f"{name} has no .gnu_debuglink to its debug file"


# ---------------------------------------------------------------------------------------------
# A real worker on a host without OpenSSL


def _ssl_files() -> list[str]:
    """Every libssl/libcrypto file of the host, resolved (symlinks point at these)."""
    found = set()
    for d in ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib",
              "/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu"):
        for pattern in ("libssl.so*", "libcrypto.so*", "libssl3.so*"):
            for f in Path(d).glob(pattern):
                real = f.resolve()
                if real.is_file():
                    found.add(str(real))
    return sorted(found)


def _hide_ssl_wrapper(tmp: Path) -> Path:
    """A script running its arguments in a private mount namespace in which each libssl and
    libcrypto file is /dev/null bind-mounted over it (the process keeps its pid: no fork)."""
    if os.geteuid() != 0:
        pytest.skip("hiding the host's OpenSSL needs root (a private mount namespace)")
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("unshare (util-linux) is needed to hide OpenSSL from the worker", pytrace=False)
    files = _ssl_files()
    mounts = " && ".join(f"mount --bind /dev/null '{f}'" for f in files) or "true"
    script = tmp / "without-openssl"
    script.write_text(
        "#!/bin/sh\n"
        f"exec {unshare} --mount --propagation private -- "
        f"sh -c \"{mounts} && exec \\\"\\$@\\\"\" without-openssl \"$@\"\n")
    script.chmod(0o755)
    return script


def test_plugin_runs_in_a_worker_that_cannot_load_libssl(dist_dir, new_cluster, tmp_path,
                                                         monkeypatch):
    hide = _hide_ssl_wrapper(tmp_path)
    probe = ["python3", "-c", "import ctypes; ctypes.CDLL('libssl.so.3')"]
    inside = subprocess.run([str(hide), *probe], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert inside.returncode != 0, "libssl.so.3 still loads inside the namespace: test is void"
    print("dlopen(libssl.so.3) in the namespace:", inside.stdout.strip().splitlines()[-1])

    # Every JVM of this cluster (broker, worker, tools) starts through the wrapper.
    java = shutil.which("java", path=os.environ.get("JAVA_HOME", "") + "/bin") or shutil.which("java")
    java_wrapper = tmp_path / "java"
    java_wrapper.write_text(f"#!/bin/sh\nexec {hide} {java} \"$@\"\n")
    java_wrapper.chmod(0o755)
    monkeypatch.setenv("JAVA", str(java_wrapper))
    cli = tmp_path / "kbackup"
    cli.write_text(f"#!/bin/sh\nexec {hide} {dist_dir / 'kbackup'} \"$@\"\n")
    cli.chmod(0o755)
    kb = Kbackup(cli)
    assert kb.run("--version").stdout.startswith("kbackup ")

    c = new_cluster("no-openssl")
    pid = c.worker.process.pid
    backup_and_restore(c, kb, tmp_path / "backup", "nossl")

    maps = Path(f"/proc/{pid}/maps").read_text()
    # the path is the 6th field; the extracted library was unlinked after loading: "... (deleted)"
    mapped = sorted({cols[5] for cols in (line.split(maxsplit=5) for line in maps.splitlines())
                     if len(cols) == 6 and ".so" in cols[5]})
    assert any("libkbackup_jni" in m for m in mapped), "the worker never loaded the kbackup library"
    ssl = [m for m in mapped if "libssl" in m or "libcrypto" in m]
    assert not ssl, f"the worker mapped OpenSSL after all: {ssl}"
    print("worker", pid, "mapped:", [Path(m).name for m in mapped if "kbackup" in m or "libc" in m])

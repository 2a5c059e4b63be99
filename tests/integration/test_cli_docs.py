"""docs/cli.md matches `kbackup --help`: every subcommand has a section and every option of
every subcommand is documented. Help text comes from one definition (clap), so this keeps the
hand-written page honest."""

from __future__ import annotations

import re
import subprocess

import pytest

from conftest import REPO

DOC = (REPO / "docs" / "cli.md").read_text()


def help_text(kbackup_path, *args: str) -> str:
    return subprocess.run([str(kbackup_path), *args, "--help"], check=True,
                          capture_output=True, text=True).stdout


def subcommands(kbackup_path) -> list[str]:
    text = help_text(kbackup_path)
    block = text.split("Commands:", 1)[1].split("Options:", 1)[0]
    return [m.group(1) for m in re.finditer(r"^  ([a-z][a-z-]*)\s", block, re.M)
            if m.group(1) != "help"]


def test_every_subcommand_has_a_section(dist_dir):
    subs = subcommands(dist_dir / "kbackup")
    assert len(subs) >= 10, subs
    missing = [s for s in subs if not re.search(rf"^#+ `kbackup {re.escape(s)}\b", DOC, re.M)]
    assert not missing, f"docs/cli.md has no section for: {missing}"


def test_every_option_of_every_subcommand_is_documented(dist_dir):
    kb = dist_dir / "kbackup"
    undocumented = []
    for sub in subcommands(kb):
        for opt in sorted(set(re.findall(r"(--[a-z][a-z-]+)", help_text(kb, sub)))):
            if opt in ("--help", "--version"):
                continue
            if opt not in DOC:
                undocumented.append(f"{sub} {opt}")
    assert not undocumented, f"options missing from docs/cli.md: {undocumented}"


@pytest.mark.parametrize("code", ["0", "1", "2", "3", "4", "5"])
def test_exit_codes_in_help_are_documented(dist_dir, code):
    assert re.search(rf"^\| {code} \|", DOC, re.M), f"exit code {code} not in docs/cli.md's table"

"""The dependency tree against deny.toml: only permissive licences, crates.io only, no banned
crate (`rsa`: RUSTSEC-2023-0071; OpenSSL: one TLS stack), no wildcard versions."""

from __future__ import annotations

import subprocess

from services import REPO


def test_cargo_deny_accepts_licenses_bans_and_sources():
    result = subprocess.run(
        # Duplicate versions are warnings (deny.toml): listed without their dependency trees.
        ["cargo-deny", "--color", "never", "check", "--hide-inclusion-graph"]
        + ["licenses", "bans", "sources"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert "bans ok, licenses ok, sources ok" in result.stdout, result.stdout + result.stderr


def test_rsa_is_not_in_the_build():
    # Cargo.lock still names rsa: sqlx-macros-core's optional MySQL driver keeps it in the lock
    # file (cargo locks optional dependencies of weak features), though nothing builds it. What
    # counts is the graph of what is built, for any platform, dev and build dependencies included.
    result = subprocess.run(
        ["cargo", "tree", "--locked", "--workspace", "--target", "all", "-e", "all", "-i", "rsa"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", result.stdout
    assert "nothing to print" in result.stderr, result.stderr

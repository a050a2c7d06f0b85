"""`lockstep pin` as a real process in a real git work tree: writes, --check, --json, and every
error (path, parse, match) leaves every file's bytes unchanged."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.system import REPO_ROOT

LOCKSTEP = str(REPO_ROOT / ".venv" / "bin" / "lockstep")
DIGEST = "sha256:" + "9e47" * 16
DOCKERFILE = b"# base\r\nFROM materialize/console:26.4.0 AS console\r\nFROM nginx:1.25"
VALUES = b"console:\n  image:\n    repository: materialize/console\n    tag: 1.9 # pinned\n"


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LOCKSTEP, "pin", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "chart").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "Dockerfile").write_bytes(DOCKERFILE)
    (root / "chart" / "values.yaml").write_bytes(VALUES)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and ".git" not in p.parts}


def test_pin_writes_and_keeps_mode(repo: Path) -> None:
    (repo / "Dockerfile").chmod(0o640)
    proc = run(repo, "--image", "materialize/console=26.5.0", "Dockerfile", "chart/values.yaml")
    assert proc.returncode == 0, proc.stderr
    assert (repo / "Dockerfile").read_bytes() == DOCKERFILE.replace(b"26.4.0", b"26.5.0")
    assert (repo / "chart/values.yaml").read_bytes() == VALUES.replace(b"1.9", b"26.5.0")
    assert os.stat(repo / "Dockerfile").st_mode & 0o777 == 0o640
    assert "Dockerfile:2  26.4.0 → 26.5.0" in proc.stdout
    assert not [p for p in repo.iterdir() if p.name.endswith(".tmp")]


def test_check_drift_pinned_and_malformed(repo: Path) -> None:
    before = snapshot(repo)
    proc = run(repo, "--check", "--image", "materialize/console=1.10", "chart/values.yaml")
    assert proc.returncode == 1, proc.stderr
    assert '-    tag: 1.9 # pinned\n+    tag: "1.10" # pinned\n' in proc.stdout
    assert proc.stdout.startswith("--- a/chart/values.yaml\n+++ b/chart/values.yaml\n")
    assert snapshot(repo) == before
    assert run(repo, "--image", "materialize/console=1.10", "chart/values.yaml").returncode == 0
    proc = run(repo, "--check", "--image", "materialize/console=1.10", "chart/values.yaml")
    assert (proc.returncode, proc.stdout) == (0, "")
    (repo / "bad.yaml").write_bytes(b"image:\n  tag: [1.0\n")
    proc = run(repo, "--check", "--image", "materialize/console=1.10", "bad.yaml")
    assert proc.returncode == 2 and "PinParseError: bad.yaml:" in proc.stderr


def test_digest_given_and_added_json(repo: Path) -> None:
    proc = run(repo, "--json", "--add-digest", "--image", f"nginx=1.27@{DIGEST}", "Dockerfile")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["changed"] and out["files"][0]["edits"][0]["new"] == f"1.27@{DIGEST}"
    assert (repo / "Dockerfile").read_bytes().endswith(f"FROM nginx:1.27@{DIGEST}".encode())
    new = "sha256:" + "01" * 32
    assert run(repo, "--image", f"nginx=1.28@{new}", "Dockerfile").returncode == 0
    assert (repo / "Dockerfile").read_bytes().endswith(f"FROM nginx:1.28@{new}".encode())


def test_any_error_writes_nothing(repo: Path) -> None:
    (repo / "other.Dockerfile").write_bytes(b"ARG V=1\nFROM nginx:$V\nFROM redis:$V\n")
    (repo / "two.Dockerfile").write_bytes(b"FROM nginx:1 AS a\nFROM nginx:1 AS b\n")
    (repo / "bad.yaml").write_bytes(b"image:\n  repository: nginx\n  tag: {1\n")
    (repo / "latin1.Dockerfile").write_bytes(b"# caf\xe9\nFROM nginx:1\n")
    before = snapshot(repo)
    cases = [  # the first file alone would pin fine: nothing is written all the same
        (["Dockerfile", "other.Dockerfile"], "PinAmbiguousError: other.Dockerfile:1"),
        (["--max-matches", "1", "Dockerfile", "two.Dockerfile"], "two.Dockerfile:2"),
        (["Dockerfile", "bad.yaml"], "PinParseError: bad.yaml:"),
        (["Dockerfile", "latin1.Dockerfile"], "PinParseError: latin1.Dockerfile:1: not UTF-8"),
        (["--kind", "chart", "Dockerfile"], "PinParseError"),
        (["--image", "redis=7", "Dockerfile"], "PinNotFoundError"),
    ]
    for args, expected in cases:
        proc = run(repo, "--image", "nginx=1.27", *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert expected in proc.stderr, proc.stderr
        assert snapshot(repo) == before
    proc = run(repo, "--image", "Nginx=1", "Dockerfile")
    assert proc.returncode == 2 and "upper-case" in proc.stderr
    assert snapshot(repo) == before


def test_image_found_in_one_file_is_enough(repo: Path) -> None:
    proc = run(repo, "--image", "nginx=1.27", "Dockerfile", "chart/values.yaml")
    assert proc.returncode == 0, proc.stderr
    assert (repo / "chart/values.yaml").read_bytes() == VALUES


def test_paths_escaping_the_work_tree(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.Dockerfile"
    outside.write_bytes(b"FROM nginx:1.25\n")
    (repo / "link.Dockerfile").symlink_to(outside)
    (repo / "linkdir").symlink_to(tmp_path)
    (repo / "sub").mkdir()
    os.link(repo / "Dockerfile", repo / "sub" / "Dockerfile")
    before = snapshot(repo)
    for arg in ("../outside.Dockerfile", str(outside), "link.Dockerfile",
                "linkdir/outside.Dockerfile", "./sub/../sub/Dockerfile"):
        proc = run(repo, "--image", "nginx=1.27", arg)
        assert proc.returncode == 2, (arg, proc.stderr)
        assert "PinPathError" in proc.stderr, proc.stderr
        assert snapshot(repo) == before
        assert outside.read_bytes() == b"FROM nginx:1.25\n"


def test_dot_segments_are_normalised_inside(repo: Path) -> None:
    proc = run(repo / "chart", "--image", "nginx=1.27", "./../chart/../Dockerfile")
    assert proc.returncode == 0, proc.stderr
    assert "Dockerfile:3  1.25 → 1.27" in proc.stdout


def test_digest_from_the_workspace_registry(repo: Path) -> None:
    """`--digest` asks the registry `[registries]` names (here an OCI layout directory), and a
    tag the registry lacks is a one-line error that writes nothing."""
    from lockstep import ocilayout

    (repo / "lockstep.toml").write_text('[registries."demo.local"]\nlayout = "oci"\n')
    # A fetched digest replaces an existing one (a stale digest would override the tag).
    (repo / "Dockerfile").write_bytes(f"FROM demo.local/demo/app:0.9@{DIGEST} AS app\n".encode())
    desc = ocilayout.write_image(repo / "oci", "demo/app", "1.0", {"app/VERSION": b"1.0\n"})
    proc = run(repo, "--digest", "--image", "demo.local/demo/app=1.0", "Dockerfile")
    assert proc.returncode == 0, proc.stderr
    assert (repo / "Dockerfile").read_bytes() == (
        f"FROM demo.local/demo/app:1.0@{desc.digest} AS app\n".encode())
    before = snapshot(repo)
    proc = run(repo, "--digest", "--image", "demo.local/demo/app=2.0", "Dockerfile")
    assert proc.returncode == 2
    assert "demo.local/demo/app:2.0 is not in registry demo.local" in proc.stderr
    assert snapshot(repo) == before

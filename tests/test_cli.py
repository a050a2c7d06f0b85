"""The command line as users run it: real processes, JSON shapes, init, manifest, demo."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.system import REPO_ROOT, System, sh

STATUS_QUEUE_KEYS = {"mode", "state", "paused_reason", "paused_message", "window", "runners"}
ITEM_KEYS = {"id", "state", "component", "version", "sha", "digest", "configurations",
             "priority", "seq", "position", "wait_reason", "submitted_at", "attempt",
             "recoveries"}
SHOW_EXTRA_KEYS = {"candidate", "runs", "notifications", "history"}
RUN_KEYS = {"stage", "configuration", "state", "attempt", "try", "exit_code", "started_at",
            "ended_at", "worker", "runner", "log", "flaky"}
NOTIFICATION_KEYS = {"event", "notifier", "delivery", "state", "attempts", "last_error"}


def lockstep(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "lockstep", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False,
                          stdin=subprocess.DEVNULL)


def test_json_shapes(tmp_path: Path) -> None:
    system = System.create(tmp_path, extra_config=(
        '[[notifiers]]\nname = "audit"\ntype = "command"\ncommand = ["true"]\n'))
    system.set_rules({"check": {"fail_if": [["beta", "v1.1.0"]]}})
    landed = system.submit("alpha", "v1.1.0")
    rejected = system.submit("beta", "v1.1.0")
    waiting = system.submit("gamma", "v1.1.0")
    assert system.cli("queue", "run", "--once").returncode == 0
    assert system.cli("queue", "run", "--once").returncode == 0

    status = json.loads(system.cli("queue", "status", "--json").stdout)
    assert set(status) == {"queue", "items", "recent"}
    assert set(status["queue"]) == STATUS_QUEUE_KEYS
    assert status["queue"]["state"] == "waiting" and status["queue"]["window"] == 1
    [item] = status["items"]
    assert set(item) == ITEM_KEYS
    assert (item["id"], item["position"], item["wait_reason"]) == (waiting.id, 1, "no-runner")
    assert [i["id"] for i in status["recent"]] == [rejected.id, landed.id]

    shown = json.loads(system.cli("queue", "show", landed.id, "--json").stdout)
    assert set(shown) == ITEM_KEYS | SHOW_EXTRA_KEYS | {"landed"}
    assert set(shown["landed"]) == {"commit", "tag"}
    assert shown["landed"]["tag"] in system.remote_tags()
    assert set(shown["candidate"]) == {"tree", "base", "items", "configurations"}
    assert len(shown["runs"]) == 6 and all(set(r) == RUN_KEYS for r in shown["runs"])

    bad = json.loads(system.cli("queue", "show", rejected.id, "--json").stdout)
    assert set(bad["rejection"]) == {"kind", "message", "stage", "configuration", "exit_code",
                                     "attempt", "log_tail", "candidate", "base", "items"}
    [note] = bad["notifications"]
    assert set(note) == NOTIFICATION_KEYS and note["notifier"] == "audit"
    logs = system.cli("queue", "logs", rejected.id, "--stage", "check")
    assert logs.returncode == 0 and "known bad" in logs.stdout and "build" not in logs.stdout


def test_init_then_manifest_commands(tmp_path: Path) -> None:
    repo = tmp_path / "integration"
    proc = lockstep("init", str(repo), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sh(["log", "--format=%s"], repo) == "lockstep init"
    assert sh(["status", "--porcelain"], repo) == ""
    assert "[[stages]]" in (repo / "lockstep.toml").read_text()
    untested = lockstep("manifest", "validate", cwd=repo)  # parses; stages are still to write
    assert untested.returncode == 2 and "no [[stages]] declared" in untested.stderr
    shown = json.loads(lockstep("manifest", "show", "--json", cwd=repo).stdout)
    assert shown == {"configurations": {"default": {}}}
    again = lockstep("init", str(repo), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_manifest_validate_names_undeclared_component(system: System) -> None:
    path = system.ws_dir / "manifest.toml"
    path.write_text(path.read_text() + 'zeta = { version = "v1", sha = "' + "a" * 40 + '" }\n')
    proc = system.cli("manifest", "validate")
    assert proc.returncode == 2 and "'zeta'" in proc.stderr


def test_manifest_diff_between_integration_releases(system: System) -> None:
    system.submit("alpha", "v1.1.0")
    system.submit("beta", "v1.2.0", configs=["edge"])
    system.run_queue()
    first, second = sorted(system.remote_tags())
    sh(["fetch", "--quiet", "--tags", "origin"], system.ws_dir)
    diff = json.loads(system.cli("manifest", "diff", first, second, "--json").stdout)
    assert diff["changes"] == [{
        "configuration": "edge", "component": "beta",
        "old": {"version": "v1.0.0", "sha": system.shas[("beta", "v1.0.0")]},
        "new": {"version": "v1.2.0", "sha": system.shas[("beta", "v1.2.0")]},
    }]
    text = system.cli("manifest", "diff", first, second).stdout
    assert "beta v1.0.0 → v1.2.0 [edge]" in text
    at_tag = json.loads(system.cli("manifest", "show", "--ref", first, "--json").stdout)
    assert at_tag["configurations"]["default"]["alpha"]["version"] == "v1.1.0"


def test_demo_killed_while_building_then_end_to_end_and_rerun(tmp_path: Path) -> None:
    """A demo killed while building is built again by the next run, which then tells the whole
    story; a rerun reuses it. (One test: a complete demo run costs about 40 s.)"""
    target = tmp_path / "demo"
    _kill_while_building(target)
    first = lockstep("demo", str(target), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "interrupted" in first.stdout
    assert "q3 pricing v2.0.0: REJECTED: stage contract" in first.stdout
    assert "storefront requires pricing API 1" in first.stdout
    _assert_upgrade_stage(first.stdout, target)
    tags = sh(["tag", "--list"], target / "remotes" / "integration.git").split()
    assert len(tags) == 4
    # Then it cuts a release of the newest one: every component tagged, images built by the
    # components' CI hooks, pricing and storefront pinned in one commit each.
    newest = max(tags, key=lambda t: int(t.rsplit(".", 1)[1]))
    assert f"release {newest}  config default" in first.stdout
    remotes = target / "remotes"
    released = {n: sh(["rev-parse", f"{newest}^{{commit}}"], remotes / f"{n}.git")
                for n in ("inventory", "pricing", "storefront")}
    assert "FROM demo.local/demo/inventory:" + newest[1:] in sh(
        ["show", f"{newest}:deploy/Dockerfile"], remotes / "pricing.git")
    assert "release " + newest + ": pin 3 references in storefront" in sh(
        ["log", "-1", "--format=%s", newest], remotes / "storefront.git")
    assert (target / "registry" / "demo" / "storefront" / "index.json").is_file()
    oldest = min(tags, key=lambda t: int(t.rsplit(".", 1)[1]))
    _assert_rolled_out(first.stdout, target, oldest, newest)
    ordered = sorted(tags, key=lambda t: int(t.rsplit(".", 1)[1]))
    published = _assert_distributions(first.stdout, target, ordered, tmp_path)
    second = _demo_with_status_page(target, tmp_path, tags)
    assert second.returncode == 0, second.stderr
    _assert_rolled_out(second.stdout, target, oldest, newest)  # rolled out again from scratch
    # The rerun builds nothing again: the same archives, named with the same digests.
    assert _assert_distributions(second.stdout, target, ordered, tmp_path) == published
    assert sh(["tag", "--list"], target / "remotes" / "integration.git").split() == tags
    # The rerun's release is a no-op: the same tags at the same commits.
    assert {n: sh(["rev-parse", f"{newest}^{{commit}}"], remotes / f"{n}.git")
            for n in released} == released
    events = (target / "notifications.jsonl").read_text().splitlines()
    assert len(events) == 6  # 4 landed, 2 rejected
    other = tmp_path / "occupied"
    other.mkdir()
    (other / "file").write_text("x")
    refused = lockstep("demo", str(other), cwd=tmp_path)
    assert refused.returncode == 2 and "not empty" in refused.stderr


def _demo_with_status_page(target: Path, cwd: Path,
                           tags: list[str]) -> subprocess.CompletedProcess[str]:
    """`demo --serve --port 0` on the built demo: its status page answers during the story
    and after it, shows every landed release, and goes away with the demo on SIGTERM."""
    import httpx

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "lockstep", "demo", str(target), "--serve",
                             "--port", "0"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    lines: list[str] = []
    url = None
    for line in proc.stdout:  # the demo blocks after this line until it is stopped
        lines.append(line)
        if line.startswith("the status page stays up at "):
            url = line.split()[6].rstrip(";")
            break
    assert url is not None, "".join(lines) + (proc.stderr.read() if proc.stderr else "")
    assert any(line.startswith(f"status page: {url}") for line in lines)  # before the story
    page = httpx.get(url, timeout=30)
    assert page.status_code == 200 and "lockstep" in page.text
    overview = httpx.get(f"{url}api/releases", timeout=30).json()
    assert set(tags) <= set(json.dumps(overview).replace('"', " ").split())
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=60)
    try:
        httpx.get(url, timeout=2)
        still_up = True
    except httpx.HTTPError:
        still_up = False
    assert not still_up, "the status page outlived the demo"
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines) + rest, err)


def _assert_distributions(out: str, target: Path, tags: list[str],
                          cwd: Path) -> dict[str, str]:
    """Each landed release has a published distribution, in tag order: the demo's tools/dist.py
    archived exactly the files of each component at the commit the tag's manifest pins (with
    zeroed times and owners), `dist verify` re-checks it, and the summary names each archive
    with its SHA-256. Returns each tag's archive digest."""
    import hashlib
    import tarfile
    import tomllib

    integration = target / "integration"
    listed = lockstep("dist", "list", "--json", "-C", str(integration), cwd=cwd)
    assert listed.returncode == 0, listed.stderr
    assert [(d["tag"], d["state"]) for d in json.loads(listed.stdout)] == [
        (t, "published") for t in tags]
    digests: dict[str, str] = {}
    for tag in tags:
        where = integration / ".lockstep" / "dist" / tag
        archive = where / f"shop-{tag}.tar.gz"
        assert sorted(p.name for p in where.iterdir()) == sorted(["pins.json", archive.name])
        pins = tomllib.loads(sh(["show", f"{tag}:manifest.toml"], integration))[
            "configurations"]["default"]
        assert json.loads((where / "pins.json").read_text())["components"] == pins
        expected: dict[str, bytes] = {}
        for name, pin in pins.items():
            repo = target / "remotes" / f"{name}.git"
            for file in sh(["ls-tree", "-r", "--name-only", pin["sha"]], repo).splitlines():
                expected[f"{name}/{file}"] = subprocess.run(
                    ["git", "show", f"{pin['sha']}:{file}"], cwd=repo, capture_output=True,
                    check=True).stdout
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            assert all((m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
                       for m in members), tag
            held: dict[str, bytes] = {}
            for m in members:
                fh = tar.extractfile(m)
                assert fh is not None, m.name
                held[m.name] = fh.read()
        assert held == expected, tag
        verified = lockstep("dist", "verify", tag, "-C", str(integration), cwd=cwd)
        assert verified.returncode == 0 and "2 artifact(s) verified" in verified.stdout, (
            verified.stdout + verified.stderr)
        digests[tag] = hashlib.sha256(archive.read_bytes()).hexdigest()
        assert f"  {tag}: published to {where}\n" in out, out
        assert re.search(rf"shop-{re.escape(tag)}\.tar\.gz +\d+ bytes +sha256:{digests[tag]}",
                         out), out
    assert f"look: lockstep dist verify {tags[-1]} -C {integration}" in out, out
    return digests


def _assert_upgrade_stage(out: str, target: Path) -> None:
    """The good inventory versions land through the upgrade stage; v1.3.0, whose migration
    loses the old rows, is rejected by it with a report naming the check, the phase, the step
    and the FAILED_ log, which holds the cause."""
    assert "q1 inventory v1.1.0: landed" in out and "q5 inventory v1.2.0: landed" in out, out
    assert "q6 inventory v1.3.0: REJECTED: stage upgrade exited 1 for configuration default" \
        in out, out
    report = re.search(r"\| lockstep: upgrade scenario zero-downtime-upgrade \(seed \d+\) failed: "
                       r"check (\w+), phase (\w+), action (\d{3}) (\w+)", out)
    assert report is not None, out
    check, phase, number, action = report.groups()
    assert check in {"StockSurvivesUpgrade", "CounterAcrossPhases", "ReservedColumnMigration"}
    assert phase in {"2", "validate"} and action in {"Manipulate", "Validate"}, report[0]
    error = re.search(r"\| lockstep:   error: (.*)", out)
    assert error is not None and "not readable any more" in error[1], out
    log = re.search(r"\| lockstep:   log: (\S+)", out)
    assert log is not None, out
    failed = Path(log[1])
    assert failed.name.startswith(f"FAILED_{number}_") and failed.is_file(), failed
    assert str(failed).startswith(str(target / "integration" / ".lockstep" / "logs" / "q6"))
    assert "not readable any more" in failed.read_text()
    assert len(list(failed.parent.glob("FAILED_*"))) == 1


def _assert_rolled_out(out: str, target: Path, first: str, newest: str) -> None:
    """The demo's last act: the first landed release, then the newest, rolled out to
    environment shop while a client read and wrote; the data written before is read back after;
    and no process of the environment outlives the demo."""
    assert "not rolled out" not in out, out
    assert f"{first}: generation 1 runs inventory v1.1.0's service.py" in out, out
    assert f"{newest}: generation 2 runs inventory v1.2.0's service.py, promoted" in out, out
    client = re.search(r"client across the rollout: (\d+) reads \((\d+) failed\), "
                       r"(\d+) writes \((\d+) failed\)", out)
    assert client is not None, out
    reads, failed_reads, writes, failed_writes = map(int, client.groups())
    assert reads >= 40 and writes >= 40 and failed_reads < reads and failed_writes < writes
    data = re.search(r"data: (\d+) of (\d+) items written before the rollout read back after "
                     r"it \((\d+) with the `reserved` column", out)
    assert data is not None, out
    assert int(data[2]) >= 20 and data[1] == data[2] == data[3], data.group(0)
    rollouts = target / "integration" / ".lockstep" / "rollouts"
    left = []
    for proc in Path("/proc").iterdir():
        try:
            cwd = os.readlink(proc / "cwd")
            argv = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(rollouts) in cwd or str(rollouts) in argv:
            left.append(f"{proc.name}: {argv}")
    assert not left, left


def _kill_while_building(target: Path) -> None:
    """Start `demo` on `target` and SIGKILL it while it builds: the build marker stays, the
    finished marker is not there."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    proc = subprocess.Popen([sys.executable, "-m", "lockstep", "demo", str(target)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    building = target / ".lockstep-demo-building"
    deadline = time.monotonic() + 60
    while not building.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert building.exists()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert building.exists() and not (target / ".lockstep-demo").exists()


def test_interrupted_init_is_redone(tmp_path: Path) -> None:
    repo = tmp_path / "integration"
    sh(["init", "--quiet", str(repo)], tmp_path)
    (repo / "lockstep.toml").write_text("[integration")  # a half-written file, no commit yet
    proc = lockstep("init", str(repo), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert sh(["log", "--format=%s"], repo) == "lockstep init"
    untested = lockstep("manifest", "validate", cwd=repo)  # parses; stages are still to write
    assert untested.returncode == 2 and "no [[stages]] declared" in untested.stderr

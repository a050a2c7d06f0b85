"""`lockstep release cut` end to end against real components on 127.0.0.1
(spec/release.md R1, R4, R6, R9): the distribution registry with token auth and notifications,
component remotes over smart HTTPS (nginx, refusing the credentials) and SSH (a real sshd) on
one repository root, four repositories in a DAG of depth 2, and each remote's post-receive hook
pushing the tagged image to the registry from a background job a few seconds after the tag."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from lockstep.demo_artifacts import ArtifactHook, RegistryPush, install_hook
from lockstep.manifest import Pin, render_new
from lockstep.ocilayout import layout_dir
from lockstep.registry.distribution import ACCEPT
from lockstep.release.journal import Entry, Journal
from lockstep.scaffold import init
from tests.infra import free_port, require_tool
from tests.infra.gitservers import GitServers, git_servers
from tests.infra.registry import (
    PASSWORD,
    USER,
    Notify,
    Registry,
    running_registry,
    wait_for,
)
from tests.release_system import DEPS, PINS, TRANSFORM, files, pinned

pytestmark = pytest.mark.slow

LOCKSTEP = [sys.executable, "-m", "lockstep"]
INTEGRATION_TAG = "v2026.11.1"
WRONG = "hunter2-Wr0ng!pw"  # the git password HTTPS refuses
NOTIFY_TOKEN = "registry-webhook-token"
HOOK_DELAY = 2.0  # seconds between a tag's push and its image's build (the component's CI)
SLOW_POLL = 20.0  # no poll within 10 s of a miss: a wait ending sooner was woken
NAMES = ("console", "base", "platform", "chart")
JOB_LINE = re.compile(r"^(\S+Z) (.*)$")




def git(args: list[str], cwd: Path) -> str:
    """Run git (no prompt, stdin closed); its stdout, stripped."""
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False,
                          stdin=subprocess.DEVNULL, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {done.stderr}")
    return done.stdout.strip()


def blob(bare: Path, rev: str, path: str) -> bytes:
    """A file's exact bytes at a revision of a bare repository."""
    return subprocess.run(["git", "cat-file", "blob", f"{rev}:{path}"], cwd=bare, check=True,
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL).stdout


def job_lines(log: Path) -> list[tuple[float, str]]:
    """A build job log's lines as (epoch seconds, message)."""
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        m = JOB_LINE.match(line)
        if m:
            stamp = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ")
            out.append((stamp.replace(tzinfo=UTC).timestamp(),
                        m.group(2)))
    return out


def registry_digest(reg: Registry, repository: str, tag: str) -> str | None:
    """`Docker-Content-Digest` of a manifest HEAD (None on 404)."""
    with reg.admin(repository) as c:
        r = c.head(f"/v2/{repository}/manifests/{tag}", headers={"Accept": ACCEPT})
    return r.headers["Docker-Content-Digest"] if r.status_code == 200 else None


@dataclass
class RealSystem:
    """The servers, the component repositories (bare, on the git servers' root) and the
    integration workspace of one test."""

    tmp: Path
    git: GitServers
    reg: Registry
    notify_port: int
    ws: Path
    layout: Path
    sources: dict[str, str] = field(default_factory=dict)
    hooks: dict[str, ArtifactHook] = field(default_factory=dict)

    def bare(self, name: str) -> Path:
        """A component's bare repository, served over both HTTPS and SSH."""
        return self.git.srv / f"{name}.git"

    def env(self) -> dict[str, str]:
        """The environment of the `lockstep` process: the user's ssh command (key and pinned
        host key), wrong git credentials, right registry credentials, the webhook token."""
        return dict(os.environ, GIT_SSH_COMMAND=self.git.ssh_command(),
                    LOCKSTEP_TEST_GIT_USER=USER, LOCKSTEP_TEST_GIT_PASSWORD=WRONG,
                    LOCKSTEP_TEST_REG_USER=USER, LOCKSTEP_TEST_REG_PASSWORD=PASSWORD,
                    LOCKSTEP_TEST_NOTIFY_TOKEN=NOTIFY_TOKEN)

    def cli(self, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
        """`lockstep ARGS -C ws` as a user runs it, stdin closed; (result, seconds)."""
        start = time.monotonic()
        done = subprocess.run([*LOCKSTEP, *args, "-C", str(self.ws)], env=self.env(),
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=300)
        return done, time.monotonic() - start

    def tag(self, name: str, tag: str = INTEGRATION_TAG) -> tuple[str, str] | None:
        """(tag object, commit it peels to) of a tag in a component's repository."""
        bare = self.bare(name)
        obj = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}"],
                             cwd=bare, capture_output=True, text=True, check=False).stdout
        if not obj.strip():
            return None
        return obj.strip(), git(["rev-parse", f"refs/tags/{tag}^{{commit}}"], bare)

    def refs(self, name: str) -> dict[str, str]:
        """Every ref of a component's repository."""
        listing = git(["for-each-ref", "--format=%(objectname) %(refname)"], self.bare(name))
        return {ref: sha for sha, ref in (line.split() for line in listing.splitlines())}

    def commits(self, name: str) -> set[str]:
        """Every commit any ref of a component's repository reaches."""
        return set(git(["rev-list", "--all"], self.bare(name)).split())

    def journal(self) -> list[Entry]:
        """The release journal's rows, in order."""
        return Journal(self.ws / ".lockstep" / "release.db").entries(INTEGRATION_TAG, "default")

    def https_requests(self) -> list[str]:
        """nginx's access log lines so far."""
        log = self.git.access_log
        return log.read_text().splitlines() if log.exists() else []


def config_text(s: RealSystem) -> str:
    """lockstep.toml: components over HTTPS then SSH, the registry, notifications, pins."""
    reg = s.reg.host
    comps = "".join(
        f'[components.{n}]\nurl = "{s.git.url(f"{n}.git")}"\n'
        f'ssh_url = "{s.git.ssh_url(f"{n}.git")}"\nimage = "{reg}/demo/{n}"\n'
        f'tag_transform = "{TRANSFORM[n]}"\ndepends_on = {json.dumps(DEPS[n])}\n\n'
        for n in NAMES)
    return (
        f'{comps}[[stages]]\nname = "check"\ncommand = ["true"]\ntimeout = 60\n\n'
        "[release]\n"
        'wait_timeout = "120s"\n'
        f'poll = {{ initial = "{SLOW_POLL:.0f}s", max = "{SLOW_POLL:.0f}s" }}\n'
        f'notifications = {{ listen = "127.0.0.1:{s.notify_port}", path = "/events", '
        'token_env = "LOCKSTEP_TEST_NOTIFY_TOKEN" }\n\n'
        f'[registries."{reg}"]\nscheme = "http"\n'
        'username_env = "LOCKSTEP_TEST_REG_USER"\npassword_env = "LOCKSTEP_TEST_REG_PASSWORD"\n\n'
        f'[git."{s.git.host}"]\nusername_env = "LOCKSTEP_TEST_GIT_USER"\n'
        f'password_env = "LOCKSTEP_TEST_GIT_PASSWORD"\nca_file = "{s.git.ca.ca_crt}"\n'
        f"{PINS}")


@pytest.fixture
def real(tmp_path: Path) -> Iterator[RealSystem]:
    """Start the git servers and the token registry (notifications to lockstep's listener),
    publish the four components and the integration release, install the pushing hooks."""
    require_tool("skopeo", "docker-registry")
    notify_port = free_port()
    with git_servers() as srv, running_registry(
            auth="token", notify=Notify("http://127.0.0.1:1/pending", NOTIFY_TOKEN)) as reg:
        # The webhook path names the registry key (host:port), known only once it started.
        cfg = json.loads(reg.config.read_text())
        cfg["notifications"]["endpoints"][0]["url"] = (
            f"http://127.0.0.1:{notify_port}/events/{reg.host}")
        reg.config.write_text(json.dumps(cfg))
        reg.restart()
        s = RealSystem(tmp_path, srv, reg, notify_port, tmp_path / "integration",
                       tmp_path / "ci-layout")
        for name, content in files(reg.host).items():
            bare, sha = srv.create_repo(f"{name}.git", files=content)
            work = srv.dir / "work" / f"{name}.git"
            git(["tag", "-a", "v1.0.0", "-m", "v1.0.0"], work)
            git(["push", "--quiet", str(bare), "refs/tags/v1.0.0"], work)
            s.sources[name] = sha
        for name in NAMES:  # after the first tags: those build nothing
            hook = ArtifactHook(f"demo/{name}", s.layout, TRANSFORM[name], delay=HOOK_DELAY,
                                push=RegistryPush(reg.host, "http", USER, PASSWORD))
            install_hook(s.bare(name), hook)
            s.hooks[name] = hook
        manifest = render_new({"default": {n: Pin("v1.0.0", sha)
                                           for n, sha in s.sources.items()}})
        remote = tmp_path / "integration.git"
        git(["init", "--quiet", "--bare", str(remote)], tmp_path)
        init(s.ws, remote_url=str(remote), config_text=config_text(s), manifest_text=manifest)
        git(["tag", "-a", INTEGRATION_TAG, "-m", "integration release"], s.ws)
        git(["push", "--quiet", "origin", f"refs/tags/{INTEGRATION_TAG}"], s.ws)
        yield s


def test_release_cut_against_real_servers(real: RealSystem) -> None:
    """R1, R4, R6, R9 in one release: tags, pin commits and bytes, SSH after a fast HTTPS
    refusal, hook-pushed images woken on by notifications, tokens reused; a no-op rerun."""
    s = real
    reg_host = s.reg.host
    refs_before = {n: s.refs(n) for n in NAMES}
    commits_before = {n: s.commits(n) for n in NAMES}
    https_before = len(s.https_requests())

    done, took = s.cli("release", "cut", "--json")
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "Username for" not in done.stderr and "Password for" not in done.stderr
    status = json.loads(done.stdout)
    assert status["state"] == "done"
    by_name = {c["component"]: c for c in status["components"]}
    assert {n: (c["level"], c["state"]) for n, c in by_name.items()} == {
        "console": (0, "done"), "base": (0, "done"), "platform": (1, "done"),
        "chart": (2, "done")}

    # Tags: upstreams at the manifest commits; downstreams at one pin commit each, whose only
    # parent is the manifest commit. Every tag is annotated and nothing else moved.
    for name in NAMES:
        found = s.tag(name)
        assert found is not None, f"{name}: no tag {INTEGRATION_TAG}"
        obj, commit = found
        assert git(["cat-file", "-t", obj], s.bare(name)) == "tag"
        assert git(["cat-file", "-t", f"refs/tags/{INTEGRATION_TAG}"], s.bare(name)) == "tag"
        after = s.refs(name)
        assert {r: v for r, v in after.items() if r != f"refs/tags/{INTEGRATION_TAG}"} == \
            refs_before[name], f"{name}: a ref other than the release tag changed"
        new = s.commits(name) - commits_before[name]
        if name in ("console", "base"):
            assert commit == s.sources[name] and not new
            assert by_name[name]["pin_commit"] is None
        else:
            assert new == {commit} and commit != s.sources[name]
            parents = git(["rev-list", "--parents", "-n", "1", commit], s.bare(name)).split()
            assert parents[1:] == [s.sources[name]]
            assert by_name[name]["pin_commit"] == commit
            changed = git(["diff", "--name-only", s.sources[name], commit], s.bare(name))
            assert sorted(changed.splitlines()) == sorted(pinned(reg_host)[name])
            for path, text in pinned(reg_host)[name].items():
                assert blob(s.bare(name), commit, path) == text.encode(), f"{name}:{path}"
    message = git(["log", "-1", "--format=%B", INTEGRATION_TAG], s.bare("platform"))
    assert message.startswith(f"release {INTEGRATION_TAG}: pin 3 references in platform")

    # Transports: every component went over SSH; HTTPS was asked and refused (401), never
    # served a thing, and no credential reached the output or the journal.
    assert {n: c["transport"] for n, c in by_name.items()} == dict.fromkeys(NAMES, "ssh")
    https = s.https_requests()[https_before:]
    for name in NAMES:
        mine = [line for line in https if f"/git/{name}.git/" in line]
        assert mine and all('" 401 ' in line for line in mine), mine
    served = s.git.ssh_commands()
    for name in NAMES:
        assert f"git-upload-pack '/{name}.git'" in served
        assert f"git-receive-pack '/{name}.git'" in served
    entries = s.journal()
    text = done.stdout + done.stderr + json.dumps([e.observed for e in entries])
    assert WRONG not in text and PASSWORD not in text
    assert base64.b64encode(f"{USER}:{WRONG}".encode()).decode() not in text
    fallbacks = [f for e in entries for f in e.observed.get("fallbacks", [])]
    assert {f["url"] for f in fallbacks} == {s.git.url(f"{n}.git") for n in NAMES}
    for f in fallbacks:
        assert f["seconds"] < 2.0, f
        assert "Authentication failed" in f["cause"] and WRONG not in f["cause"]
    for name in NAMES:  # the note a user sees: the redacted HTTPS cause
        [note] = by_name[name]["notes"]
        assert note.startswith(f"fetch v1.0.0: {s.git.url(f'{name}.git')} failed in ")
        assert "Authentication failed" in note
    shown, _ = s.cli("release", "status")
    assert shown.returncode == 0 and shown.stdout.count("note: fetch v1.0.0: https://") == 4
    assert WRONG not in shown.stdout + shown.stderr

    # Artifacts: each image was pushed by its hook's background job a few seconds after the
    # tag (the push step had returned long before), and the digests recorded are the
    # registry's, equal to the images the jobs built.
    pushed_at: dict[str, float] = {}
    for name in NAMES:
        tag = INTEGRATION_TAG[1:] if TRANSFORM[name] == "strip-v" else INTEGRATION_TAG
        image = f"{reg_host}/demo/{name}"
        digest = registry_digest(s.reg, f"demo/{name}", tag)
        assert digest is not None
        assert by_name[name]["digests"] == {image: digest}
        index = json.loads((layout_dir(s.layout, f"demo/{name}") / "index.json").read_text())
        assert [m["digest"] for m in index["manifests"]] == [digest]
        lines = job_lines(s.hooks[name].log_path())
        started = [t for t, m in lines if m.startswith(f"tag {INTEGRATION_TAG} (")]
        pushed = [t for t, m in lines if m == f"tag {INTEGRATION_TAG}: pushed "
                  f"{image}:{tag} {digest}"]
        assert len(started) == 1 and len(pushed) == 1, lines
        assert HOOK_DELAY <= pushed[0] - started[0] < HOOK_DELAY + 8, lines
        push_done = [e.at for e in entries if e.component == name and e.step == "push"
                     and e.state == "done"]
        assert push_done and push_done[0] < pushed[0]
        pushed_at[name] = pushed[0]

    # Notifications: each wait ended well before its next poll could (SLOW_POLL), within a
    # second of the job's push: lockstep received the registry's event and was woken by it.
    for name in NAMES:
        waited = by_name[name]["waited_seconds"]
        assert waited < SLOW_POLL / 2 - 1, (name, waited)
        wait_done = [e.at for e in entries if e.component == name and e.step == "wait"
                     and e.state == "done"]
        # (The job logs its line after skopeo exits, so the wake may even come first.)
        assert len(wait_done) == 1 and -0.5 < wait_done[0] - pushed_at[name] < 1.0, \
            (name, wait_done[0] - pushed_at[name])
    assert "retryingsink" not in s.reg.log_text()

    # Token auth: lockstep asked for one pull token per repository and reused it for the
    # checks after the wake; the jobs asked for their push tokens.
    token = s.reg.token
    assert token is not None
    pulls = [r for r in token.requests if r["scopes"] and all(
        sc.endswith(":pull") for sc in r["scopes"])]
    assert sorted(sc for r in pulls for sc in r["scopes"]) == sorted(
        f"repository:demo/{n}:pull" for n in NAMES)
    assert all(r["user"] == USER for r in token.requests)
    pushes = [r for r in token.requests if any(":pull,push" in sc for sc in r["scopes"])]
    assert {sc for r in pushes for sc in r["scopes"]} == {
        f"repository:demo/{n}:pull,push" for n in NAMES}

    refusals = ", ".join(f"{f['seconds'] * 1000:.0f}" for f in fallbacks)
    waits = ", ".join(f"{n} {by_name[n]['waited_seconds']:.2f}s" for n in NAMES)
    print(f"\nrelease cut: {took:.1f}s; HTTPS refusals {refusals} ms; waits {waits}")

    # A rerun: exit 0, no new commit, tag or ref anywhere; HTTPS not asked again (the journal
    # remembers SSH), no image pushed (no tag pushed), one token per repository again.
    refs_after = {n: s.refs(n) for n in NAMES}
    commits_after = {n: s.commits(n) for n in NAMES}
    https_after = len(s.https_requests())
    requests_after = len(token.requests)
    again, _ = s.cli("release", "cut", "--json")
    assert again.returncode == 0, f"{again.stdout}\n{again.stderr}"
    assert json.loads(again.stdout)["state"] == "done"
    assert {n: s.refs(n) for n in NAMES} == refs_after
    assert {n: s.commits(n) for n in NAMES} == commits_after
    assert len(s.https_requests()) == https_after
    new = token.requests[requests_after:]
    assert sorted(sc for r in new for sc in r["scopes"]) == sorted(
        f"repository:demo/{n}:pull" for n in NAMES)
    for name in NAMES:
        assert sum(1 for _, m in job_lines(s.hooks[name].log_path())
                   if m.startswith(f"tag {INTEGRATION_TAG} (")) == 1


# --- the hook's push mode on its own --------------------------------------------------------


@dataclass
class Pusher:
    """A bare repository with the hook in push mode, a clone to push from, the registry."""

    bare: Path
    clone: Path
    reg: Registry
    hook: ArtifactHook
    jobs: list[int]

    def push(self, *refs: str) -> str:
        """`git push` with a secret in the pusher's environment; remembers the job pids."""
        env = dict(os.environ, LOCKSTEP_TEST_PUSHER_SECRET="pusher-only-secret")
        done = subprocess.run(["git", "push", "origin", *refs], cwd=self.clone, env=env,
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        assert done.returncode == 0, done.stderr
        self.jobs += [int(m) for m in re.findall(r"\(job (\d+),", done.stderr)]
        return done.stderr


def pusher(tmp_path: Path, reg: Registry, password: str) -> Pusher:
    """A repository whose hook pushes to `reg` as relbot with `password`, gated."""
    bare = tmp_path / "inventory.git"
    git(["init", "-q", "--bare", "--initial-branch=main", str(bare)], tmp_path)
    hook = ArtifactHook("demo/inventory", tmp_path / "layout", "strip-v",
                        gate=tmp_path / "gate",
                        push=RegistryPush(reg.host, "http", USER, password))
    install_hook(bare, hook)
    clone = tmp_path / "clone"
    git(["clone", "-q", str(bare), str(clone)], tmp_path)
    (clone / "inventory.py").write_text("STOCK = {}\n")
    git(["add", "inventory.py"], clone)
    git(["commit", "-q", "-m", "inventory"], clone)
    git(["tag", "-a", "v1.2.0", "-m", "v1.2.0"], clone)
    return Pusher(bare, clone, reg, hook, [])


@pytest.fixture
def token_registry() -> Iterator[Registry]:
    """A token-auth registry for the push-mode tests."""
    require_tool("skopeo", "docker-registry")
    with running_registry(auth="token") as reg:
        yield reg


def kill_jobs(jobs: list[int]) -> None:
    """Kill build jobs a failing test left waiting (by pid, each one ours)."""
    for pid in jobs:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def eventually(check: Callable[[], Any], what: str, timeout: float = 60.0) -> None:
    """Poll a detached job's log until `check` holds (no handle to wait on)."""
    try:
        wait_for(check, timeout)
    except AssertionError:
        raise AssertionError(f"{what} not seen within {timeout}s") from None


def test_the_hook_pushes_the_built_image_to_a_token_registry(
        tmp_path: Path, token_registry: Registry) -> None:
    """Push mode: the detached job (minimal environment, no secret in argv) copies the built
    image to the registry with the settings file's credentials, digest preserved."""
    reg = token_registry
    p = pusher(tmp_path, reg, PASSWORD)
    settings = p.bare / "hooks" / "lockstep-artifact.json"
    assert settings.stat().st_mode & 0o077 == 0, "the settings file holds a password"
    try:
        p.push("main", "v1.2.0")
        [job] = p.jobs
        # The job waits on the gate the test holds: its argv and environment are clean.
        environ = Path(f"/proc/{job}/environ").read_bytes()
        assert sorted(e.split(b"=")[0] for e in environ.split(b"\0") if e) == [b"LC_ALL",
                                                                              b"PATH"]
        argv = Path(f"/proc/{job}/cmdline").read_bytes()
        assert PASSWORD.encode() not in argv + environ
        assert registry_digest(reg, "demo/inventory", "1.2.0") is None
        (tmp_path / "gate").touch()
        log = p.hook.log_path()
        eventually(lambda: "pushed" in log.read_text() or "failed" in log.read_text(),
                   "the job's push line")
    finally:
        kill_jobs(p.jobs)
    digest = registry_digest(reg, "demo/inventory", "1.2.0")
    index = json.loads((layout_dir(p.hook.layout_root, "demo/inventory") / "index.json")
                       .read_text())
    assert digest is not None and [m["digest"] for m in index["manifests"]] == [digest]
    assert f"pushed {reg.host}/demo/inventory:1.2.0 {digest}" in log.read_text()
    assert reg.token is not None
    assert {"repository:demo/inventory:pull,push"} <= {
        sc for r in reg.token.requests if r["user"] == USER for sc in r["scopes"]}
    assert PASSWORD not in log.read_text()


def test_a_refused_push_is_logged_without_the_password(
        tmp_path: Path, token_registry: Registry) -> None:
    """A registry refusing the credentials: one failure line, no password, no image."""
    reg = token_registry
    p = pusher(tmp_path, reg, WRONG)
    (tmp_path / "gate").touch()
    try:
        p.push("main", "v1.2.0")
        log = p.hook.log_path()
        eventually(lambda: "failed" in log.read_text() or "pushed" in log.read_text(),
                   "the job's push line")
    finally:
        kill_jobs(p.jobs)
    text = log.read_text()
    assert f"tag v1.2.0: push to {reg.host}/demo/inventory:1.2.0 failed: skopeo exited" in text
    assert WRONG not in text and base64.b64encode(f"{USER}:{WRONG}".encode()).decode() \
        not in text
    assert registry_digest(reg, "demo/inventory", "1.2.0") is None
    assert reg.token is not None and any(r.get("refused") for r in reg.token.requests)

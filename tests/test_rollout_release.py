"""Release mode of the local driver end to end: integration releases with real tags on real git
remotes (tests/release_system.py), components run from their repositories at the pinned commits
or from OCI layout artifacts, real processes, the controller in a thread (spec/rollouts.md §2.2,
§2.6, §5.3 g, §6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from lockstep import config, git
from lockstep.demo_artifacts import ArtifactHook, build_artifact
from lockstep.demo_system import INVENTORY_SERVICE_V1, INVENTORY_SERVICE_V2
from lockstep.errors import LockstepError
from lockstep.manifest import Manifest, Pin
from lockstep.rollout.release_source import (
    SOURCE_MARKER,
    ReleaseComponent,
    ReleaseSource,
    command_line,
)
from tests.release_system import INTEGRATION_TAG, ReleaseSystem
from tests.test_rollout_controller import ENV, World, _cond, apply
from tests.test_rollout_edges import poll as until

pytestmark = pytest.mark.slow

V2 = "v2026.11.2"

# A stateless component: a plain HTTP server saying which files and release it runs.
WEB = '''\
import http.server, json, os, pathlib
here = pathlib.Path(os.environ["LOCKSTEP_COMPONENT_DIR"])
body = json.dumps({"version": (here / "VERSION.txt").read_text().strip(),
                   "release": os.environ["LOCKSTEP_RELEASE"], "cwd": os.getcwd()}).encode()
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
addr = "127.0.0.1:%d" % server.server_address[1]
print(json.dumps({"event": "listening", "public": addr, "internal": addr}), flush=True)
server.serve_forever()
'''

DEPLOY = {
    "console": '\n[components.console.deploy]\ncommand = ["{python}", "service.py"]\n'
               'args = ["--public-addr", "127.0.0.1:0"]\n',
    "base": '\n[components.base.deploy]\ncommand = ["{python}", "bin/web.py"]\n'
            'stateless = true\n',
}
FILES = {"console": {"service.py": INVENTORY_SERVICE_V1},
         "base": {"bin/web.py": WEB, "VERSION.txt": "base 1\n"}}


def system(tmp: Path) -> ReleaseSystem:
    """Four component repos and integration release v2026.11.1; console is a stateful service,
    base a stateless one, platform and chart libraries (no deploy table)."""
    return ReleaseSystem.create(tmp, files=FILES, component_settings=DEPLOY)


def publish(s: ReleaseSystem, name: str, version: str, files: dict[str, str]) -> str:
    """Commit `files` to a component, tag `version`, push; the commit."""
    src = s.root / "src" / name
    for rel, text in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_text(text)
    git.run(["add", "--all"], src)
    git.run(["commit", "--quiet", "-m", f"{name} {version}"], src)
    git.run(["tag", "-a", version, "-m", version], src)
    git.run(["push", "--quiet", "origin", "HEAD:refs/heads/main", f"refs/tags/{version}"], src)
    return git.out(["rev-parse", "HEAD"], src)


def land(s: ReleaseSystem, tag: str | None, pins: dict[str, Pin],
         edit: Callable[[str], str] | None = None) -> None:
    """Commit new default pins (and an edit of lockstep.toml) on the integration branch, push,
    and tag the commit `tag` (pushed too) unless None."""
    ws = s.ws_dir
    manifest = Manifest((ws / "manifest.toml").read_text())
    (ws / "manifest.toml").write_text(manifest.apply([("default", c, p) for c, p in pins.items()]))
    if edit is not None:
        (ws / "lockstep.toml").write_text(edit((ws / "lockstep.toml").read_text()))
    git.run(["-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "--quiet", "-am",
             f"release {tag}"], ws)
    git.run(["push", "--quiet", "origin", "main"], ws)
    if tag is not None:
        git.run(["-c", "user.name=t", "-c", "user.email=t@localhost", "tag", "-a", tag, "-m",
                 tag], ws)
        git.run(["push", "--quiet", "origin", f"refs/tags/{tag}"], ws)


def pid_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.fixture
def controller_ws(tmp_path: Path) -> Iterator[tuple[ReleaseSystem, Path]]:
    """The release system and the controller's workspace: a clone of the integration remote
    (so release tags pushed later are not local). Every workload is stopped afterwards."""
    s = system(tmp_path)
    ws = tmp_path / "controller"
    git.run(["clone", "--quiet", str(tmp_path / "remotes" / "integration.git"), str(ws)])
    yield s, ws
    _stop_everything(World(ws))


def _stop_everything(w: World) -> None:
    for record in w.driver.records(ENV):
        w.driver.teardown(ENV, record["generation"])
    stop_all = getattr(getattr(w.driver, "endpoints", None), "stop_all", None)
    if stop_all is not None:
        stop_all(ENV)
    assert not w.driver.records(ENV)


def test_release_v1_to_v2_rolls_out_with_the_components_own_code(
        controller_ws: tuple[ReleaseSystem, Path]) -> None:
    """v2026.11.1 → v2026.11.2 with WaitUntilReady: each generation runs the service file of
    the console commit its release pins (v2 migrates the table, keeping the rows), records the
    tag, and sees LOCKSTEP_RELEASE; the stateless base is replaced in place after promotion.
    Edits to lockstep.toml in the work tree and a new commit on the integration branch after
    the tag change nothing: the release is read at its tag."""
    s, ws = controller_ws
    # Neither the work tree nor the branch after the tag may matter: both would break console.
    (ws / "lockstep.toml").write_text((ws / "lockstep.toml").read_text().replace(
        '"service.py"', '"missing.py"'))
    land(s, None, {"console": Pin("v1.0.0", s.sources["base"])},
         edit=lambda text: text.replace('"service.py"', '"gone.py"'))
    w = World(ws)
    w.thread.start()
    try:
        apply(ws, {"release": INTEGRATION_TAG})
        first = w.wait_reason("Applied", 1)
        assert first["status"]["lastCompletedRelease"] == INTEGRATION_TAG
        gen1 = w.generations()[1]
        tree1 = ws / ".lockstep/rollouts" / ENV / "releases" / INTEGRATION_TAG / "console"
        assert gen1["release"] == INTEGRATION_TAG
        assert gen1["labels"]["lockstep.dev/release"] == INTEGRATION_TAG
        assert gen1["command"][:2] == [sys.executable, str(tree1 / "service.py")]
        assert (tree1 / SOURCE_MARKER).read_text().strip() == f"commit {s.sources['console']}"
        info = httpx.get(f"http://{gen1['public']}/info").json()
        assert info == {"schema": 1, "release": INTEGRATION_TAG, "generation": 1,
                        "status": "IsLeader"}
        assert httpx.put(f"http://{gen1['public']}/stock/apple", content=b"12").status_code == 200
        base1 = until("the stateless base", lambda: next(
            (r for r in w.driver.records(ENV) if r["name"] == f"{ENV}-base" and r["public"]), None))
        web1 = httpx.get(f"http://{base1['public']}/").json()
        assert web1["version"] == "base 1" and web1["release"] == INTEGRATION_TAG
        assert Path(web1["cwd"]) == ws / ".lockstep/rollouts" / ENV / "state" / "base"
        assert not any(r["component"] in ("platform", "chart") for r in w.driver.records(ENV))

        console2 = publish(s, "console", "v1.1.0", {"service.py": INVENTORY_SERVICE_V2})
        base2 = publish(s, "base", "v1.1.0", {"VERSION.txt": "base 2\n"})
        land(s, V2, {"console": Pin("v1.1.0", console2), "base": Pin("v1.1.0", base2)},
             edit=lambda text: text.replace('"gone.py"', '"service.py"'))
        assert git.rev_parse(ws, f"refs/tags/{V2}") is None  # the controller must fetch it
        apply(ws, {"release": V2})
        second = w.wait_reason("Applied", 2)
        assert second["status"]["lastCompletedRelease"] == V2
        assert sorted(w.generations()) == [2] and not pid_alive(int(gen1["pid"]))
        gen2 = w.generations()[2]
        assert gen2["release"] == V2
        assert httpx.get(f"http://{gen2['public']}/info").json()["schema"] == 2
        # Written through generation 1, read through generation 2 after its migration.
        assert httpx.get(f"http://{gen2['public']}/stock/apple").json() == {
            "item": "apple", "count": 12, "reserved": 0}
        assert git.rev_parse(ws, f"refs/tags/{V2}^{{commit}}") is not None
        base_new = until("base replaced in place", lambda: next(
            (r for r in w.driver.records(ENV) if r["name"] == f"{ENV}-base"
             and r["release"] == V2 and r["public"]), None))
        assert base_new["pid"] != base1["pid"] and not pid_alive(int(base1["pid"]))
        web2 = httpx.get(f"http://{base_new['public']}/").json()
        assert web2["version"] == "base 2" and web2["release"] == V2
        assert [h["reason"] for h in w.store.history(ENV)].count("FailedDeploy") == 0
    finally:
        w.stop.set()
        w.thread.join(60)


def test_an_unknown_or_unfetchable_release_fails_the_deploy_and_starts_nothing(
        controller_ws: tuple[ReleaseSystem, Path]) -> None:
    """An unknown tag, an invalid one, and a release whose component repository cannot be
    reached: FailedDeploy naming the problem, no workload and no unpacked files."""
    s, ws = controller_ws
    w = World(ws)
    for release, expected in (("v2099.01.1", "unknown release v2099.01.1"),
                              ("HEAD", "invalid release tag 'HEAD'")):
        apply(ws, {"release": release})
        w.controller.run(once=True)
        cond = _cond(w.status())
        assert cond["reason"] == "FailedDeploy", cond
        assert cond["message"].startswith("Failed to apply changes for generation 1: ")
        assert expected in cond["message"], cond["message"]
        assert w.driver.records(ENV) == []
    os.rename(s.remotes["console"], s.root / "remotes" / "moved.git")
    apply(ws, {"release": INTEGRATION_TAG})
    w.controller.run(once=True)
    cond = _cond(w.status())
    assert cond["reason"] == "FailedDeploy" and "cannot fetch console v1.0.0" in cond["message"]
    assert w.driver.records(ENV) == []
    releases = ws / ".lockstep/rollouts" / ENV / "releases"
    assert not releases.exists() or not any(p.name == "console" for p in releases.rglob("*"))


def test_artifact_source_verifies_digests(tmp_path: Path) -> None:
    """A pin with a digest the release's OCI layout holds runs from the artifact (its `app/`
    tree); a pin without one from the repository; the tree is unpacked once, a crash's leftover
    is never used, and a tampered blob is refused, through Apply as a FailedDeploy."""
    s = system(tmp_path)
    hook = ArtifactHook("demo/console", s.layout, tag_transform="strip-v")
    desc = build_artifact(s.remotes["console"], "v1.0.0", "v1.0.0", hook)
    land(s, V2, {"console": Pin("v1.0.0", s.sources["console"], desc.digest)})
    source = ReleaseSource(s.ws_dir, s.ws_dir / ".lockstep" / "rollouts")
    release = source.resolve(V2)
    assert sorted(release.components) == ["base", "console"]
    assert release.components["console"].pin.digest == desc.digest

    parent = s.ws_dir / ".lockstep/rollouts/check/releases" / V2
    parent.mkdir(parents=True)
    (parent / ".tmp-console-crashed").mkdir()  # what a crash mid-unpack leaves
    tree = source.tree("check", release, "console")
    assert tree == parent / "console" and not (parent / ".tmp-console-crashed").exists()
    assert (tree / SOURCE_MARKER).read_text().strip() == f"digest {desc.digest}"
    assert (tree / "VERSION").read_text() == f"v1.0.0 {s.sources['console']}\n"  # artifact only
    assert (tree / "service.py").read_text() == INVENTORY_SERVICE_V1
    inode = (tree / "service.py").stat().st_ino
    assert source.tree("check", release, "console") == tree
    assert (tree / "service.py").stat().st_ino == inode  # reused, not unpacked again
    base = source.tree("check", release, "base")
    assert (base / SOURCE_MARKER).read_text().strip() == f"commit {s.sources['base']}"
    assert not (base / "VERSION").exists() and (base / "bin" / "web.py").is_file()

    layout = s.layout / "demo" / "console"
    manifest = json.loads((layout / "blobs/sha256" / desc.digest.split(":")[1]).read_bytes())
    layer = layout / "blobs/sha256" / manifest["layers"][0]["digest"].split(":")[1]
    layer.write_bytes(layer.read_bytes()[:-8] + b"tampered")
    with pytest.raises(LockstepError, match="digest mismatch"):
        source.tree("other", release, "console")
    assert not (s.ws_dir / ".lockstep/rollouts/other/releases" / V2 / "console").exists()

    w = World(s.ws_dir)
    apply(s.ws_dir, {"release": V2})
    w.controller.run(once=True)
    cond = _cond(w.status())
    assert cond["reason"] == "FailedDeploy" and "digest mismatch" in cond["message"], cond
    assert w.driver.records(ENV) == []


def test_command_line_rules(tmp_path: Path) -> None:
    """`{python}` is lockstep's interpreter; a relative program (or the script after
    `{python}`) is in the unpacked tree; a bare name not in the tree is left to PATH."""
    (tmp_path / "serve").write_text("")
    cfg = config.parse(
        '[components.a]\nurl = "a.git"\n[components.a.deploy]\ncommand = ["{python}", "s.py"]\n'
        'args = ["--x"]\nenv = { MODE = "fast" }\n')
    deploy = cfg.components["a"].deploy
    assert deploy is not None and deploy.env == {"MODE": "fast"} and not deploy.stateless

    def line(*command: str) -> list[str]:
        d = deploy.model_copy(update={"command": list(command), "args": []})
        return command_line(ReleaseComponent("a", Pin("v1", "a" * 40), d), tmp_path)

    assert command_line(ReleaseComponent("a", Pin("v1", "a" * 40), deploy), tmp_path) == [
        sys.executable, str(tmp_path / "s.py"), "--x"]
    assert line("bin/run", "-v") == [str(tmp_path / "bin/run"), "-v"]
    assert line("serve") == [str(tmp_path / "serve")]
    assert line("sh", "-c", "x") == ["sh", "-c", "x"]
    assert line("/usr/bin/env", "x") == ["/usr/bin/env", "x"]
    assert line("{python}", "-c", "pass") == [sys.executable, "-c", "pass"]


@pytest.mark.parametrize(("table", "message"), [
    ("command = []", "deploy.command: needs a command"),
    ('command = ["../x"]', "deploy.command: invalid deploy program '../x'"),
    ('command = ["{python}", "../s.py"]', "invalid deploy script '../s.py'"),
    ('command = ["x"]\nenv = { LOCKSTEP_RELEASE = "v1" }', "'LOCKSTEP_RELEASE' is not a variable"),
    ('command = ["x"]\nstateless = "yes"', "deploy.stateless: Input should be a valid boolean"),
    ('command = ["x"]\nstatless = true', "deploy.statless: unknown key (did you mean"),
    ("args = []", "deploy.command: required key is missing"),
])
def test_bad_deploy_tables_are_one_line_errors(table: str, message: str) -> None:
    """Every mistake in a deploy table is refused on load with the key path."""
    with pytest.raises(LockstepError) as info:
        config.parse(f'[components.a]\nurl = "a.git"\n[components.a.deploy]\n{table}\n')
    line = info.value.one_line()
    assert message in line and "\n" not in line, line


def test_an_image_index_unpacks_this_machines_platform(tmp_path: Path) -> None:
    """For a multi-platform pin (an image index digest) the manifest of this machine's
    architecture is unpacked; an image without `app/` is the component's tree as a whole."""
    from lockstep import ocilayout
    from lockstep.rollout.release_source import _ARCH, _unpack_artifact

    desc = ocilayout.write_image(tmp_path / "reg", "demo/x", "1.0", {"run.sh": b"echo\n"},
                                 platforms=ocilayout.DEFAULT_PLATFORMS)
    into = tmp_path / "tree"
    into.mkdir()
    _unpack_artifact(tmp_path / "reg" / "demo" / "x", desc.digest, into, "x 1.0")
    arch = _ARCH.get(os.uname().machine.lower(), "amd64")
    assert (into / ".platform").read_text() == f"linux/{arch}\n"
    assert (into / "run.sh").read_text() == "echo\n" and not (into / ".rootfs").exists()


def test_a_release_renders_for_kubernetes_from_its_frozen_manifest(
        controller_ws: tuple[ReleaseSystem, Path]) -> None:
    """`rollout render --kubernetes` of a release-mode Environment resolves the tag in the
    integration repo: one StatefulSet per stateful deployed component running its image at the
    pinned version, a Deployment for the stateless one, the release recorded; valid objects."""
    import kubernetes_validate

    from lockstep.rollout.render import render
    from tests.test_rollout_render import K8S

    _, ws = controller_ws
    env = {"apiVersion": "lockstep.dev/v1alpha2", "kind": "Environment",
           "metadata": {"name": ENV, "namespace": "prod"},
           "spec": {"release": INTEGRATION_TAG}}
    path = ws / "env.json"
    path.write_text(json.dumps(env))
    done = subprocess.run([sys.executable, "-m", "lockstep", "rollout", "render", str(path),
                           "--kubernetes", "--generation", "3", "--json", "-C", str(ws)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    objects = json.loads(done.stdout)["items"]
    for obj in objects:
        kubernetes_validate.validate(obj, K8S, strict=True)
    kinds = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert kinds == [("Deployment", f"{ENV}-base"), ("Service", f"{ENV}-base"),
                     ("StatefulSet", f"{ENV}-console-3"), ("Service", f"{ENV}-console-3"),
                     ("Service", f"{ENV}-console")]
    pins = Manifest(git.show_file(ws, INTEGRATION_TAG, "manifest.toml").decode()).pins("default")
    sts = objects[2]
    container = sts["spec"]["template"]["spec"]["containers"][0]
    console = config.parse((ws / "lockstep.toml").read_text()).components["console"]
    pin = pins["console"]
    assert console.tag_transform == "strip-v" and pin.version.startswith("v")
    assert container["image"] == (f"{console.image}@{pin.digest}" if pin.digest else
                                  f"{console.image}:{pin.version.removeprefix('v')}")
    assert {"name": "LOCKSTEP_RELEASE", "value": INTEGRATION_TAG} in container["env"]
    assert container["args"] == ["--public-addr", "127.0.0.1:0"]
    assert sts["metadata"]["annotations"]["lockstep.dev/release"] == INTEGRATION_TAG
    assert render(env, 3, ReleaseSource(ws, ws / ".lockstep" / "rollouts")
                  .resolve(INTEGRATION_TAG)) == objects

    env["spec"]["release"] = "v2099.01.1"
    path.write_text(json.dumps(env))
    done = subprocess.run([sys.executable, "-m", "lockstep", "rollout", "render", str(path),
                           "--kubernetes", "-C", str(ws)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode != 0 and "unknown release v2099.01.1" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr

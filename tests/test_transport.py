"""The git transport layer against real remotes: smart HTTPS (nginx) and a real sshd serving the
same repositories, plus local repositories for the rules that need no server.

Covers spec/release.md §4.2 and §7 and acceptance scenarios R4 and R5.
"""

from __future__ import annotations

import base64
import errno
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockstep import transport
from lockstep.errors import ConfigError, GitError, TransportError
from lockstep.queue.model import State
from lockstep.transport import HostAuth, PushRejectedError, Remote, Settings
from lockstep.transport import env as env_mod
from lockstep.transport import urls as urls_mod
from lockstep.transport.child import Child
from lockstep.transport.classify import Verdict, classify
from lockstep.transport.redact import Redactor, escape_controls, quote
from tests.infra import free_port
from tests.infra.gitservers import PASSWORD, USER, GitServers, HoldingProxy, git_servers
from tests.system import System, wait_for

WRONG = "hunter2-Wr0ng!pw"  # the configured password HTTPS refuses
GOOD = HostAuth(USER, PASSWORD)


@pytest.fixture(scope="module")
def servers() -> Iterator[GitServers]:
    """One HTTPS and one SSH server over one repository root, for the whole module."""
    with git_servers() as found:
        yield found


@pytest.fixture
def ssh_client(servers: GitServers, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's own ssh command, as lockstep inherits it: key, pinned host key."""
    monkeypatch.setenv("GIT_SSH_COMMAND", servers.ssh_command())


def settings(servers: GitServers, password: str, host: str | None = None,
             **kw: float) -> Settings:
    """Credentials and the test CA for the HTTPS host (or a proxy in front of it)."""
    auth = HostAuth(USER, password, servers.ca.ca_crt)
    return Settings({host or servers.host: auth}, **kw)  # type: ignore[arg-type]


def tagged_repo(servers: GitServers, name: str, tag: str = "v1") -> tuple[Path, str]:
    """A server repository and a local clone holding an annotated tag to push."""
    _, sha = servers.create_repo(name)
    work = servers.dir / "work" / name
    subprocess.run(["git", "tag", "-a", tag, "-m", tag], cwd=work, check=True)
    return work, sha


def server_tag(servers: GitServers, name: str, tag: str) -> str | None:
    done = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"refs/tags/{tag}^{{}}"],
                          cwd=servers.srv / name, capture_output=True, text=True, check=False)
    return done.stdout.strip() or None


def processes() -> Iterator[tuple[int, list[bytes], bytes]]:
    """Every live process: pid, argv (from /proc/PID/cmdline), environment."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        yield int(entry.name), argv, environ


def run_in_thread(fn: object) -> tuple[threading.Thread, dict[str, object]]:
    """Run `fn()` in a thread; the dict receives `result` or `error`."""
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["result"] = fn()  # type: ignore[operator]
        except Exception as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


# --- R4: HTTPS refuses the credentials, SSH accepts ------------------------------------------


def test_r4_https_refused_fast_then_ssh_pushes_the_tag(servers: GitServers,
                                                       ssh_client: None) -> None:
    work, sha = tagged_repo(servers, "r4.git")
    remote = Remote("r4", [servers.url("r4.git"), servers.ssh_url("r4.git")],
                    settings(servers, WRONG))
    start = time.monotonic()
    pushed = remote.push(work, ["refs/tags/v1:refs/tags/v1"])
    total = time.monotonic() - start

    https, ssh = remote.attempts
    assert https.verdict is Verdict.TRANSPORT and https.seconds < 2.0, https
    assert "Authentication failed" in https.cause
    assert ssh.verdict is None and ssh.url == servers.ssh_url("r4.git")
    assert [(p.flag, p.target) for p in pushed] == [("*", "refs/tags/v1")]
    assert server_tag(servers, "r4.git", "v1") == sha
    assert remote.preferred == servers.ssh_url("r4.git") and remote.transport == "ssh"
    [note] = remote.notes
    assert note.startswith(f"push tag v1 of r4: {servers.url('r4.git')} failed (fatal: "
                           "Authentication failed")
    assert WRONG not in note and base64.b64encode(f"{USER}:{WRONG}".encode()).decode() not in note
    print(f"\nR4: HTTPS refused in {https.seconds * 1000:.0f} ms, SSH push "
          f"{ssh.seconds * 1000:.0f} ms, total {total * 1000:.0f} ms")

    # Sticky: the next command of this run goes to SSH first, HTTPS is not asked again.
    assert remote.ls_remote(["refs/tags/v1"])["refs/tags/v1"].peeled == sha
    assert [a.url for a in remote.attempts[2:]] == [servers.ssh_url("r4.git")]


def test_r4_the_password_is_in_no_childs_argv(servers: GitServers, ssh_client: None) -> None:
    """Hold the HTTPS connection and then the SSH pre-receive hook, and read every process's
    /proc/PID/cmdline while lockstep's git children are alive."""
    work, sha = tagged_repo(servers, "argv.git")
    fifo, started = servers.dir / "argv.fifo", servers.dir / "argv.started"
    os.mkfifo(fifo)
    servers.hook("argv.git", "pre-receive",
                 f"#!/bin/sh\ncat >/dev/null\necho started > {started}\nread go < {fifo}\n")
    proxy = HoldingProxy(servers.https_port)
    try:
        url = f"https://127.0.0.1:{proxy.port}/git/argv.git"
        remote = Remote("argv", [url, servers.ssh_url("argv.git")],
                        settings(servers, WRONG, f"127.0.0.1:{proxy.port}"))
        thread, box = run_in_thread(lambda: remote.push(work, ["refs/tags/v1:refs/tags/v1"]))

        assert proxy.held.wait(30), "the HTTPS child never connected"
        https_children = [(argv, env) for _, argv, env in processes()
                          if f"LOCKSTEP_GIT_PASSWORD={WRONG}".encode() in env.split(b"\0")]
        assert any(b"remote-https" in argv[0] or b"remote-https" in b" ".join(argv)
                   for argv, _ in https_children), "git-remote-https was not found alive"
        assert all(url.encode() in b" ".join(argv) or argv[0].endswith(b"git")
                   for argv, _ in https_children)
        secret_forms = [WRONG.encode(), base64.b64encode(f"{USER}:{WRONG}".encode())]
        for pid, argv, _ in processes():
            assert not any(s in b"\0".join(argv) for s in secret_forms), (pid, argv)
        proxy.release()

        wait_for(started.exists, what="the SSH push's pre-receive hook")
        ssh_argv = [argv for _, argv, env in processes()
                    if argv[0] == b"ssh" and f"{servers.ssh_port}".encode() in b" ".join(argv)]
        assert ssh_argv, "the ssh client was not found alive"
        assert ssh_argv[0][1:5] == [b"-o", b"BatchMode=yes", b"-o", b"ConnectTimeout=15"]
        for pid, argv, _ in processes():
            assert not any(s in b"\0".join(argv) for s in secret_forms), (pid, argv)
        with fifo.open("w") as go:
            go.write("go\n")
        thread.join(60)
    finally:
        proxy.close()
    assert "error" not in box, box
    assert server_tag(servers, "argv.git", "v1") == sha
    assert [a.verdict for a in remote.attempts] == [Verdict.TRANSPORT, None]


def test_https_with_accepted_credentials_needs_no_ssh(servers: GitServers,
                                                      ssh_client: None) -> None:
    """The credential helper and the CA bundle work: GIT_SSL_CAINFO (preset to the system
    bundle in CI) would otherwise hide the test CA."""
    work, sha = tagged_repo(servers, "good.git")
    before = len(servers.ssh_commands())
    remote = Remote("good", [servers.url("good.git"), servers.ssh_url("good.git")],
                    settings(servers, PASSWORD))
    remote.push(work, ["refs/tags/v1:refs/tags/v1"])
    found = remote.ls_remote(["refs/tags/v1", "refs/tags/v9"])
    assert set(found) == {"refs/tags/v1"} and found["refs/tags/v1"].peeled == sha
    assert len(servers.ssh_commands()) == before and remote.notes == []
    assert remote.transport == "https"


# --- R5: both fail; a hook refuses -----------------------------------------------------------


def test_r5_both_urls_fail_one_transport_error_with_both_causes(servers: GitServers,
                                                                ssh_client: None) -> None:
    work, _ = tagged_repo(servers, "r5.git", "v2")
    closed = free_port()
    ssh_url = f"ssh://git@127.0.0.1:{closed}/r5.git"
    remote = Remote("r5", [servers.url("r5.git"), ssh_url], settings(servers, WRONG))
    with pytest.raises(TransportError) as caught:
        remote.push(work, ["refs/tags/v2:refs/tags/v2"])
    lines = caught.value.message.splitlines()
    assert lines == [
        "cannot push tag v2 of r5",
        f"  {servers.url('r5.git')}: fatal: Authentication failed for "
        f"'{servers.url('r5.git')}/'",
        f"  {ssh_url}: ssh: connect to host 127.0.0.1 port {closed}: Connection refused",
    ]
    shown = caught.value.one_line() + str(caught.value.hint)
    for secret in (WRONG, base64.b64encode(f"{USER}:{WRONG}".encode()).decode()):
        assert secret not in shown
    assert server_tag(servers, "r5.git", "v2") is None


def test_r5_a_declining_hook_over_https_is_final_and_quoted(servers: GitServers,
                                                            ssh_client: None) -> None:
    work, _ = tagged_repo(servers, "hook.git", "v3")
    servers.hook("hook.git", "pre-receive",
                 "#!/bin/sh\ncat >/dev/null\n"
                 "printf 'policy: \\033[31mtags are frozen\\033[0m until Monday   \\n' >&2\n"
                 "exit 1\n")
    before = len(servers.ssh_commands())
    remote = Remote("hook", [servers.url("hook.git"), servers.ssh_url("hook.git")],
                    settings(servers, PASSWORD))
    with pytest.raises(PushRejectedError) as caught:
        remote.push(work, ["refs/tags/v3:refs/tags/v3"])
    message = caught.value.message
    assert message.splitlines() == [
        "cannot push tag v3 of hook",
        f"  {servers.url('hook.git')}: refs/tags/v3 [remote rejected] "
        "(pre-receive hook declined)",
        '    remote: "policy: \\x1b[31mtags are frozen\\x1b[0m until Monday"',
    ]
    assert "\x1b" not in message
    assert [p.summary for p in caught.value.refused] == ["[remote rejected] (pre-receive hook "
                                                         "declined)"]
    assert len(remote.attempts) == 1 and remote.notes == []
    assert len(servers.ssh_commands()) == before, "an SSH attempt was made"
    assert server_tag(servers, "hook.git", "v3") is None


def test_an_existing_other_tag_is_rejected_without_fallback(servers: GitServers,
                                                            ssh_client: None) -> None:
    work, _ = tagged_repo(servers, "exists.git", "v4")
    remote = Remote("exists", [servers.url("exists.git"), servers.ssh_url("exists.git")],
                    settings(servers, PASSWORD))
    remote.push(work, ["refs/tags/v4:refs/tags/v4"])
    subprocess.run(["git", "tag", "-f", "-a", "v4", "-m", "moved", "HEAD^{tree}"], cwd=work,
                   check=True, capture_output=True)
    with pytest.raises(PushRejectedError) as caught:
        remote.push(work, ["refs/tags/v4:refs/tags/v4"])
    assert "[rejected] (already exists)" in caught.value.message
    assert [a.url for a in remote.attempts] == [servers.url("exists.git")] * 2
    with pytest.raises(GitError, match="refusing to force-push tag v4"):
        remote.push(work, ["+refs/tags/v4:refs/tags/v4"])


# --- timeouts ----------------------------------------------------------------------------------


def test_a_child_killed_by_the_timeout_is_a_transport_failure(servers: GitServers,
                                                              ssh_client: None) -> None:
    _, sha = servers.create_repo("slow.git")
    proxy = HoldingProxy(servers.https_port)  # never released: the TLS handshake never ends
    try:
        host = f"127.0.0.1:{proxy.port}"
        remote = Remote("slow", [f"https://{host}/git/slow.git", servers.ssh_url("slow.git")],
                        settings(servers, PASSWORD, host, lookup_timeout=1.0))
        found = remote.ls_remote(["refs/heads/main"])
    finally:
        proxy.close()
    assert found["refs/heads/main"].peeled == sha
    killed, ok = remote.attempts
    assert killed.verdict is Verdict.TRANSPORT and ok.verdict is None
    assert killed.cause.startswith("timed out after 1s, killed")
    assert 1.0 <= killed.seconds < 5.0
    # The whole process group went: git and git-remote-https (zombies aside: PID 1 reaps them).
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            assert not (int(stat[2]) == killed.pid and stat[0] != "Z"), entry.name


def test_classification_rules_in_order() -> None:
    def child(stderr: str, rc: int = 128, timed_out: bool = False, stdout: str = "") -> Child:
        return Child(("git",), rc, stdout.encode(), stderr.encode(), timed_out, 30.0, 0.1, 1)

    final = [
        child("To x\n ! [rejected]        v1 -> v1 (already exists)\n", 1),
        child("", 1, stdout="!\trefs/tags/v1:refs/tags/v1\t[remote rejected] (hook declined)"),
        child("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nfatal: Could not read "
              "from remote repository.\n"),
        child("fatal: transport 'ext' not allowed\n"),
        child("fatal: remote error: upload-pack: not our ref 0123\n"),
        child("fatal: couldn't find remote ref refs/tags/v9\n"),
        child("fatal: Authentication failed for 'https://h/x/'\n", 1),  # rc 1: rule 3
        child("fatal: Authentication failed\n [rejected] v1\n"),  # rule 1 before rule 2
    ]
    transport_like = [
        child("", 0, timed_out=True),
        child("fatal: could not read Username for 'https://h': terminal prompts disabled\n"),
        child("fatal: unable to access 'https://h/': The requested URL returned error: 403\n"),
        child("fatal: repository 'https://h/x/' not found\n"),
        child("fatal: unable to access 'https://h/': Failed to connect to h port 1 after 0 ms: "
              "Couldn't connect to server\n"),
        child("fatal: unable to access 'https://h/': server certificate verification failed. "
              "CAfile: none CRLfile: none\n"),
        child("git@h: Permission denied (publickey).\r\nfatal: Could not read from remote "
              "repository.\n"),
        child("Host key verification failed.\r\nfatal: Could not read from remote repository.\n"),
        child("ssh: connect to host h port 22: Connection timed out\n"),
    ]
    assert [classify(c) for c in final] == [Verdict.FINAL] * len(final)
    assert [classify(c) for c in transport_like] == [Verdict.TRANSPORT] * len(transport_like)


# --- ls-remote: exact names, peeling ------------------------------------------------------------


def test_ls_remote_counts_only_exact_names_and_peels(tmp_path: Path) -> None:
    repo = tmp_path / "r"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    git = ["git", "-C", str(repo), "-c", "user.name=T", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "one"], check=True)
    for args in (["tag", "-a", "v2", "-m", "v2"], ["tag", "-a", "x/v2", "-m", "x"],
                 ["branch", "release/v2"], ["tag", "light"]):
        subprocess.run([*git, *args], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    tag_obj = subprocess.run([*git, "rev-parse", "refs/tags/v2"], capture_output=True,
                             text=True, check=True).stdout.strip()
    remote = Remote("r", [str(repo)])
    found = remote.ls_remote(["refs/tags/v2", "refs/tags/light", "refs/heads/v2"])
    assert set(found) == {"refs/tags/v2", "refs/tags/light"}
    assert (found["refs/tags/v2"].object, found["refs/tags/v2"].peeled) == (tag_obj, head)
    assert found["refs/tags/light"].object == found["refs/tags/light"].peeled == head
    assert remote.ls_remote(["refs/tags/absent"]) == {}  # --exit-code 2: absent, not a failure
    assert remote.transport == "file"


# --- environment --------------------------------------------------------------------------------


def test_child_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nTEST\n-----END CERTIFICATE-----\n")
    base_ca = tmp_path / "base.pem"
    base_ca.write_text("BASE\n")
    inherited = {
        "PATH": os.environ["PATH"], "GIT_TRACE": "1", "GIT_TRACE_CURL": "1",
        "GIT_TRACE_REDACT": "0", "GIT_CURL_VERBOSE": "1", "GIT_REDACT_COOKIES": "x",
        "SSH_ASKPASS": "/bin/askpass", "SSH_ASKPASS_REQUIRE": "force", "GIT_ASKPASS": "/a",
        "GIT_TERMINAL_PROMPT": "1", "GIT_SSL_CAINFO": str(base_ca), "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "user.name", "GIT_CONFIG_VALUE_0": "Someone",
        "GIT_CONFIG_GLOBAL": os.environ["GIT_CONFIG_GLOBAL"], "GIT_CONFIG_NOSYSTEM": "1",
    }
    url = urls_mod.parse("https://git.example.com:8443/acme/app.git")
    conf = Settings({"git.example.com:8443": HostAuth("bot", "tok3n", ca)},
                    bundle_dir=tmp_path / "bundles")
    env = env_mod.build([url], conf, cwd=None, warn=pytest.fail, base=inherited)
    assert not {"GIT_TRACE", "GIT_TRACE_CURL", "GIT_TRACE_REDACT", "GIT_CURL_VERBOSE",
                "GIT_REDACT_COOKIES", "SSH_ASKPASS", "SSH_ASKPASS_REQUIRE",
                "GIT_SSL_CAINFO"} & set(env)
    assert {k: env[k] for k in env_mod.FIXED} == env_mod.FIXED and env["GIT_ASKPASS"] == ""
    assert env["GIT_ALLOW_PROTOCOL"] == "https"
    assert (env["LOCKSTEP_GIT_USERNAME"], env["LOCKSTEP_GIT_PASSWORD"]) == ("bot", "tok3n")
    prefix = "https://git.example.com:8443/"
    assert env["GIT_CONFIG_COUNT"] == "4" and env["GIT_CONFIG_KEY_0"] == "user.name"
    assert [(env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"]) for i in (1, 2)] == [
        ("credential.helper", ""), (f"credential.{prefix}.helper", env_mod.CREDENTIAL_HELPER)]
    assert env["GIT_CONFIG_KEY_3"] == f"http.{prefix}.sslCAInfo"
    bundle = Path(env["GIT_CONFIG_VALUE_3"]).read_text()
    assert bundle == "BASE\n" + ca.read_text()
    assert "tok3n" not in " ".join(v for k, v in env.items() if k != "LOCKSTEP_GIT_PASSWORD")

    # git itself answers with the helper, for this host only.
    def fill(host: str) -> str:
        done = subprocess.run(["git", "credential", "fill"], env=env, capture_output=True,
                              text=True, input=f"protocol=https\nhost={host}\n\n", check=False,
                              timeout=30)
        return done.stdout

    assert "username=bot\npassword=tok3n\n" in fill("git.example.com:8443")
    assert "password=" not in fill("elsewhere.example.com")


def test_ssh_command_options_go_right_after_ssh(tmp_path: Path) -> None:
    warnings: list[str] = []
    inherited = "ssh -o ConnectTimeout=10 -i '/keys/my key' -p 2222"
    var, value = env_mod.ssh_command({"GIT_SSH_COMMAND": inherited}, None,
                                     warnings.append) or ("", "")
    assert var == "GIT_SSH_COMMAND"
    assert value == ("ssh -o BatchMode=yes -o ConnectTimeout=15 -o ConnectTimeout=10 "
                     "-i '/keys/my key' -p 2222")
    # ssh keeps the first value of an option: lockstep's win, the user's others still apply.
    shown = subprocess.run(["sh", "-c", f"{value} -F /dev/null -G example.com"],
                           capture_output=True, text=True, check=True).stdout
    assert "batchmode yes" in shown and "connecttimeout 15" in shown and "port 2222" in shown
    quoted = env_mod.ssh_command({"GIT_SSH_COMMAND": "'/opt/my tools/ssh' -v"}, None,
                                 warnings.append)
    assert quoted == ("GIT_SSH_COMMAND",
                      "'/opt/my tools/ssh' -o BatchMode=yes -o ConnectTimeout=15 -v")
    bare = env_mod.ssh_command({"GIT_SSH": "/usr/bin/ssh"}, None, warnings.append)
    assert bare == ("GIT_SSH_COMMAND", "/usr/bin/ssh -o BatchMode=yes -o ConnectTimeout=15")
    assert env_mod.ssh_command({}, None, warnings.append) == (
        "GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=15")
    assert warnings == []
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "config", "core.sshCommand", "ssh -4"], check=True)
    assert env_mod.ssh_command({"PATH": os.environ["PATH"]}, repo, warnings.append) == (
        "GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o ConnectTimeout=15 -4")
    plink = env_mod.ssh_command({"GIT_SSH_COMMAND": "plink -batch"}, None, warnings.append)
    assert plink == ("GIT_SSH_COMMAND", "plink -batch")
    assert len(warnings) == 1 and "BatchMode" in warnings[0]


def test_plain_http_to_loopback_warns_on_every_use(tmp_path: Path) -> None:
    warnings: list[str] = []
    remote = Remote("plain", [f"http://127.0.0.1:{free_port()}/x.git"], warn=warnings.append)
    for _ in range(2):
        with pytest.raises(TransportError, match=r"Couldn.t connect to server|Failed to connect"):
            remote.list_refs()
    assert len(warnings) == 2 and "plain http" in warnings[0]


# --- URLs and redaction -------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "ext::sh -c touch% /tmp/pwned", "fd::17", "-oProxyCommand=touch x", "--upload-pack=x",
    "https://user:secret@host/x.git", "http://git.example.com/x.git", "git://example.com/x",
    "ftp://host/x.git", "https://host/x y.git", "ssh://host/x\n.git", "", "https:///x.git",
])
def test_refused_urls(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        urls_mod.parse(url)
    assert "secret" not in caught.value.message


def test_accepted_urls() -> None:
    cases = {
        "https://git.example.com/a.git": ("https", "git.example.com"),
        "https://git.example.com:443/a.git": ("https", "git.example.com"),
        "https://127.0.0.1:8443/git/a.git": ("https", "127.0.0.1:8443"),
        "ssh://git@git.example.com:2222/a.git": ("ssh", "git.example.com:2222"),
        "git@github.com:acme/app.git": ("ssh", "github.com"),
        "file:///srv/a.git": ("file", None),
        "/srv/a.git": ("file", None),
        "../remotes/a.git": ("file", None),
        "http://127.0.0.1:8080/a.git": ("http", "127.0.0.1:8080"),
        "git://localhost/a.git": ("git", "localhost"),
    }
    for url, (scheme, host) in cases.items():
        parsed = urls_mod.parse(url)
        assert (parsed.scheme, parsed.host) == (scheme, host), url
    assert urls_mod.parse("http://ci.lan/a.git", {"ci.lan"}).scheme == "http"
    assert Remote("x", ["http://ci.lan/a.git"],
                  Settings({"ci.lan": HostAuth(insecure=True)})).transport == "http"


def test_redaction_forms() -> None:
    redact = Redactor(pairs=[("relbot", "s3cr3t/+x")])
    b64 = base64.b64encode(b"relbot:s3cr3t/+x").decode()
    text = (f"https://relbot:s3cr3t/+x@h/x Authorization: Basic {b64} token s3cr3t/+x "
            f"https://ghp_tok@h/x ssh://git@h:22/x ssh://u:pw@h/x s3cr3t%2F%2Bx")
    shown = redact(text)
    assert "s3cr3t" not in shown and b64 not in shown and "ghp_tok" not in shown
    assert "pw@" not in shown and "ssh://git@h:22/x" in shown
    assert escape_controls("a\x1b[2Jb\x07\tc\x9b") == "a\\x1b[2Jb\\x07\\tc\\x9b"
    assert quote('say "hi" \\ \x1b') == '"say \\"hi\\" \\\\ \\x1b"'
    assert "***" in repr(HostAuth("u", "pw")) and "pw'" not in repr(HostAuth("u", "pw"))


# --- the queue's component fetches go through the layer ------------------------------------------


def test_the_queue_fetches_a_component_over_ssh_when_https_refuses(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    system = System.create(tmp_path)
    with git_servers(system.root / "remotes") as srv:
        monkeypatch.setenv("GIT_SSH_COMMAND", srv.ssh_command())
        monkeypatch.setenv("LOCKSTEP_TEST_GIT_USER", USER)
        monkeypatch.setenv("LOCKSTEP_TEST_GIT_PASSWORD", WRONG)
        system.edit_config(lambda text: text.replace(
            'url = "../remotes/alpha.git"',
            f'url = "{srv.url("alpha.git")}"\nssh_url = "{srv.ssh_url("alpha.git")}"',
        ) + (f'\n[git."{srv.host}"]\nusername_env = "LOCKSTEP_TEST_GIT_USER"\n'
             f'password_env = "LOCKSTEP_TEST_GIT_PASSWORD"\nca_file = "{srv.ca.ca_crt}"\n'),
            "alpha over HTTPS, SSH as fallback")

        item = system.submit("alpha", "v1.2.0")  # resolves the tag: a fetch
        assert item.sha == system.shas[("alpha", "v1.2.0")]
        report = system.run_queue()  # reachability checks and fetches of the worker
        assert system.item(item.id).state == State.LANDED, report

        refused = [line for line in srv.access_log.read_text().splitlines()
                   if "/git/alpha.git/" in line and '" 401 ' in line]
        assert refused, "HTTPS was never asked"
        served = srv.ssh_commands()
        assert "git-upload-pack '/alpha.git'" in served

        ws = system.workspace()
        ws.components.resolve("alpha", "v1.3.0")
        alpha = ws.components.remote("alpha")
        assert alpha.preferred == srv.ssh_url("alpha.git")
        assert "Authentication failed" in alpha.notes[0] and WRONG not in alpha.notes[0]
        asked = len(srv.access_log.read_text().splitlines())
        pin = ws.working_manifest().pin("default", "alpha")
        assert pin is not None and ws.components.check_pin("alpha", pin) is None
        assert len(srv.access_log.read_text().splitlines()) == asked  # sticky: SSH first


def test_run_single_checks_the_urls_a_named_remote_really_uses(tmp_path: Path) -> None:
    """The integration remote is a name: its URLs, insteadOf applied, pass §7's rules."""
    repo = tmp_path / "r"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "remote", "add", "origin",
                    "ext::sh -c true"], check=True)
    with pytest.raises(ConfigError, match="transport"):
        transport.run_single(["ls-remote", "origin"], repo, "origin", timeout=30)
    subprocess.run(["git", "-C", str(repo), "remote", "set-url", "origin", "/fake/x.git"],
                   check=True)
    subprocess.run(["git", "-C", str(repo), "config", "url.fd::17.insteadOf", "/fake/"],
                   check=True)
    with pytest.raises(ConfigError, match="transport"):
        transport.run_single(["ls-remote", "origin"], repo, "origin", timeout=30)
    subprocess.run(["git", "-C", str(repo), "config", "--unset", "url.fd::17.insteadOf"],
                   check=True)
    subprocess.run(["git", "-C", str(repo), "remote", "set-url", "origin", str(tmp_path / "x")],
                   check=True)
    done = transport.run_single(["ls-remote", "origin"], repo, "origin", timeout=30)
    assert done.returncode == 128 and b"does not appear to be a git repository" in done.stderr
    assert shlex.join(done.argv) == "git ls-remote origin"


def test_settings_from_config_resolve_secrets_and_fail_only_when_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lockstep import config

    cfg = config.parse(
        '[integration]\nremote = "origin"\nbranch = "main"\n'
        '[components.app]\nurl = "https://h.example/app.git"\n'
        '[git."h.example"]\nusername_env = "LS_T_U"\npassword_env = "LS_T_P"\n'
        'ca_file = "ca.pem"\n'
        '[release]\ngit_timeout = { lookup = "5s", transfer = "1m" }\n', "lockstep.toml")
    monkeypatch.delenv("LS_T_U", raising=False)
    unset = transport.from_config(cfg, tmp_path)
    assert (unset.lookup_timeout, unset.transfer_timeout) == (5.0, 60.0)
    with pytest.raises(ConfigError, match="LS_T_U, which is not set"):
        Remote("app", ["https://h.example/app.git"], unset).list_refs()
    Remote("other", [str(tmp_path / "none.git")], unset)  # other hosts are unaffected
    monkeypatch.setenv("LS_T_U", "bot")
    monkeypatch.setenv("LS_T_P", "tok")
    resolved = transport.from_config(cfg, tmp_path).hosts["h.example"]
    assert (resolved.username, resolved.password) == ("bot", "tok")
    assert resolved.ca_file == tmp_path / "ca.pem" and resolved.missing is None


def _open_for_writing(fifo: Path) -> int | None:
    """The FIFO opened for writing, or None while nobody has it open for reading."""
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return None
        raise


def test_ctrl_c_lets_a_running_git_child_finish(tmp_path: Path) -> None:
    """SIGINT to lockstep (a terminal's Ctrl-C) does not reach the child, which runs in its
    own session, and lockstep waits for it before the interrupt propagates."""
    started, fifo, done = tmp_path / "started", tmp_path / "go", tmp_path / "done"
    os.mkfifo(fifo)
    script = (
        "import os, sys\n"
        "from lockstep.transport import child\n"
        f"child.run(['sh', '-c', 'echo x > {started}; read go < {fifo}; echo ok > {done}'],"
        " None, dict(os.environ), 60)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        wait_for(started.exists, what="the child to start")
        proc.send_signal(signal.SIGINT)
        # Non-blocking: if the interrupt had killed the child, nobody ever reads (ENXIO until
        # the deadline), no hang; a child that has not opened the FIFO yet gets the moment.
        go = _open_for_writing(fifo)
        deadline = time.monotonic() + 60
        while go is None and time.monotonic() < deadline:
            time.sleep(0.02)
            go = _open_for_writing(fifo)
        assert go is not None, "nobody reads the FIFO: the interrupt killed the child"
        os.write(go, b"go\n")
        os.close(go)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert done.read_text() == "ok\n"
    assert b"KeyboardInterrupt" in err and proc.returncode != 0

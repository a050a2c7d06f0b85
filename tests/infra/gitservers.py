"""Git remotes over smart HTTPS (nginx + fcgiwrap + git http-backend, Basic auth, the test CA)
and over SSH (a real sshd), both serving the same bare repositories, so `url(name)` and
`ssh_url(name)` name one repository (testing-infra.md §4.2, §4.5 and corrections 5-11).

SSH logs in as `git` (a libnss-wrapper account with uid 0, so it owns the root-owned repos),
whose forced command maps `ssh://…/<name>` onto the repository root and logs each command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.infra import (
    TestCA,
    free_port,
    make_ca,
    port_open,
    require_tool,
    scratch_dir,
    start,
    stop,
    tail,
    wait_until,
)

SSHD = "/usr/sbin/sshd"
NSS_WRAPPER = "libnss_wrapper.so"
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
USER, PASSWORD = "relbot", "s3cret"

# The forced command: `git-upload-pack '/app.git'` → `git upload-pack <root>/app.git`.
GIT_SHELL = r'''
import os, shlex, sys
root, log = sys.argv[1], sys.argv[2]
line = os.environ.get("SSH_ORIGINAL_COMMAND", "")
with open(log, "a") as f:
    f.write(line + "\n")
words = shlex.split(line)
verbs = ("git-upload-pack", "git-receive-pack", "git-upload-archive")
path = words[1].lstrip("/") if len(words) == 2 else ""
if not words or words[0] not in verbs or not path or ".." in path.split("/"):
    sys.stderr.write("only git fetch and push are allowed here\n")
    sys.exit(1)
os.execvp("git", ["git", words[0][4:], os.path.join(root, path)])
'''

NGINX_CONF = """worker_processes 1;  pid {d}/nginx.pid;  error_log {d}/logs/error.log info;
{user}
events {{ worker_connections 64; }}
http {{
  access_log {d}/logs/access.log;
  client_body_temp_path {d}/tmp/body;  fastcgi_temp_path {d}/tmp/fastcgi;
  proxy_temp_path {d}/tmp/proxy;  uwsgi_temp_path {d}/tmp/uwsgi;  scgi_temp_path {d}/tmp/scgi;
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {crt};  ssl_certificate_key {key};
    location ~ ^/git(/.*)$ {{
      auth_basic "git";  auth_basic_user_file {d}/htpasswd;  client_max_body_size 0;
      fastcgi_pass unix:{d}/fcgiwrap.sock;
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend;
      fastcgi_param GIT_PROJECT_ROOT {srv};
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param PATH_INFO $1;  fastcgi_param REMOTE_USER $remote_user;
    }}
  }}
}}
"""

SSHD_CONFIG = """Port {port}
ListenAddress 127.0.0.1
HostKey {d}/host_ed25519
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
StrictModes no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin forced-commands-only
AllowUsers git
UsePAM no
AcceptEnv GIT_PROTOCOL
KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256
LogLevel VERBOSE
"""


@dataclass
class GitServers:
    """Both servers over one repository root, and what a client needs to reach them."""

    dir: Path
    srv: Path
    ca: TestCA
    https_port: int
    ssh_port: int
    client_key: Path
    known_hosts: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def host(self) -> str:
        """The HTTPS host key, as in `[git."127.0.0.1:PORT"]`."""
        return f"127.0.0.1:{self.https_port}"

    def url(self, name: str) -> str:
        """The smart-HTTPS URL of repository `name` (e.g. `app.git`)."""
        return f"https://127.0.0.1:{self.https_port}/git/{name}"

    def ssh_url(self, name: str) -> str:
        """The SSH URL of the same repository."""
        return f"ssh://git@127.0.0.1:{self.ssh_port}/{name}"

    def ssh_command(self) -> str:
        """A client GIT_SSH_COMMAND: this key only, the pinned host key, no ~/.ssh/config."""
        return (f"ssh -i {self.client_key} -o IdentitiesOnly=yes -F /dev/null "
                f"-o UserKnownHostsFile={self.known_hosts} -o GlobalKnownHostsFile=/dev/null "
                "-o LogLevel=ERROR")

    @property
    def ssh_log(self) -> Path:
        """One line per SSH git command the forced command served."""
        return self.dir / "ssh-commands.log"

    @property
    def access_log(self) -> Path:
        """nginx's access log: one line per HTTPS request, with its status."""
        return self.dir / "logs" / "access.log"

    def ssh_commands(self) -> list[str]:
        """The SSH git commands served so far."""
        return self.ssh_log.read_text().splitlines() if self.ssh_log.exists() else []

    def create_repo(self, name: str, *, files: dict[str, str] | None = None) -> tuple[Path, str]:
        """A bare repository `name` with one commit on main; returns (path, commit)."""
        bare = self.srv / name
        _git(["init", "--quiet", "--bare", "--initial-branch=main", str(bare)], self.dir)
        work = self.dir / "work" / name
        _git(["init", "--quiet", "--initial-branch=main", str(work)], self.dir)
        for path, text in (files or {"README": f"{name}\n"}).items():
            (work / path).write_text(text)
        _git(["add", "--all"], work)
        _git(["-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "--quiet",
              "-m", f"{name}: first"], work)
        _git(["push", "--quiet", str(bare), "HEAD:refs/heads/main"], work)
        sha = _git(["rev-parse", "HEAD"], work)
        return bare, sha

    def hook(self, name: str, hook: str, script: str) -> None:
        """Install an executable hook (`pre-receive`, …) in repository `name`."""
        path = self.srv / name / "hooks" / hook
        path.write_text(script)
        path.chmod(0o755)


def _git(args: list[str], cwd: Path) -> str:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=False,
                          stdin=subprocess.DEVNULL, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {done.stderr.decode(errors='replace')}")
    return done.stdout.decode().strip()


def _run(cmd: list[str], cwd: Path, stdin: bytes | None = None) -> bytes:
    return subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, check=True,
                          timeout=60).stdout


@contextmanager
def git_servers(srv: Path | None = None) -> Iterator[GitServers]:
    """Start both servers over `srv` (default: a fresh directory); stop them afterwards."""
    require_tool("nginx", "fcgiwrap", SSHD, "openssl", "ssh-keygen", "git")
    if os.geteuid() != 0:
        pytest.skip("the sshd fixture runs as root (privilege separation, uid-0 `git` account)")
    if not any(Path(p, NSS_WRAPPER).exists() for p in ("/usr/lib/x86_64-linux-gnu",
                                                        "/usr/lib/aarch64-linux-gnu", "/usr/lib")):
        require_tool("/usr/lib/x86_64-linux-gnu/" + NSS_WRAPPER)
    d = scratch_dir("lockstep-gitsrv-")
    srv = srv or d / "srv"
    srv.mkdir(parents=True, exist_ok=True)
    for sub in ("logs", "tmp", "home", "work"):
        (d / sub).mkdir()
    ca = make_ca(d)
    servers = GitServers(d, srv, ca, free_port(), free_port(), d / "client_key",
                         d / "known_hosts")
    try:
        _start_https(servers)
        _start_ssh(servers)
        yield servers
    finally:
        for proc in reversed(servers.procs):
            stop(proc)
        shutil.rmtree(d, ignore_errors=True)


def _start_https(s: GitServers) -> None:
    d = s.dir
    hashed = _run(["openssl", "passwd", "-6", "-stdin"], d, PASSWORD.encode()).decode().strip()
    (d / "htpasswd").write_text(f"{USER}:{hashed}\n")
    (d / "nginx.conf").write_text(NGINX_CONF.format(
        d=d, port=s.https_port, crt=s.ca.server_crt, key=s.ca.server_key, srv=s.srv,
        user="user root;" if os.geteuid() == 0 else ""))
    fcgi_log = d / "logs" / "fcgiwrap.log"
    fcgi = start(["fcgiwrap", "-c", "4", "-s", f"unix:{d}/fcgiwrap.sock"], fcgi_log)
    s.procs.append(fcgi)
    wait_until(lambda: (d / "fcgiwrap.sock").exists(), fcgi, fcgi_log)
    log = d / "logs" / "nginx.log"
    nginx = start(["nginx", "-e", str(d / "logs" / "error.log"), "-p", str(d), "-c",
                   str(d / "nginx.conf"), "-g", "daemon off;"], log)
    s.procs.append(nginx)
    wait_until(lambda: port_open(s.https_port), nginx, d / "logs" / "error.log")


def _start_ssh(s: GitServers) -> None:
    d = s.dir
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_ed25519")], d)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(s.client_key)], d)
    host_pub = (d / "host_ed25519.pub").read_text().split()
    s.known_hosts.write_text(f"[127.0.0.1]:{s.ssh_port} {host_pub[0]} {host_pub[1]}\n")
    (d / "git-shell.py").write_text(GIT_SHELL)
    forced = f"{PYTHON} {d}/git-shell.py {s.srv} {s.ssh_log}"
    client_pub = Path(f"{s.client_key}.pub").read_text().strip()
    (d / "authorized_keys").write_text(f'restrict,command="{forced}" {client_pub}\n')
    passwd = Path("/etc/passwd").read_text()
    (d / "passwd").write_text(passwd.rstrip("\n") + f"\ngit:x:0:0::{d}/home:/bin/sh\n")
    (d / "group").write_text(Path("/etc/group").read_text())
    (d / "sshd_config").write_text(SSHD_CONFIG.format(port=s.ssh_port, d=d))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    env = dict(os.environ, LD_PRELOAD=NSS_WRAPPER, NSS_WRAPPER_PASSWD=str(d / "passwd"),
               NSS_WRAPPER_GROUP=str(d / "group"))
    check = subprocess.run([SSHD, "-t", "-f", str(d / "sshd_config")], env=env,
                           capture_output=True, check=False, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"sshd -t: {check.stderr.decode(errors='replace')}")
    log = d / "logs" / "sshd.log"
    sshd = start([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], log, env=env)
    s.procs.append(sshd)
    wait_until(lambda: port_open(s.ssh_port), sshd, log)
    if sshd.poll() is not None:
        raise RuntimeError(f"sshd exited: {tail(log)}")


class HoldingProxy:
    """A TCP proxy to a local port that holds each new connection until `release()`: a git
    child stays alive (mid TLS handshake) for as long as a test needs to inspect it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.held = threading.Event()  # a connection arrived and is being held
        self._release = threading.Event()
        self._closed = False
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def release(self) -> None:
        """Let held and later connections through."""
        self._release.set()

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        self._closed = True
        self._release.set()
        for s in [self.server, *self._socks]:
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self._socks.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        self.held.set()
        self._release.wait()
        if self._closed:
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            conn.close()
            return
        self._socks.append(upstream)
        threading.Thread(target=_pump, args=(upstream, conn), daemon=True).start()
        _pump(conn, upstream)


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)

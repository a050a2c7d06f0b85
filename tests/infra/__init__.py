"""Real servers on 127.0.0.1 for the tests: process mechanics shared by every fixture.

Each server runs in its own session (so its whole process group can be stopped), logs to a file
whose tail goes into any readiness error, and is stopped by the fixture that started it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest


def free_port() -> int:
    """A loopback port nobody listens on right now (callers retry on a bind race)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_tool(*tools: str) -> None:
    """Skip (with the reason) when a system tool is missing; under CI fail instead, since CI
    installs them (scripts/system-deps) and must never silently skip real-component tests."""
    missing = [t for t in tools if shutil.which(t) is None and not Path(t).exists()]
    if not missing:
        return
    reason = (f"missing system tools: {', '.join(missing)} "
              "(run `bash scripts/system-deps` as root to install them)")
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def start(cmd: Sequence[str], log: Path, **kw: object) -> subprocess.Popen[bytes]:
    """Start a server in its own session, output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                **kw)  # type: ignore[call-overload]


def tail(log: Path, n: int = 20) -> str:
    """The last lines of a server log, for readiness errors."""
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def wait_until(check: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path,
               timeout: float = 30.0) -> None:
    """Poll `check` until true; fail at once (with the log's tail) if the server exits."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited rc={proc.returncode}:\n{tail(log)}")
        if check():
            return
        time.sleep(0.01)
    raise TimeoutError(f"{proc.args!r} not ready after {timeout}s:\n{tail(log)}")


def port_open(port: int) -> bool:
    """Whether something accepts TCP on 127.0.0.1:port (0.5 s probe)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Stop a server's whole process group and reap it."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def scratch_dir(prefix: str) -> Path:
    """A scratch directory other users (`nobody`) can use: pytest's tmp_path is 0700."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def as_nobody(cmd: Sequence[str]) -> list[str]:
    """`cmd` run as nobody when we are root (servers refuse or should not run as root)."""
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
    return list(cmd)


@dataclass(frozen=True)
class TestCA:
    """A throwaway CA and a server certificate for localhost / 127.0.0.1 (EC P-256: fast)."""

    dir: Path
    ca_crt: Path
    server_crt: Path
    server_key: Path


def make_ca(root: Path) -> TestCA:
    """Create the CA and server certificate under `root/tls` (openssl, about 50 ms)."""
    d = root / "tls"
    d.mkdir(parents=True, exist_ok=True)

    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True,
                       stdin=subprocess.DEVNULL)

    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-days", "2", "-subj", "/CN=lockstep-test-ca", "-keyout", "ca.key", "-out", "ca.crt",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                               "extendedKeyUsage=serverAuth\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt")
    for f in d.iterdir():
        f.chmod(0o644)
    return TestCA(d, d / "ca.crt", d / "server.crt", d / "server.key")

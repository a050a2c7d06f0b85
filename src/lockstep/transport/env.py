"""The environment of a git child that talks to a remote (spec/release.md §4.2, §7).

No prompts of any kind, no tracing of secrets, only the URL's own protocol, batch-mode ssh, and
credentials and CA bundles given through `GIT_CONFIG_COUNT` entries: never argv, URL or file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import ssl
import stat
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lockstep.errors import ConfigError, GitError
from lockstep.transport.settings import Settings, missing_credentials
from lockstep.transport.urls import GitUrl

USERNAME_VAR = "LOCKSTEP_GIT_USERNAME"
PASSWORD_VAR = "LOCKSTEP_GIT_PASSWORD"  # noqa: S105 (a variable name, not a secret)
# The fixed helper of §4.2: it reads only the two variables above, answers only `get`.
CREDENTIAL_HELPER = (
    "!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' "
    '"$LOCKSTEP_GIT_USERNAME" "$LOCKSTEP_GIT_PASSWORD"; }; f'
)
SSH_OPTIONS = ("-o", "BatchMode=yes", "-o", "ConnectTimeout=15")
FIXED = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_ASKPASS": "",
    "GCM_INTERACTIVE": "never",
    "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
    "GIT_HTTP_LOW_SPEED_TIME": "30",
}
REMOVED = ("SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "GIT_CURL_VERBOSE", "GIT_REDACT_COOKIES",
           "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", USERNAME_VAR, PASSWORD_VAR)
SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
                  "/etc/ssl/cert.pem")
# The first shell word of an inherited ssh command: quotes and escapes kept as written.
_FIRST_WORD = re.compile(r"""\s*((?:[^\s'"\\]|\\.|'[^']*'|"(?:[^"\\]|\\.)*")+)""")

Warn = Callable[[str], None]


def build(urls: Sequence[GitUrl], settings: Settings, *, cwd: Path | None, warn: Warn,
          base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The child environment for talking to `urls` (one, or a named remote's fetch/push URLs)."""
    env = dict(os.environ if base is None else base)
    for name in [*REMOVED, *(k for k in env if k.startswith("GIT_TRACE"))]:
        env.pop(name, None)
    env.update(FIXED)
    env["GIT_ALLOW_PROTOCOL"] = ":".join(dict.fromkeys(u.scheme for u in urls))
    entries: list[tuple[str, str]] = []
    if any(u.scheme == "ssh" for u in urls):
        _set_ssh_command(env, cwd, warn)
    for url in urls:
        if url.insecure:
            warn(f"{url.text} uses plain {url.scheme}: the connection is neither encrypted nor "
                 "authenticated")
        if url.scheme in ("https", "http"):
            entries += _http_entries(url, settings, env, cwd, warn)
    _append_config(env, entries)
    return env


def ssh_command(env: Mapping[str, str], cwd: Path | None, warn: Warn) -> tuple[str, str] | None:
    """The ssh command git would run (`GIT_SSH_COMMAND`, `core.sshCommand`, `GIT_SSH`, `ssh`)
    with BatchMode and ConnectTimeout put right after an ssh program, so they win (ssh keeps
    the first value of an option). Returns (variable, value) to set, or None to leave a
    non-ssh `GIT_SSH` program as it is."""
    quoted = " ".join(shlex.quote(p) for p in SSH_OPTIONS)
    inherited = env.get("GIT_SSH_COMMAND") or _git_config(cwd, env, "core.sshCommand")
    if inherited:
        first = _FIRST_WORD.match(inherited)
        words = shlex.split(first.group(1)) if first else []
        program = words[0] if words else ""
        if os.path.basename(program) != "ssh" or first is None:
            warn(f"the ssh command {program or inherited!r} is not ssh: lockstep cannot enforce "
                 "BatchMode, so it may prompt or wait")
            return "GIT_SSH_COMMAND", inherited
        end = first.end()
        return "GIT_SSH_COMMAND", f"{inherited[:end]} {quoted}{inherited[end:]}"
    bare = env.get("GIT_SSH")
    if bare:
        if os.path.basename(bare) != "ssh":
            warn(f"GIT_SSH {bare!r} is not ssh: lockstep cannot enforce BatchMode, so it may "
                 "prompt or wait")
            return None
        return "GIT_SSH_COMMAND", f"{shlex.quote(bare)} {quoted}"
    return "GIT_SSH_COMMAND", f"ssh {quoted}"


def _set_ssh_command(env: dict[str, str], cwd: Path | None, warn: Warn) -> None:
    found = ssh_command(env, cwd, warn)
    if found is not None:
        env.pop("GIT_SSH", None)
        env[found[0]] = found[1]


def _http_entries(url: GitUrl, settings: Settings, env: dict[str, str], cwd: Path | None,
                  warn: Warn) -> list[tuple[str, str]]:
    """Credential helper and CA entries for one http(s) URL's host (none when unconfigured)."""
    auth = settings.host(url.host)
    if auth is None:
        return []
    if auth.missing is not None:
        raise missing_credentials(str(url.host), auth.missing)
    prefix = f"{url.scheme}://{url.host}/"
    entries: list[tuple[str, str]] = []
    if auth.password is not None:
        # Empty first: drops the user's helpers, so a 401 cannot erase their stored secret.
        # The helper is scoped to this host: a redirect elsewhere gets no credentials.
        entries += [("credential.helper", ""), (f"credential.{prefix}.helper", CREDENTIAL_HELPER)]
        env[USERNAME_VAR] = auth.username or ""
        env[PASSWORD_VAR] = auth.password
    if url.scheme == "https" and auth.ca_file is not None:
        bundle = ca_bundle(auth.ca_file, env, cwd, settings.bundle_dir)
        entries.append((f"http.{prefix}.sslCAInfo", str(bundle)))
        env.pop("GIT_SSL_CAINFO", None)
    if url.scheme == "https" and auth.insecure:
        warn(f"TLS verification is off for {url.host} (insecure = true): anyone on the path "
             "can read and change what is fetched and pushed")
        entries.append((f"http.{prefix}.sslVerify", "false"))
    return entries


def _append_config(env: dict[str, str], entries: Sequence[tuple[str, str]]) -> None:
    """Add `GIT_CONFIG_KEY_n`/`VALUE_n` after any inherited entries."""
    if not entries:
        return
    try:
        count = max(int(env.get("GIT_CONFIG_COUNT", "0") or "0"), 0)
    except ValueError:
        count = 0
    for key, value in entries:
        env[f"GIT_CONFIG_KEY_{count}"] = key
        env[f"GIT_CONFIG_VALUE_{count}"] = value
        count += 1
    env["GIT_CONFIG_COUNT"] = str(count)


def ca_bundle(ca_file: Path, env: Mapping[str, str], cwd: Path | None,
              bundle_dir: Path | None) -> Path:
    """A file holding the CAs git would trust anyway (`GIT_SSL_CAINFO`, else `http.sslCAInfo`,
    else the system bundle) plus `ca_file`: content-addressed, written once."""
    try:
        extra = ca_file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read ca_file {ca_file}: {exc.strerror}",
                          'fix ca_file under [git."host"] in lockstep.toml') from None
    base_path = (env.get("GIT_SSL_CAINFO")
                 or _git_config(cwd, env, "http.sslCAInfo", "--type=path")
                 or _system_bundle())
    try:
        base = Path(base_path).read_bytes() if base_path else b""
    except OSError:
        base = b""
    data = base.rstrip(b"\n") + b"\n" + extra if base else extra
    target = _bundle_dir(bundle_dir) / f"{hashlib.sha256(data).hexdigest()[:32]}.pem"
    if not target.exists():  # a unique temporary name: threads of one process race here too
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    return target


def _bundle_dir(configured: Path | None) -> Path:
    """The configured directory, else a private one in the temp dir (refused if not ours)."""
    if configured is not None:
        configured.mkdir(parents=True, exist_ok=True)
        return configured
    path = Path(tempfile.gettempdir()) / f"lockstep-ca-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise GitError(f"{path} is not a private directory of this user",
                       "remove it; lockstep recreates it")
    return path


def _system_bundle() -> str | None:
    """The system CA bundle curl most likely uses."""
    candidates = [ssl.get_default_verify_paths().cafile, *SYSTEM_BUNDLES]
    return next((c for c in candidates if c and os.path.isfile(c)), None)


def _git_config(cwd: Path | None, env: Mapping[str, str], key: str, *opts: str) -> str | None:
    """One config value as git sees it in `cwd` (repository, global, system), or None."""
    clean = {k: v for k, v in env.items() if k not in ("GIT_DIR", "GIT_WORK_TREE")}
    try:
        proc = subprocess.run(["git", "config", *opts, "--get", key], cwd=cwd or "/", env=clean,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=30,
                              check=False, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = proc.stdout.decode(errors="replace").strip()
    return value if proc.returncode == 0 and value else None

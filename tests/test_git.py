"""lockstep.git on real temporary repositories: redaction, lookups and deterministic objects."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockstep import git
from lockstep.errors import GitError, ValidationError

WHO = git.Identity("Lockstep Bot", "bot@example.com", 1_790_000_000)
FIXED_ENV = {
    "GIT_AUTHOR_NAME": "Seed",
    "GIT_AUTHOR_EMAIL": "seed@example.com",
    "GIT_AUTHOR_DATE": "1700000000 +0000",
    "GIT_COMMITTER_NAME": "Seed",
    "GIT_COMMITTER_EMAIL": "seed@example.com",
    "GIT_COMMITTER_DATE": "1700000000 +0000",
}


def sh(args: list[str], cwd: Path, input: bytes | None = None) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, check=True,
                          env={**os.environ, **FIXED_ENV})
    return proc.stdout.decode().strip()


def make_repo(path: Path) -> tuple[Path, str, str]:
    """A repo with two deterministic commits on main; returns (path, first, second)."""
    path.mkdir()
    sh(["init", "--quiet", "-b", "main"], path)
    (path / "manifest.toml").write_text("[configurations.default]\n", encoding="utf-8")
    (path / "README").write_text("hello\n", encoding="utf-8")
    sh(["add", "."], path)
    sh(["commit", "--quiet", "-m", "first"], path)
    first = sh(["rev-parse", "HEAD"], path)
    (path / "README").write_text("hello again\n", encoding="utf-8")
    sh(["commit", "--quiet", "-am", "second"], path)
    return path, first, sh(["rev-parse", "HEAD"], path)


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    return make_repo(tmp_path / "repo")


# --- redact ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:pw@example.com/x.git", "https://***@example.com/x.git"),
        ("http://user:pw@127.0.0.1:8080/x.git", "http://***@127.0.0.1:8080/x.git"),
        ("https://ghp_token123@github.com/o/r.git", "https://***@github.com/o/r.git"),
        ("https://user:p%40ss%3Aw@host/x", "https://***@host/x"),
        ("ssh://git:secret@host/x.git", "ssh://***@host/x.git"),
        (
            "fetch https://a:1@h1/x then https://b:2@h2/y",
            "fetch https://***@h1/x then https://***@h2/y",
        ),
        (
            "fatal: unable to access 'https://u:p@h/x/': 403",
            "fatal: unable to access 'https://***@h/x/': 403",
        ),
        ("Authorization: Basic dXNlcjpwdw==", "Authorization: Basic ***"),
        ("authorization: bearer abc.def.ghi", "authorization: bearer ***"),
        ("AUTHORIZATION:Bearer xyz", "AUTHORIZATION:Bearer ***"),
        (
            "-c http.extraHeader=Authorization: Bearer s3cr3t ls-remote",
            "-c http.extraHeader=Authorization: Bearer *** ls-remote",
        ),
    ],
)
def test_redact_hides_credentials(text: str, expected: str) -> None:
    assert git.redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "https://example.com/x.git",
        "file:///srv/git/x.git",
        "../remotes/api.git",
        "git@github.com:owner/repo.git",  # scp-like: the user name is not a secret
        "fatal: repository 'https://example.com/x.git/' not found",
        "mail me at someone@example.com",
        "",
    ],
)
def test_redact_leaves_text_without_credentials_alone(text: str) -> None:
    assert git.redact(text) == text


def test_redact_hides_other_authorization_schemes() -> None:
    assert "ghp_abc123" not in git.redact("http.extraHeader=Authorization: token ghp_abc123")


def test_redact_hides_a_password_containing_at() -> None:
    assert "ss@" not in git.redact("git ls-remote https://user:p@ss@host/x.git")


# --- run and base_env --------------------------------------------------------------------------


def test_base_env_disables_prompts_and_drops_repository_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GIT_DIR", "/elsewhere/.git")
    monkeypatch.setenv("GIT_WORK_TREE", "/elsewhere")
    monkeypatch.setenv("GIT_INDEX_FILE", "/elsewhere/index")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "1")
    monkeypatch.delenv("GIT_SSH_COMMAND", raising=False)
    env = git.base_env({"EXTRA": "1"})
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert env["GCM_INTERACTIVE"] == "never"
    assert env["GIT_SSH_COMMAND"] == "ssh -o BatchMode=yes"
    assert not {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"} & set(env)
    assert env["EXTRA"] == "1"
    assert "EXTRA" not in os.environ


def test_base_env_keeps_a_configured_ssh_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_SSH_COMMAND", "ssh -i /keys/deploy -o BatchMode=yes")
    assert git.base_env()["GIT_SSH_COMMAND"] == "ssh -i /keys/deploy -o BatchMode=yes"


def test_run_ignores_an_inherited_git_dir(
    repo: tuple[Path, str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _, second = repo
    other, _, _ = make_repo(tmp_path / "other")
    (other / "README").write_text("different\n", encoding="utf-8")
    sh(["commit", "--quiet", "-am", "third"], other)
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    assert git.out(["rev-parse", "HEAD"], path) == second


def test_run_returns_the_completed_process(repo: tuple[Path, str, str]) -> None:
    path, _, second = repo
    proc = git.run(["rev-parse", "HEAD"], path)
    assert proc.returncode == 0
    assert proc.stdout.decode().strip() == second
    assert git.out(["cat-file", "-t", second], path) == "commit"


def test_run_passes_input(repo: tuple[Path, str, str]) -> None:
    path, _, _ = repo
    blob = git.out(["hash-object", "--stdin"], path, input=b"hello\n")
    assert blob == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_run_failure_raises_a_one_line_git_error(
    repo: tuple[Path, str, str],
) -> None:
    path, _, _ = repo
    with pytest.raises(GitError) as exc:
        git.run(["rev-parse", "--verify", "no-such-ref"], path)
    assert exc.value.message.startswith("git rev-parse --verify failed: ")
    assert "\n" not in exc.value.message
    unchecked = git.run(["rev-parse", "--verify", "no-such-ref"], path, check=False)
    assert unchecked.returncode != 0


def test_a_failure_keeps_gits_own_cause_not_its_advice(
    repo: tuple[Path, str, str], tmp_path: Path
) -> None:
    """git prints the cause first and generic advice last: the cause must survive."""
    path, _, _ = repo
    missing = tmp_path / "no-such-remote.git"
    with pytest.raises(GitError) as exc:
        git.fetch(path, str(missing), "refs/heads/main")
    message = exc.value.message
    assert message.startswith("git fetch --quiet failed: ")
    assert f"'{missing}' does not appear to be a git repository" in message
    assert "Could not read from remote repository" in message
    assert "and the repository exists" not in message  # the advice, not the cause
    assert "\n" not in message


def test_a_failure_over_a_url_keeps_the_cause_redacted(tmp_path: Path) -> None:
    with pytest.raises(GitError) as exc:
        git.run(["ls-remote", "https://user:pw@127.0.0.1:1/x.git"], tmp_path, timeout=30)
    cause = exc.value.message.split(" failed: ", 1)[1]
    assert cause.startswith("unable to access 'https://")
    assert "127.0.0.1" in cause
    assert "pw" not in exc.value.message


def test_stderr_cause() -> None:
    advice = b"\nPlease make sure you have the correct access rights\nand the repository exists.\n"
    assert git.stderr_cause(b"fatal: one\nfatal: two\n" + advice) == "one; two"
    assert git.stderr_cause(b"error: x\nerror: x\nfatal: y\n") == "x; y"  # repeats once
    assert git.stderr_cause(b"hint: a\nplain last line\n") == "plain last line"
    assert git.stderr_cause(b"") == ""
    long = git.stderr_cause(b"fatal: " + b"z" * 2000, limit=100)
    assert len(long) == 100 and long.endswith("\u2026")
    assert git.stderr_cause(b"fatal: https://u:secret@h/x failed") == "https://***@h/x failed"


def test_is_commit(repo: tuple[Path, str, str]) -> None:
    path, first, _ = repo
    assert git.is_commit(path, first)
    assert not git.is_commit(path, git.tree_of(path, first))  # an object, but not a commit
    assert not git.is_commit(path, "0" * 40)


def test_run_in_a_missing_directory_is_a_git_error(tmp_path: Path) -> None:
    with pytest.raises(GitError) as exc:
        git.run(["status"], tmp_path / "missing")
    assert "cannot run git in" in exc.value.message


def test_failed_url_with_credentials_is_redacted(tmp_path: Path) -> None:
    url = "https://user:pw@127.0.0.1:1/x.git"  # port 1 refuses at once
    with pytest.raises(GitError) as exc:
        git.run(["ls-remote", url], tmp_path, timeout=30)
    message = exc.value.one_line()
    assert "pw" not in message
    assert "user" not in message
    assert message.startswith("git ls-remote https://***@127.0.0.1:1/x.git failed: ")


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def test_timeout_is_a_redacted_git_error(tmp_path: Path, silent_server: int) -> None:
    url = f"http://user:pw@127.0.0.1:{silent_server}/x.git"
    with pytest.raises(GitError) as exc:
        git.run(["ls-remote", url], tmp_path, timeout=0.5)
    assert "timed out" in exc.value.message
    assert "pw" not in exc.value.message
    assert f"http://***@127.0.0.1:{silent_server}/x.git" in exc.value.message


# --- lookups -----------------------------------------------------------------------------------


def test_rev_parse(repo: tuple[Path, str, str]) -> None:
    path, first, second = repo
    assert git.rev_parse(path, "HEAD") == second
    assert git.rev_parse(path, "refs/heads/main") == second
    assert git.rev_parse(path, "HEAD~1") == first
    assert git.rev_parse(path, first) == first
    assert git.rev_parse(path, "refs/tags/nope") is None
    assert git.rev_parse(path, "HEAD~5") is None
    # git rev-parse --verify echoes any full hex SHA, present or not; peeling checks it exists
    assert git.rev_parse(path, "f" * 40 + "^{commit}") is None
    assert git.rev_parse(path, first + "^{commit}") == first


def test_has_object(repo: tuple[Path, str, str]) -> None:
    path, first, second = repo
    assert git.has_object(path, first)
    assert git.has_object(path, git.tree_of(path, second))
    assert not git.has_object(path, "f" * 40)


def test_is_ancestor(repo: tuple[Path, str, str]) -> None:
    path, first, second = repo
    assert git.is_ancestor(path, first, second)
    assert git.is_ancestor(path, second, second)
    assert not git.is_ancestor(path, second, first)


def test_is_ancestor_of_an_unknown_commit_is_an_error(repo: tuple[Path, str, str]) -> None:
    path, first, _ = repo
    with pytest.raises(GitError):
        git.is_ancestor(path, first, "f" * 40)


def test_show_file_and_tree_of(repo: tuple[Path, str, str]) -> None:
    path, first, second = repo
    assert git.show_file(path, first, "README") == b"hello\n"
    assert git.show_file(path, second, "README") == b"hello again\n"
    assert git.tree_of(path, second) == sh(["rev-parse", "HEAD^{tree}"], path)
    with pytest.raises(ValidationError):
        git.show_file(path, second, "../README")


# --- deterministic objects ---------------------------------------------------------------------


def test_tree_with_file_replaces_one_file_without_touching_the_work_tree(
    repo: tuple[Path, str, str], tmp_path: Path
) -> None:
    path, _, second = repo
    index = tmp_path / "index.candidate"
    status_before = sh(["status", "--porcelain"], path)
    tree = git.tree_with_file(path, second, "manifest.toml", b"new manifest\n", index)

    assert sh(["cat-file", "-t", tree], path) == "tree"
    listing = sh(["ls-tree", "--name-only", tree], path).splitlines()
    assert listing == ["README", "manifest.toml"]
    assert sh(["cat-file", "-p", f"{tree}:manifest.toml"], path) == "new manifest"
    assert sh(["cat-file", "-p", f"{tree}:README"], path) == "hello again"
    # the work tree, the real index and HEAD are untouched, and the scratch index is gone
    assert (path / "manifest.toml").read_text(encoding="utf-8") == "[configurations.default]\n"
    assert sh(["status", "--porcelain"], path) == status_before == ""
    assert git.rev_parse(path, "HEAD") == second
    assert not index.exists()


def test_tree_with_file_adds_a_nested_file(repo: tuple[Path, str, str], tmp_path: Path) -> None:
    path, _, second = repo
    tree = git.tree_with_file(path, second, "deploy/manifest.toml", b"x\n", tmp_path / "idx")
    assert sh(["cat-file", "-p", f"{tree}:deploy/manifest.toml"], path) == "x"
    assert sh(["cat-file", "-p", f"{tree}:manifest.toml"], path) == "[configurations.default]"


@pytest.mark.parametrize("bad", ["../escape", "/abs/path", "-rf", "a\\b"])
def test_tree_with_file_refuses_bad_paths(
    repo: tuple[Path, str, str], tmp_path: Path, bad: str
) -> None:
    path, _, second = repo
    with pytest.raises(ValidationError):
        git.tree_with_file(path, second, bad, b"x", tmp_path / "idx")


def test_same_content_gives_the_same_tree(repo: tuple[Path, str, str], tmp_path: Path) -> None:
    path, _, second = repo
    one = git.tree_with_file(path, second, "manifest.toml", b"m\n", tmp_path / "i1")
    two = git.tree_with_file(path, second, "manifest.toml", b"m\n", tmp_path / "i2")
    other = git.tree_with_file(path, second, "manifest.toml", b"m2\n", tmp_path / "i3")
    assert one == two != other


def test_identity_line_and_env() -> None:
    assert WHO.line() == "Lockstep Bot <bot@example.com> 1790000000 +0000"
    env = WHO.env()
    assert env["GIT_AUTHOR_DATE"] == env["GIT_COMMITTER_DATE"] == "1790000000 +0000"
    assert env["GIT_AUTHOR_NAME"] == env["GIT_COMMITTER_NAME"] == "Lockstep Bot"
    assert env["GIT_AUTHOR_EMAIL"] == env["GIT_COMMITTER_EMAIL"] == "bot@example.com"


def test_commit_tree_is_deterministic(repo: tuple[Path, str, str], tmp_path: Path) -> None:
    path, _, second = repo
    tree = git.tree_with_file(path, second, "manifest.toml", b"m\n", tmp_path / "idx")
    message = "Bump api v1 → v2 (q3)\n\nLockstep-Item: q3\n"
    commit = git.commit_tree(path, tree, second, message, WHO)
    assert git.commit_tree(path, tree, second, message, WHO) == commit

    body = sh(["cat-file", "-p", commit], path)
    assert f"tree {tree}\nparent {second}\n" in body
    assert f"author {WHO.line()}\ncommitter {WHO.line()}\n" in body
    assert body.endswith("Bump api v1 → v2 (q3)\n\nLockstep-Item: q3")
    assert git.is_ancestor(path, second, commit)
    # the work tree's branch did not move
    assert git.rev_parse(path, "HEAD") == second
    # any other input gives another commit
    later = git.Identity(WHO.name, WHO.email, WHO.timestamp + 1)
    assert git.commit_tree(path, tree, second, message, later) != commit
    assert git.commit_tree(path, tree, second, message + "x", WHO) != commit


def test_make_tag_is_deterministic_and_reuses_an_identical_tag(
    repo: tuple[Path, str, str],
) -> None:
    path, first, second = repo
    tag = git.make_tag(path, "v2026.11.1", second, "Integration release v2026.11.1\n\nq3\n", WHO)
    assert git.rev_parse(path, "refs/tags/v2026.11.1") == tag
    assert sh(["cat-file", "-t", tag], path) == "tag"
    assert git.rev_parse(path, "v2026.11.1^{commit}") == second
    body = sh(["cat-file", "-p", tag], path)
    assert body == (
        f"object {second}\ntype commit\ntag v2026.11.1\ntagger {WHO.line()}\n\n"
        "Integration release v2026.11.1\n\nq3"
    )

    # the same inputs again (a crash recovery): the same SHA and the ref left as it is
    again = git.make_tag(path, "v2026.11.1", second, "Integration release v2026.11.1\n\nq3", WHO)
    assert again == tag
    assert git.rev_parse(path, "refs/tags/v2026.11.1") == tag
    # a different commit gives a different tag object
    assert git.make_tag(path, "v2026.11.2", first, "Integration release v2026.11.1\n\nq3",
                        WHO) != tag


@pytest.mark.parametrize("name", ["-v1", "v1..2", "v1 2", "v1;rm", "v1.lock", ""])
def test_make_tag_refuses_bad_names(repo: tuple[Path, str, str], name: str) -> None:
    path, _, second = repo
    with pytest.raises(ValidationError):
        git.make_tag(path, name, second, "m", WHO)
    assert sh(["tag", "--list"], path) == ""


def test_objects_are_the_same_in_another_clone(tmp_path: Path) -> None:
    """Crash recovery may recreate the landing in another clone: the SHAs must not differ."""
    results = []
    for name in ("one", "two"):
        path, _, base = make_repo(tmp_path / name)
        tree = git.tree_with_file(path, base, "manifest.toml", b"pinned\n", tmp_path / f"{name}.i")
        commit = git.commit_tree(path, tree, base, "Bump api v1 → v2 (q3)\n", WHO)
        tag = git.make_tag(path, "v2026.11.4", commit, "Integration release v2026.11.4\n", WHO)
        results.append((base, tree, commit, tag))
    assert results[0] == results[1]


def test_delete_local_tag(repo: tuple[Path, str, str]) -> None:
    path, _, second = repo
    git.make_tag(path, "v1", second, "m", WHO)
    git.delete_local_tag(path, "v1")
    assert git.rev_parse(path, "refs/tags/v1") is None
    git.delete_local_tag(path, "v1")  # already gone: nothing to do
    with pytest.raises(ValidationError):
        git.delete_local_tag(path, "--all")

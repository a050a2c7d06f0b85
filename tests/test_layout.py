"""The OCI layout registry: images written by `ocilayout`, read back by `registry.layout` (§5.2)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from lockstep import ocilayout
from lockstep.errors import ArtifactAmbiguousError, ValidationError
from lockstep.ocilayout import (
    DEFAULT_PLATFORMS,
    MEDIA_INDEX,
    MEDIA_MANIFEST,
    REF_NAME,
    IndexWrite,
    LayoutWriter,
    write_image,
)
from lockstep.registry.layout import LayoutSource, digest_mismatch_hint
from lockstep.registry.source import Answer, ArtifactSource
from tests.infra import require_tool

FILES = {"app/hello.txt": b"hello\n", "app/bin/run": b"#!/bin/sh\necho hi\n"}


class Clock:
    """A clock the test moves by hand, for the 10 s unparsable rule."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def index_of(root: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((root / name / "index.json").read_bytes())
    return data


def put_index(root: Path, name: str, manifests: list[dict[str, object]]) -> None:
    """Write index.json by hand (atomically), for shapes the writer never produces."""
    LayoutWriter(root / name).write_index({"schemaVersion": 2, "manifests": manifests})


def test_source_implements_the_protocol(tmp_path: Path) -> None:
    assert isinstance(LayoutSource(tmp_path), ArtifactSource)


def test_found_with_the_descriptor_digest(tmp_path: Path) -> None:
    desc = write_image(tmp_path, "demo/app", "1.0", FILES)
    answer = LayoutSource(tmp_path).check("demo/app", "1.0")
    assert answer == Answer(True, desc.digest, "found in index.json", media_type=MEDIA_MANIFEST)
    blob = tmp_path / "demo/app/blobs/sha256" / desc.digest.removeprefix("sha256:")
    assert json.loads(blob.read_bytes())["mediaType"] == MEDIA_MANIFEST
    assert json.loads((tmp_path / "demo/app/oci-layout").read_bytes()) == {
        "imageLayoutVersion": "1.0.0"}


def test_not_yet_when_the_tag_is_absent(tmp_path: Path) -> None:
    write_image(tmp_path, "demo/app", "1.0", FILES)
    write_image(tmp_path, "demo/app", "1.1", FILES)
    src = LayoutSource(tmp_path)
    answer = src.check("demo/app", "2.0")
    assert not answer.found and answer.digest is None and not answer.transient
    assert answer.detail == f"no tag 2.0 in {tmp_path / 'demo/app'}/index.json"
    verbose = src.check("demo/app", "2.0", first_or_last=True)
    assert verbose.detail.endswith("(tags: 1.0, 1.1)")


def test_no_directory_is_not_yet_then_found(tmp_path: Path) -> None:
    src = LayoutSource(tmp_path)
    answer = src.check("demo/app", "1.0")
    assert not answer.found and not answer.transient
    assert answer.detail == f"no layout directory {tmp_path / 'demo/app'}"
    (tmp_path / "demo/app").mkdir(parents=True)
    assert src.check("demo/app", "1.0").detail.startswith("no index.json in")
    desc = write_image(tmp_path, "demo/app", "1.0", FILES)
    assert src.check("demo/app", "1.0").digest == desc.digest


def test_torn_index_written_in_place_then_completed_is_found(tmp_path: Path) -> None:
    """As skopeo does (O_TRUNC, no rename): a reader in the middle sees a partial file."""
    old = write_image(tmp_path, "demo/app", "1.0", FILES)
    src = LayoutSource(tmp_path)
    assert src.check("demo/app", "1.0").found
    writer = LayoutWriter(tmp_path / "demo/app", IndexWrite.IN_PLACE)
    new = writer.image({"app/hello.txt": b"version 2\n"})
    seen: list[Answer] = []

    def mid_write() -> None:
        raw = (tmp_path / "demo/app/index.json").read_bytes()
        with pytest.raises(json.JSONDecodeError):
            json.loads(raw)  # the file really is torn here
        seen.append(src.check("demo/app", "2.0"))
        seen.append(src.check("demo/app", "1.0"))

    writer.tag(new, "2.0", between=mid_write)
    assert [a.found for a in seen] == [False, False]
    assert seen[0].detail == "index.json being written" and not seen[0].transient
    assert src.check("demo/app", "2.0") == Answer(True, new.digest, "found in index.json",
                                                  media_type=MEDIA_MANIFEST)
    assert src.check("demo/app", "1.0").digest == old.digest


def test_unparsable_for_more_than_10s_shows_in_the_detail(tmp_path: Path) -> None:
    clock = Clock()
    src = LayoutSource(tmp_path, clock=clock)
    write_image(tmp_path, "demo/app", "1.0", FILES)
    index = tmp_path / "demo/app/index.json"
    good = index.read_bytes()
    index.write_bytes(good[:40])
    assert src.check("demo/app", "1.0") == Answer(False, detail="index.json being written")
    clock.now += 9.9
    index.write_bytes(good[:50])  # still being written: the 10 s count from the first tear
    assert src.check("demo/app", "1.0").detail == "index.json being written"
    clock.now += 2
    late = src.check("demo/app", "1.0")
    assert not late.found and late.transient
    assert late.detail.startswith("index.json unparsable for 12s: JSONDecodeError")
    index.write_bytes(good)
    assert src.check("demo/app", "1.0").found


def test_two_descriptors_for_one_tag_are_ambiguous(tmp_path: Path) -> None:
    writer = LayoutWriter(tmp_path / "demo/app")
    a = writer.image({"a": b"a"})
    b = writer.image({"b": b"b"})
    put_index(tmp_path, "demo/app", [a.as_json({REF_NAME: "1.0"}),
                                     b.as_json({REF_NAME: "registry.example.com/demo/app:1.0"})])
    with pytest.raises(ArtifactAmbiguousError) as err:
        LayoutSource(tmp_path, "registry.example.com").check("demo/app", "1.0")
    assert a.digest in err.value.message and b.digest in err.value.message
    assert err.value.message.startswith("registry.example.com/demo/app:1.0 names 2 manifests")
    assert err.value.hint


def test_missing_or_partial_blob_is_not_yet(tmp_path: Path) -> None:
    desc = write_image(tmp_path, "demo/app", "1.0", FILES)
    blob = tmp_path / "demo/app/blobs/sha256" / desc.digest.removeprefix("sha256:")
    data = blob.read_bytes()
    blob.unlink()
    src = LayoutSource(tmp_path)
    missing = src.check("demo/app", "1.0")
    assert not missing.found
    assert missing.detail == f"tag 1.0 points at {desc.digest}, whose blob is missing"
    blob.write_bytes(data[:10])
    assert src.check("demo/app", "1.0").detail == (
        f"blob {desc.digest} of tag 1.0 is incomplete (10 of {len(data)} bytes)")
    blob.write_bytes(data)  # index.json unchanged: the blob is looked at again anyway
    assert src.check("demo/app", "1.0").digest == desc.digest


def test_multi_platform_index_digest_is_pinned_never_a_platform_one(tmp_path: Path) -> None:
    desc = write_image(tmp_path, "demo/app", "1.0", FILES, platforms=DEFAULT_PLATFORMS)
    assert desc.media_type == MEDIA_INDEX
    blob = tmp_path / "demo/app/blobs/sha256" / desc.digest.removeprefix("sha256:")
    platform_digests = {m["digest"] for m in json.loads(blob.read_bytes())["manifests"]}
    assert len(platform_digests) == 2
    answer = LayoutSource(tmp_path).check("demo/app", "1.0")
    assert answer.digest == desc.digest and answer.digest not in platform_digests
    assert answer.media_type == MEDIA_INDEX
    assert digest_mismatch_hint(answer) is None


def test_single_platform_descriptor_hints_copied_without_all(tmp_path: Path) -> None:
    write_image(tmp_path, "demo/app", "1.0", FILES)
    hint = digest_mismatch_hint(LayoutSource(tmp_path).check("demo/app", "1.0"))
    assert hint is not None and hint.startswith("copied without --all?")


def test_full_reference_annotation_form(tmp_path: Path) -> None:
    writer = LayoutWriter(tmp_path / "demo/app")
    desc = writer.image(FILES)
    put_index(tmp_path, "demo/app", [desc.as_json({REF_NAME: "registry.example.com/demo/app:1.0"})])
    src = LayoutSource(tmp_path)
    assert src.check("demo/app", "1.0").digest == desc.digest
    assert not src.check("demo/app", "0").found  # a suffix of the tag is not the tag
    assert not src.check("demo/app", "1.0.1").found


def test_unchanged_index_is_not_read_again(tmp_path: Path) -> None:
    """Same inode, size and mtime: the cached answer stands (one stat, no read)."""
    desc = write_image(tmp_path, "demo/app", "1.0", FILES)
    index = tmp_path / "demo/app/index.json"
    src = LayoutSource(tmp_path)
    assert src.check("demo/app", "1.0").digest == desc.digest
    st = index.stat()
    with index.open("r+b") as fh:  # same inode, same size: garbage
        fh.write(b"x" * st.st_size)
    os.utime(index, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert src.check("demo/app", "1.0").digest == desc.digest
    os.utime(index, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert src.check("demo/app", "1.0").detail == "index.json being written"


def test_an_unchanged_check_costs_one_stat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted by wrapping os.stat and Path.open: after the first read, found and missing tags
    alike cost one stat of index.json and no open."""
    write_image(tmp_path, "demo/app", "1.0", FILES)
    src = LayoutSource(tmp_path)
    src.check("demo/app", "1.0")
    src.check("demo/app", "2.0")
    calls: list[str] = []
    real_stat, real_open = os.stat, Path.open

    def stat(path: object, *args: object, **kw: object) -> os.stat_result:
        calls.append(f"stat {path}")
        return real_stat(path, *args, **kw)  # type: ignore[arg-type]

    def path_open(self: Path, *args: object, **kw: object) -> object:
        calls.append(f"open {self}")
        return real_open(self, *args, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(Path, "open", path_open)
    assert src.check("demo/app", "1.0").found
    assert not src.check("demo/app", "2.0").found
    assert calls == [f"stat {tmp_path / 'demo/app/index.json'}"] * 2


def test_repository_names_cannot_escape_the_root(tmp_path: Path) -> None:
    src = LayoutSource(tmp_path / "registry")
    for bad in ("../etc", "/abs", "Demo/App", "demo//app", "host.example.com/x"):
        with pytest.raises(ValidationError):
            src.check(bad, "1.0")
    with pytest.raises(ValidationError):
        write_image(tmp_path, "demo/app", "1.0", {"../x": b""})
    with pytest.raises(ValidationError):
        write_image(tmp_path, "demo/app", "bad tag", FILES)


def test_same_input_gives_the_same_digest(tmp_path: Path) -> None:
    one = write_image(tmp_path / "a", "demo/app", "1.0", FILES)
    two = write_image(tmp_path / "b", "other/name", "2.0", dict(reversed(FILES.items())))
    assert one == two
    multi = [write_image(tmp_path / d, "x", "1", FILES, platforms=DEFAULT_PLATFORMS)
             for d in ("c", "d")]
    assert multi[0] == multi[1]
    assert write_image(tmp_path / "e", "x", "1", {**FILES, "app/hello.txt": b"bye\n"}) != one


def test_a_tag_is_replaced_and_other_tags_kept(tmp_path: Path) -> None:
    write_image(tmp_path, "demo/app", "1.0", FILES)
    write_image(tmp_path, "demo/app", "keep", FILES)
    again = write_image(tmp_path, "demo/app", "1.0", {"new": b"n"})
    names = [m["annotations"][REF_NAME] for m in index_of(tmp_path, "demo/app")["manifests"]]
    assert sorted(names) == ["1.0", "keep"]
    assert LayoutSource(tmp_path).check("demo/app", "1.0").digest == again.digest


def test_concurrent_writers_keep_every_tag(tmp_path: Path) -> None:
    tags = [f"1.{i}" for i in range(16)]
    errors: list[BaseException] = []

    def write(tag: str) -> None:
        try:
            write_image(tmp_path, "demo/app", tag, {"v": tag.encode()})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(t,)) for t in tags]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    src = LayoutSource(tmp_path)
    assert all(src.check("demo/app", t).found for t in tags)


def skopeo(*args: str) -> str:
    done = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_skopeo_reads_the_images_written(tmp_path: Path) -> None:
    require_tool("skopeo")
    single = write_image(tmp_path, "demo/app", "1.0", FILES, labels={"v": "1.0"})
    multi = write_image(tmp_path, "demo/app", "multi", FILES, platforms=DEFAULT_PLATFORMS)
    info = json.loads(skopeo("inspect", f"oci:{tmp_path / 'demo/app'}:1.0"))
    assert info["Digest"] == single.digest and info["Labels"] == {"v": "1.0"}
    assert info["Architecture"] == "amd64" and len(info["Layers"]) == 1
    raw = json.loads(skopeo("inspect", "--raw", f"oci:{tmp_path / 'demo/app'}:multi"))
    assert raw["mediaType"] == MEDIA_INDEX and len(raw["manifests"]) == 2
    amd64 = json.loads(skopeo("inspect", f"oci:{tmp_path / 'demo/app'}:multi"))
    assert amd64["Architecture"] == "amd64"
    assert amd64["Digest"] == multi.digest  # skopeo also names the index digest


def test_layouts_written_by_skopeo_are_read(tmp_path: Path) -> None:
    """skopeo's own index.json (written in place); with --all the index digest survives, without
    it one platform's manifest is stored under the tag, which the hint names."""
    require_tool("skopeo")
    src_root = tmp_path / "src"
    multi = write_image(src_root, "demo/app", "1.0", FILES, platforms=DEFAULT_PLATFORMS)
    dest = tmp_path / "dest"
    (dest / "demo").mkdir(parents=True)
    skopeo("copy", "--all", f"oci:{src_root / 'demo/app'}:1.0", f"oci:{dest / 'demo/all'}:1.0")
    skopeo("copy", f"oci:{src_root / 'demo/app'}:1.0", f"oci:{dest / 'demo/one'}:1.0")
    src = LayoutSource(dest)
    both = src.check("demo/all", "1.0")
    assert both.digest == multi.digest and both.media_type == MEDIA_INDEX
    one = src.check("demo/one", "1.0")
    assert one.found and one.digest != multi.digest and one.media_type == MEDIA_MANIFEST
    assert (digest_mismatch_hint(one) or "").startswith("copied without --all?")


def test_layout_dir_maps_name_to_directory(tmp_path: Path) -> None:
    assert ocilayout.layout_dir(tmp_path, "a/b-c/d") == tmp_path / "a/b-c/d"

"""Golden pins: each case under tests/golden/pins holds real-world-shaped input files, the
pins to apply and the exact expected bytes; every other byte must stay as it was."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lockstep import imageref
from lockstep.pinning.model import NewValue, PinSpec
from lockstep.pinning.plan import apply_edits, compute_edits
from lockstep.pinning.regex_pin import validate_pattern

GOLDEN = Path(__file__).with_name("golden") / "pins"
CASES = sorted(p.name for p in GOLDEN.iterdir() if p.is_dir())


def pins_of(case: dict[str, Any]) -> list[tuple[PinSpec, NewValue]]:
    """The case's pins as the release code would build them."""
    out = []
    for p in case["pins"]:
        spec = PinSpec(
            kind=p["kind"], file=case["file"],
            image=imageref.parse(p["image"]) if "image" in p else None,
            pattern=validate_pattern(p["pattern"]) if "pattern" in p else None,
            fields=tuple(p.get("fields", ("version", "appVersion"))),
            tag_keys=tuple(p.get("tag_keys", ("tag",))),
            max_matches=p.get("max_matches", 1), digest=p.get("add_digest", False))
        out.append((spec, NewValue(p["tag"], p.get("digest"), p.get("value"))))
    return out


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 12
    kinds = {p["kind"] for c in CASES
             for p in json.loads((GOLDEN / c / "case.json").read_text())["pins"]}
    assert kinds == {"dockerfile", "helm-values", "chart", "regex"}


@pytest.mark.parametrize("name", CASES)
def test_golden(name: str) -> None:
    case = json.loads((GOLDEN / name / "case.json").read_text())
    data = (GOLDEN / name / "input" / case["file"]).read_bytes()
    expected = (GOLDEN / name / "expected" / case["file"]).read_bytes()
    assert data != expected  # every case changes something
    pins = pins_of(case)
    edits = compute_edits(case["file"], data, pins)
    assert apply_edits(data, edits) == expected
    for edit in edits:  # an edit's byte span holds exactly its old text
        assert data[edit.start:edit.end] == edit.old.encode()
    # pinning the result again is all applied pins: counted, nothing changes
    again = compute_edits(case["file"], expected, pins)
    assert again and not any(e.changed for e in again)
    assert apply_edits(expected, again) == expected

"""The simulator (spec/queue.md §7, scenario Q15): serial equivalence, determinism, a reduced
`--check`, the JSON document and the command's bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lockstep.cli.main import run
from lockstep.queue.pipeline import Mode, WindowKind
from lockstep.sim import SimParams, simulate
from lockstep.sim.check import run_check
from lockstep.sim.engine import run_repetition
from lockstep.sim.params import Distribution, SimStage

ROW_FIELDS = {"mode", "p", "runners", "n", "reps", "seed", "batch_size", "window", "makespan_s",
              "makespan_se_s", "per_item_T", "speedup_vs_serial", "runs", "runs_per_item",
              "wasted_runs", "runner_s", "ttl_p50_s", "ttl_p95_s", "ttr_p50_s", "landed",
              "rejected", "tags", "closed_form_per_item_T", "bound_makespan_s", "bound_runs"}


def invoke(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        run(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


@pytest.mark.parametrize("mode,runners,window", [
    (Mode.SPECULATIVE, 4, WindowKind.RUNNERS), (Mode.SPECULATIVE, 8, WindowKind.AIMD),
    (Mode.BATCH, 1, WindowKind.RUNNERS), (Mode.BATCH, 4, WindowKind.RUNNERS),
    (Mode.BATCH, 8, WindowKind.AIMD)])
def test_landed_set_and_order_equal_serial_modes_on_the_same_seed(
        mode: Mode, runners: int, window: WindowKind) -> None:
    stages = (SimStage("build", Distribution("uniform", 100, 300)),
              SimStage("test", Distribution("lognormal", 300, 0.5)))
    for seed in (1, 2, 3):
        base = SimParams(n=60, p=0.2, stages=stages, configs=2, runners=runners, reps=1,
                         seed=seed, mode=Mode.SERIAL)
        serial = run_repetition(base, 0, verify=True).measures
        other = run_repetition(SimParams(n=60, p=0.2, stages=stages, configs=2,
                                         runners=runners, reps=1, seed=seed, mode=mode,
                                         window=window), 0, verify=True).measures
        assert other.landed == serial.landed and other.rejected == serial.rejected
        assert len(serial.landed) + len(serial.rejected) == 60


def test_landing_time_arrivals_pools_infra_and_flakes_all_drain_the_queue() -> None:
    params = SimParams(n=40, p=0.1, stages=(
        SimStage("test", Distribution("fixed", 300)),
        SimStage("rig", Distribution("uniform", 200, 400), pool="hw")), pools=(("hw", 1),),
        configs=2, runners=4, mode=Mode.BATCH, infra=0.02, flake=0.01, flake_retries=1,
        arrivals="poisson:30", landing_s=20.0, reps=3, seed=5)
    params.validate()
    row = simulate(params, verify=True)
    assert row.landed.mean + row.rejected.mean == 40
    assert row.runs.mean > 40 * 0.4 and row.tags.mean < row.landed.mean


def test_a_queue_paused_for_infrastructure_is_resumed_and_drains() -> None:
    """Frequent infrastructure failures without retries pause the queue (three items rejected
    `infrastructure` in a row); the simulated operator resumes it and every item finishes."""
    params = SimParams(n=60, p=0.15, stages=(SimStage("t", Distribution("fixed", 100)),),
                       runners=6, mode=Mode.SPECULATIVE, infra=0.5, retries=0, reps=4,
                       seed=11)
    params.validate()
    row = simulate(params, verify=True)
    assert row.landed.mean + row.rejected.mean == 60
    assert row.rejected.mean > 60 * 0.15, "infrastructure rejections came on top of bad items"


def _without_timing(text: str) -> dict[str, Any]:
    doc = json.loads(text)
    assert set(doc["timing"]) == {"wall_s", "decision_us_p50", "decision_us_p95"}
    del doc["timing"]
    return doc


def test_the_same_inputs_give_byte_identical_json_outside_timing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["sim", "--n", "40", "--p", "0.05,0.2", "--runners", "1,4", "--reps", "4",
            "--stage", "a=uniform:100:200", "--stage", "b=lognormal:100:0.4", "--json"]
    code, first, _ = invoke([*argv, "--out", str(tmp_path / "a.json")], capsys)
    assert code == 0
    code, second, _ = invoke([*argv, "--out", str(tmp_path / "b.json")], capsys)
    assert code == 0
    one, two = _without_timing(first), _without_timing(second)
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)
    written = (tmp_path / "a.json").read_text(encoding="utf-8")
    assert _without_timing(written) == one
    assert one["schema"] == "lockstep.sim/v1" and len(one["rows"]) == 12
    assert all(set(row) == ROW_FIELDS for row in one["rows"])
    serial = [r for r in one["rows"] if r["mode"] == "serial"]
    assert all(r["speedup_vs_serial"] == 1.0 for r in serial)
    other = _without_timing(invoke([*argv[:-1], "--seed", "2", "--json"], capsys)[1])
    assert other["rows"] != one["rows"]


def test_reduced_check_holds() -> None:
    # the full check (N = 200, 200 repetitions, every p) is `lockstep sim --check`, run by
    # bench/queue_throughput.py's grid at 1000 repetitions; this is one p at 16 repetitions
    findings = run_check(n=200, reps=16, seed=3, ps=(0.1,))
    failed = [f.text for f in findings if not f.ok]
    assert not failed
    texts = " ".join(f.text for f in findings)
    assert "exactly N·T" in texts and "§6 grid" in texts and "equal serial" in texts
    assert len(findings) >= 18


@pytest.mark.parametrize("argv,fragment", [
    (["--p", "often"], "--p 'often'"),
    (["--p", "1.5"], "--p must be from 0 to 1"),
    (["--runners", "0"], "--runners must be at least 1"),
    (["--mode", "fast"], "unknown mode 'fast'"),
    (["--stage", "test=fixed"], "bad duration 'fixed'"),
    (["--stage", "test=uniform:5:1"], "uniform:MIN:MAX needs MIN <= MAX"),
    (["--stage", "rig=fixed:60@hw"], "names pool 'hw'"),
    (["--window", "wide"], "bad window 'wide'"),
    (["--bisect-ways", "1"], "bad --bisect-ways '1'"),
    (["--reps", "0"], "--reps must be at least 1 (e.g. --reps 200)"),
    (["--arrivals", "poisson:-3"], "bad arrivals"),
    (["--check", "--reps", "10"], "--check needs"),
    (["--n", "abc"], "--n"),
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], fragment: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = invoke(["sim", *argv], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err


def test_table_output_lists_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = invoke(["sim", "--n", "30", "--p", "0.1", "--runners", "4", "--reps", "3",
                           "--mode", "speculative,batch", "--window", "aimd"], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["mode", "p", "P", "W"]
    assert [line.split()[0] for line in lines[1:]] == ["speculative", "batch"]
    assert all(line.split()[3] == "aimd" for line in lines[1:])

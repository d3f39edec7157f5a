"""`sit study`: claim logic on exact numbers, a tiny study end to end through the CLI, resume
after a kill (finished cells are not retrained), refused setting changes, bad input."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from sit.cli import main
from sit.study import claims
from sit.study.cells import CELLS, parse_only, select_cells
from sit.study.claims import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, all_of, beats, best_depends, best_is, stat

TINY = ["--cells", "vp-score,linear-velocity", "--steps", "4", "--batch", "8", "--seeds", "2",
        "--samples-per-class", "2", "--nfe", "4", "--depth", "1", "--hidden-size", "32", "--num-heads", "2"]


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "sit.cli", "study", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "SIT_TEST_THREADS": "1"})


# ---------------------------------------------------------------- claim logic (exact numbers)
def test_stat_is_the_t_interval():
    s = stat([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.n == 3
    assert s.half == pytest.approx(4.303 * 1.0 / math.sqrt(3))          # t_{0.975,2} * sd / sqrt(n), sd = 1
    s2 = stat([10.0, 14.0])                                              # sd = 2*sqrt(2), t_{0.975,1} = 12.706
    assert s2.half == pytest.approx(12.706 * 2 * math.sqrt(2) / math.sqrt(2))
    assert stat([None, float("nan")]) is None
    assert stat([5.0]).n == 1 and math.isinf(stat([5.0]).half)


def test_beats_separated_and_overlapping_cis():
    low = stat([1.0, 1.1, 0.9])     # 1 +- 0.248
    high = stat([5.0, 5.1, 4.9])    # 5 +- 0.248
    near = stat([1.2, 1.3, 1.1])    # 1.2 +- 0.248: overlaps low
    assert beats(low, high) == HOLDS
    assert beats(high, low) == FAILS
    assert beats(low, near) == INCONCLUSIVE and beats(near, low) == INCONCLUSIVE
    assert beats(low, stat([9.0])) == INCONCLUSIVE      # one seed: no interval
    assert beats(low, None) == NOT_MEASURED


def test_combined_claims():
    assert all_of([HOLDS, HOLDS]) == HOLDS
    assert all_of([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert all_of([HOLDS, FAILS, INCONCLUSIVE]) == FAILS
    assert all_of([HOLDS, NOT_MEASURED]) == NOT_MEASURED
    a, b, c = stat([1.0, 1.1, 0.9]), stat([5.0, 5.1, 4.9]), stat([9.0, 9.1, 8.9])
    assert best_is({"kl": a, "sigma": b, "sin2": c}, "kl") == HOLDS
    assert best_is({"kl": a, "sigma": b, "sin2": c}, "sigma") == FAILS
    assert best_is({"kl": a, "sigma": stat([1.05, 1.15, 0.95])}, "kl") == INCONCLUSIVE
    # different separated bests -> holds; the same separated best everywhere -> does not hold
    assert best_depends({"m1": {"kl": a, "sigma": b}, "m2": {"kl": b, "sigma": a}})[0] == HOLDS
    assert best_depends({"m1": {"kl": a, "sigma": b}, "m2": {"kl": a, "sigma": c}})[0] == FAILS
    assert best_depends({"m1": {"kl": a, "sigma": b}, "m2": {"kl": a, "sigma": a}})[0] == INCONCLUSIVE
    cl = claims.claim_of("Table 4", "x beats y", [("x", "y")], {"x": a, "y": b}.get)
    assert cl.verdict == HOLDS and "x 1 ± 0.25 vs y 5 ± 0.25" in cl.detail


# ---------------------------------------------------------------- cells and bad input
def test_cell_selection_and_only():
    assert [c.name for c in select_cells(None)] == [c.name for c in CELLS if c.default]
    assert len(select_cells("all")) == len(CELLS)
    with pytest.raises(ValueError, match="unknown cell"):
        select_cells("vp-velocity,nope")
    cells = select_cells("ddpm,vp-score")
    assert parse_only("ddpm/1", cells, 2) == ("ddpm", 1)
    assert parse_only("ddpm", cells, 2) == ("ddpm", None)
    with pytest.raises(ValueError, match="seed must be"):
        parse_only("ddpm/2", cells, 2)
    with pytest.raises(ValueError, match="unknown cell 'gvp-velocity'"):
        parse_only("gvp-velocity", cells, 2)


def test_bad_flags_are_one_line_errors(tmp_path):
    r = _cli("--out", str(tmp_path / "s"), "--seeds", "1", "--list")
    assert r.returncode == 2 and "seeds must be >= 2" in r.stderr
    r = _cli("--out", str(tmp_path / "s"), "--nfe", "3", "--list")
    assert r.returncode == 2 and "nfe must be an even integer" in r.stderr
    r = _cli("--out", str(tmp_path / "missing"), "--report-only")
    assert r.returncode == 2 and "no study" in r.stderr


# ---------------------------------------------------------------- a tiny study, end to end
@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study") / "s"
    proc = subprocess.Popen([sys.executable, "-m", "sit.cli", "study", "--out", str(out), *TINY],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = out / "results" / "vp-score-s0.json"
    t0 = time.time()
    while not first.is_file() and proc.poll() is None and time.time() - t0 < 300:
        time.sleep(0.2)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)   # a study killed after its first (cell, seed)
    proc.wait()
    assert first.is_file(), proc.stdout.read()
    before = {f.name: f.read_text() for f in (out / "results").glob("*.json")}
    r = _cli("--out", str(out), *TINY)
    assert r.returncode == 0, r.stdout + r.stderr
    return out, before, r.stdout, killed


def test_tiny_study_writes_the_report(tiny_study):
    out, _, log, _ = tiny_study
    for name in ("study.md", "cells.csv", "cells.json", "fig_table4.png", "fig_table6.png", "fig4_path_length.png",
                 "fig5_nfe.png"):
        assert (out / name).is_file(), name
    rows = json.loads((out / "cells.json").read_text())["rows"]
    ode = next(r for r in rows if r["cell"] == "linear-velocity" and r["eval"] == "ode")
    assert ode["n_seeds"] == 2 and ode["nfe"] == 4 and ode["sampler"] == "heun" and ode["paper_fid"] == 34.8
    assert ode["fd_ci95"] is not None and ode["fd_mean"] > 0
    kinds = {(r["cell"], r["eval"]) for r in rows}
    assert {("vp-score", "sde:kl_eta"), ("linear-velocity", "sde:sin2")} <= kinds
    res = json.loads((out / "results" / "linear-velocity-s1.json").read_text())
    assert [p["step"] for p in res["path_length"]] == [1, 2, 3, 4]
    assert set(res["nfe_curve"]) == {"ode", "sde:kl", "sde:sigma", "sde:sin2", "sde:kl_eta"}
    md = (out / "study.md").read_text()
    assert "| Table 4 | Linear and GVP beat VP (velocity models) | **not measured** |" in md
    assert "ETA this unit" in log
    assert log.count("TensorBoard is not installed") <= 1   # said once for the study, not once per training


def test_resume_does_not_retrain_finished_cells(tiny_study):
    out, before, log, killed = tiny_study
    for name, text in before.items():                   # finished (cell, seed) results were not redone
        assert (out / "results" / name).read_text() == text
    if killed:
        assert f"{len(before)} of 4 (cell, seed) units already done; {4 - len(before)} to run" in log
    r = _cli("--out", str(out), *TINY)
    assert r.returncode == 0 and "4 of 4 (cell, seed) units already done; 0 to run" in r.stdout


def test_changed_setting_is_refused(tiny_study):
    out = tiny_study[0]
    args = list(TINY)
    args[args.index("--steps") + 1] = "5"
    r = _cli("--out", str(out), *args)
    assert r.returncode == 2 and "other settings" in r.stderr and "steps: 4 -> 5" in r.stderr
    r = _cli("--out", str(out), *TINY, "--list")
    assert r.returncode == 0 and "done seeds [0, 1] of 2" in r.stdout


def test_parallel_workers_share_the_cores_instead_of_each_taking_all():
    """Two spawned workers left at torch's default ran 2 threads each on 2 cores (4 threads: a training
    step 2.2x slower); each worker now gets its share of the usable cores, or --threads when given."""
    import os

    from sit.study.run import worker_threads

    cores = len(os.sched_getaffinity(0))
    assert worker_threads(0, 1) == cores
    assert worker_threads(0, 2) == max(1, cores // 2)
    assert worker_threads(0, 4 * cores) == 1
    assert worker_threads(3, 2) == 3


def test_study_list_counts_the_studys_own_seeds(tmp_path, capsys):
    """`sit study --list` reads the seeds of the study in --out, not the default budget's."""
    from sit.study.cells import CELLS

    out = tmp_path / "st"
    (out / "results").mkdir(parents=True)
    (out / "study_config.json").write_text(json.dumps({"identity": {"budget": {"seeds": 5}}}))
    for s in (0, 3, 4):
        (out / "results" / f"{CELLS[0].name}-s{s}.json").write_text("{}")
    capsys.readouterr()
    assert main(["study", "--list", "--out", str(out)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(CELLS[0].name + " "))
    assert "done seeds [0, 3, 4] of 5" in line

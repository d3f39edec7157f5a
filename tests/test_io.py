"""sit.io: atomic writes keep the old file on failure; the folder lock is exclusive and stale locks are taken over."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sit import io


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    p = tmp_path / "a.json"
    io.write_json(p, {"x": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(p.read_text()) == {"x": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["a.json"]


def test_read_json_names_empty_and_corrupt(tmp_path):
    (tmp_path / "e.json").write_text("")
    (tmp_path / "c.json").write_text("{not json")
    with pytest.raises(ValueError, match="is empty"):
        io.read_json(tmp_path / "e.json")
    with pytest.raises(ValueError, match="is corrupt"):
        io.read_json(tmp_path / "c.json")


def test_to_uint8_matches_official_rounding():
    import torch

    x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0]).view(1, 1, 1, 5)
    u = io.to_uint8(x)
    assert u.shape == (1, 1, 5, 3)
    np.testing.assert_array_equal(u[0, 0, :, 0], [0, 64, 128, 191, 255])


def test_folder_lock_exclusive_and_stale(tmp_path):
    with io.FolderLock(tmp_path, "run folder"):
        with pytest.raises(io.FolderLockedError):
            io.FolderLock(tmp_path, "run folder").acquire()
    assert not (tmp_path / ".lock").exists()
    # a lock left by a dead process is taken over with a message
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (tmp_path / ".lock").write_text(json.dumps({"pid": int(proc.stdout), "host": socket.gethostname()}))
    msgs = []
    with io.FolderLock(tmp_path, "run folder", log=msgs.append):
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    assert msgs and "stale lock" in msgs[0]


def _race_for_lock(folder, barrier, current, peak, wins):
    barrier.wait()
    try:
        lock = io.FolderLock(folder, "run folder").acquire()
    except io.FolderLockedError:
        return
    with current.get_lock():
        current.value += 1
        peak.value = max(peak.value, current.value)
        wins.value += 1
    import time

    time.sleep(0.05)
    with current.get_lock():
        current.value -= 1
    lock.release()


def test_stale_lock_takeover_race_has_one_holder_at_a_time(tmp_path):
    """4 processes race for a lock left by a dead process: never two holders at once (issue 22)."""
    import multiprocessing as mp
    import socket

    ctx = mp.get_context("fork")
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)
    for trial in range(12):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        (folder / ".lock").write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
        barrier, current, peak, wins = ctx.Barrier(4), ctx.Value("i", 0), ctx.Value("i", 0), ctx.Value("i", 0)
        procs = [ctx.Process(target=_race_for_lock, args=(folder, barrier, current, peak, wins)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        assert all(p.exitcode == 0 for p in procs)
        assert wins.value >= 1 and peak.value == 1, f"trial {trial}: {peak.value} holders at once"
        assert not (folder / ".lock").exists()


def test_label_rows_writes_one_label_per_row_and_keeps_the_grid():
    grid = np.full((3 * 20, 40, 3), 128, np.uint8)
    out = io.label_rows(grid, ["y=0", "y=1", "y=2"])
    w = out.shape[1] - grid.shape[1]
    assert w > 0 and out.shape[0] == grid.shape[0]
    np.testing.assert_array_equal(out[:, w:], grid)
    for r in range(3):  # dark text pixels in every row band of the label column
        assert (out[r * 20:(r + 1) * 20, :w] < 100).any(), r


# files that open a file for writing outside `sit.io.atomic_path`, each with why
PLAIN_WRITES_ALLOWED = {
    "train/log.py": "metrics.jsonl is an append-only log, truncated to the checkpoint's step on resume",
}


def _plain_writes(tree) -> list[int]:
    """Lines of open(..., 'w' / 'a' / 'x' ...) calls that are not inside a `with atomic_path(...)`."""
    import ast

    def is_call(node, name):
        f = node.func if isinstance(node, ast.Call) else None
        return f is not None and (getattr(f, "id", None) == name or getattr(f, "attr", None) == name)

    covered = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.With, ast.AsyncWith)) and any(is_call(i.context_expr, "atomic_path") for i in node.items):
            covered |= {id(i.context_expr) for i in node.items}
    bad = []
    for node in ast.walk(tree):
        if is_call(node, "open") and getattr(node.func, "id", None) == "open" and id(node) not in covered:
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and set(mode.value) & set("wax+"):
                bad.append(node.lineno)
    return bad


def test_every_file_write_goes_through_sit_io():
    import ast
    from pathlib import Path

    import sit

    root = Path(sit.__file__).parent
    found = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).as_posix()
        if rel == "io.py" or rel in PLAIN_WRITES_ALLOWED:
            continue
        found += [f"sit/{rel}:{n}" for n in _plain_writes(ast.parse(p.read_text()))]
    assert not found, f"plain file writes (use sit.io.write_text_atomic / atomic_path): {found}"
    src = "with atomic_path(p) as tmp, open(tmp, 'w') as f:\n    pass\nwith open(q, 'w') as g:\n    pass\n"
    assert _plain_writes(ast.parse(src)) == [3]  # the scan sees a plain write

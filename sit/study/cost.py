"""Cost estimates of a study (`sit study --dry-run`): the matmul work of one (cell, seed) and the
hours at an assumed throughput. Split from `sit.study.run`, which re-exports it.

Must not import: ``sit.commands``.
"""

from __future__ import annotations

from sit.study.cells import FIG5_CELL, W_CHOICES, Cell
from sit.study.config import Study, cell_configs

ASSUMED_TFLOPS = 400.0   # dry-run hours: sustained matmul TFLOP/s (an H100 in bf16 at ~40 % utilisation)


def unit_cost(study: Study, cell: Cell) -> dict:
    """Estimated matmul work of one (cell, seed) (``sit.models.sit.forward_flops``; a training
    step is 3 forward passes): training, sampling every evaluation of ``evaluate_cell``, and the
    C(v) / L_t measurements (about one forward pass per point), in PFLOP, and the hours at
    ASSUMED_TFLOPS."""
    from sit.models.sit import forward_flops

    b = study.budget
    mc = cell_configs(study, cell, 0)[1]
    f1 = forward_flops(mc, 1)
    n = mc.num_classes * b.samples_per_class
    train = 3 * forward_flops(mc, b.batch) * b.steps
    if not cell.continuous:
        nfe_images = b.nfe * n
        other = 0
    else:
        evals = 1 + (len(W_CHOICES) - 1) + len(b.etas) + 1
        nfe_images = evals * b.nfe * n
        if cell.name == FIG5_CELL:
            nfe_images += sum(5 * nfe * n for nfe in b.nfe_curve if nfe != b.nfe)
        other = b.lt_points * b.lt_samples + (b.path_points * b.path_checkpoints if cell.velocity else 0)
    sample = nfe_images * f1
    total = train + sample + other * f1
    return {"images_seen": b.steps * b.batch, "train_pflop": train / 1e15, "sample_pflop": sample / 1e15,
            "total_pflop": total / 1e15, "hours_at_assumed": total / (ASSUMED_TFLOPS * 1e12) / 3600}

"""Adding a loss term is its module, one builder row and one `TrainConfig` field (docs/architecture.md,
"Adding one of a kind"): on a copy of the package with exactly those three edits, the term's flag
appears in `sit train --help` (generated from the field), a run with it trains and logs the term,
its one-line error names the flag, and a run without it keeps the identity of today's runs (the field
is marked `added_later`). The sampler, guidance and scorer recipes have their own tests
(`tests/test_sampler_rows.py`, `tests/test_guidance_strategies.py`, `tests/test_scorer_table.py`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_cli import TINY_TRAIN_FLAGS

import sit

# the term's module: a LossTerm on the objective seam, and its builder
TERM_MODULE = '''"""A toy loss term: the squared batch mean of the predicted velocity, weighted by TrainConfig.toy_coeff."""

from sit.train.seam import LossTerm


class ToyTerm(LossTerm):
    name = "toy"

    def __init__(self, cfg, model_cfg):
        super().__init__()
        self.coeff = float(cfg.toy_coeff)

    def forward(self, out):
        return out.pred.flatten(1).mean(1).pow(2)


def build(cfg, model_cfg, device):
    return ToyTerm(cfg, model_cfg) if cfg.toy_coeff else None
'''
# its field: one line among TrainConfig's loss fields
FIELD = ('    toy_coeff: float = _f(0.0, "loss", "weight of the toy term (sit.train.toy_term), 0 = off", metavar="W", '
         'added_later=True)\n')
ANCHOR_FIELD = "    # the VAE latent space (sit.vae.LatentSpace)"
# its row: one builder in TERM_BUILDERS
ROW = "= [_repa_term, _cosine_term]"


@pytest.fixture(scope="module")
def patched(tmp_path_factory) -> Path:
    """A copy of the package with the term's module, row and field added (PYTHONPATH root)."""
    root = tmp_path_factory.mktemp("pkg")
    pkg = root / "sit"
    shutil.copytree(Path(sit.__file__).parent, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "train" / "toy_term.py").write_text(TERM_MODULE)
    config = (pkg / "config.py").read_text()
    assert config.count(ANCHOR_FIELD) == 1
    (pkg / "config.py").write_text(config.replace(ANCHOR_FIELD, FIELD + "\n" + ANCHOR_FIELD))
    builders = (pkg / "train" / "builders.py").read_text()
    assert builders.count(ROW) == 1
    builders = builders.replace(ROW, "= [_repa_term, _cosine_term, _toy_term]")
    builders = builders.replace("\nTERM_BUILDERS:", "\nfrom sit.train.toy_term import build as _toy_term  # noqa: E402\n\nTERM_BUILDERS:")
    (pkg / "train" / "builders.py").write_text(builders)
    return root


def sit_cli(root: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-m", "sit.cli", *argv], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)


def test_a_loss_term_added_by_its_module_row_and_field_reaches_sit_train(patched, tmp_path):
    root = Path(sit.__file__).parent.parent
    # the flag is generated from the field, with its help and default
    help_text = sit_cli(patched, "train", "--help", cwd=tmp_path).stdout
    assert "--toy-coeff W" in help_text and "weight of the toy term" in " ".join(help_text.split())
    assert "--toy-coeff" not in sit_cli(root, "train", "--help", cwd=tmp_path).stdout   # the copy, not the package

    # a run with it trains the term: its loss is logged beside the objective's
    run = sit_cli(patched, "train", "--out", str(tmp_path / "run"), *TINY_TRAIN_FLAGS, "--toy-coeff", "0.5", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    assert records and all("loss_toy" in r for r in records)
    assert json.loads((tmp_path / "run" / "run_config.json").read_text())["train"]["toy_coeff"] == 0.5

    # a bad value is one line naming the generated flag, before anything is written
    bad = sit_cli(patched, "train", "--out", str(tmp_path / "bad"), *TINY_TRAIN_FLAGS, "--toy-coeff", "x", cwd=tmp_path)
    assert bad.returncode == 2 and "--toy-coeff" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "bad").exists()


def test_a_run_without_the_new_term_keeps_todays_identity(patched, tmp_path):
    """The field is left out of the stored config while at its default, so every existing run and
    study keeps its identity: the resolved config of a run without the flag is the same JSON."""
    root = Path(sit.__file__).parent.parent
    argv = ("train", "--out", str(tmp_path / "r"), *TINY_TRAIN_FLAGS, "--dry-run")
    with_term, without = sit_cli(patched, *argv, cwd=tmp_path), sit_cli(root, *argv, cwd=tmp_path)
    assert with_term.returncode == 0 and without.returncode == 0, with_term.stderr + without.stderr
    assert with_term.stdout == without.stdout and "toy_coeff" not in with_term.stdout

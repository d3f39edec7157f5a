"""sit.config is the records; the concerns around them live in torch-free modules it re-exports
(`sit.field_errors`, `sit.stored_form`, `sit.bounds`, `sit.config_rules`), none importing it back."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import sit.bounds
import sit.config as C
import sit.config_rules.phema
import sit.config_rules.repa
import sit.field_errors
import sit.stored_form

ROOT = Path(__file__).resolve().parents[1]
SPLIT = [ROOT / "sit" / "field_errors.py", ROOT / "sit" / "stored_form.py", ROOT / "sit" / "bounds.py",
         *sorted((ROOT / "sit" / "config_rules").glob("*.py"))]
ALLOWED = {"sit.field_errors", "sit.bounds", "sit.sampler_kinds"}   # and sit.config_rules' own modules


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at module or function level."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("path", SPLIT, ids=lambda p: p.name if p.parent.name == "sit" else f"config_rules/{p.name}")
def test_the_modules_split_from_config_import_nothing_of_sit_but_each_other(path):
    for name in _imports(path):
        if name == "sit" or name.startswith("sit."):
            assert name in ALLOWED or name.startswith("sit.config_rules"), f"{path.name} imports {name}"
        else:   # stdlib only
            assert name.split(".")[0] in sys.stdlib_module_names | {"__future__"}, f"{path.name} imports {name}"


def test_config_imports_no_torch_or_numpy():
    probe = "import sys, json, sit.config; print(json.dumps([m for m in ('torch', 'numpy') if m in sys.modules]))"
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout) == []


def test_config_re_exports_the_same_objects():
    for mod, names in [(sit.field_errors, ["ConfigError", "field_error", "field_name", "render_fields"]),
                       (sit.stored_form, ["ADDED_LATER", "added_later", "omitted_if_default", "to_dict", "from_dict", "to_json"]),
                       (sit.bounds, ["MAX_STEPS", "MAX_THREADS_PER_CORE", "check_steps", "check_threads", "max_threads",
                                     "usable_cores", "latent_value_problem"]),
                       (sit.config_rules.phema, ["PHEMA_SIGMA_RANGE", "PHEMA_MAX_FIT_ERROR"]),
                       (sit.config_rules.repa, ["REPA_MAX_PROJ_DIM"])]:
        for name in names:
            assert getattr(C, name) is getattr(mod, name), name


def test_each_feature_module_raises_the_config_error_of_sit_config():
    # a REPA rule (sit.config_rules.repa) raises the ConfigError `from sit.config import ConfigError` catches
    with pytest.raises(C.ConfigError, match=r"^TrainConfig\.repa_proj_dim must be an integer in \[1, 16384\]"):
        C.TrainConfig(repa_proj_dim=0)
    with pytest.raises(C.ConfigError, match=r"^TrainConfig\.phema_sigmas value 0\.5 is outside"):
        C.TrainConfig(phema_sigmas=(0.5,), phema_every=10)


def test_rules_run_in_feature_order_first_broken_rule_reported():
    # MeanFlow's rule runs before the cosine term's velocity rule: both broken, MeanFlow's is reported
    with pytest.raises(C.ConfigError, match=r"^TrainConfig\.objective 'meanflow' learns an average velocity"):
        C.TrainConfig(objective="meanflow", prediction="score", cosine_coeff=1.0)
    with pytest.raises(C.ConfigError, match=r"^TrainConfig\.cosine_coeff needs prediction 'velocity'"):
        C.TrainConfig(prediction="score", cosine_coeff=1.0)

"""Every command's flags are generated from the fields of torch-free records (`sit.commands.flags`):
one generator (type, choices, metavar, help and default read from the field), one flag <-> field
translation (`flag_of`, read from the field's metadata), records importable without torch, and the
rules about a sampler read from its row (an adaptive row added at run time is adaptive everywhere)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
from typing import Literal

import pytest

from sit.commands.flags import add_record_arguments, flag_of, given_values

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _meta(help: str, **extra):
    return dict(help=help, **extra)


@dataclasses.dataclass(frozen=True)
class Toy:
    """A record in the `_f` style: any dataclass whose fields carry this metadata gets its flags."""

    scale: float = dataclasses.field(default=1.0, metadata=_meta("guidance scale, 1 = off", flag="--cfg-scale",
                                                                   metavar="ZETA"))
    steps: int | None = dataclasses.field(default=None, metadata=_meta("steps; needs {scale}", metavar="N"))
    mode: Literal[None, "a", "b"] = dataclasses.field(default="a", metadata=_meta("the mode"))
    fast: bool = dataclasses.field(default=False, metadata=_meta("go fast"))
    progress: bool = dataclasses.field(default=True, metadata=_meta("a progress bar", flag="--no-progress"))
    sizes: tuple[int, ...] = dataclasses.field(default=(), metadata=_meta("sizes", metavar="S"))
    other: float = dataclasses.field(default=0.5, metadata=_meta("see {Toy.scale}", dest="toy_other"))
    hidden: int = dataclasses.field(default=3, metadata=_meta("internal", flag=None))
    plain: str = "x"   # no metadata "help": no flag


def _parser(**kw) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="toy")
    add_record_arguments(p, Toy, **kw)
    return p


def test_a_record_with_field_metadata_gets_its_flags_from_the_fields():
    p = _parser()
    by_dest = {a.dest: a for a in p._actions}
    assert set(by_dest) == {"help", "scale", "steps", "mode", "fast", "progress", "sizes", "toy_other"}
    assert by_dest["scale"].option_strings == ["--cfg-scale"] and by_dest["scale"].type is float
    assert by_dest["scale"].metavar == "ZETA" and by_dest["scale"].help == "guidance scale, 1 = off (default 1.0)"
    assert by_dest["steps"].type is int and by_dest["steps"].help == "steps; needs --cfg-scale"   # no default shown
    assert by_dest["mode"].choices == ["none", "a", "b"] and by_dest["mode"].help == "the mode (default a)"
    assert isinstance(by_dest["fast"], argparse.BooleanOptionalAction)
    assert by_dest["progress"].const is False and by_dest["progress"].help.endswith("(default on; this flag turns it off)")
    assert by_dest["sizes"].nargs == "+" and by_dest["sizes"].type is int
    assert by_dest["toy_other"].option_strings == ["--other"] and by_dest["toy_other"].help == "see --cfg-scale (default 0.5)"
    assert all(a.default is None for a in p._actions if a.dest != "help")   # a command sees only what was given


def test_given_values_are_field_values_and_round_trip_into_the_record():
    p = _parser()
    args = p.parse_args(["--cfg-scale", "2", "--mode", "none", "--fast", "--no-progress", "--sizes", "1", "2",
                         "--other", "0.25"])
    given = given_values(args, Toy)
    assert given == {"scale": 2.0, "mode": None, "fast": True, "progress": False, "sizes": (1, 2), "other": 0.25}
    assert Toy(**given) == Toy(scale=2.0, mode=None, fast=True, progress=False, sizes=(1, 2), other=0.25)
    assert given_values(p.parse_args([]), Toy) == {}
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "c"])   # choices from the Literal


def test_defaults_shown_and_kept_come_from_an_instance_when_given():
    p = _parser(defaults=Toy(scale=4.0), keep_defaults=True)
    a = next(a for a in p._actions if a.dest == "scale")
    assert a.default == 4.0 and a.help.endswith("(default 4.0)")


def test_flag_of_reads_the_field_metadata():
    from sit.config import ModelConfig, TrainConfig
    from sit.sampler_config import DiscreteSampleConfig, SampleConfig

    assert flag_of(Toy, "scale") == "--cfg-scale" and flag_of(Toy, "hidden") is None and flag_of(Toy, "steps") == "--steps"
    assert flag_of("DiscreteSampleConfig", "eta") == flag_of(DiscreteSampleConfig, "eta") == "--ddim-eta"
    assert flag_of("ModelConfig", "class_dropout_prob") == flag_of(ModelConfig, "class_dropout_prob") == "--label-dropout"
    assert flag_of(TrainConfig, "global_batch") == "--batch" and flag_of(SampleConfig, "last_step_size") == "--last-step-size"


def test_the_sampler_flags_of_sample_are_the_records_fields():
    """No hand table of sampler flags: `sit sample`'s sampler group is SampleConfig's fields with a flag
    (and DiscreteSampleConfig.eta as --ddim-eta), each parsed into its field."""
    from sit.cli import build_parser
    from sit.commands.flags import flag_fields
    from sit.sampler_config import SampleConfig

    sample = build_parser()._sit_subparsers["sample"]
    by_dest = {a.dest: a for a in sample._actions}
    fields = flag_fields(SampleConfig)
    assert {"method", "num_steps", "grid", "w", "last_step", "atol"} <= set(fields)
    for name in fields:
        assert by_dest[name].option_strings == [flag_of(SampleConfig, name)], name
    assert by_dest["ddim_eta"].option_strings == ["--ddim-eta"]
    args = sample.parse_args(["--ckpt", "c", "--out", "o", "--method", "euler_maruyama", "--last-step", "none",
                              "--t-start", "0.9", "--w", "KL"])
    assert given_values(args, SampleConfig) == {"method": "euler_maruyama", "last_step": None, "t_start": 0.9, "w": "KL"}
    import sit.commands.sample as cmd

    assert not hasattr(cmd, "SAMPLER_FLAGS")


def test_the_records_and_the_sampler_table_import_no_torch():
    code = ("import sys, json; from sit.sampler_config import SampleConfig, DiscreteSampleConfig; "
            "import sit.generate.spec, sit.generate.presets as P; import sit.sampler_kinds as K; "
            "c = SampleConfig(method='euler_maruyama', w='KL', num_steps=3); DiscreteSampleConfig(method='ddim', eta=0.5); "
            "K.SAMPLERS['toy'] = K.SamplerRow('mod:fn', 1, 'sde', 'a toy'); from sit.config import TrainConfig; "
            "TrainConfig(sample_method='toy'); c2 = SampleConfig(method='toy', w='sin2'); "
            "print(json.dumps([c.w, c2.is_sde, sorted(P.PRESETS)[:1], [m for m in ('torch', 'numpy') if m in sys.modules]]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr
    w, is_sde, presets, loaded = json.loads(r.stdout)
    assert w == "kl" and is_sde and presets == ["demo-heun"] and loaded == []


def test_an_adaptive_row_added_at_run_time_is_adaptive_in_every_rule():
    """Whether a solver chooses its own steps is read from its row: `sit sweep` runs it per tolerance,
    and num_steps is refused for it, as for dopri5 (there was a fixed list of torchdiffeq names)."""
    from sit.commands.sweep import check_sampler_options, sweep_points
    from sit.config import ConfigError
    from sit.sampler_config import check_method_fields
    from sit.samplers import SAMPLERS, SamplerRow, run_function

    SAMPLERS["toy_adaptive"] = SamplerRow(run_function(SAMPLERS["dopri5"]), None, "ode", "toy", adaptive=True)
    try:
        assert sweep_points("toy_adaptive", {}, [8, 16], [1e-2, 1e-3]) == [(1, {"atol": 1e-2, "rtol": 1e-2}),
                                                                         (1, {"atol": 1e-3, "rtol": 1e-3})]
        with pytest.raises(ConfigError, match="adaptive solver toy_adaptive"):
            check_method_fields("toy_adaptive", {"num_steps"})
        check_method_fields("toy_adaptive", {"atol"})   # its tolerances apply
        with pytest.raises(ValueError, match="set by --tolerances"):
            check_sampler_options("toy_adaptive:atol=1", "toy_adaptive", {"atol": 1})
    finally:
        del SAMPLERS["toy_adaptive"]
    assert sweep_points("rk4", {}, [8, 16], [1e-2]) == [(2, {}), (4, {})]


def _imports(rel: str) -> set[str]:
    """Every module ``sit/<rel>`` imports, at any level (function-level imports and import_module
    calls with a literal name included)."""
    import ast

    tree = ast.parse(open(os.path.join(ROOT, "sit", rel)).read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            found.add(node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else "<computed>")
    return found


def test_the_lower_modules_never_import_the_higher_ones():
    """The sampler table imports nothing of sit (the table is imported by everything that reads rows),
    the sampler record never imports the samplers, and the flag translation never imports a command:
    no circle config -> sampler_kinds -> samplers -> config, none between the errors and `sit train`."""
    assert not {m for m in _imports("sampler_kinds.py") if m.startswith("sit") or m == "<computed>"}
    assert not {m for m in _imports("sampler_config.py") if m.startswith("sit.samplers")}
    assert not {m for m in _imports("config.py") if m.startswith("sit.samplers")}
    assert not {m for m in _imports("commands/flags.py") | _imports("commands/_errors.py")
                if m.startswith("sit.commands.") and m not in ("sit.commands.flags", "sit.commands._errors")}


def test_a_commands_own_options_are_named_by_the_option_that_sets_them():
    """A plain argument (``{.out_dir}``) or a command's own option (``{ConvertOptions.from_format}``) is
    written as the option whose dest it is (of the failing command; of its own command for a command's
    options record); a record field by its metadata, where the command has that flag."""
    from sit import cli
    from sit.commands._errors import cli_message
    from sit.config import ConfigError, field_error

    cli.build_parser()
    e = field_error(ValueError, "folder taken; use another {.out_dir} or {ConvertOptions.from_format} repa")
    # ConvertOptions are `sit convert`'s wherever the message is seen (RECORD_COMMAND)
    assert cli_message(e, "extract", cli._OPTIONS) == "folder taken; use another --out or --from repa"
    assert cli_message(e, "convert", cli._OPTIONS).startswith("folder taken; use another out_dir or --from")
    e = ConfigError("DiscreteSampleConfig", "eta", "applies to ddim only; see {SampleConfig.method}")
    assert cli_message(e, "sample", cli._OPTIONS) == "--ddim-eta applies to ddim only; see --method"
    assert cli_message(e, "sweep", cli._OPTIONS).startswith("DiscreteSampleConfig.eta applies")   # sweep has no such flag

"""A command's own options are a torch-free record whose fields are its flags (`sit.commands.flags`):
each flag generated from its field (type, default, help, metavar, choices; a field without a default
is a required flag, a ``switch`` field one flag that turns it on), the parsed values built back into
the record, whose checks name the flag."""

from __future__ import annotations

import argparse
import dataclasses
import importlib

import pytest

from sit.commands._args import option
from sit.commands.flags import add_record_arguments, flag_fields, flag_of, given_values

# the options every command has (`sit.cli`'s --threads; `sit.commands._args.finish_command`'s --no-progress)
SHARED = {"--no-progress", "--threads", "-h", "--help"}
# the model-reading flags (`sit.commands._args.add_model_arguments`, `add_vae_space_arguments`)
MODEL = [("sit.commands._args", "ModelOptions"), ("sit.generate.spec", "SampleSpec")]

# command -> its options record (module, name), then the library records whose fields it has flags of
COMMANDS = {"sweep": [("sit.commands.sweep", "SweepOptions"), *MODEL],
            "likelihood": [("sit.commands.likelihood", "LikelihoodOptions"), *MODEL],
            "lt": [("sit.commands.lt", "LtOptions"), *MODEL],
            "pathlength": [("sit.commands.pathlength", "PathLengthOptions"), ("sit.generate.spec", "SampleSpec")],
            "demo_gaussian": [("sit.commands.demo_gaussian", "GaussianDemo")],
            "study": [("sit.commands.study", "StudyOptions"), ("sit.study.cells", "Budget"), ("sit.config", "TrainConfig"),
                      ("sit.config", "ModelConfig"), ("sit.study.scoring_config", "ScoringConfig")],
            "sample": [("sit.commands.sample", "SampleOptions"), ("sit.generate.outputs", "Outputs"),
                       ("sit.generate.spec", "SampleSpec"), ("sit.sampler_config", "SampleConfig"),
                       ("sit.sampler_config", "DiscreteSampleConfig"), ("sit.commands._args", "ModelOptions")],
            "train": [("sit.commands.train", "TrainCommand"), ("sit.config", "TrainConfig"),
                      ("sit.config", "ModelConfig")]}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Toy:
    out: str = option(help="where it goes", metavar="DIR")
    fast: bool = option(False, "go fast", switch=True)
    n: int = option(3, "how many", metavar="N")


def test_a_field_without_default_is_required_and_a_switch_is_one_flag():
    p = argparse.ArgumentParser(prog="toy")
    add_record_arguments(p, Toy, keep_defaults=True)
    by_dest = {a.dest: a for a in p._actions}
    assert by_dest["out"].required and by_dest["out"].default is None and by_dest["out"].help == "where it goes"
    assert by_dest["fast"].option_strings == ["--fast"] and by_dest["fast"].help == "go fast"
    assert by_dest["n"].help == "how many (default 3)" and by_dest["n"].default == 3
    with pytest.raises(SystemExit):
        p.parse_args([])   # --out is required
    assert Toy(**given_values(p.parse_args(["--out", "o", "--fast"]), Toy)) == Toy(out="o", fast=True)
    assert Toy(**given_values(p.parse_args(["--out", "o"]), Toy)) == Toy(out="o")


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_own_flag_of_a_command_is_a_field_of_its_records(command):
    """No hand-written flag: each option of the command that is not a shared one (model, guidance,
    decoding, progress) is generated from a field of its records (flag, dest, help from the field),
    and every flag field of its own options record is an option with the field's default."""
    from sit.cli import build_parser
    from sit.guidance import guidance_flag_fields

    records = [getattr(importlib.import_module(m), n) for m, n in COMMANDS[command]]
    parser = build_parser()._sit_subparsers[command.replace("_", "-")]
    guidance = {f.metadata["flag"] for _, f in guidance_flag_fields()}
    options = {a.option_strings[0]: a for a in parser._actions if a.option_strings}

    def field_of(action):
        for r in records:
            f = next((f for f in dataclasses.fields(r) if f.metadata.get("dest", f.name) == action.dest), None)
            if f is not None and "help" in f.metadata and flag_of(r, f.name) == action.option_strings[0]:
                return f
        return None

    hand_written = {flag for flag, a in options.items() if flag not in SHARED | guidance and field_of(a) is None}
    assert not hand_written
    own = records[0]
    for name in flag_fields(own):
        d = next(f.default for f in dataclasses.fields(own) if f.name == name)
        action = options[flag_of(own, name)]
        assert action.default == (None if d is dataclasses.MISSING or d == () else d), name


def test_sweep_options_refuse_bad_counts_naming_the_flag(capsys):
    from sit.cli import main
    from sit.commands.sweep import SweepOptions
    from sit.config import ConfigError

    with pytest.raises(ConfigError, match=r"SweepOptions.repeats must be >= 1 \(got 0\)"):
        SweepOptions(out="o", repeats=0)
    assert main(["sweep", "--ckpt", "none", "--out", "o", "--num-samples", "2"]) == 2
    assert capsys.readouterr().err.strip() == "sit sweep: error: --num-samples must be >= 4 (got 2)"


@pytest.mark.parametrize("argv, message", [
    (["--no-store"], "--no-store needs --out DIR"),
    (["--etas", "0.1,x"], "--etas must be numbers > 0 (got '0.1,x')"),   # was float()'s message, naming no flag
    (["--t-points", "1"], "--t-points must be >= 2 (got 1)"),
])
def test_lt_options_refuse_before_the_model_is_read(tmp_path, capsys, argv, message):
    from sit.cli import main

    assert main(["lt", "--ckpt", str(tmp_path / "not-read.pt"), *argv]) == 2
    assert capsys.readouterr().err.strip() == f"sit lt: error: {message}"
    assert list(tmp_path.iterdir()) == []


def test_study_options_round_trip_and_only_repeats():
    from sit.cli import build_parser
    from sit.commands.study import StudyOptions

    p = build_parser()._sit_subparsers["study"]
    args = p.parse_args(["--only", "vp-velocity:1", "--only", "linear-score", "--no-report", "--jobs", "3"])
    opts = StudyOptions(**given_values(args, StudyOptions))
    assert opts == StudyOptions(only=("vp-velocity:1", "linear-score"), report=False, jobs=3)
    assert StudyOptions(**given_values(p.parse_args([]), StudyOptions)) == StudyOptions()


@pytest.mark.parametrize("argv, message", [
    (["sample", "--out", "{tmp}/o", "--batch-size", "0"], "--batch-size must be >= 1 (got 0)"),
    (["pathlength", "--ckpts", "{tmp}/c", "--out", "{tmp}/o", "--num-points", "1"], "--num-points must be >= 2 (got 1)"),
    (["likelihood", "--num-samples", "1"], "--num-samples must be >= 2 (got 1)"),
    (["likelihood", "--num-steps", "0"], "--num-steps must be an integer in [1, 100000] (got 0)"),
    (["sweep", "--out", "{tmp}/o", "--repeats", "0"], "--repeats must be >= 1 (got 0)"),
    (["demo-gaussian", "--num-steps", "0"], "--num-steps must be >= 1 (got 0)"),
])
def test_a_commands_record_refuses_a_bad_count_naming_its_flag(tmp_path, capsys, argv, message):
    """The options record is built (and checked) before a checkpoint is read or a folder written."""
    from sit.bounds import MAX_STEPS
    from sit.cli import main

    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if argv[0] in ("sample", "likelihood", "sweep"):
        argv += ["--ckpt", str(tmp_path / "not-read.pt")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"sit {argv[0]}: error: {message.replace('100000', str(MAX_STEPS))}"
    assert list(tmp_path.iterdir()) == []

"""The flags of `sit extract`, `sit eval`, `sit convert`, `sit info`, `sit ema` and `sit tiny-vae` are
generated from the fields of torch-free options records (`sit.commands.flags`): each flag is one
field (its help, type, choices and default read from it), the parsed values build the record, and
the record's checks speak in the command's flags."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from sit.commands.flags import add_record_arguments, flag_fields, flag_of, given_values, option


@dataclasses.dataclass(frozen=True)
class Toy:
    name: str | None = option(None, "a name")
    out: str = option(help="where it goes", metavar="DIR")   # no default: a required flag
    json: bool = option(False, "print JSON", switch=True)
    src: str = option(help="what is read", metavar="SRC", positional=True)
    dst: str | None = option(None, "where else", metavar="DST", positional=True)


def test_a_field_without_default_is_a_required_flag_a_switch_one_flag_and_a_positional_an_argument():
    p = argparse.ArgumentParser(prog="toy")
    by_dest = {a.dest: a for a in add_record_arguments(p, Toy)}
    assert by_dest["out"].required and by_dest["out"].default is None
    assert by_dest["json"].option_strings == ["--json"] and by_dest["json"].const is True
    assert by_dest["json"].help == "print JSON"   # a switch: off unless given, no default written
    assert by_dest["src"].option_strings == [] and by_dest["dst"].nargs == "?" and flag_of(Toy, "src") == "SRC"
    with pytest.raises(SystemExit):
        p.parse_args(["s"])   # --out missing
    with pytest.raises(SystemExit):
        p.parse_args(["--out", "o"])   # SRC missing
    assert Toy(**given_values(p.parse_args(["--out", "o", "--json", "s", "d"]), Toy)) == Toy(out="o", json=True,
                                                                                           src="s", dst="d")
    assert Toy(**given_values(p.parse_args(["s", "--out", "o"]), Toy)) == Toy(out="o", src="s")


def _command(name: str) -> argparse.ArgumentParser:
    from sit.cli import build_parser

    return build_parser()._sit_subparsers[name]


def _flags_are_fields(name: str, record: type) -> None:
    """Every field of ``record`` with a flag is that flag of command ``name``, parsed into its dest."""
    by_dest = {a.dest: a for a in _command(name)._actions}
    for field in flag_fields(record):
        f = next(f for f in dataclasses.fields(record) if f.name == field)
        action = by_dest[f.metadata.get("dest", field)]
        if f.metadata.get("positional"):   # an argument given by position, named by its metavar
            assert not action.option_strings and action.metavar == flag_of(record, field), field
        else:
            assert flag_of(record, field) in action.option_strings, field


def _error(argv: list[str], capsys) -> str:
    from sit.cli import main

    assert main(argv) == 2
    return capsys.readouterr().err.strip()


def test_extract_flags_are_the_fields_of_its_record(tmp_path, capsys):
    from sit.commands.extract import ExtractOptions

    _flags_are_fields("extract", ExtractOptions)
    args = _command("extract").parse_args(["--out", "o", "--data", "d", "--latent-norm", "channel", "--pixels",
                                           "--vae-dtype", "bf16", "--rank", "1", "--world-size", "2"])
    assert ExtractOptions(**given_values(args, ExtractOptions)) == ExtractOptions(out_dir="o", data="d", latent_norm="channel", pixels=True,
                                                             vae_dtype="bf16", rank=1, world_size=2)
    assert flag_of("ExtractOptions", "out_dir") == "--out"
    out = str(tmp_path / "lat")
    assert _error(["extract", "--out", out], capsys) == (
        "sit extract: error: --data is required (the ImageFolder to encode), unless --check")
    assert _error(["extract", "--out", out, "--data", "d", "--num-workers", "-1"], capsys).endswith(
        "--num-workers must be >= 0 (got -1)")
    assert "--vae-scale" in _error(["extract", "--out", out, "--data", "d", "--vae-scale", "0"], capsys)
    assert not (tmp_path / "lat").exists()


def test_eval_flags_are_the_fields_of_its_records_and_the_scorers_request():
    """The options every scorer reads are fields of `EvalRequest` (the library's record), the rest
    `sit eval`'s own record; the defaults parsed are the records' defaults."""
    from sit.commands.eval import REQUEST_FLAGS, EvalOptions
    from sit.evaluate.scorers import EvalRequest

    _flags_are_fields("eval", EvalOptions)
    _flags_are_fields("eval", EvalRequest)
    args = _command("eval").parse_args(["digits", "s.npz", "--fit", "pad", "--batch-size", "8", "--dinov2", "w"])
    given = given_values(args, EvalRequest, REQUEST_FLAGS)
    assert given == {"inception": "auto", "fit": "pad", "batch_size": 8, "dinov2": "w", "seed": 0}
    request = EvalRequest(ref="digits", ref_set=None, ref_embedded=None, sample_set=None, metrics=(), **given)
    assert (request.fit, request.batch_size, request.device) == ("pad", 8, None)
    assert EvalOptions(**given_values(args, EvalOptions)) == EvalOptions(ref="digits", samples="s.npz")
    assert flag_of(EvalRequest, "save_ref_stats") == "--save-ref-stats"


def test_convert_flags_are_the_fields_of_its_record_and_its_combinations_are_checked_there(tmp_path, capsys):
    from sit.commands.convert import ConvertOptions
    from sit.config import ConfigError

    _flags_are_fields("convert", ConvertOptions)
    args = _command("convert").parse_args(["in.pt", "out.safetensors", "--from", "repa", "--keep-projector"])
    assert ConvertOptions(**given_values(args, ConvertOptions)) == ConvertOptions(
        input="in.pt", output="out.safetensors", from_format="repa", keep_projector=True)
    with pytest.raises(ConfigError, match="ConvertOptions.train_format is for .pt output"):
        ConvertOptions(input="a", output="b", to="diffusers", train_format=True)
    src, out = str(tmp_path / "missing.pt"), str(tmp_path / "out.safetensors")
    assert _error(["convert", src, out, "--keep-projector"], capsys) == "sit convert: error: --keep-projector goes with --from repa"
    assert _error(["convert", src, out, "--from", "repa", "--kind", "dit"], capsys).endswith(
        "--from repa writes a sit .safetensors; --to / --train-format / --kind do not apply")
    assert _error(["convert", src, str(tmp_path / "d"), "--to", "diffusers", "--train-format"], capsys).endswith(
        "--train-format is for .pt output, not --to diffusers")


def test_info_flags_are_the_fields_of_its_record():
    from sit.commands.info import InfoOptions

    _flags_are_fields("info", InfoOptions)
    args = _command("info").parse_args(["ck.pt", "--json", "--prefer", "model", "--kind", "dit", "--num-heads", "6"])
    assert InfoOptions(**given_values(args, InfoOptions)) == InfoOptions(checkpoint="ck.pt", prefer="model", kind="dit",
                                                                         num_heads=6, json=True)
    assert InfoOptions(**given_values(_command("info").parse_args(["ck.pt"]), InfoOptions)) == InfoOptions(
        checkpoint="ck.pt")
    with pytest.raises(SystemExit):
        _command("info").parse_args(["ck.pt", "--kind", "none"])   # no "none" choice: the flags are as before


def test_ema_flags_are_the_fields_of_its_record(tmp_path, capsys):
    from sit.commands.ema import EmaOptions
    from sit.config import PHEMA_MAX_FIT_ERROR

    _flags_are_fields("ema", EmaOptions)
    p = _command("ema")
    assert {a.dest for a in p._actions if a.required} == {"ckpt", "sigma_rel", "out"}
    args = p.parse_args(["--ckpt", "r", "--sigma-rel", "0.08", "--out", "o", "--overwrite"])
    assert EmaOptions(**given_values(args, EmaOptions)) == EmaOptions(ckpt="r", sigma_rel=0.08, out="o", overwrite=True)
    assert EmaOptions(ckpt="r", sigma_rel=0.1, out="o").max_fit_error == PHEMA_MAX_FIT_ERROR
    assert _error(["ema", "--ckpt", str(tmp_path), "--sigma-rel", "0.08", "--out", str(tmp_path / "o"),
                   "--max-fit-error", "2"], capsys) == "sit ema: error: --max-fit-error must be in (0, 1] (got 2.0)"


def test_tiny_vae_flags_are_the_fields_of_its_record(tmp_path, capsys):
    from sit.commands.tiny_vae import TinyVaeOptions

    _flags_are_fields("tiny-vae", TinyVaeOptions)
    args = _command("tiny-vae").parse_args(["--out", "v", "--widths", "4,8", "--per-class", "2"])
    assert TinyVaeOptions(**given_values(args, TinyVaeOptions)) == TinyVaeOptions(out="v", widths="4,8", per_class=2)
    same = str(tmp_path / "v")
    assert _error(["tiny-vae", "--out", same, "--example-images", same], capsys) == (
        "sit tiny-vae: error: --example-images must be another folder than --out")
    assert _error(["tiny-vae", "--out", same, "--per-class", "0"], capsys).endswith("--per-class must be >= 1 (got 0)")
    assert not (tmp_path / "v").exists()

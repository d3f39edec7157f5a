"""`sit train`'s flags are generated from TrainConfig's fields (issue 18): each field's record, help and
flag live in its metadata, choices in its Literal annotation; a name is written once."""

import argparse
import dataclasses
import re
from typing import Literal, get_args, get_origin

import pytest

from sit.commands.train import ARCH_FLAGS, TRAIN_FLAGS, add_arguments, flag_for, given_fields, resolve
from sit.config import TRAIN_CHOICES, TRAIN_GROUPS, TRAIN_RECORDS, TRAIN_TYPES, ConfigError, TrainConfig, to_dict
from sit.train.recipes import DEMO_MNIST, DEMO_TRAIN, demo_configs

FIELDS = dataclasses.fields(TrainConfig)
HAND_WRITTEN = {*ARCH_FLAGS, "resume", "overwrite", "dry_run", "help"}   # options that are not TrainConfig fields


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def _actions_by_dest(p):
    out: dict[str, list] = {}
    for a in p._actions:
        out.setdefault(a.dest, []).append(a)
    return out


def test_every_field_has_exactly_one_flag_or_is_internal_with_a_reason():
    by_dest = _actions_by_dest(_parser())
    for f in FIELDS:
        if flag_for(f.name) is None:
            assert f.name not in by_dest, f.name
            assert len(f.metadata.get("internal", "")) > 10, f"{f.name} has no flag and says no reason"
            continue
        assert len(by_dest.get(f.name, [])) == 1, f.name
        (a,) = by_dest[f.name]
        assert a.option_strings[0] == flag_for(f.name) and a.default is None, f.name
    # nothing else: every other option is one of the hand-written ones
    assert set(by_dest) - {f.name for f in FIELDS} == HAND_WRITTEN
    assert set(TRAIN_FLAGS) == {f.name for f in FIELDS if flag_for(f.name) is not None}
    flags = [s for a in _parser()._actions for s in a.option_strings]
    assert len(flags) == len(set(flags))


def test_flag_names_come_from_the_field_unless_its_metadata_names_one():
    for f in FIELDS:
        want = f.metadata["flag"] if "flag" in f.metadata else "--" + f.name.replace("_", "-")
        assert flag_for(f.name) == want
    assert flag_for("global_batch") == "--batch" and flag_for("progress") == "--no-progress"
    assert flag_for("class_dropout_prob") == "--label-dropout" and flag_for("hidden_size") == "--hidden-size"


def test_choices_are_the_literal_args_of_the_field():
    by_dest = _actions_by_dest(_parser())
    literal_fields = [f.name for f in FIELDS if get_origin(TRAIN_TYPES[f.name]) is Literal]
    assert sorted(TRAIN_CHOICES) == sorted(literal_fields) and "path" in TRAIN_CHOICES
    p = _parser()
    from sit.samplers import SAMPLERS  # the preview sampler's choices are the sampler table's continuous rows

    (a,) = by_dest["sample_method"]
    assert list(a.choices) == [n for n, r in SAMPLERS.items() if r.kind != "discrete"] and "dpmpp_2m" in a.choices
    for name, allowed in TRAIN_CHOICES.items():
        assert allowed == get_args(TRAIN_TYPES[name])
        (a,) = by_dest[name]
        assert list(a.choices) == ["none" if v is None else v for v in allowed], name
        for v in allowed:   # each choice parses to itself (None through "none")
            assert given_fields(p.parse_args([flag_for(name), "none" if v is None else v])) == {name: v}
        with pytest.raises(ValueError, match=f"TrainConfig.{name}: unknown value 'nope'"):
            TrainConfig(**{name: "nope"})


FIELDS_BY_NAME = {f.name: f for f in FIELDS}


def _value(name: str):
    """A valid non-default value of a field, read from its type."""
    hint, default = TRAIN_TYPES[name], getattr(TrainConfig(), name)
    if name in TRAIN_CHOICES:
        return next(v for v in TRAIN_CHOICES[name] if v != default)
    if "choices" in FIELDS_BY_NAME[name].metadata:   # a table's rows (the preview sampler)
        return next(v for v in FIELDS_BY_NAME[name].metadata["choices"]() if v != default)
    if hint == tuple[float, ...]:
        return (0.05, 0.1)
    base = next((a for a in get_args(hint) if a is not type(None)), hint)
    if base is bool:
        return not default
    if base is int:
        return (default or 0) + 2
    if base is float:
        return 0.25 if default != 0.25 else 0.5
    return "somewhere"


@pytest.mark.parametrize("name", TRAIN_FLAGS)
def test_every_flag_parses_to_its_field_value(name):
    v = _value(name)
    if isinstance(v, bool):
        argv = [flag_for(name)] if name != "progress" else ["--no-progress"]
        if v is False and name != "progress":
            argv = ["--no-" + flag_for(name)[2:]]
    elif isinstance(v, tuple):
        argv = [flag_for(name), *map(str, v)]
    else:
        argv = [flag_for(name), "none" if v is None else str(v)]
    assert given_fields(_parser().parse_args(argv)) == {name: v}


def test_help_shows_each_record_as_a_group_with_its_fields(capsys):
    from sit.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    sections = re.split(r"\n(?=\S[^\n]*:\n)", text)     # "title:\n  --flag ..." blocks
    by_title = {s.split(":\n", 1)[0]: s for s in sections}
    for name, what in TRAIN_GROUPS.items():
        title = f"{name} ({what})"
        assert title in by_title, title
        for f in FIELDS:
            if f.metadata["group"] == name and flag_for(f.name) is not None:
                assert re.search(rf"\n  {re.escape(flag_for(f.name))}\b", by_title[title]), (name, f.name)
    assert "model" in by_title and "--label-dropout" in by_title["model"]
    # a field's help names other fields by their flags, never in braces
    assert "encoded by --vae" in " ".join(by_title[f"data ({TRAIN_GROUPS['data']})"].split())
    assert not re.search(r"\{[a-z_0-9]+\}", text)


def test_the_demo_command_resolves_to_the_presets():
    p = _parser()
    assert to_dict(resolve(p.parse_args([]))[0]) == to_dict(demo_configs()[0])
    assert to_dict(resolve(p.parse_args(["--out", "runs/demo"]))[0]) == to_dict(TrainConfig(**DEMO_TRAIN))
    assert to_dict(resolve(p.parse_args(["--dataset", "mnist_5k"]))[0]) == to_dict(
        TrainConfig(**{**DEMO_TRAIN, **DEMO_MNIST, "dataset": "mnist_5k"}))
    argv = ["--batch", "32", "--ema", "0.99", "--warmup", "5", "--time", "discrete", "--no-progress",
            "--loss-weight", "none", "--phema-sigmas", "0.05", "0.1", "--phema-every", "10", "--no-tf32", "--ema-warmup"]
    want = dict(global_batch=32, ema_decay=0.99, warmup_steps=5, time_input="discrete", progress=False, loss_weight=None,
                phema_sigmas=(0.05, 0.1), phema_every=10, tf32=False, ema_warmup=True)
    assert to_dict(resolve(p.parse_args(argv))[0]) == to_dict(TrainConfig(**{**DEMO_TRAIN, **want}))
    # a namespace built by hand (sit study) may still say no_progress
    ns = p.parse_args([])
    ns.no_progress = True
    assert resolve(ns)[0].progress is False


def test_records_partition_the_fields_and_view_a_config():
    cfg = TrainConfig(lr=3e-4, out="x", repa_encoder="digits-cnn", sample_steps=7)
    names = [f.name for cls in TRAIN_RECORDS.values() for f in dataclasses.fields(cls)]
    assert sorted(names) == sorted(f.name for f in FIELDS) and len(names) == len(set(names))
    assert list(cfg.records()) == list(TRAIN_GROUPS)
    for name, rec in cfg.records().items():
        assert type(rec) is TRAIN_RECORDS[name]
        for f in dataclasses.fields(rec):
            assert getattr(rec, f.name) == getattr(cfg, f.name)
            assert f.metadata["group"] == name and TRAIN_TYPES[f.name] is not None
    assert cfg.group("optimiser").lr == 3e-4 and cfg.group("run").out == "x" and cfg.group("preview").sample_steps == 7
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.group("alignment").repa_coeff = 1.0
    with pytest.raises(ValueError, match="unknown TrainConfig record 'optimizer'; expected one of"):
        cfg.group("optimizer")


def test_config_errors_name_the_flag_or_the_field_when_it_has_none():
    from sit.cli import _OPTIONS, build_parser
    from sit.commands._errors import in_flags

    build_parser()
    assert str(in_flags(ConfigError("TrainConfig", "global_batch", "is odd"), "train", _OPTIONS)) == "--batch is odd"
    assert str(in_flags(ConfigError("TrainConfig", "beta1", "is odd"), "train", _OPTIONS)) == "TrainConfig.beta1 is odd"


def test_sit_info_prints_the_training_config_by_record(tmp_path, capsys):
    from sit.cli import main
    from sit.commands.info import train_records
    from sit.config import ModelConfig
    from sit.train import train

    d = dataclasses.asdict(TrainConfig(lr=3e-4))
    rec = train_records({**d, "from_the_future": 1})
    assert list(rec) == [*TRAIN_GROUPS, "other"] and rec["other"] == {"from_the_future": 1}
    assert rec["optimiser"]["lr"] == 3e-4 and {k: v for r in rec.values() for k, v in r.items()} == {**d, "from_the_future": 1}

    cfg = TrainConfig(out=str(tmp_path / "r"), image_size=8, steps=2, global_batch=8, log_every=1, ckpt_every=2,
                      quality=False, samples_per_class=1, sample_steps=1, progress=False, num_workers=0, threads=1,
                      lr=3e-4)
    train(cfg, ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=16, depth=1, num_heads=2,
                           num_classes=10, learn_sigma=False))
    capsys.readouterr()
    assert main(["info", str(tmp_path / "r")]) == 0
    lines = {ln.split()[0]: ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("train.")}
    stored = to_dict(cfg)   # REPA's fields are stored only when set, so no alignment line here
    assert list(lines) == [f"train.{g}" for g in TRAIN_GROUPS if set(stored) & set(rec[g])] and "train.alignment" not in lines
    assert '"lr": 0.0003' in lines["train.optimiser"] and '"steps": 2' in lines["train.optimiser"]

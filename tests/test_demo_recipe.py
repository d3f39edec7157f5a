"""The demo's preview / quality sampler may be the few-step DPM-Solver++(2M), and the demo's
defaults never reach the study's cells (the study sets its own recipe)."""

from __future__ import annotations

import dataclasses

import torch

from sit.config import TrainConfig, to_dict


def test_the_preview_sampler_can_be_dpmpp_2m(tmp_path):
    from sit.train import train
    from sit.train.builders import generate
    from sit.train.recipes import demo_configs

    assert TrainConfig(sample_method="dpmpp_2m").sample_method == "dpmpp_2m"  # a row of the sampler table
    cfg, mc = demo_configs(out=str(tmp_path / "r"), steps=3, global_batch=16, warmup_steps=0, quality=False,
                           samples_per_class=2, sample_method="dpmpp_2m", sample_steps=3, log_every=1,
                           progress=False, threads=1)
    res = train(cfg, mc)
    assert (tmp_path / "r" / "samples" / "final.png").is_file()
    # the preview is the sampler named: DPM-Solver++(2M) differs from Heun on the same noise
    y = torch.arange(4)
    a = generate(res.ema, cfg, mc, y, seed=0, device=torch.device("cpu"))
    b = generate(res.ema, dataclasses.replace(cfg, sample_method="heun"), mc, y, seed=0, device=torch.device("cpu"))
    assert a.shape == b.shape == (4, 1, 8, 8) and torch.isfinite(a).all() and not torch.allclose(a, b)


def test_the_command_line_takes_dpmpp_2m_for_the_preview():
    from sit.cli import build_parser
    from sit.commands.train import resolve

    p = build_parser()._sit_subparsers["train"]
    cfg = resolve(p.parse_args(["--sample-method", "dpmpp_2m", "--sample-steps", "8"]))[0]
    assert (cfg.sample_method, cfg.sample_steps) == ("dpmpp_2m", 8)


def test_demo_recipe_changes_do_not_reach_the_study():
    """The study starts from the demo's resolved defaults and sets its own recipe (STUDY_TRAIN, and on
    the embedded data its learning rate and preview sampler); so a change of the demo's steps,
    batch, learning rate, t distribution, warm-up, clipping or preview sampler leaves the study's
    base config as it was, apart from steps and batch, which every cell sets from its budget and
    the study's identity leaves out."""
    from sit.study.run import study_base
    from sit.train import recipes as presets

    base = to_dict(study_base()[0])
    changed = dict(steps=1, global_batch=7, lr=0.5, time_dist="logit_normal", warmup_steps=3, grad_clip=0.5,
                   sample_method="dpmpp_2m", sample_steps=3)
    orig = presets.DEMO_TRAIN
    try:
        presets.DEMO_TRAIN = {**orig, **changed}
        other = to_dict(study_base()[0])
    finally:
        presets.DEMO_TRAIN = orig
    for d in (base, other):
        d.pop("steps"), d.pop("global_batch")
    assert other == base
    assert isinstance(study_base()[0], TrainConfig)

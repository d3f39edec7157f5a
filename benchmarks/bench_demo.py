"""The embedded demo's wall time and quality, per training variant (issue: the main job in <= 2 min).

Each variant trains the digits demo (`sit train` defaults, with overrides) and then judges its EMA
samples with an *independent* classifier: scikit-learn's RBF SVC fitted on the real digits'
training split (about 99 % accurate on the held-out split), so the figure does not share a
network with `sit.evaluate.classifier`. Reported per variant: wall and CPU seconds of training (+
the final report), the share of unguided samples (cfg 1) and of guided samples (the demo's cfg)
the SVC assigns to their class, and the classifier-feature FID (`quick_quality`) of the guided ones.

    python benchmarks/bench_demo.py --variant base
    python benchmarks/bench_demo.py --variant base --variant "steps=600,lr=2e-3" --variant "time_dist=logit_normal"

A variant is `name` (see VARIANTS) or comma-separated `field=value` overrides of TrainConfig
(`steps`, `lr`, `global_batch`, `sample_method`, ...) and of the demo ModelConfig (`depth`, `hidden_size`, ...).

Where the demo's time goes (``--phases``): the variant is trained as `sit train` runs it, final
report and quality number included, and the process CPU seconds are split into the training steps,
the checkpoints, the final sample grids + loss curve, and the quality number (its sampling and its
classifier); the start-up (``python -c "import sit.cli, sit.train ..."``: interpreter, torch and
sit imports) is measured in a fresh process. CPU seconds on one thread are the wall time on one
idle core; the machine may be shared, so wall seconds are printed only beside them.

    python benchmarks/bench_demo.py --phases --variant base --seeds 0,1 --judge-samplers euler:10,dpmpp_2m:6
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch

VARIANTS = {"base": ""}
MODEL_FIELDS = ("depth", "hidden_size", "num_heads", "patch_size", "mlp_ratio", "class_dropout_prob",
                "swiglu", "rmsnorm", "rope", "qk_norm")


def parse_variant(spec: str) -> dict:
    spec = VARIANTS.get(spec, spec)
    out = {}
    for kv in filter(None, (s.strip() for s in spec.split(","))):
        k, _, v = kv.partition("=")
        for cast in (int, float):
            try:
                v = cast(v)
                break
            except ValueError:
                pass
        if v in ("True", "False"):
            v = v == "True"
        out[k] = v
    return out


def svc_judge():
    from sklearn.svm import SVC

    from sit.data.embedded import load_embedded

    xtr, ytr = load_embedded("digits", "train")
    xte, yte = load_embedded("digits", "heldout")
    clf = SVC(gamma="scale", C=10.0).fit(xtr.flatten(1).numpy(), ytr.numpy())
    held = float((clf.predict(xte.flatten(1).numpy()) == yte.numpy()).mean())
    return clf, held


@torch.no_grad()
def draw(ema, cfg, model_cfg, y, scale, seed):
    """EMA samples (N, 1, 8, 8) for labels y with guidance ``scale`` (Heun, cfg.sample_steps)."""
    from sit.network_sampler import ModelInfo, build_sampler, preview_guidance
    from sit.samplers import SampleConfig

    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn((y.shape[0], model_cfg.in_channels, model_cfg.input_size, model_cfg.input_size), generator=g)
    sampler = build_sampler(ema.eval(), ModelInfo(cfg.path, cfg.prediction),
                            SampleConfig(method=cfg.sample_method, num_steps=cfg.sample_steps),
                            preview_guidance(scale, model_cfg))
    x, _ = sampler(x0, y)
    return x.clamp(-1, 1)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# the phases of `sit train` after the steps, timed by wrapping the functions the loop calls:
# name -> (module, attribute)
PHASES = {"checkpoints": ("sit.train.loop", "save_checkpoint"),
          "final grids + loss curve": ("sit.train.report", "sample_grid"),
          "quality number": ("sit.train.report", "_quality")}


def _install_timers() -> dict:
    import importlib

    timers = {}
    for label, (mod, attr) in PHASES.items():
        m = importlib.import_module(mod)
        orig = getattr(m, attr)
        cell = [orig, 0.0]

        def wrapped(*a, _cell=cell, **k):
            c0 = _cpu()
            try:
                return _cell[0](*a, **k)
            finally:
                _cell[1] += _cpu() - c0

        setattr(m, attr, wrapped)
        timers[label] = cell
    return timers


def _remove_timers(timers: dict) -> None:
    import importlib

    for label, (mod, attr) in PHASES.items():
        if label in timers:
            setattr(importlib.import_module(mod), attr, timers[label][0])


def startup_cpu(threads: int) -> float:
    """CPU seconds of a fresh `python` that imports what `sit train` imports before its first step."""
    code = ("import resource, torch, sit.cli, sit.train, sit.train.loop, sit.evaluate.scorers.classifier; "
            f"torch.set_num_threads({threads}); r = resource.getrusage(resource.RUSAGE_SELF); print(r.ru_utime + r.ru_stime)")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                                check=True).stdout.strip().splitlines()[-1])


def run_variant(name: str, overrides: dict, clf, per_class: int, threads: int, phases: bool = False,
                judge_samplers: tuple = ()) -> dict:
    from sit.config import ModelConfig, TrainConfig
    from sit.data.embedded import load_embedded
    from sit.evaluate.classifier import quick_quality
    from sit.train import train
    from sit.train.recipes import DEMO_MODEL, DEMO_TRAIN

    tr = {k: v for k, v in overrides.items() if k not in MODEL_FIELDS}
    mo = {k: v for k, v in overrides.items() if k in MODEL_FIELDS}
    out = tempfile.mkdtemp(prefix="bench_demo_")
    base = {**DEMO_TRAIN, "threads": threads, "progress": False, "quality": phases}
    cfg = TrainConfig(**{**base, **tr, "out": out})
    mc = ModelConfig(**{**DEMO_MODEL, "input_size": cfg.image_size, "in_channels": 1, "num_classes": 10, **mo})
    timers = _install_timers() if phases else {}
    r0, t0 = _cpu(), time.perf_counter()
    res = train(cfg, mc)
    wall = time.perf_counter() - t0
    cpu = _cpu() - r0
    _remove_timers(timers)
    y = torch.arange(10).repeat_interleave(per_class)
    row = {"variant": name, "overrides": overrides, "seed": cfg.seed, "train_wall_s": round(wall, 1),
           "train_cpu_s": round(cpu, 1), "params": sum(p.numel() for p in res.ema.parameters())}
    if phases:
        spent = {k: round(v[1], 1) for k, v in timers.items()}
        row["cpu_s"] = {"training steps + setup + loss curve": round(cpu - sum(spent.values()), 1), **spent}
        if res.quality:
            row["demo_quality"] = {k: round(res.quality[k], 4) for k in ("accuracy", "fid")}
    real_x, real_y = load_embedded("digits", "all")
    for scale in (1.0, cfg.cfg_scale):
        x = draw(res.ema, cfg, mc, y, scale, seed=1234)
        acc = float((clf.predict(x.flatten(1).numpy()) == y.numpy()).mean())
        row[f"svc_acc_cfg{scale:g}"] = round(acc, 4)
        if scale != 1.0:
            row["feature_fid"] = round(float(quick_quality(real_x, real_y, x, y, seed=0)["fid"]), 2)
    row.update(judge(res.ema, cfg, mc, clf, per_class, judge_samplers))
    return row


def judge(ema, cfg, mc, clf, per_class: int, samplers: tuple) -> dict:
    """The same network judged through other samplers (method, steps): SVC accuracy unguided and the
    feature FID guided at the demo's cfg, as for the variant's own sampler."""
    import dataclasses

    from sit.data.embedded import load_embedded
    from sit.evaluate.classifier import quick_quality

    real_x, real_y = load_embedded("digits", "all")
    y = torch.arange(10).repeat_interleave(per_class)
    row = {}
    for method, steps in samplers:
        c = dataclasses.replace(cfg, sample_method=method, sample_steps=steps)
        x = draw(ema, c, mc, y, 1.0, seed=1234)
        row[f"svc_acc_cfg1_{method}{steps}"] = round(float((clf.predict(x.flatten(1).numpy()) == y.numpy()).mean()), 4)
        x = draw(ema, c, mc, y, cfg.cfg_scale, seed=1234)
        row[f"feature_fid_{method}{steps}"] = round(float(quick_quality(real_x, real_y, x, y, seed=0)["fid"]), 2)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", help="a VARIANTS name or field=value,... (repeatable; default base)")
    ap.add_argument("--per-class", type=int, default=100, help="samples per class for the accuracy (default 100)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the training (default 1, the demo's)")
    ap.add_argument("--json", help="append one JSON line per variant to this file")
    ap.add_argument("--seeds", default="0", help="comma list of training seeds per variant (default 0)")
    ap.add_argument("--judge-samplers", default="", metavar="M:N,...",
                    help="also judge each trained network's unguided samples through these samplers (method:steps)")
    ap.add_argument("--phases", action="store_true",
                    help="train as `sit train` does (quality number included) and split the CPU seconds by phase")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clf, held = svc_judge()
    print(f"# torch {torch.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"SVC held-out accuracy on real digits {held:.4f}", flush=True)
    if args.phases:
        print(json.dumps({"startup_cpu_s": round(startup_cpu(args.threads), 2)}), flush=True)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    judge = tuple((m, int(n)) for m, _, n in (s.partition(":") for s in args.judge_samplers.split(",") if s.strip()))
    for spec in args.variant or ["base"]:
        for seed in seeds:
            overrides = parse_variant(spec)
            if seed or len(seeds) > 1:
                overrides.setdefault("seed", seed)
            row = run_variant(spec, overrides, clf, args.per_class, args.threads, args.phases, judge)
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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
(`steps`, `lr`, `global_batch`, ...) and of the demo ModelConfig (`depth`, `hidden_size`, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
    from sit.samplers import SampleConfig
    from sit.sampling import ModelInfo, build_sampler, preview_guidance

    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn((y.shape[0], model_cfg.in_channels, model_cfg.input_size, model_cfg.input_size), generator=g)
    sampler = build_sampler(ema.eval(), ModelInfo(cfg.path, cfg.prediction),
                            SampleConfig(method=cfg.sample_method, num_steps=cfg.sample_steps),
                            preview_guidance(scale, model_cfg))
    x, _ = sampler(x0, y)
    return x.clamp(-1, 1)


def run_variant(name: str, overrides: dict, clf, per_class: int, threads: int) -> dict:
    from sit.config import ModelConfig, TrainConfig
    from sit.data.embedded import load_embedded
    from sit.evaluate.classifier import quick_quality
    from sit.train import train
    from sit.train.presets import DEMO_MODEL, DEMO_TRAIN

    tr = {k: v for k, v in overrides.items() if k not in MODEL_FIELDS}
    mo = {k: v for k, v in overrides.items() if k in MODEL_FIELDS}
    out = tempfile.mkdtemp(prefix="bench_demo_")
    cfg = TrainConfig(**{**DEMO_TRAIN, "threads": threads, "progress": False, "quality": False, **tr, "out": out})
    mc = ModelConfig(**{**DEMO_MODEL, "input_size": cfg.image_size, "in_channels": 1, "num_classes": 10, **mo})
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    res = train(cfg, mc)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    y = torch.arange(10).repeat_interleave(per_class)
    row = {"variant": name, "overrides": overrides, "train_wall_s": round(wall, 1),
           "train_cpu_s": round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 1),
           "params": sum(p.numel() for p in res.ema.parameters())}
    real_x, real_y = load_embedded("digits", "all")
    for scale in (1.0, cfg.cfg_scale):
        x = draw(res.ema, cfg, mc, y, scale, seed=1234)
        acc = float((clf.predict(x.flatten(1).numpy()) == y.numpy()).mean())
        row[f"svc_acc_cfg{scale:g}"] = round(acc, 4)
        if scale != 1.0:
            row["feature_fid"] = round(float(quick_quality(real_x, real_y, x, y, seed=0)["fid"]), 2)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", help="a VARIANTS name or field=value,... (repeatable; default base)")
    ap.add_argument("--per-class", type=int, default=100, help="samples per class for the accuracy (default 100)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the training (default 1, the demo's)")
    ap.add_argument("--json", help="append one JSON line per variant to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    clf, held = svc_judge()
    print(f"# torch {torch.__version__}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; "
          f"SVC held-out accuracy on real digits {held:.4f}", flush=True)
    for spec in args.variant or ["base"]:
        row = run_variant(spec, parse_variant(spec), clf, args.per_class, args.threads)
        print(json.dumps(row), flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""MeanFlow on the embedded demo: 1- and 2-NFE average-velocity sampling against a velocity model
of the same training budget sampled with Heun / Euler / DPM-Solver++(2M), >= 3 seeds; and the
cost of a MeanFlow training step (its JVP) against the plain step.

Quality is the demo's quality.json number (`sit train`'s `_quality`): 30 samples per class, noise
from generator(seed + 1, 7), guidance at the demo's cfg 2 (a CFG call, conditional + unconditional
rows in one batch, counts as one NFE, as everywhere in sit), scored by
`sit.evaluate.scorers.classifier` (small-CNN feature FD, class accuracy).

    # train (the demo recipe of 2026-12-07: 600 x 128; one thread), then score every run at each sampler
    sit train --out runs/vel_s0 --seed 0 --threads 1 --steps 600 --batch 128
    sit train --out runs/mf_s0 --seed 0 --threads 1 --steps 600 --batch 128 --objective meanflow
    python benchmarks/bench_meanflow.py quality --velocity runs/vel_s* --meanflow runs/mf_s* --out mf.jsonl
    python benchmarks/bench_meanflow.py plot --rows mf.jsonl --png docs/img/meanflow_fd_nfe.png
    python benchmarks/bench_meanflow.py step --steps 20          # CPU s per step: plain vs MeanFlow
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

VELOCITY = [("euler", 1), ("euler", 2), ("heun", 1), ("heun", 2), ("heun", 4), ("dpmpp_2m", 2), ("dpmpp_2m", 4),
            ("dpmpp_2m", 8), ("heun", 8), ("heun", 16), ("heun", 20)]
MEANFLOW = [("meanflow", 1), ("meanflow", 2), ("meanflow", 4), ("heun", 4)]


def score_run(run: str, samplers, cfg_scale: float, per_class: int = 30) -> list[dict]:
    from sit import checkpoints
    from sit.evaluate.scorers.classifier import ClassifierScorer
    from sit.guidance import GuidanceConfig
    from sit.network_sampler import ModelInfo, build_sampler
    from sit.samplers import SampleConfig
    from sit.train.data import build_data
    from sit.train.recipes import demo_configs
    from sit.train.seeds import generator

    net, meta = checkpoints.load(run)
    cfg = json.loads((Path(run) / "run_config.json").read_text())
    seed = int(cfg["train"]["seed"])
    real_x, real_y = build_data(demo_configs()[0], torch.device("cpu")).quality_reference()
    scorer = ClassifierScorer(real_x, real_y, seed=0)
    y = torch.arange(10).repeat_interleave(per_class)
    noise = torch.randn((y.shape[0], 1, 8, 8), generator=generator(seed + 1, 7))
    rows = []
    for method, steps in samplers:
        guidance = GuidanceConfig(scale=cfg_scale) if cfg_scale != 1 else GuidanceConfig()
        sampler = build_sampler(net, ModelInfo.of(meta), SampleConfig(method=method, num_steps=steps), guidance)
        with torch.no_grad():
            x, info = sampler(noise, y)
        sc = ScorerResult(scorer.score_images(x.clamp(-1, 1), y))
        rows.append(dict(run=str(run), seed=seed, objective=cfg["train"].get("objective", "sit"), method=method,
                         steps=steps, nfe=int(info["nfe"]), cfg_scale=cfg_scale, fd=sc.fd, accuracy=sc.accuracy))
        print(json.dumps(rows[-1]), flush=True)
    return rows


class ScorerResult:
    def __init__(self, sc):
        self.fd, self.accuracy = float(sc.fd), float(sc.accuracy)


def table(rows: list[dict]) -> str:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["objective"], r["method"], r["nfe"]), []).append(r)
    out = ["| model | sampler | NFE | feature FD (mean ± sd) | class accuracy | seeds |", "|---|---|---|---|---|---|"]
    for (obj, method, nfe), rs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        fd = [r["fd"] for r in rs]
        acc = [r["accuracy"] for r in rs]
        sd = statistics.stdev(fd) if len(fd) > 1 else 0.0
        out.append(f"| {'MeanFlow' if obj == 'meanflow' else 'velocity (SiT)'} | {method} | {nfe} | "
                   f"{statistics.mean(fd):.1f} ± {sd:.1f} | {statistics.mean(acc):.3f} | {len(rs)} |")
    return "\n".join(out)


def plot(rows: list[dict], png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    series: dict[tuple, dict[int, list[float]]] = {}
    for r in rows:
        series.setdefault((r["objective"], r["method"]), {}).setdefault(r["nfe"], []).append(r["fd"])
    style = {("meanflow", "meanflow"): ("MeanFlow, average-velocity jumps", "C3", "o"),
             ("meanflow", "heun"): ("MeanFlow net, Heun on u(z, t, t)", "C3", "x"),
             ("sit", "heun"): ("velocity, Heun", "C0", "s"), ("sit", "euler"): ("velocity, Euler", "C2", "^"),
             ("sit", "dpmpp_2m"): ("velocity, DPM-Solver++(2M)", "C1", "d")}
    for key, pts in sorted(series.items()):
        label, color, marker = style.get(key, (f"{key[0]} {key[1]}", "k", "."))
        nfe = sorted(pts)
        mean = [statistics.mean(pts[n]) for n in nfe]
        lo = [mean[i] - min(pts[n]) for i, n in enumerate(nfe)]
        hi = [max(pts[n]) - mean[i] for i, n in enumerate(nfe)]
        ax.errorbar(nfe, mean, yerr=[lo, hi], label=label, color=color, marker=marker,
                    ls="--" if key == ("meanflow", "heun") else "-", capsize=2)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("NFE (network evaluations per sample; CFG batch = 1)")
    ax.set_ylabel("classifier-feature FD (lower is better)")
    ax.set_title("digits demo, 600 steps, cfg 2: mean of 3 seeds (bars: min-max)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


def step_cost(steps: int, batch: int) -> None:
    """CPU seconds per optimizer step of the demo network: plain SiT step vs MeanFlow step."""
    from sit.config import TrainConfig
    from sit.models.sit import SiT
    from sit.train.builders import build_objective, model_config_for
    from sit.train.recipes import demo_configs

    torch.set_num_threads(1)
    for objective in ("sit", "meanflow"):
        cfg, mc = demo_configs()
        cfg = TrainConfig(**{**json.loads(json.dumps(cfg.__dict__)), "objective": objective, "phema_sigmas": ()})
        mc = model_config_for(cfg, mc)
        torch.manual_seed(0)
        net = SiT(mc)
        obj = build_objective(cfg, mc)
        opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(batch, 1, 8, 8), torch.randint(0, 10, (batch,))
        for i in range(steps + 2):
            if i == 2:
                t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
            t = obj.sample_t(batch, g)
            loss = obj.losses(net, x, t, torch.randn(x.shape, generator=g), y).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        c1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime) / steps
        print(json.dumps(dict(objective=objective, batch=batch, steps=steps, cpu_s_per_step=round(cpu, 4),
                              wall_s_per_step=round((time.perf_counter() - t0) / steps, 4))), flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--velocity", nargs="*", default=[])
    q.add_argument("--meanflow", nargs="*", default=[])
    q.add_argument("--cfg-scale", type=float, default=2.0)
    q.add_argument("--out", required=True)
    pl = sub.add_parser("plot")
    pl.add_argument("--rows", required=True)
    pl.add_argument("--png")
    s = sub.add_parser("step")
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--batch", type=int, default=128)
    a = p.parse_args(argv)
    if a.cmd == "quality":
        torch.set_num_threads(1)
        rows = []
        for run in a.velocity:
            rows += score_run(run, VELOCITY, a.cfg_scale)
        for run in a.meanflow:
            rows += score_run(run, MEANFLOW, a.cfg_scale)
        with open(a.out, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        print(table(rows))
    elif a.cmd == "plot":
        rows = [json.loads(line) for line in Path(a.rows).read_text().splitlines() if line.strip()]
        print(table(rows))
        if a.png:
            plot(rows, a.png)
    else:
        step_cost(a.steps, a.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())

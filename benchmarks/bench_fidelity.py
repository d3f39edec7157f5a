"""Fidelity of sit to the official SiT code, in the tiny setting of issue 19.

Trains each of six cells (Linear/L_v, GVP/L_v, VP/L_v, VP/L_s, VP/L_s_lambda, Linear/L_s) with
exactly the settings the official code was calibrated with, from sit's library parts (the SiT
network, `sit.objectives.training_losses` on `sit.paths`, fused AdamW, `ema_update`, the Heun
sampler), and prints the pixel-space Fréchet distance per seed, the mean and spread over seeds,
and the official number next to it:

  data      the embedded digits, all 1,797 images (8x8, values /8 - 1), batches of 256 drawn with
            replacement (torch.randint), labels dropped to the null class with p = 0.1 inside the
            network (as the official LabelEmbedder)
  network   SiT depth 4, width 128, 4 heads, patch 2, no learned sigma
  training  AdamW lr 1e-3, no weight decay, no warm-up, no clipping, 600 steps, uniform t on the
            official range of each path / prediction (sit.paths.Path.train_t_range)
  EMA       decay min(0.999, (1 + k) / (10 + k)) after step k (k = 0, 1, ...)
  sampling  1,500 samples from the EMA network, label i mod 10, Heun 25 steps on the
            probability-flow ODE over the path's default range (VP ends at t = 1e-3)
  metric    Fréchet distance between Gaussians fitted to the 64 pixel values in [0, 1] of the
            samples (clamped) and of all 1,797 real digits

Investigation knobs (the defaults are the settings above): ``--loss official`` / ``--sampler
official`` (train with, or sample with, the official ``transport`` package instead of sit's math:
``Transport.training_losses`` on the same network, optimizer and EMA, and
``Sampler.sample_ode(sampling_method="heun2", num_steps=--heun-steps)``; ``--official DIR`` names the
folder holding ``transport/`` of a willisma/SiT checkout, which is never part of sit), ``--vp-end``
(the sit VP sampler's last time), ``--heun-points`` (the official ``ode`` samples on ``linspace(t0, t1, num_steps)``, i.e.
num_steps - 1 Heun steps: official ``sample_ode(sampling_method="heun2", num_steps=25)`` equals sit's
Heun with 24 steps to 2e-8 on the same field), ``--ema-start`` (EMA counter offset), ``--save-dir``
(keep the EMA networks, so a sampler variant is scored without retraining).

    python benchmarks/bench_fidelity.py --seeds 0,1,2 --out /tmp/fidelity.json   # ~2 min per run, 1 core
    python benchmarks/bench_fidelity.py --cells linear-score --loss official --sampler official \
        --official /path/to/SiT --seeds 0,1,2 --out /tmp/fidelity.json

The command-line path (``--via cli``): each (cell, seed) is trained by `sit train` (run as
`python -m sit.cli`, in a fresh process) at the same settings (``--path --prediction [--loss-weight] --steps --batch --lr 1e-3 --warmup 0 --grad-clip 0
--ema 0.999 --ema-warmup --time-dist uniform``; its data: the embedded digits' training split,
1,618 images in epochs of permutations, unless ``--train-data all``, which for this measurement
hands `sit train` all 1,797) and sampled by `sit sample --method heun --num-steps 25 --num-samples
1500` (``--cli-labels random``: its default, per-sample seeded labels; ``balanced``: label i mod 10
as above); the FD of the benchmark's own sampler on the same EMA network is recorded beside it
(``fd_bench_sampler``), which separates the sampling side from the training side. ``--train-data
train`` gives the library path the training split instead of all digits.

    python benchmarks/bench_fidelity.py --cells vp-velocity --seeds 0 --via cli --out fidelity_cli.json
    python benchmarks/bench_fidelity.py --cells vp-velocity --seeds 0 --via cli --train-data all --out fidelity_cli.json

Each result also records ``fd_unclamped``: the same distance with the samples mapped to (x + 1) / 2
but not clamped to [0, 1].

Results are appended per (cell, seed) to ``--out`` (a rerun skips what is there), then the table
is printed. Prints figures only; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

# FD of 1500 samples (ODE Heun 25 steps) measured with the official code (issue 19)
OFFICIAL = {
    "linear-velocity": 0.149, "gvp-velocity": 0.146, "vp-velocity": 0.417,
    "vp-score": 1.095, "vp-score-lambda": 2.005, "linear-score": 4.05,
}
OFFICIAL_NAMES = {"linear": "Linear", "gvp": "GVP", "vp": "VP"}  # official create_transport path_type
CELLS = {  # name: (path, prediction, loss_weight)
    "linear-velocity": ("linear", "velocity", None),
    "gvp-velocity": ("gvp", "velocity", None),
    "vp-velocity": ("vp", "velocity", None),
    "vp-score": ("vp", "score", None),
    "vp-score-lambda": ("vp", "score", "velocity"),
    "linear-score": ("linear", "score", None),
}


def real_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as (N, 1, 8, 8) in [-1, 1] (pixel/8 - 1) and their labels."""
    from sit.data.embedded import load_embedded

    return load_embedded("digits", "all", image_size=8)


def pixel_fd(real01: torch.Tensor, fake: torch.Tensor, clamp: bool = True) -> float:
    """Fréchet distance of 64-dim pixel vectors (x + 1) / 2, the samples clamped to [0, 1] unless
    ``clamp=False``."""
    from sit.evaluate.metrics import fid_from_features

    f = (fake.float() + 1) / 2
    if clamp:
        f = f.clamp(0, 1)
    return fid_from_features(real01, f.reshape(fake.shape[0], -1).double())


def fidelity_model_config():
    """SiT depth 4, width 128, 4 heads, patch 2 on 8x8x1, 10 classes, no learned sigma, dropout 0.1."""
    from sit.config import ModelConfig

    return ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=128, depth=4, num_heads=4,
                       class_dropout_prob=0.1, num_classes=10, learn_sigma=False)


def load_official(folder: str):
    """The official ``transport`` package from ``folder`` (the root of a willisma/SiT checkout)."""
    import importlib

    root = Path(folder).expanduser().resolve()
    if not (root / "transport" / "__init__.py").is_file():
        raise SystemExit(f"--official: no transport/__init__.py in {root} (give the root of a willisma/SiT checkout)")
    sys.path.insert(0, str(root))
    mod = importlib.import_module("transport")
    if not (hasattr(mod, "create_transport") and hasattr(mod, "Sampler")):
        raise SystemExit(f"--official: {root / 'transport'} has no create_transport / Sampler (not the official package?)")
    return mod


def official_transport(cell: str, args):
    path_name, prediction, weight = CELLS[cell]
    return args.official_mod.create_transport(OFFICIAL_NAMES[path_name], prediction, weight)


def train_cell(cell: str, seed: int, args, x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    """The EMA network after ``args.steps`` steps of the official recipe."""
    import copy

    from sit.models.field import ModelField
    from sit.models.sit import SiT
    from sit.objectives import LossConfig, training_losses
    from sit.paths import get_path
    from sit.train.loop import ema_update, make_adamw

    path_name, prediction, weight = CELLS[cell]
    torch.manual_seed(seed)
    net = SiT(fidelity_model_config())
    ema = copy.deepcopy(net).requires_grad_(False)
    opt = make_adamw(list(net.parameters()), lr=1e-3, weight_decay=0.0)
    path = get_path(path_name)
    loss_cfg = LossConfig(prediction=prediction, loss_weight=weight, time_dist="uniform")
    model_fn = ModelField(net, prediction, "continuous")
    transport = official_transport(cell, args) if args.loss == "official" else None
    net.train()
    for k in range(args.steps):
        idx = torch.randint(0, x.shape[0], (args.batch,))
        if transport is not None:  # official: t, x0 and label dropout from the global generator
            loss = transport.training_losses(net, x[idx], dict(y=y[idx]))["loss"].mean()
        else:
            loss = training_losses(model_fn, path, x[idx], loss_cfg, y=y[idx])["loss"].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(ema, net, min(0.999, (1.0 + k + args.ema_start) / (10.0 + k + args.ema_start)))
    return ema.eval()


def cli_train_argv(cell: str, seed: int, args, out: str) -> list[str]:
    """`sit train` flags giving the benchmark's recipe for (cell, seed)."""
    path_name, prediction, weight = CELLS[cell]
    return ["train", "--out", out, "--path", path_name, "--prediction", prediction, "--loss-weight", weight or "none",
            "--steps", str(args.steps), "--batch", str(args.batch), "--lr", "1e-3", "--warmup", "0", "--grad-clip", "0",
            "--ema", "0.999", "--ema-warmup", "--time-dist", "uniform", "--seed", str(seed), "--no-quality",
            "--samples-per-class", "1", "--sample-steps", "2", "--ckpt-every", str(args.steps), "--keep-last", "1",
            "--no-progress", "--threads", str(args.threads)]


# `python -m sit.cli ARGV...` as a user runs it; with ALL_DIGITS first, the embedded training split is
# all 1,797 digits (for the --train-data all measurement only)
_CLI = """import sys
import sit.data.embedded as e
if sys.argv[1] == "ALL_DIGITS":
    real = e.load_embedded
    e.load_embedded = lambda name="digits", split="train", *a, **k: real(name, "all" if split == "train" else split, *a, **k)
from sit.cli import main
raise SystemExit(main(sys.argv[2:]))
"""


def sit_command(argv: list[str], all_digits: bool = False) -> int:
    """Run `sit ARGV` in a fresh process (the command-line path exactly as a user runs it)."""
    import subprocess

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-c", _CLI, "ALL_DIGITS" if all_digits else "-", *argv], env=env).returncode


def train_via_cli(cell: str, seed: int, args) -> str:
    """The run folder of (cell, seed) trained by `sit train`; with ``--train-data all`` its embedded
    training split is, for this measurement only, all 1,797 digits."""
    root = Path(args.save_dir or tempfile.mkdtemp(prefix="fidelity_cli_"))
    run = root / f"cli-{cell}-s{seed}-steps{args.steps}-b{args.batch}-data{args.train_data}"
    if (run / "checkpoints").is_dir() and any((run / "checkpoints").iterdir()):
        return str(run)
    if sit_command(cli_train_argv(cell, seed, args, str(run)), all_digits=args.train_data == "all") != 0:
        raise SystemExit(f"sit train failed for {cell} seed {seed}")
    return str(run)


def sample_via_cli(run: str, seed: int, args) -> torch.Tensor:
    """`sit sample` of the run's EMA: Heun --heun-steps, --samples samples, labels per --cli-labels;
    returns them as uint8 (N, H, W, C) read back from samples.npz."""
    import numpy as np

    out = Path(run) / f"samples-heun{args.heun_steps}-n{args.samples}-{args.cli_labels}-seed{10_000 + seed}"
    if not (out / "samples.npz").is_file():
        labels = ",".join(str(i) for i in range(10)) if args.cli_labels == "balanced" else "random"
        argv = ["sample", "--ckpt", run, "--method", "heun", "--num-steps", str(args.heun_steps), "--num-samples",
                str(args.samples), "--labels", labels, "--seed", str(10_000 + seed), "--out", str(out), "--no-progress",
                "--threads", str(args.threads)]
        if sit_command(argv) != 0:
            raise SystemExit(f"sit sample failed for {run}")
    with np.load(out / "samples.npz") as z:
        return z["arr_0"]


def load_or_train(cell: str, seed: int, args, x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    """The EMA network of (cell, seed): from ``--save-dir`` when it holds one trained with the same
    settings (so sampler variants can be scored without retraining), else trained (and saved there)."""
    if not args.save_dir:
        return train_cell(cell, seed, args, x, y)
    from safetensors.torch import load_file, save_file

    from sit.models.sit import SiT

    tag = "-official-loss" if args.loss == "official" else ""
    f = Path(args.save_dir) / f"{cell}-s{seed}-steps{args.steps}-b{args.batch}-e{args.ema_start}{tag}.safetensors"
    if f.is_file():
        net = SiT(fidelity_model_config())
        net.load_state_dict(load_file(str(f)))
        print(f"{cell} seed {seed}: EMA weights from {f}", flush=True)
        return net.eval()
    ema = train_cell(cell, seed, args, x, y)
    f.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(f))
    return ema


@torch.no_grad()
def sample_cell(ema, cell: str, seed: int, args) -> torch.Tensor:
    from sit.models.field import ModelField
    from sit.objectives import velocity_field
    from sit.paths import get_path
    from sit.samplers import SampleConfig, sample

    path_name, prediction, _ = CELLS[cell]
    path = get_path(path_name)
    n = args.samples
    labels = torch.arange(n) % 10
    g = torch.Generator().manual_seed(10_000 + seed)
    noise = torch.randn((n, 1, 8, 8), generator=g)
    if args.sampler == "official":  # torchdiffeq heun2 on linspace(t0, t1, num_steps) in official time
        sampler = args.official_mod.Sampler(official_transport(cell, args))
        return sampler.sample_ode(sampling_method="heun2", num_steps=args.heun_steps)(noise, ema, y=labels)[-1]
    steps = args.heun_steps - 1 if args.heun_points else args.heun_steps
    t_end = args.vp_end if path_name == "vp" else None
    sc = SampleConfig(method="heun", num_steps=steps, t_end=t_end)
    field = velocity_field(ModelField(ema, prediction, "continuous"), path, prediction, y=labels)
    x, _ = sample(field, noise, sc, path, prediction=prediction)
    return x


def _train_split() -> tuple[torch.Tensor, torch.Tensor]:
    from sit.data.embedded import load_embedded

    return load_embedded("digits", "train", image_size=8)


def parse_cells(ap: argparse.ArgumentParser, spec: str) -> list[str]:
    """The cell names of a comma list (``ap.error`` on an unknown one)."""
    cells = [c.strip() for c in spec.split(",") if c.strip()]
    bad = [c for c in cells if c not in CELLS]
    if bad:
        ap.error(f"unknown cell {bad[0]!r}; expected names from {list(CELLS)}")
    return cells


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default=",".join(CELLS), help="comma list (default: all six)")
    ap.add_argument("--seeds", default="0,1,2", help="comma list of seeds (default 0,1,2)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--samples", type=int, default=1500)
    ap.add_argument("--heun-steps", type=int, default=25)
    ap.add_argument("--heun-points", action="store_true",
                    help="read --heun-steps as grid points (official linspace(t0, t1, num_steps)): one step fewer")
    ap.add_argument("--vp-end", type=float, default=None, help="VP sampler's last time (default: sit's, 1e-3)")
    ap.add_argument("--ema-start", type=int, default=0, help="offset of the EMA warm-up counter (default 0)")
    ap.add_argument("--loss", choices=("sit", "official"), default="sit",
                    help="training loss: sit.objectives (default) or the official Transport.training_losses (needs --official)")
    ap.add_argument("--sampler", choices=("sit", "official"), default="sit",
                    help="ODE sampler: sit's Heun (default) or the official Sampler.sample_ode heun2 (needs --official)")
    ap.add_argument("--official", default=None, help="root of a willisma/SiT checkout (its transport/ package)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--save-dir", default=None, help="keep / reuse each EMA network here (safetensors)")
    ap.add_argument("--out", default="fidelity.json", help="results JSON, appended per (cell, seed)")
    ap.add_argument("--report-only", action="store_true", help="print the table of --out and exit")
    ap.add_argument("--via", choices=("library", "cli"), default="library",
                    help="train with sit's parts in this script (default) or through `sit train` + `sit sample`")
    ap.add_argument("--train-data", choices=("default", "all", "train"), default="default",
                    help="training images: the path's default (library: all 1,797; cli: the 1,618 of the training "
                         "split), all 1,797, or the training split")
    ap.add_argument("--cli-labels", choices=("random", "balanced"), default="random",
                    help="labels of `sit sample` with --via cli: its default (random) or i mod 10 (balanced)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cells = parse_cells(ap, args.cells)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    official = "official" in (args.loss, args.sampler)
    if official and not args.official:
        ap.error("--loss official / --sampler official need --official DIR (a willisma/SiT checkout)")
    args.official_mod = load_official(args.official) if official and not args.report_only else None
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    setting = f"steps={args.steps},batch={args.batch},samples={args.samples},heun={args.heun_steps}" \
              f"{'p' if args.heun_points else ''},vp_end={args.vp_end},ema_start={args.ema_start}" \
              f"{',loss=official' if args.loss == 'official' else ''}{',sampler=official' if args.sampler == 'official' else ''}" \
              f"{',via=cli,labels=' + args.cli_labels if args.via == 'cli' else ''}" \
              f"{',data=' + args.train_data if args.train_data != 'default' else ''}"
    if not args.report_only:
        x, y = real_digits()
        real01 = ((x + 1) / 2).reshape(x.shape[0], -1).double()
        xt, yt = (x, y) if args.train_data in ("default", "all") else _train_split()
        if args.via == "cli" and args.train_data == "default":
            args.train_data = "train"
        for cell in cells:
            for seed in seeds:
                key = f"{cell}|{seed}|{setting}"
                if key in results:
                    continue
                t0 = time.perf_counter()
                extra = {}
                if args.via == "cli":
                    from sit.checkpoints import load

                    run = train_via_cli(cell, seed, args)
                    t1 = time.perf_counter()
                    images = torch.from_numpy(sample_via_cli(run, seed, args)).permute(0, 3, 1, 2).double() / 127.5 - 1
                    fake = images[:, :1]
                    ema = load(run, weights="ema")[0].eval()
                    extra["fd_bench_sampler"] = pixel_fd(real01, sample_cell(ema, cell, seed, args))
                else:
                    ema = load_or_train(cell, seed, args, xt, yt)
                    t1 = time.perf_counter()
                    fake = sample_cell(ema, cell, seed, args)
                fd = pixel_fd(real01, fake)
                fd_raw = pixel_fd(real01, fake, clamp=False)
                results[key] = {"cell": cell, "seed": seed, "setting": setting, "fd": fd, "fd_unclamped": fd_raw,
                                "train_s": round(t1 - t0, 1), "sample_s": round(time.perf_counter() - t1, 1), **extra}
                tmp = out.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(json.dumps(results, indent=1))
                os.replace(tmp, out)
                print(f"{cell:16s} seed {seed}: FD {fd:.3f}, unclamped {fd_raw:.3f}"
                      + (f", bench sampler {extra['fd_bench_sampler']:.3f}" if extra else "")
                      + f"  (train {t1 - t0:.0f} s, sample {time.perf_counter() - t1:.0f} s)", flush=True)
    print(f"\nsetting: {setting}")
    print(f"{'cell':16s} {'official':>9s} {'sit mean':>9s} {'sit sd':>7s} {'sit min..max':>15s}  n  official in sit range?"
          "  (unclamped mean)")
    for cell in cells:
        runs = [r for r in results.values() if r["cell"] == cell and r["setting"] == setting]
        fds = [r["fd"] for r in runs]
        raw = [r["fd_unclamped"] for r in runs if "fd_unclamped" in r]
        if not fds:
            continue
        m = statistics.mean(fds)
        sd = statistics.stdev(fds) if len(fds) > 1 else math.nan
        inside = min(fds) <= OFFICIAL[cell] <= max(fds)
        print(f"{cell:16s} {OFFICIAL[cell]:9.3f} {m:9.3f} {sd:7.3f} {min(fds):7.3f}..{max(fds):<7.3f} {len(fds):2d}  "
              f"{'yes' if inside else 'no '}" + (f"                    ({statistics.mean(raw):.3f}, {len(raw)})" if raw else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

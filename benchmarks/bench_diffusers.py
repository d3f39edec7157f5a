"""How far a bare diffusers DiTTransformer2DModel is from sit's network on exported SiT weights.

diffusers' DiT time embedding uses frequencies 10000^(-k/127) (``Timesteps(256, True,
downscale_freq_shift=1)``); SiT/DiT use 10000^(-k/128). This prints, for a checkpoint (default: a
random SiT of the demo's shape with N(0, 0.05) weights), the largest difference

  1. of the 256 time features over tau in [0, 1] (SiT's network time) and over 0..999 (DiT's),
  2. of the network output, bare diffusers vs sit and fixed diffusers (downscale_freq_shift = 0) vs sit,
  3. of the final samples of the ODE (Euler, --steps) from the same noise, bare vs fixed vs sit.

    python benchmarks/bench_diffusers.py [--ckpt RUN] [--steps 50] [--n 64]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch


def features(tau: torch.Tensor, shift: float) -> torch.Tensor:
    from diffusers.models.embeddings import get_timestep_embedding

    return get_timestep_embedding(tau, 256, flip_sin_to_cos=True, downscale_freq_shift=shift)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="run / checkpoint (default: random SiT, demo shape)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--n", type=int, default=64, help="samples")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from diffusers import DiTTransformer2DModel

    from sit import checkpoints as store
    from sit.config import ModelConfig
    from sit.models.diffusers_format import export_diffusers
    from sit.models.diffusers_pipeline import fix_time_embedding
    from sit.models.sit import SiT, timestep_embedding

    tau = torch.linspace(0, 1, 1001)
    steps = torch.arange(1000, dtype=torch.float32)
    for name, t in (("tau in [0, 1]", tau), ("DiT steps 0..999", steps)):
        bare = (features(t, 1) - timestep_embedding(t)).abs().max().item()
        fixed = (features(t, 0) - timestep_embedding(t)).abs().max().item()
        print(f"time features, {name}: max |diffusers - sit| bare {bare:.3g}, fixed {fixed:.3g}")

    if args.ckpt:
        net, meta = store.load(args.ckpt)
        what = f"{args.ckpt} ({meta.path}/{meta.prediction})"
    else:
        torch.manual_seed(0)
        net = SiT(ModelConfig(input_size=8, patch_size=2, in_channels=1, hidden_size=128, depth=4, num_heads=4, num_classes=10))
        with torch.no_grad():
            for p in net.parameters():
                if p.requires_grad:
                    p.normal_(0, 0.05)
        what = "random SiT 8x8x1, depth 4, width 128, N(0, 0.05) weights"
    net.eval()
    cfg = net.config
    with tempfile.TemporaryDirectory() as d:
        out = export_diffusers(net, {"path": "linear", "prediction": "velocity", "time_input": "continuous"},
                               Path(d) / "o", source_sha256="-")
        bare = DiTTransformer2DModel.from_pretrained(str(out / "transformer")).eval()
        fixed = DiTTransformer2DModel.from_pretrained(str(out / "transformer")).eval()
    fix_time_embedding(fixed)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.n, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g)
    y = torch.randint(0, cfg.num_classes, (args.n,), generator=g)
    t = torch.rand(args.n, generator=g)
    C = cfg.in_channels
    with torch.no_grad():
        ref = net(x, t, y)[:, :C]
        scale = ref.abs().max().item()
        for name, m in (("bare", bare), ("fixed", fixed)):
            d = (m(x, timestep=t, class_labels=y).sample[:, :C] - ref).abs().max().item()
            print(f"network output ({what}), {name} diffusers: max |diff| {d:.3g} (max |output| {scale:.3g})")

        grid = torch.linspace(1.0, 0.0, args.steps + 1, dtype=torch.float64).tolist()

        def euler(f):
            z = x.clone()
            for a, b in zip(grid[:-1], grid[1:]):
                tau_ = torch.full((args.n,), 1.0 - a)
                z = z + (b - a) * -f(z, tau_)
            return z

        s_ref = euler(lambda z, tt: net(z, tt, y)[:, :C])
        for name, m in (("bare", bare), ("fixed", fixed)):
            s = euler(lambda z, tt, m=m: m(z, timestep=tt, class_labels=y).sample[:, :C])
            print(f"Euler {args.steps} steps, {args.n} samples, {name} diffusers: max |sample diff| "
                  f"{(s - s_ref).abs().max().item():.3g} (max |sample| {s_ref.abs().max().item():.3g})")


if __name__ == "__main__":
    main()

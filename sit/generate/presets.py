"""Named sampling presets: the paper's settings as typed records, so a reported number says how it was made.

A preset is a `SampleConfig` (or `DiscreteSampleConfig`) + `GuidanceConfig` + labels and sample
count; options given on the command line override single fields of it, and the manifest records
the preset's name beside the resolved spec. The FID numbers quoted are the paper's (SiT-XL/2, 7M
iterations, ImageNet 256, 50K samples, ADM evaluator); they are what the preset aims to
reproduce, not measurements of this package.
"""

from __future__ import annotations

import dataclasses

from sit.generate.spec import AnySampleConfig, DiscreteSampleConfig
from sit.guidance import GuidanceConfig
from sit.sampler_config import SampleConfig

# `sit sample` without --preset: Heun, 50 steps (every other field: the SampleConfig default)
DEFAULT_SAMPLE = SampleConfig(method="heun", num_steps=50)


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named setting: the sampler, the guidance, labels, sample count and what it reproduces (all
    torch-free records: `sit sample --help` lists the presets without torch)."""

    sample: AnySampleConfig
    guidance: GuidanceConfig = GuidanceConfig()
    labels: str = "random"
    num_samples: int | None = None
    about: str = ""


_XL2_CFG = GuidanceConfig(scale=1.5, channels=3)  # official forward_with_cfg: guide 3 of the 4 latent channels
_SDE = dict(method="euler_maruyama", num_steps=250, last_step="mean", last_step_size=0.04, w_scale=1.0)

PRESETS: dict[str, Preset] = {
    # Released SiT-XL/2, probability-flow ODE (2): fixed-step Heun, 125 steps = 250 NFE (paper section 3.1).
    "sit-xl2-ode": Preset(
        SampleConfig(method="heun", num_steps=125, grid="uniform"), _XL2_CFG, num_samples=50000,
        about="SiT-XL/2 ODE: Heun, 125 steps (250 NFE), cfg 1.5 on channels 0..2 (paper: FID 2.15)"),
    # The official adaptive solver (torchdiffeq dopri5, atol 1e-6, rtol 1e-3); num_steps only sets the output grid.
    "sit-xl2-dopri5": Preset(
        SampleConfig(method="dopri5", num_steps=DEFAULT_SAMPLE.num_steps, atol=1e-6, rtol=1e-3), _XL2_CFG,
        num_samples=50000,
        about="SiT-XL/2 ODE: dopri5 atol 1e-6 rtol 1e-3 (official sample_ddp default ODE), cfg 1.5 on channels 0..2"),
    # Reverse SDE (4), Euler-Maruyama 250 steps, w_t = sigma_t, last step "Mean" of size 0.04: the paper's best.
    "sit-xl2-sde": Preset(
        SampleConfig(w="sigma", grid="uniform", **_SDE), _XL2_CFG, num_samples=50000,
        about="SiT-XL/2 SDE: Euler-Maruyama 250 steps, w_t = sigma_t, last step Mean 0.04, cfg 1.5 (paper: FID 2.06)"),
    # The official CLI default diffusion form "sigma" with norm 1.0, i.e. w_t = 2 sigma_t.
    "sit-xl2-sde-official": Preset(
        SampleConfig(w="official-sigma", grid="uniform", **_SDE), _XL2_CFG, num_samples=50000,
        about="SiT-XL/2 SDE as the official sample_ddp.py SDE defaults: w_t = 2 sigma_t (form 'sigma', norm 1.0)"),
    # w_KL,eta (14) with the per-time loss table stored with the checkpoint (`sit lt`).
    "sit-xl2-sde-kl-eta": Preset(
        SampleConfig(w="kl_eta", eta=1.0, t_start=0.999, grid="uniform", **_SDE), _XL2_CFG, num_samples=50000,
        about="SiT-XL/2 SDE with w_KL,eta (eq. 14), eta 1 with the checkpoint's L_t table, start at t = 1 - 1e-3"),
    # REPA's SiT-XL/2 (sihyun-yu/REPA generate.py, README): Euler-Maruyama 250 steps from t = 1 to 0.04 and a
    # final mean step, diffusion 2t (= w_t 2 sigma_t on the linear path), CFG 1.8 on all channels for t <= 0.7.
    "repa-sit-xl2": Preset(
        SampleConfig(w="official-sigma", grid="uniform", **_SDE), GuidanceConfig(scale=1.8, interval=(0.0, 0.7)),
        num_samples=50000,
        about="REPA SiT-XL/2: Euler-Maruyama 250 steps, w_t = 2 sigma_t, last step Mean 0.04, cfg 1.8 on all channels "
              "for t <= 0.7 (REPA, 4M steps: FID 1.42)"),
    # DiT-XL/2: respaced 250-step ancestral DDPM with learned variance, cfg 1.5 on channels 0..2.
    "dit-ddpm250": Preset(
        DiscreteSampleConfig(method="ddpm", num_steps=250), _XL2_CFG, num_samples=50000,
        about="DiT-XL/2: ancestral DDPM on the respaced 250-step grid, learned variance, cfg 1.5 (DiT: FID 2.27)"),
    # The embedded demo (digits / mnist5k): quick looks and the quality-vs-NFE table.
    "demo-heun": Preset(
        SampleConfig(method="heun", num_steps=25), num_samples=1000,
        about="embedded demo: Heun 25 steps (50 NFE), no guidance"),
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {preset_names()}")
    return PRESETS[name]


def describe(name: str) -> str:
    return get_preset(name).about

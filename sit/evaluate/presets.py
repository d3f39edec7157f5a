"""Named sampling presets: the paper's settings, so a reported number says how it was made.

A preset is a dict of `sit sample` option values (keys are the option names with '_' for '-');
options given on the command line override it, and the manifest records the preset's name and
the resolved values. The FID numbers quoted are the paper's (SiT-XL/2, 7M iterations, ImageNet
256, 50K samples, ADM evaluator); they are what the preset aims to reproduce, not measurements
of this package.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # Released SiT-XL/2, probability-flow ODE (2): fixed-step Heun, 125 steps = 250 NFE (paper
    # section 3.1), guidance 1.5 on the first 3 latent channels as the official forward_with_cfg.
    "sit-xl2-ode": dict(
        method="heun", num_steps=125, cfg_scale=1.5, cfg_channels="3", labels="random",
        num_samples=50000, grid="uniform",
        _about="SiT-XL/2 ODE: Heun, 125 steps (250 NFE), cfg 1.5 on channels 0..2 (paper: FID 2.15)",
    ),
    # Same, with the official adaptive solver (torchdiffeq dopri5, atol 1e-6, rtol 1e-3).
    "sit-xl2-dopri5": dict(
        method="dopri5", atol=1e-6, rtol=1e-3, cfg_scale=1.5, cfg_channels="3", labels="random",
        num_samples=50000,
        _about="SiT-XL/2 ODE: dopri5 atol 1e-6 rtol 1e-3 (official sample_ddp default ODE), cfg 1.5 on channels 0..2",
    ),
    # Reverse SDE (4), Euler-Maruyama 250 steps, w_t = sigma_t, last step "Mean" of size 0.04
    # (official defaults): the paper's best SiT-XL/2 number.
    "sit-xl2-sde": dict(
        method="euler_maruyama", num_steps=250, w="sigma", w_scale=1.0, last_step="mean", last_step_size=0.04,
        cfg_scale=1.5, cfg_channels="3", labels="random", num_samples=50000, grid="uniform",
        _about="SiT-XL/2 SDE: Euler-Maruyama 250 steps, w_t = sigma_t, last step Mean 0.04, cfg 1.5 (paper: FID 2.06)",
    ),
    # The official CLI default diffusion form "sigma" with norm 1.0, i.e. w_t = 2 sigma_t.
    "sit-xl2-sde-official": dict(
        method="euler_maruyama", num_steps=250, w="official-sigma", w_scale=1.0, last_step="mean",
        last_step_size=0.04, cfg_scale=1.5, cfg_channels="3", labels="random", num_samples=50000, grid="uniform",
        _about="SiT-XL/2 SDE as the official sample_ddp.py SDE defaults: w_t = 2 sigma_t (form 'sigma', norm 1.0)",
    ),
    # w_KL,eta (14) with the per-time loss table stored with the checkpoint (`sit lt`).
    "sit-xl2-sde-kl-eta": dict(
        method="euler_maruyama", num_steps=250, w="kl_eta", eta=1.0, w_scale=1.0, last_step="mean",
        last_step_size=0.04, t_start=0.999, cfg_scale=1.5, cfg_channels="3", labels="random", num_samples=50000,
        grid="uniform",
        _about="SiT-XL/2 SDE with w_KL,eta (eq. 14), eta 1 with the checkpoint's L_t table, start at t = 1 - 1e-3",
    ),
    # DiT-XL/2: respaced 250-step ancestral DDPM with learned variance, cfg 1.5 on channels 0..2.
    "dit-ddpm250": dict(
        method="ddpm", num_steps=250, cfg_scale=1.5, cfg_channels="3", labels="random", num_samples=50000,
        _about="DiT-XL/2: ancestral DDPM on the respaced 250-step grid, learned variance, cfg 1.5 (DiT: FID 2.27)",
    ),
    # The embedded demo (digits / mnist5k): quick looks and the quality-vs-NFE table.
    "demo-heun": dict(
        method="heun", num_steps=25, cfg_scale=1.0, cfg_channels="all", labels="random", num_samples=1000,
        _about="embedded demo: Heun 25 steps (50 NFE), no guidance",
    ),
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def get_preset(name: str) -> dict[str, Any]:
    """The option values of preset ``name`` (a copy, without the '_about' text)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {preset_names()}")
    return {k: v for k, v in PRESETS[name].items() if not k.startswith("_")}


def describe(name: str) -> str:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; expected one of {preset_names()}")
    return PRESETS[name]["_about"]

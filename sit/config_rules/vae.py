"""TrainConfig's rules of the VAE latent space (sit.vae.LatentSpace): the latent scale / shift."""

from __future__ import annotations

from typing import Any

from sit.bounds import latent_value_problem
from sit.field_errors import ConfigError


def check_vae(cfg: Any) -> None:
    """The VAE latent scale / shift: valid values, and only with VAE latents (data or latents)."""
    for name in ("vae_scale", "vae_shift"):
        v = getattr(cfg, name)
        problem = None if v is None else latent_value_problem(name[4:], v)
        if problem:
            raise ConfigError("TrainConfig", name, problem)
        if v is not None and cfg.data is None and cfg.latents is None:
            raise ConfigError("TrainConfig", name, "applies to VAE latents (data or latents), not the embedded pixels")

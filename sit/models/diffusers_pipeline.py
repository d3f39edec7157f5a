"""The paper's ODE as a diffusers pipeline: ``SiTPipeline`` (copied as ``pipeline_sit.py`` into a
folder written by ``sit convert RUN --to diffusers OUT``).

Self-contained on purpose (imports torch and diffusers only, nothing of sit) so that the exported
folder runs where sit is not installed::

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained(OUT, custom_pipeline=OUT + "/pipeline_sit.py")
    x = pipe(class_labels=[3, 7], num_inference_steps=50).images      # (B, C, H, W) latents

Time mapping. sit's paper time t (t = 0 data, t = 1 noise) is the scheduler's sigma
(``FlowMatchEulerDiscreteScheduler``: x_sigma = (1 - sigma) x_0 + sigma eps, the Linear path of
SiT eq. 3); the scheduler's ``timesteps`` are 1000 sigma. The SiT network takes tau = 1 - t in
[0, 1], unscaled (not 0..999), and returns dx/dtau = -v, so the velocity eq. (2) needs is
v(x, t) = -net(x, 1 - t, y)[:, :C]. Only the Linear path with a velocity model maps onto this
scheduler; other exports refuse to sample here with one line (``sit sample --ckpt OUT`` reads all).

Time embedding. diffusers' ``CombinedTimestepLabelEmbeddings`` builds ``Timesteps(256,
flip_sin_to_cos=True, downscale_freq_shift=1)``: frequencies 10000^(-k/127); SiT/DiT use
10000^(-k/128). ``fix_time_embedding`` sets ``downscale_freq_shift = 0`` on every block's
``time_proj`` (the pipeline does it when built); a bare ``DiTTransformer2DModel`` / ``DiTPipeline``
on these weights is off by that difference.
"""

from __future__ import annotations

import json
import os

import torch
from diffusers import DiffusionPipeline

SIT_METADATA = "sit_diffusers.json"
METHODS = ("euler", "heun")


def fix_time_embedding(transformer) -> int:
    """Make a diffusers DiT time embedding the SiT/DiT one (f_k = 10000^(-k/128)): set
    ``downscale_freq_shift = 0`` on every ``time_proj``. Returns how many were changed."""
    n = 0
    for module in transformer.modules():
        if type(module).__name__ == "Timesteps" and module.downscale_freq_shift != 0:
            module.downscale_freq_shift = 0
            n += 1
    return n


class SiTPipeline(DiffusionPipeline):
    """SiT sampling by the probability-flow ODE (eq. 2) with Euler or Heun steps on sit's uniform
    grid t_i = 1 - i/N (``FlowMatchEulerDiscreteScheduler`` sigmas), classifier-free guidance on
    all channels. Returns the final latents (decode them with the SD VAE where the model is latent)."""

    model_cpu_offload_seq = "transformer"

    def __init__(self, transformer, scheduler):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)
        fix_time_embedding(self.transformer)

    @property
    def sit_meta(self) -> dict:
        """The export's sit_diffusers.json (path, prediction, ...), {} when not loaded from a folder."""
        root = getattr(self, "name_or_path", None) or getattr(self.config, "_name_or_path", None)
        if root and os.path.isfile(os.path.join(root, SIT_METADATA)):
            with open(os.path.join(root, SIT_METADATA)) as f:
                return json.load(f)
        return {}

    def velocity(self, x: torch.Tensor, t: float, labels: torch.Tensor, guidance_scale: float, null: int) -> torch.Tensor:
        """v(x, t) in paper time: -net(x, tau = 1 - t, y)[:, :C], guided where guidance_scale != 1."""
        c = x.shape[1]
        tau = torch.full((x.shape[0],), 1.0 - t, dtype=torch.float32, device=x.device)
        if guidance_scale == 1.0:
            out = self.transformer(x, timestep=tau, class_labels=labels).sample[:, :c]
        else:
            both = self.transformer(
                torch.cat([x, x]), timestep=torch.cat([tau, tau]),
                class_labels=torch.cat([labels, torch.full_like(labels, null)]),
            ).sample[:, :c]
            cond, uncond = both.chunk(2)
            out = uncond + guidance_scale * (cond - uncond)
        return -out.to(x.dtype)

    @torch.no_grad()
    def __call__(
        self,
        class_labels,
        num_inference_steps: int = 250,
        guidance_scale: float = 1.0,
        method: str = "euler",
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
    ):
        fix_time_embedding(self.transformer)  # also when the transformer was swapped after building
        meta = self.sit_meta
        if meta and (meta.get("path"), meta.get("prediction"), meta.get("time_input")) != ("linear", "velocity", "continuous"):
            raise ValueError(
                f"SiTPipeline samples Linear-path velocity models only (this one: path {meta.get('path')!r}, "
                f"prediction {meta.get('prediction')!r}); use `sit sample --ckpt` on this folder")
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1 (got {num_inference_steps!r})")
        cfg = self.transformer.config
        device = self.transformer.device
        labels = torch.as_tensor(class_labels, dtype=torch.long, device=device).reshape(-1)
        null = cfg.num_embeds_ada_norm  # the null-label row
        if guidance_scale != 1.0 and meta and not meta.get("model", {}).get("class_dropout_prob", 0) > 0:
            raise ValueError("guidance needs a model trained with label dropout (class_dropout_prob > 0)")
        shape = (labels.shape[0], cfg.in_channels, cfg.sample_size, cfg.sample_size)
        if latents is None:
            latents = torch.randn(shape, generator=generator, dtype=torch.float32, device=device)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape} (got {tuple(latents.shape)})")
        x = latents.to(device=device, dtype=torch.float32)
        # sit's grid for a Linear velocity model: t_i = 1 - i/N, i = 0..N (t_N = 0 appended by the scheduler)
        grid = torch.linspace(1.0, 0.0, num_inference_steps + 1, dtype=torch.float64)
        self.scheduler.set_timesteps(sigmas=grid[:-1].tolist(), device=device)
        sig = [float(s) for s in grid]
        for i in self.progress_bar(range(num_inference_steps)):
            t, tn = sig[i], sig[i + 1]
            d = self.velocity(x, t, labels, guidance_scale, null)
            if method == "euler":
                x = self.scheduler.step(d, self.scheduler.timesteps[i], x).prev_sample
                continue
            x_e = x + (tn - t) * d
            d2 = self.velocity(x_e, tn, labels, guidance_scale, null)
            x = x + (tn - t) * 0.5 * (d + d2)
        return _Output(images=x)


class _Output:
    def __init__(self, images: torch.Tensor):
        self.images = images

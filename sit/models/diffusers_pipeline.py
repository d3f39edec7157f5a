"""The paper's ODE as a diffusers pipeline: ``SiTPipeline`` (copied as ``pipeline_sit.py`` into a
folder written by ``sit convert RUN --to diffusers OUT``).

Self-contained on purpose (imports torch and diffusers only, nothing of sit) so that the exported
folder runs where sit is not installed::

    from diffusers import DiffusionPipeline
    pipe = DiffusionPipeline.from_pretrained(OUT, trust_remote_code=True)
    images = pipe(class_labels=[3, 7], num_inference_steps=50).images   # a list of PIL images

Like diffusers' own pipelines (``DiTPipeline``) it returns an ``ImagePipelineOutput`` whose
``.images`` are PIL images by default; ``output_type="np"`` gives a float array (B, H, W, C) and
``"pt"`` a tensor (B, C, H, W), both in [0, 1] (``(x / 2 + 0.5).clamp(0, 1)`` of the image in
[-1, 1]); ``"latent"`` the sampler's raw output (what `sit sample --save-latents` stores). A latent
model decodes through the export's ``vae/`` (the run's VAE, in the latent space recorded with the
run: ``z = (x * std_c + mean_c) / scale + shift``); an export without one samples latents only.

Samplers (``method``): ``euler`` / ``heun`` on the probability-flow ODE, ``dpmpp_2m``
(DPM-Solver++(2M), the few-step solver: one evaluation per step, exact linear part); the grid is
sit's uniform t_i = 1 - i/N unless ``sigmas`` (a decreasing list of paper times from 1 to 0, e.g.
one of sit's grids) is given. ``guidance_interval=(t_lo, t_hi)`` applies classifier-free
guidance only for paper times t_lo <= t <= t_hi (as `sit sample --cfg-interval`).

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

Metadata. ``sit_diffusers.json`` carries the sha256 of its own fields; ``sit_meta`` refuses a file
whose fields were edited (the same check sit's reader makes).
"""

from __future__ import annotations

import hashlib
import json
import math
import os

import torch
from diffusers import DiffusionPipeline
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

SIT_METADATA = "sit_diffusers.json"
METHODS = ("euler", "heun", "dpmpp_2m")
OUTPUT_TYPES = ("pil", "np", "pt", "latent")


def metadata_digest(meta: dict) -> str:
    """sha256 of ``meta`` without "sha256", canonical JSON: the "sha256" sit_diffusers.json holds."""
    body = {k: v for k, v in meta.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


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

    model_cpu_offload_seq = "transformer->vae"
    _optional_components = ["vae"]

    def __init__(self, transformer, scheduler, vae=None):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler, vae=vae)
        fix_time_embedding(self.transformer)

    @property
    def sit_meta(self) -> dict:
        """The export's sit_diffusers.json (path, prediction, ...), {} when not loaded from a folder."""
        root = getattr(self, "name_or_path", None) or getattr(self.config, "_name_or_path", None)
        if root and os.path.isfile(os.path.join(root, SIT_METADATA)):
            with open(os.path.join(root, SIT_METADATA)) as f:
                meta = json.load(f)
            if not isinstance(meta, dict) or meta.get("sha256") != metadata_digest(meta):
                raise ValueError(f"{os.path.join(root, SIT_METADATA)} was changed after it was written (its sha256 "
                                 "does not match its fields); export the run again rather than editing it")
            return meta
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

    def decode(self, x: torch.Tensor, output_type: str):
        """The sampler's output ``x`` as ``output_type`` (module docstring)."""
        if output_type == "latent":
            return x
        if self.transformer.config.in_channels not in (1, 3):  # a latent model: through the run's VAE
            if getattr(self, "vae", None) is None:
                raise ValueError("this export has no vae/ to decode its latents: use output_type='latent' (or export "
                                 "with `sit convert RUN --to diffusers OUT --vae VAE`)")
            space = (self.sit_meta or {}).get("latent_space") or {}
            norm = space.get("latent_norm")
            z = x
            if norm:
                shape = (1, -1, 1, 1)
                z = z * torch.tensor(norm["std"], dtype=z.dtype, device=z.device).view(shape) + torch.tensor(
                    norm["mean"], dtype=z.dtype, device=z.device).view(shape)
            z = z / float(space.get("scale_factor", self.vae.config.scaling_factor))
            if space.get("shift_factor"):
                z = z + float(space["shift_factor"])
            x = self.vae.decode(z.to(self.vae.dtype)).sample.float()
        images = (x / 2 + 0.5).clamp(0, 1)
        if output_type == "pt":
            return images
        images = images.cpu().permute(0, 2, 3, 1).float().numpy()
        return self.numpy_to_pil(images) if output_type == "pil" else images

    @torch.no_grad()
    def __call__(
        self,
        class_labels,
        num_inference_steps: int = 250,
        guidance_scale: float = 1.0,
        method: str = "euler",
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        guidance_interval: tuple[float, float] | None = None,
        sigmas: list[float] | None = None,
    ):
        fix_time_embedding(self.transformer)  # also when the transformer was swapped after building
        meta = self.sit_meta
        interval = _check_call(meta, method, output_type, num_inference_steps, guidance_interval)
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
        sig = _time_grid(sigmas, num_inference_steps)
        self.scheduler.set_timesteps(sigmas=sig[:-1], device=device)

        def vel(x, t):
            scale = guidance_scale
            if interval is not None and not interval[0] <= t <= interval[1]:
                scale = 1.0
            return self.velocity(x, t, labels, scale, null)

        prev = {}
        for i in self.progress_bar(range(len(sig) - 1)):
            t, tn = sig[i], sig[i + 1]
            d = vel(x, t)
            if method == "euler":
                x = self.scheduler.step(d, self.scheduler.timesteps[i], x).prev_sample
            elif method == "heun":
                x_e = x + (tn - t) * d
                d2 = vel(x_e, tn)
                x = x + (tn - t) * 0.5 * (d + d2)
            else:
                x = _dpmpp_2m_step(x, d, t, tn, prev)
        images = self.decode(x, output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)


def _check_call(meta: dict, method, output_type, num_inference_steps, guidance_interval) -> tuple[float, float] | None:
    """ValueError for a call `SiTPipeline` cannot make (an export it cannot sample, a bad argument);
    the guidance interval (t_lo, t_hi) as floats, None without one."""
    if meta and (meta.get("path"), meta.get("prediction"), meta.get("time_input")) != ("linear", "velocity", "continuous"):
        raise ValueError(
            f"SiTPipeline samples Linear-path velocity models only (this one: path {meta.get('path')!r}, "
            f"prediction {meta.get('prediction')!r}); use `sit sample --ckpt` on this folder")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {list(METHODS)}")
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"unknown output_type {output_type!r}; expected one of {list(OUTPUT_TYPES)}")
    if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
        raise ValueError(f"num_inference_steps must be an integer >= 1 (got {num_inference_steps!r})")
    if guidance_interval is None:
        return None
    lo, hi = (float(v) for v in guidance_interval)
    if not 0.0 <= lo < hi <= 1.0:
        raise ValueError(f"guidance_interval must satisfy 0 <= t_lo < t_hi <= 1 (got {guidance_interval!r})")
    return lo, hi


def _time_grid(sigmas, num_inference_steps: int) -> list[float]:
    """The decreasing paper times t_0 = 1 .. t_N = 0 of the sampler: ``sigmas`` (0 appended when
    missing) or sit's grid for a Linear velocity model, t_i = 1 - i/N."""
    if sigmas is None:  # sit's grid for a Linear velocity model: t_i = 1 - i/N, i = 0..N
        grid = torch.linspace(1.0, 0.0, num_inference_steps + 1, dtype=torch.float64)
    else:
        grid = torch.as_tensor(list(sigmas) + ([] if float(sigmas[-1]) == 0.0 else [0.0]), dtype=torch.float64)
        if grid.ndim != 1 or len(grid) < 2 or not bool((grid[1:] < grid[:-1]).all()) or not 0.0 <= float(grid[0]) <= 1.0:
            raise ValueError("sigmas must be a decreasing list of paper times in [0, 1] (t = 1 noise)")
    return [float(s) for s in grid]


def _log_snr(t: float) -> float:
    """ell = log(alpha / sigma) on the Linear path (alpha = 1 - t, sigma = t); +-inf at the ends."""
    if t >= 1.0:
        return -math.inf
    if t <= 0.0:
        return math.inf
    return math.log(1.0 - t) - math.log(t)


def _dpmpp_2m_step(x: torch.Tensor, v: torch.Tensor, t: float, tn: float, prev: dict) -> torch.Tensor:
    """One DPM-Solver++(2M) step on the Linear path from t to tn (data prediction x* = x - t v;
    first order on the first step and where an end of the step has an infinite log-SNR), as
    `sit.samplers.multistep.sample_dpmpp_2m`."""
    a_s, s_s, a_t, s_t = 1.0 - t, t, 1.0 - tn, tn
    x0 = x - t * v  # x* = (sigma_dot x - sigma v) / (alpha sigma_dot - alpha_dot sigma), = 1 on Linear
    h = _log_snr(tn) - _log_snr(t)
    h_prev = prev.get("h")
    d = x0
    if h_prev is not None and math.isfinite(h) and math.isfinite(h_prev) and h > 0:
        r = h_prev / h
        d = (1 + 0.5 / r) * x0 - (0.5 / r) * prev["x0"]
    prev["x0"], prev["h"] = x0, h
    ratio = s_t / s_s
    return ratio * x + (a_t - ratio * a_s) * d

"""A sample set from a checkpoint and a `SampleSpec`: everything `sit sample` does after parsing.

Order: lock the folder (rank 0), resolve and identify the checkpoint, load it
(`sit.checkpoints.load`), check the spec against the model, build the latent sampler
(`sit.generate.glue.latent_sampler`), decode with the VAE for latent models, then
`sit.generate.engine.generate` with ``spec.to_json()`` as the set's identity.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path

from torch import Tensor

from sit import io
from sit.config import ConfigError, field_error
from sit.generate.engine import GenerateResult, generate
from sit.generate.outputs import Outputs  # noqa: F401  (the record, torch-free; re-exported)
from sit.generate.spec import SampleSpec, check_against_model, settings_sha256


def _loss_table(spec: SampleSpec, ck: Path, meta, lt_table: str | None):
    """(table, source file) for w = kl_eta with eta > 0, else (None, None)."""
    cfg = spec.sample
    if spec.discrete or str(cfg.w) != "kl_eta" or not cfg.eta > 0:
        return None, None
    from sit.diffusion_coef import LossTable
    from sit.generate.glue import find_loss_table, loss_table_path

    if lt_table:
        try:
            return LossTable.load(lt_table), str(lt_table)
        except (OSError, ValueError, TypeError, KeyError) as e:  # name the file, whatever is wrong in it
            raise ConfigError("", "lt_table", f"{str(lt_table)!r} is not a valid L_t table "
                              f"({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    table = find_loss_table(ck, meta)
    if table is None:
        raise field_error(FileNotFoundError,
            f"{{SampleConfig.w}} kl_eta needs the model's L_t table: estimate it for {str(ck)!r} first (`sit lt`; "
            f"stores {loss_table_path(ck)}) or pass a table file as {{.lt_table}}"
        )
    p = loss_table_path(ck)
    return table, (str(p) if p.is_file() else None)


def _decoder(spec: SampleSpec, channels: int, dev, meta):
    """(decode function, latent space record, VAE sha256) of a latent model, (None, None, None)
    for pixels. The decode uses the latent space recorded with the run (``meta.data``: scale,
    shift, per-channel normalisation; official checkpoints: 0.18215, no shift), spec.vae_scale /
    vae_shift overriding (`sit.vae.decode_space` refuses a VAE whose config contradicts it)."""
    if channels in (1, 3):
        return None, None, None
    if not spec.vae:
        raise ConfigError("SampleSpec", "vae",
            f"is needed: this is a latent model ({channels} channels); give a local SD VAE folder (e.g. sd-vae-ft-ema) to decode"
        )
    v = load_decoder(spec.vae, dev, meta, spec.vae_scale, spec.vae_shift)
    return v.decode, v.space.record(), v.weights_sha256


def load_decoder(vae: str, dev, meta, scale: float | None = None, shift: float | None = None):
    """The `sit.vae.VAE` ``vae`` set to decode the latents of the run ``meta`` (its recorded space)."""
    from sit.vae import VAE, LatentSpace, decode_space, recorded_vae_config

    v = VAE.from_pretrained(vae, device=dev)
    data = meta.data if meta is not None else None
    v.space = decode_space(v.config_space, LatentSpace.from_record(data), scale, shift,
                           expected=recorded_vae_config(data), vae_name=v.name, source="the checkpoint")
    return v


def sample_set(
    ckpt: str | os.PathLike,
    out: str | os.PathLike,
    spec: SampleSpec,
    *,
    batch_size: int = 32,
    outputs: Outputs = Outputs(),
    device: str | None = None,
    initial_noise: Tensor | None = None,
    noise_file: str | None = None,
    lt_table: str | None = None,
    kind: str | None = None,
    num_heads: int | None = None,
    compile: bool = False,
    tf32: bool = True,
    preset: str | None = None,
) -> GenerateResult:
    """Make (or resume, or verify) the sample set ``spec`` of ``ckpt`` in ``out``. ``spec`` comes
    without the fields only the checkpoint gives (``checkpoint``, ``latent_shape``,
    ``loss_table_sha256``, ``tf32``; autoguidance: the guide, loaded here from its record's path
    by `sit.generate.glue.load_guide`); they are filled in here."""
    from sit import dist, folders
    from sit.generate.glue import default_device, latent_sampler, load_guide

    folders.require_input(ckpt, folders.READABLE, "ckpt")  # before the lock makes OUT
    folders.require_output(out, folders.SAMPLES, "out")  # before the lock writes OUT/.lock
    dev = dist.init(default_device(device))
    lock = io.FolderLock(out, "sample folder", log=dist.eprint0) if dist.rank() == 0 else None
    with lock if lock is not None else contextlib.nullcontext():
        ck, net, meta, num_classes = _open_checkpoint(ckpt, spec, kind, num_heads, compile, dev)
        C, H = int(net.in_channels), int(net.config.input_size)
        table, table_src = _loss_table(spec, ck, meta, lt_table)
        spec = dataclasses.replace(spec, guidance=load_guide(spec.guidance, meta, weights=spec.weights, kind=kind,
                                                             num_heads=num_heads, precision=spec.precision,
                                                             compile=compile, device=dev, log=dist.eprint0))
        guide_meta = getattr(spec.guidance.guide, "meta", None)
        decode_fn, vae_space, vae_sha = _decoder(spec, C, dev, meta)
        spec = _with_checkpoint_fields(spec, ck, (C, H, H), bool(tf32) and dev.type == "cuda", vae_sha, table)
        sampler_fn, desc = latent_sampler(net, meta, spec.sample, spec.guidance, spec.precision, table=table)
        info = {**_info(ck, meta, desc, vae_space, table, table_src), "preset": preset,
                "guide_checkpoint": str(guide_meta.source) if guide_meta is not None else None,
                "device": str(dev), "compile": bool(compile)}
        origin = f" from checkpoint {ck}" + (f" with noise file {noise_file}" if noise_file else "")
        with dist.tf32(tf32):
            return generate(
                out, num_samples=spec.num_samples, batch_size=batch_size, seed=spec.seed,
                latent_shape=spec.latent_shape, sampler_fn=sampler_fn, decode_fn=decode_fn, labels=spec.labels,
                num_classes=num_classes, settings=spec.to_json(), info=info, device=dev,
                png_folder=outputs.png_folder, save_latents=spec.save_latents, grid_png=outputs.grid_png,
                keep_parts=outputs.keep_parts, progress=outputs.progress, initial_noise=initial_noise,
                origin=origin, lock=False,
            )


def _open_checkpoint(ckpt, spec: SampleSpec, kind, num_heads, compile: bool, dev):
    """(checkpoint folder, network ready to sample, RunMeta, classes) of ``ckpt``, the spec checked
    against the model."""
    from sit import checkpoints, dist
    from sit.generate.glue import model_num_classes, prepare_network

    ck = checkpoints.resolve(ckpt, log=dist.eprint0)
    net, meta = checkpoints.load(ck, weights=spec.weights, kind=kind, num_heads=num_heads, log=dist.eprint0)
    net = prepare_network(net, spec.precision, compile, dev)
    num_classes = model_num_classes(net)
    check_against_model(spec, int(net.in_channels), num_classes, meta.time_input)
    return ck, net, meta, num_classes


def _with_checkpoint_fields(spec: SampleSpec, ck: Path, latent_shape: tuple, tf32: bool, vae_sha, table) -> SampleSpec:
    """``spec`` with the fields of its identity only the checkpoint gives filled in."""
    from sit import checkpoints

    return dataclasses.replace(
        spec, checkpoint=checkpoints.identity(ck), latent_shape=latent_shape, tf32=tf32,
        vae_sha256=vae_sha,
        loss_table_sha256=settings_sha256(json.loads(table.to_json())) if table is not None else None,
    )


def _info(ck: Path, meta, desc, vae_space, table, table_src) -> dict:
    """The manifest's descriptive fields of the checkpoint, sampler, VAE and L_t table (not identity)."""
    return {"checkpoint": str(ck), "model": io.canonical(meta.model), "step": meta.step,
            "run_meta": {"path": meta.path, "prediction": meta.prediction, "time_input": meta.time_input,
                         "kind": meta.kind, "weights_taken": meta.weights},
            "sampler": desc, "vae_scale_factor": vae_space["scale_factor"] if vae_space else None,
            **{f"vae_{k}": v for k, v in (vae_space or {}).items() if k != "scale_factor"},
            "loss_table_file": table_src,
            "loss_table": json.loads(table.to_json()) if table is not None else None}

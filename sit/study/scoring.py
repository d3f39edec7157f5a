"""How a study scores its samples: the embedded digits through the classifier scorer, latents and
images through the VAE and the Inception scorer (plus FD-DINOv2 where DINOv2 weights are given).

For a ``--latents DIR`` / ``--data DIR --vae PATH`` study, every sample set is decoded with the
VAE (the one of the latent index, or ``--vae``), quantised to uint8 like saved samples and scored
by ``sit.evaluate.scorers.inception`` (weights found as ``sit eval`` finds them) against the
*training images*: up to ``ref_images`` of them (evenly spaced over the folder, ADM centre crop at
the training resolution), whose features are computed once per (images, scorer weights) and
cached, sha256-verified, in ``$SIT_CACHE/refstats``. An ADM reference batch (``ref``: an .npz with
``mu``/``sigma``, or images) replaces the training images where given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sit.config import ConfigError
from sit.study.scoring_config import ScoringConfig  # noqa: F401  (the record, torch-free; re-exported)


def check_inputs(study) -> None:
    """The scoring inputs of a latent / image study that can be checked without loading anything
    (a DINOv2 folder without config.json, a reference that is not an .npz file or a folder, missing
    Inception weights), refused in one line before the study folder is written."""
    base, sc = study.base, study.scoring
    if base.latents is None and base.data is None:
        return
    if sc.dinov2 is not None and not (Path(sc.dinov2) / "config.json").is_file():
        raise ConfigError("ScoringConfig", "dinov2", f"{sc.dinov2!r} is not a DINOv2 folder (no config.json); save "
                          "facebook/dinov2-large there with Dinov2Model.from_pretrained(...).save_pretrained(DIR)")
    if sc.ref is not None:
        p = Path(sc.ref)
        if not (p.is_dir() or (p.is_file() and p.suffix == ".npz")):
            raise ConfigError("ScoringConfig", "ref", f"{sc.ref!r} is " + ("not an .npz reference batch or an image "
                              "folder" if p.exists() else "missing") + "; give an ADM .npz or an image folder")
    if sc.inception not in ("auto", "fid-helper") and not Path(sc.inception).is_file():
        raise ConfigError("ScoringConfig", "inception", f"{sc.inception!r} is not a file; give the path of "
                          "pt_inception-2015-12-05-6726825d.pth, or auto / fid-helper")


def study_vae_spec(base) -> tuple[str, str, int]:
    """(VAE spec, training-image folder, image size) of a latent / image study's TrainConfig."""
    if base.latents is not None:
        from sit.data.latents import read_index

        index = read_index(base.latents)
        vae = base.vae or index.get("vae")
        if not vae or vae.startswith("tiny-random"):
            raise ConfigError("TrainConfig", "vae", f"is needed: the latent index of {base.latents!r} names no loadable VAE ({vae!r}); "
                              "give a local VAE folder")
        return vae, index["source"], int(index["image_size"])
    return base.vae or "ema", base.data, int(base.image_size or 256)


def study_decoder(study, vae_spec: str, device=None, batch_size: int = 64):
    """The VAE that decodes a latent / image study's samples, set to the latent space its cells
    trained in: the latent index's (scale, shift, per-channel normalisation: `index_space`) for
    ``--latents``, the VAE config's for ``--data``; the base's vae_scale / vae_shift override both."""
    from sit.vae import VAE

    base = study.base
    vae = VAE.from_pretrained(vae_spec, device=device, batch_size=batch_size, scale_factor=base.vae_scale,
                              shift_factor=base.vae_shift)
    if base.latents is not None:
        from sit.data.latents import index_space, read_index

        vae.space = index_space(read_index(base.latents), base.vae_scale, base.vae_shift)
    return vae


def training_images(root: str, size: int, n: int) -> tuple[np.ndarray, str]:
    """Up to ``n`` training images of ``root`` (evenly spaced over the sorted file list, ADM centre
    crop at ``size``) as uint8 (N, size, size, 3), and a key naming exactly that selection."""
    import hashlib

    from sit.data.imagefolder import ImageFolderDataset
    from sit.io import to_uint8

    ds = ImageFolderDataset(root, size, flip=False, on_error="skip")
    idx = np.unique(np.linspace(0, len(ds) - 1, min(n, len(ds))).round().astype(np.int64))
    imgs = torch.stack([ds[int(i)][0] for i in idx])
    h = hashlib.sha256(f"{Path(root).resolve()}|{size}|{len(ds)}|".encode())
    for i in idx:
        h.update(f"{ds.samples[int(i)][0]}\n".encode())
    return to_uint8(imgs), h.hexdigest()[:12]


def latent_scorer(study, device, log: Callable[[str], None]) -> Callable[[torch.Tensor, torch.Tensor], dict]:
    """score(latents (N, C, h, w), labels) -> {"fd": Inception FID, "sfd", "fd_dinov2"?}."""
    from sit.evaluate.scorers import make_scorer
    from sit.io import to_uint8

    sc: ScoringConfig = study.scoring
    vae_spec, root, size = study_vae_spec(study.base)
    vae = study_decoder(study, vae_spec, device, sc.batch_size)
    inc = make_scorer("inception", sc.inception, device=device, batch_size=sc.batch_size, progress=False)
    log(f"sit study: scoring with the Inception scorer ({inc.describe()}), samples decoded by the VAE {vae.name}")
    dino = None
    if sc.dinov2 is not None:
        dino = make_scorer("dinov2", sc.dinov2, device=device, batch_size=sc.batch_size)
    ref_mu = None
    if sc.ref is not None:
        from sit.evaluate.metrics import load_image_set

        rs = load_image_set(sc.ref, with_images=False)
        if rs.mu is not None:
            ref_mu = (rs.mu, rs.sigma)
            images, name = None, None
        else:
            images, name = np.asarray(rs.images), f"ref-{Path(sc.ref).stem}"
    else:
        images, key = training_images(root, size, sc.ref_images)
        name = f"train-{key}"
    from sit.evaluate.scorer import reference_features

    real = reference_features(inc, name, images, log=log) if images is not None else None
    real_dino = None
    if dino is not None:
        if images is None:
            raise ConfigError("", "ref", "holds only statistics, but FD-DINOv2 needs reference images")
        real_dino = reference_features(dino, name, images, log=log)

    def score(latents: torch.Tensor, y: torch.Tensor) -> dict:
        from sit.evaluate.metrics import feature_statistics, frechet_distance

        bad = int((~torch.isfinite(latents.reshape(latents.shape[0], -1))).any(dim=1).sum())
        if bad:
            raise ValueError(f"{bad} of {latents.shape[0]} samples contain NaN or inf")
        pixels = to_uint8(vae.decode(latents.to(vae.device)).cpu())
        fake = inc.features(pixels)
        if ref_mu is not None:
            out = {"fd": frechet_distance(*feature_statistics(fake["pool"]), *ref_mu)}
        else:
            s = inc.scores(real, fake)
            out = {"fd": s.fd, "sfd": s.sfd}
        if dino is not None:
            out["fd_dinov2"] = dino.scores(real_dino, dino.features(pixels)).fd
        return out

    return score


def describe(study) -> str:
    """One line: what the FD of this study is."""
    if study.base.latents is None and study.base.data is None:
        return "classifier-feature Fréchet distance (sit.evaluate.scorers.classifier; not an Inception FID)"
    sc = study.scoring
    ref = f"the reference batch {sc.ref}" if sc.ref else f"up to {sc.ref_images} training images"
    return f"Inception FID of VAE-decoded samples against {ref}" + (" (and FD-DINOv2)" if sc.dinov2 else "")


def identity(study) -> dict:
    """The scoring part of a study's identity (empty for the embedded study)."""
    if study.base.latents is None and study.base.data is None:
        return {}
    from sit.config import to_dict

    return {"scoring": to_dict(study.scoring)}

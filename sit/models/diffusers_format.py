"""The diffusers folder format of a SiT network: key mapping, export and verified reading.

A folder written by ``export_diffusers`` (``sit convert RUN --to diffusers OUT``)::

    OUT/model_index.json                 ["pipeline_sit", "SiTPipeline"] + its two components
    OUT/pipeline_sit.py                  the paper's ODE (``sit/models/diffusers_pipeline.py``)
    OUT/transformer/config.json          ``DiTTransformer2DModel`` config
    OUT/transformer/diffusion_pytorch_model.safetensors
    OUT/scheduler/scheduler_config.json  ``FlowMatchEulerDiscreteScheduler`` (sigma = paper t)
    OUT/vae/                             a latent run's VAE (``AutoencoderKL``), when it has one
    OUT/sit_diffusers.json               written last: the run's metadata (path, prediction,
                                         time input, learn_sigma, which weights, ...), the source
                                         checkpoint's sha256, the sha256 of every file above, and
                                         "sha256": its own hash (`metadata_digest`), so a one-field
                                         edit (prediction, path) is refused like a changed file

Key mapping (SiT / official DiT names -> diffusers ``DiTTransformer2DModel``):

    x_embedder.proj                 pos_embed.proj (pos_embed itself: a fixed table both rebuild)
    blocks.i.attn.qkv (rows q|k|v)  transformer_blocks.i.attn1.to_q / to_k / to_v
    blocks.i.attn.proj              transformer_blocks.i.attn1.to_out.0
    blocks.i.mlp.fc1 / fc2          transformer_blocks.i.ff.net.0.proj / ff.net.2
    blocks.i.adaLN_modulation.1     transformer_blocks.i.norm1.linear
    t_embedder.mlp.0 / mlp.2        transformer_blocks.i.norm1.emb.timestep_embedder.linear_1 / 2
    y_embedder.embedding_table      transformer_blocks.i.norm1.emb.class_embedder.embedding_table
    final_layer.adaLN_modulation.1  proj_out_1 (conditioned by block 0's emb)
    final_layer.linear              proj_out_2

diffusers keeps one timestep/label embedder per block; all copies are written equal and reading
refuses a folder where they differ. Its label table always has the null row (class dropout is
fixed at 0.1 there); a model without one gets a zero row, dropped again on reading. Its time
embedding differs (see ``sit.models.diffusers_pipeline``). Network layer: no sit program imports;
writing and reading need only torch + safetensors (diffusers is needed to *run* the folder).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sit.config import ModelConfig, from_dict, to_dict
from sit.models.sit import SiT

METADATA = "sit_diffusers.json"
FORMAT = "sit-diffusers"
FORMAT_VERSION = 2  # 2: sit_diffusers.json carries its own sha256 (1 had none: refused, export again)
WEIGHTS = "transformer/diffusion_pytorch_model.safetensors"
TRANSFORMER_CONFIG = "transformer/config.json"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
PIPELINE_FILE = "pipeline_sit.py"
MODEL_INDEX = "model_index.json"
_EMB = "norm1.emb."


class DiffusersFormatError(ValueError):
    """A diffusers folder that cannot be written or read back (one line)."""


def is_diffusers_folder(path: str | os.PathLike) -> bool:
    return Path(path).is_dir() and (Path(path) / METADATA).is_file()


def diffusers_config(config: ModelConfig) -> dict[str, Any]:
    """The ``DiTTransformer2DModel`` config of the same architecture (refuses what it cannot hold)."""
    if config.mlp_ratio != 4.0:
        raise DiffusersFormatError(f"diffusers' DiT has mlp_ratio 4 (this model: {config.mlp_ratio})")
    modern = [f for f in ModelConfig.MODERN_FIELDS if getattr(config, f)]
    if modern:
        raise DiffusersFormatError(f"diffusers' DiT has none of the modern block's options (this model: {', '.join(modern)})")
    return {
        "_class_name": "DiTTransformer2DModel",
        "num_attention_heads": config.num_heads,
        "attention_head_dim": config.hidden_size // config.num_heads,
        "in_channels": config.in_channels,
        "out_channels": config.out_channels,
        "num_layers": config.depth,
        "dropout": 0.0,
        "norm_num_groups": 32,
        "attention_bias": True,
        "sample_size": config.input_size,
        "patch_size": config.patch_size,
        "activation_fn": "gelu-approximate",
        "num_embeds_ada_norm": config.num_classes,
        "upcast_attention": False,
        "norm_type": "ada_norm_zero",
        "norm_elementwise_affine": False,
        "norm_eps": 1e-6,  # SiT's LayerNorm eps (diffusers' default is 1e-5)
    }


def _pairs(config: ModelConfig) -> list[tuple[str, str]]:
    """(sit key, diffusers key) for every tensor except q/k/v, the shared embedders and pos_embed."""
    out = [("x_embedder.proj", "pos_embed.proj"), ("final_layer.adaLN_modulation.1", "proj_out_1"),
           ("final_layer.linear", "proj_out_2")]
    for i in range(config.depth):
        b, d = f"blocks.{i}.", f"transformer_blocks.{i}."
        out += [(b + "attn.proj", d + "attn1.to_out.0"), (b + "mlp.fc1", d + "ff.net.0.proj"),
                (b + "mlp.fc2", d + "ff.net.2"), (b + "adaLN_modulation.1", d + "norm1.linear")]
    return [(s + suf, t + suf) for s, t in out for suf in (".weight", ".bias")]


_SHARED = [("t_embedder.mlp.0", "timestep_embedder.linear_1"), ("t_embedder.mlp.2", "timestep_embedder.linear_2")]


def to_diffusers(sd: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """SiT state_dict -> ``DiTTransformer2DModel`` state_dict (contiguous copies, same dtype)."""
    D = config.hidden_size
    out = {t: sd[s] for s, t in _pairs(config)}
    table = sd["y_embedder.embedding_table.weight"]
    if config.class_dropout_prob <= 0:  # diffusers always has the null row
        table = torch.cat([table, torch.zeros_like(table[:1])])
    for i in range(config.depth):
        b = f"blocks.{i}.attn.qkv."
        d = f"transformer_blocks.{i}.attn1."
        for suf in ("weight", "bias"):
            for name, part in zip(("to_q", "to_k", "to_v"), sd[b + suf].split(D, dim=0)):
                out[f"{d}{name}.{suf}"] = part
        e = f"transformer_blocks.{i}.{_EMB}"
        for s, t in _SHARED:
            for suf in (".weight", ".bias"):
                out[e + t + suf] = sd[s + suf]
        out[e + "class_embedder.embedding_table.weight"] = table
    return {k: v.detach().contiguous().clone() for k, v in out.items()}


def from_diffusers(sd: dict[str, Tensor], config: ModelConfig, source: str = "diffusers folder") -> dict[str, Tensor]:
    """``DiTTransformer2DModel`` state_dict -> SiT state_dict without ``pos_embed`` (a fixed table).
    Refuses missing / unexpected keys and per-block embedder copies that differ."""
    expected = set(to_diffusers(_shape_sd(config), config))
    missing, extra = sorted(expected - set(sd)), sorted(set(sd) - expected)
    if missing or extra:
        raise DiffusersFormatError(f"{source}: not a DiT of this config (missing {missing[:3]}, unexpected {extra[:3]})")
    out = {s: sd[t] for s, t in _pairs(config)}
    for i in range(config.depth):
        d = f"transformer_blocks.{i}.attn1."
        for suf in ("weight", "bias"):
            out[f"blocks.{i}.attn.qkv.{suf}"] = torch.cat([sd[f"{d}{n}.{suf}"] for n in ("to_q", "to_k", "to_v")])
    e0 = f"transformer_blocks.0.{_EMB}"
    names = [(s + suf, t + suf) for s, t in _SHARED for suf in (".weight", ".bias")]
    names.append(("y_embedder.embedding_table.weight", "class_embedder.embedding_table.weight"))
    for s, t in names:
        for i in range(1, config.depth):
            if not torch.equal(sd[f"transformer_blocks.{i}.{_EMB}{t}"], sd[e0 + t]):
                raise DiffusersFormatError(f"{source}: block {i}'s {t} differs from block 0's (SiT shares one embedder)")
        out[s] = sd[e0 + t]
    if config.class_dropout_prob <= 0:
        out["y_embedder.embedding_table.weight"] = out["y_embedder.embedding_table.weight"][:-1]
    return out


def _shape_sd(config: ModelConfig) -> dict[str, Tensor]:
    with torch.device("meta"):
        return SiT(config).state_dict()


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def metadata_digest(meta: dict[str, Any]) -> str:
    """sha256 of ``meta`` without its "sha256" key, as canonical JSON (sorted keys, no spaces): what
    the "sha256" field of sit_diffusers.json holds (the exported pipeline checks the same)."""
    import hashlib

    body = {k: v for k, v in meta.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _json_round_trip(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` as it will read back from its JSON file (tuples as lists, keys as strings)."""
    from sit.models.checkpoint import _jsonable

    return json.loads(json.dumps(_jsonable(obj)))


def _write_json(path: Path, obj: Any) -> None:
    from sit.io import write_text_atomic
    from sit.models.checkpoint import _jsonable

    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n", durable=True)


def export_diffusers(net: SiT, meta: dict[str, Any], out_dir: str | os.PathLike, *, source_sha256: str,
                     vae=None, latent_space: dict[str, Any] | None = None) -> Path:
    """Write ``out_dir`` (must not exist) as a diffusers folder of ``net`` (module docstring).
    ``meta``: the run's metadata (``RunMeta.to_dict()``); ``source_sha256``: the identity of the
    checkpoint it came from; ``vae``: a diffusers ``AutoencoderKL`` written as ``vae/`` (a latent
    model's decoder) with ``latent_space`` (`sit.vae.LatentSpace.record`: scale, shift,
    normalisation) the space its latents are decoded from. Written in a temporary sibling,
    renamed into place at the end."""
    from safetensors.torch import save_file

    from sit.io import atomic_path, fsync_dir

    out = Path(out_dir)
    if out.exists():
        raise DiffusersFormatError(f"{str(out)!r} exists; choose a new folder for the diffusers export")
    config = net.config
    tconf = diffusers_config(config)
    sd = to_diffusers({k: v.float() for k, v in net.state_dict().items()}, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; the export is an ordinary folder
    try:
        (tmp / "transformer").mkdir()
        with atomic_path(tmp / WEIGHTS, durable=True) as w:
            save_file(sd, str(w), metadata={"format": "pt"})
        _write_json(tmp / TRANSFORMER_CONFIG, tconf)
        _write_json(tmp / SCHEDULER_CONFIG, {
            "_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.0,
            "use_dynamic_shifting": False})
        index = {"_class_name": ["pipeline_sit", "SiTPipeline"],
                 "transformer": ["diffusers", "DiTTransformer2DModel"],
                 "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}
        names = [WEIGHTS, TRANSFORMER_CONFIG, SCHEDULER_CONFIG, MODEL_INDEX, PIPELINE_FILE]
        if vae is not None:
            vae.to(torch.float32).save_pretrained(str(tmp / "vae"), safe_serialization=True)
            index["vae"] = ["diffusers", type(vae).__name__]
            names += sorted(str(p.relative_to(tmp)) for p in (tmp / "vae").rglob("*") if p.is_file())
        _write_json(tmp / MODEL_INDEX, index)
        shutil.copyfile(Path(__file__).with_name("diffusers_pipeline.py"), tmp / PIPELINE_FILE)
        files = {name: _sha256(tmp / name) for name in names}
        record = _json_round_trip({
            "format": FORMAT, "format_version": FORMAT_VERSION, "weights": meta.get("weights"),
            "model": to_dict(config), "path": meta.get("path"), "prediction": meta.get("prediction"),
            "time_input": meta.get("time_input"), "learn_sigma": config.learn_sigma,
            "time_mapping": "transformer timestep = tau = 1 - t (paper time t = scheduler sigma), unscaled",
            "time_embedding": "SiT frequencies 10000^(-k/128): set downscale_freq_shift = 0 on every time_proj",
            "source_sha256": source_sha256, "files": files, "run": meta,
            "latent_space": latent_space, "vae": None if vae is None else "vae/",
        })
        record["sha256"] = metadata_digest(record)
        _write_json(tmp / METADATA, record)
        os.replace(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def read_metadata(folder: str | os.PathLike) -> dict[str, Any]:
    """The verified ``sit_diffusers.json`` of ``folder``: format, and every listed file's sha256."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / METADATA).read_text())
    except (OSError, ValueError) as e:
        raise DiffusersFormatError(f"{str(folder / METADATA)!r} cannot be read ({type(e).__name__})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DiffusersFormatError(f"{str(folder)!r}: {METADATA} is not a {FORMAT} file")
    if meta.get("format_version") != FORMAT_VERSION:
        from sit.config import field_error

        raise field_error(DiffusersFormatError,
            f"{str(folder)!r}: {METADATA} is {FORMAT} v{meta.get('format_version')}, not v{FORMAT_VERSION} (v1 has no "
            f"hash over its own fields): export it again with `sit convert RUN {{ConvertOptions.to}} diffusers NEW`")
    if meta.get("sha256") != metadata_digest(meta):
        raise DiffusersFormatError(
            f"{str(folder)!r}: {METADATA} was changed after it was written (its sha256 does not match its fields); "
            "export the run again rather than editing it")
    files = meta.get("files") or {}
    if WEIGHTS not in files:
        raise DiffusersFormatError(f"{str(folder)!r}: {METADATA} lists no {WEIGHTS}")
    for name, digest in files.items():
        p = folder / name
        if not p.is_file():
            raise DiffusersFormatError(f"{str(folder)!r}: {name} is missing")
        if _sha256(p) != digest:
            raise DiffusersFormatError(f"{str(folder)!r}: {name} is corrupt or was changed (sha256 mismatch)")
    return meta


def load_diffusers(folder: str | os.PathLike) -> tuple[SiT, dict[str, Any]]:
    """(SiT in eval mode, float32, the run's metadata dict) from a folder of ``export_diffusers``,
    after verifying every file's sha256 and that the transformer config matches the model config."""
    from safetensors.torch import load_file

    folder = Path(folder)
    meta = read_metadata(folder)
    config = from_dict(ModelConfig, meta["model"])
    tconf = json.loads((folder / TRANSFORMER_CONFIG).read_text())
    want = diffusers_config(config)
    diff = sorted(k for k in want if k != "_class_name" and tconf.get(k) != want[k])
    if diff:
        raise DiffusersFormatError(f"{str(folder)!r}: transformer/config.json disagrees with {METADATA} on {diff}")
    sd = from_diffusers(load_file(str(folder / WEIGHTS)), config, source=str(folder))
    net = SiT(config)
    sd["pos_embed"] = net.pos_embed.detach().clone()
    net.load_state_dict(sd, strict=True)
    run = dict(meta.get("run") or {})
    run.update(model=to_dict(config), path=meta["path"], prediction=meta["prediction"], time_input=meta["time_input"])
    run["converted_from_sha256"] = meta.get("source_sha256")
    return net.eval(), run

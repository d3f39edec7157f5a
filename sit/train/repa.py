"""Representation alignment (REPA, Yu et al. 2024, "Representation Alignment for Generation"): a
`sit.train.seam.LossTerm` that aligns the hidden states of one SiT block with the patch
features of a frozen pretrained vision encoder.

With h_n (n = 1..N) the tokens after block ``repa_depth`` of the network on x_t, h_phi a projector
(3-layer MLP with SiLU, width ``repa_proj_dim``) and y*_n the encoder's patch features of the
clean image x*, the term is (REPA eq. 8, per sample, averaged over the batch by the loop)

    L_REPA = -(1/N) sum_n cos(y*_n, h_phi(h_n)),      cos(a, b) = <a, b> / (|a| |b|)

and the step minimises L_denoise + lambda L_REPA (lambda = ``repa_coeff``, 0.5 as REPA).

Depth rule: REPA aligns block 8 of SiT-XL/2 (28 blocks) and block 4 of SiT-B/2 (12 blocks);
without ``repa_depth`` sit takes ceil(2 depth / 7): XL 8, L 7, B and S 4, the 4-block demo 2.

Encoders (`load_encoder`):
  * a local DINOv2 folder (``transformers`` ``Dinov2Model.from_pretrained(PATH)``, never a
    download): images in [-1, 1] are mapped to [0, 1], resized (bicubic) to 224 px per 256 px of
    training resolution (REPA's 224 for 256, 448 for 512), normalised with the ImageNet mean and
    std; the patch tokens (the CLS token dropped) are the targets.
  * ``digits-cnn``: offline, for the embedded demo: the spatial feature map after the second
    convolution of a `sit.evaluate.classifier.DigitClassifier` trained on the run's embedded
    training split with seed 1 (the quality number's classifier uses seed 0 on another split;
    both are the same small CNN, so read the demo's REPA quality numbers with that in mind).
Token grids: when the encoder's grid (g_e x g_e) differs from SiT's (input_size / patch_size),
the feature map is average-pooled (g_e > g) or bilinearly interpolated (g_e < g) to SiT's grid.

The encoder needs pixels: the embedded data is pixels; an ImageFolder (``data`` + ``vae``) gives
the loaded image beside its latent; pre-extracted latents give the centre crops stored beside them
by `sit extract --pixels` (no VAE runs; a mirrored latent comes with the mirrored image), and a
latent folder without them is refused before the run folder is made (`check_repa`).

REPA's choices (sihyun-yu/REPA), each a TrainConfig field whose default keeps sit's earlier runs:
``repa_init`` "xavier" (xavier-uniform projector weights, zero biases), ``repa_pos_embed``
"resample" (the DINOv2 position embedding resampled once to the encoder's input grid with
antialiased bicubic, as timm's ``resample_abs_pos_embed``, instead of transformers' run-time
interpolation), several encoders (``repa_encoder`` "A,B": one projector each, the per-encoder
losses averaged), and the block (``repa_depth``; REPA aligns block 8 of SiT-L and SiT-XL). A
DINOv2 runs in bfloat16 (weights and activations) when ``precision`` is bf16, else float32.

Identity and validation: `check_repa` (before the run folder exists) refuses a depth beyond the
network, a folder that is not a DINOv2 (another ``model_type``), an unreadable config, truncated
weights and weights whose width differs from the config, each in one line; `encoder_records`
(sha256 of each folder's files) go into the run's data record, and a resume whose encoder files
changed behind the same path is refused (`check_resumed_encoders`).

Must not import: sit.generate, sit.commands.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sit.config import ConfigError, ModelConfig, TrainConfig
from sit.train.seam import LossTerm, Outputs

EMBEDDED_ENCODERS = ("digits-cnn",)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def default_depth(depth: int) -> int:
    """The block REPA aligns without ``repa_depth``: ceil(2 depth / 7) (XL 28 -> 8, B 12 -> 4)."""
    return max(1, min(depth, math.ceil(2 * depth / 7)))


def repa_loss(z_tilde: Tensor, z: Tensor) -> Tensor:
    """-(1/N) sum_n cos(z_n, z~_n) per sample: z_tilde (B, N, C) projected hidden states, z (B, N, C)
    encoder features -> (B,), computed in float32."""
    if z_tilde.shape != z.shape:
        raise ValueError(f"REPA: projected tokens {tuple(z_tilde.shape)} and encoder tokens {tuple(z.shape)} differ")
    a = F.normalize(z_tilde.float(), dim=-1)
    b = F.normalize(z.float(), dim=-1)
    return -(a * b).sum(-1).mean(-1)


def match_grid(z: Tensor, grid: int) -> Tensor:
    """Patch tokens (B, N, C) on a square g x g grid -> (B, grid^2, C): average-pooled when g > grid,
    bilinearly interpolated when g < grid, unchanged when equal."""
    B, N, C = z.shape
    g = math.isqrt(N)
    if g * g != N:
        raise ValueError(f"REPA: the encoder gives {N} patch tokens, not a square grid")
    if g == grid:
        return z
    m = z.transpose(1, 2).reshape(B, C, g, g)
    m = F.adaptive_avg_pool2d(m, grid) if g > grid else F.interpolate(m, size=(grid, grid), mode="bilinear", align_corners=False)
    return m.flatten(2).transpose(1, 2)


class Encoder:
    """A frozen feature extractor: pixels (B, C, H, W) in [-1, 1] -> patch tokens (B, N, dim).
    Not an nn.Module attribute of the term, so it is neither trained nor saved."""

    name: str
    dim: int

    def __call__(self, pixels: Tensor) -> Tensor:
        raise NotImplementedError


class DigitsEncoder(Encoder):
    """``digits-cnn``: see the module docstring."""

    SEED = 1

    def __init__(self, dataset: str, image_size: int, device: torch.device):
        from sit.data.embedded import load_embedded
        from sit.evaluate.classifier import get_classifier

        x, y = load_embedded(dataset, "train", image_size=image_size)
        self.net = get_classifier(x, y, num_classes=10, seed=self.SEED).to(device).requires_grad_(False).eval()
        self.name, self.dim = "digits-cnn", self.net.conv2.out_channels

    @torch.no_grad()
    def __call__(self, pixels):
        n = self.net
        h = F.relu(n.conv2(F.relu(n.conv1(pixels.to(n.conv1.weight.dtype)))))  # (B, dim, g, g)
        return h.flatten(2).transpose(1, 2)


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def encoder_names(cfg: TrainConfig) -> list[str]:
    """The encoders of ``cfg.repa_encoder`` ("A" or "A,B": REPA's list)."""
    return [e.strip() for e in (cfg.repa_encoder or "").split(",") if e.strip()]


def _bad(problem: str) -> ConfigError:
    return ConfigError("TrainConfig", "repa_encoder", problem)


def inspect_dinov2(folder: str) -> dict:
    """The config of a local DINOv2 folder, checked without building the model: config.json readable
    with ``model_type`` dinov2, a weights file, and (safetensors) a complete file whose tensors have
    the config's width. Each problem is one `ConfigError` line naming the folder."""
    path = Path(folder).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"TrainConfig.repa_encoder: no DINOv2 folder at {str(path)!r} (config.json + weights); save one there with "
            f"transformers.Dinov2Model.from_pretrained('facebook/dinov2-base').save_pretrained({str(path)!r}) on a "
            f"machine with network, or name an embedded encoder {list(EMBEDDED_ENCODERS)}"
        )
    try:
        conf = json.loads((path / "config.json").read_text())
        if not isinstance(conf, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        raise _bad(f"{str(path)!r}: config.json is unreadable ({str(e).splitlines()[0][:120]})") from None
    if conf.get("model_type") != "dinov2":
        raise _bad(f"{str(path)!r} holds a {conf.get('model_type')!r} model, not a DINOv2 (config.json model_type "
                   "'dinov2'); give a folder saved with transformers.Dinov2Model.save_pretrained")
    width = conf.get("hidden_size")
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise _bad(f"{str(path)!r}: config.json's hidden_size {width!r} is not a positive integer")
    weights = [path / n for n in WEIGHT_FILES if (path / n).is_file()]
    if not weights:
        raise _bad(f"{str(path)!r} has config.json but no weights ({' or '.join(WEIGHT_FILES)}); save the model again")
    if weights[0].name == "model.safetensors":
        shapes = _safetensors_shapes(weights[0])
        for key, shape in shapes.items():
            if key.endswith("embeddings.cls_token") and shape[-1] != width:
                raise _bad(f"{str(path)!r}: the weights are {shape[-1]} wide but config.json says hidden_size {width}; "
                           "the folder mixes two models (save it again)")
    return conf


def _safetensors_shapes(file: Path) -> dict[str, list[int]]:
    """{tensor: shape} from a safetensors header, the file's length checked against it (truncation)."""
    import struct

    size = file.stat().st_size
    try:
        with open(file, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if not 0 < n <= size - 8:
                raise ValueError("header length beyond the file")
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        raise _bad(f"{str(file)!r} is not a readable safetensors file ({str(e).splitlines()[0][:80]}); save the model again") from None
    if 8 + n + end != size:
        raise _bad(f"{str(file)!r} is truncated or padded ({size} bytes, its header describes {8 + n + end}); "
                   "copy or save the encoder again")
    return {k: v["shape"] for k, v in header.items() if k != "__metadata__"}


def folder_sha256(folder: str) -> str:
    """sha256 over (name, sha256) of a DINOv2 folder's config.json and weight file(s)."""
    from sit.io import sha256_file

    path = Path(folder).expanduser()
    h = hashlib.sha256()
    for name in ("config.json", *WEIGHT_FILES):
        if (path / name).is_file():
            h.update(f"{name}|{sha256_file(path / name)}|".encode())
    return h.hexdigest()


def encoder_records(cfg: TrainConfig) -> list[dict]:
    """What the run records of its folder encoders (name and `folder_sha256`); embedded encoders,
    made from the run's own seed and data, record nothing."""
    names = [n for n in encoder_names(cfg) if n not in EMBEDDED_ENCODERS]
    for n in names:   # (a resumed run: the folder may have gone or changed since the start)
        inspect_dinov2(n)
    return [{"name": n, "sha256": folder_sha256(n)} for n in names]


def check_resumed_encoders(recorded: dict | None, now: dict) -> None:
    """A resumed REPA run must align with the encoders it started with: files changed behind the
    same path are refused in one line."""
    old = {e["name"]: e.get("sha256") for e in (recorded or {}).get("repa_encoders", [])}
    for e in now.get("repa_encoders", []):
        if e["name"] in old and old[e["name"]] != e["sha256"]:
            raise _bad(f"{e['name']!r} holds another model than the run started with (sha256 {str(old[e['name']])[:12]}... "
                       f"recorded, {e['sha256'][:12]}... now); resume with the encoder the run was trained with")


def check_repa(cfg: TrainConfig, model_cfg: ModelConfig) -> None:
    """Everything REPA can refuse, checked before the run folder is made: the block, the encoders
    (`inspect_dinov2`), the data (latents need stored pixels)."""
    depth = cfg.repa_depth if cfg.repa_depth is not None else default_depth(model_cfg.depth)
    if depth > model_cfg.depth:
        raise ConfigError("TrainConfig", "repa_depth", f"{depth} exceeds the network's {model_cfg.depth} blocks")
    names = encoder_names(cfg)
    if len(set(names)) != len(names):
        raise _bad(f"names an encoder twice ({cfg.repa_encoder!r})")
    for name in names:
        if name in EMBEDDED_ENCODERS:
            if cfg.data is not None or cfg.latents is not None:
                raise ValueError(f"TrainConfig.repa_encoder {name!r} is for the embedded datasets; give a DINOv2 folder for image data")
        else:
            inspect_dinov2(name)
    if cfg.latents is not None:
        from sit.data.latents import read_index

        if "pixels" not in read_index(cfg.latents):
            raise _bad(f"needs the images, and the latent folder {cfg.latents!r} holds none; extract it again into a "
                       "new folder with `sit extract` and {ExtractOptions.pixels} (the centre crops beside the latents)")


def resample_pos_embed(pos: Tensor, grid: int) -> Tensor:
    """A ViT position embedding (1, 1 + g0^2, D) (class token first) resampled to (1, 1 + grid^2, D):
    the patch part as a (D, g0, g0) image through antialiased bicubic interpolation in float32
    (timm's ``resample_abs_pos_embed``), the class token's unchanged."""
    cls, patch = pos[:, :1], pos[:, 1:]
    g0 = math.isqrt(patch.shape[1])
    if g0 * g0 != patch.shape[1]:
        raise ValueError(f"position embedding of {patch.shape[1]} patches is not a square grid")
    if g0 == grid:
        return pos
    m = patch.reshape(1, g0, g0, -1).permute(0, 3, 1, 2).float()
    m = F.interpolate(m, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
    return torch.cat([cls, m.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).to(pos.dtype)], dim=1)


class Dinov2Encoder(Encoder):
    """A DINOv2 (``transformers`` Dinov2Model) from a local folder; see the module docstring."""

    def __init__(self, folder: str, image_size: int, device: torch.device, pos_embed: str = "runtime",
                 dtype: torch.dtype = torch.float32):
        try:
            from transformers import Dinov2Model
        except ImportError:
            raise ImportError("TrainConfig.repa_encoder: a DINOv2 encoder needs transformers (pip install 'sit[repa]')") from None
        path = Path(folder).expanduser()
        inspect_dinov2(folder)
        try:
            model, info = Dinov2Model.from_pretrained(str(path), output_loading_info=True)
        except Exception as e:  # transformers / safetensors / torch report in many forms and many lines
            raise _bad(f"{str(path)!r} is not a loadable Dinov2Model ({type(e).__name__}: "
                       f"{(str(e).strip().splitlines() or [''])[0][:160]})") from None
        missing = list(info.get("missing_keys", [])) + [k for k, *_ in info.get("mismatched_keys", [])]
        if missing:
            raise _bad(f"{str(path)!r}: the weights lack or mismatch {len(missing)} of the model's tensors (e.g. "
                       f"{missing[0]!r}); the encoder would train from random weights: save the model again")
        p = int(model.config.patch_size)
        self.resolution = max(p, round(224 * image_size / 256 / p) * p)
        if pos_embed == "resample":
            emb = model.embeddings
            emb.position_embeddings = nn.Parameter(resample_pos_embed(emb.position_embeddings.data, self.resolution // p),
                                                   requires_grad=False)
        self.dtype = dtype   # bfloat16 when training is bf16: weights, activations and the targets
        self.model = model.to(device, dtype).requires_grad_(False).eval()
        self.name, self.dim = str(path), int(model.config.hidden_size)
        self.mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, pixels):
        x = (pixels.float() + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bicubic", align_corners=False)
        x = (x - self.mean) / self.std
        return self.model(pixel_values=x.to(self.dtype)).last_hidden_state[:, 1:]  # (B, N, dim), CLS dropped


def load_encoder(name: str, cfg: TrainConfig, image_size: int, device: torch.device) -> Encoder:
    """The encoder ``name`` (an embedded one or a local DINOv2 folder) for images of ``image_size`` px."""
    if name == "digits-cnn":
        if cfg.data is not None or cfg.latents is not None:
            raise ValueError("TrainConfig.repa_encoder 'digits-cnn' is for the embedded datasets; give a DINOv2 folder for image data")
        return DigitsEncoder(cfg.dataset, image_size, device)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    return Dinov2Encoder(name, image_size, device, pos_embed=cfg.repa_pos_embed, dtype=dtype)


def projector(hidden_size: int, proj_dim: int, out_dim: int, init: str = "torch") -> nn.Sequential:
    """REPA's projector h_phi: Linear, SiLU, Linear, SiLU, Linear; ``init`` "xavier": xavier-uniform
    weights and zero biases (REPA), else PyTorch's defaults (drawn from the caller's RNG)."""
    mlp = nn.Sequential(nn.Linear(hidden_size, proj_dim), nn.SiLU(), nn.Linear(proj_dim, proj_dim), nn.SiLU(),
                        nn.Linear(proj_dim, out_dim))
    if init == "xavier":
        for m in mlp:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
    return mlp


class RepaTerm(LossTerm):
    """REPA's alignment term (module docstring); owns one projector per encoder (the first is
    ``projector``, as in single-encoder runs' checkpoints; the others ``extra_projectors``), reads
    block ``depth``'s output from the objective's outputs (``Outputs.hidden``); the loss is the mean
    over encoders of `repa_loss`."""

    name = "repa"
    needs_pixels = True

    def __init__(self, encoder: Encoder | list[Encoder], hidden_size: int, depth: int, coeff: float, proj_dim: int,
                 grid: int, init: str = "torch"):
        super().__init__()
        encoders = list(encoder) if isinstance(encoder, (list, tuple)) else [encoder]
        self.depth, self.coeff, self.grid = depth, float(coeff), grid
        self.hidden_blocks = (depth,)
        self.projector = projector(hidden_size, proj_dim, encoders[0].dim, init)
        self.extra_projectors = nn.ModuleList([projector(hidden_size, proj_dim, e.dim, init) for e in encoders[1:]])
        self.encoders = encoders  # plain list of frozen encoders: not in state_dict / parameters()
        self.encoder = encoders[0]

    def forward(self, out: Outputs) -> Tensor:
        h, pixels = out.hidden.get(self.depth), out.pixels
        if h is None:
            raise RuntimeError(f"REPA: the objective did not hand over block {self.depth}'s output")
        if pixels is None:
            raise ValueError("REPA: the data source gave no pixels for the encoder")
        return self.loss(h, pixels)

    def loss(self, h: Tensor, pixels: Tensor) -> Tensor:
        """Per-sample REPA loss (B,) of hidden tokens ``h`` (B, N, hidden) against the images."""
        projs = [self.projector, *self.extra_projectors]
        out = 0
        for enc, proj in zip(self.encoders, projs):
            with torch.no_grad():
                z = match_grid(enc(pixels), self.grid)  # (B, N, dim)
            out = out + repa_loss(proj(h), z)
        return out / len(projs)


def build_repa(cfg: TrainConfig, model_cfg: ModelConfig, device: torch.device) -> RepaTerm:
    """The REPA term of ``cfg`` with its encoders on ``device`` (projectors initialised from the
    caller's RNG state)."""
    check_repa(cfg, model_cfg)
    depth = cfg.repa_depth if cfg.repa_depth is not None else default_depth(model_cfg.depth)
    embedded = cfg.data is None and cfg.latents is None
    if embedded:
        image_size = model_cfg.input_size
    elif cfg.latents is not None:
        from sit.data.latents import read_index

        image_size = int(read_index(cfg.latents)["image_size"])
    else:
        image_size = cfg.image_size or 256
    encoders = [load_encoder(n, cfg, image_size, device) for n in encoder_names(cfg)]
    grid = model_cfg.input_size // model_cfg.patch_size
    return RepaTerm(encoders, model_cfg.hidden_size, depth, cfg.repa_coeff, cfg.repa_proj_dim, grid, init=cfg.repa_init)

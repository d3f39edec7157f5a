"""The network: SiT backbone (``sit.py``), paper-time adapter (``field.py``), checkpoints (``checkpoint.py``)."""

from sit.models.field import ModelField
from sit.models.sit import SiT, forward_flops, param_count

__all__ = ["SiT", "ModelField", "param_count", "forward_flops", "load_model", "save_model", "export_official"]


def __getattr__(name):  # checkpoint I/O imported on first use
    if name in ("load_model", "save_model", "export_official", "read_checkpoint", "infer_config"):
        from sit.models import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'sit.models' has no attribute {name!r}")

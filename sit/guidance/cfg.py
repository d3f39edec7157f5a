"""Classifier-free guidance (paper section 3.3), the `STRATEGIES` row "cfg": the model itself with
the null label ``null_class`` (= num_classes for SiT/DiT; a model has one iff it was trained with
label dropout, `sit.network_sampler.null_class`), conditional and null rows in one batched call.

Math core: imports torch (through `sit.guidance.guided`) and `sit.guidance` only.
"""

from __future__ import annotations

from sit.guidance.guided import GuidedModel


def wrap(model_fn, guidance, *, null_class: int, guide_fn=None) -> GuidedModel:
    """``model_fn`` guided towards its conditional prediction away from the null label's."""
    return GuidedModel(model_fn, guidance, null_class)

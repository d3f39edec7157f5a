"""Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"), the
`STRATEGIES` row "autoguidance": a weaker guide network (fewer training steps, or smaller) of the
same data, path, prediction and conditioning, called with the SAME label in a second evaluation
per step (``GuidedModel.guide_nfe``). Its record is `sit.guidance.Guide`; the guide is loaded into
it by `sit.generate.glue.load_guide` and made a prediction function by
`sit.network_sampler.build_sampler`, which passes it here as ``guide_fn``.

Math core: imports torch (through `sit.guidance.guided`) and `sit.guidance` only.
"""

from __future__ import annotations

from sit.guidance.guided import GuidedModel


def wrap(model_fn, guidance, *, null_class=None, guide_fn) -> GuidedModel:
    """``model_fn`` guided towards its prediction away from the guide's (same labels)."""
    return GuidedModel(model_fn, guidance, None, guide_fn=guide_fn)

"""The scorers of the evaluation seam (``sit.evaluate.scorer``), one module each; imported where used.

  inception   Inception-v3 with the ADM evaluator's preprocessing: FID, sFID, IS, precision / recall
  classifier  the small digit CNN trained by sit on the real data: classifier FD, P/R, accuracy
  dinov2      FD-DINOv2 (Stein et al. 2023) from a local transformers ``Dinov2Model`` folder
  pixel       Fréchet distance of raw pixel values in [0, 1] (8x8 digits: 64-d)
"""

SCORERS = ("inception", "classifier", "dinov2", "pixel")

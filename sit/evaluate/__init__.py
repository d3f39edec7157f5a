"""Evaluation (metrics only; sample sets are made by `sit.generate`): Inception features with the ADM
evaluator's preprocessing (``inception``, ``resize``), FID / sFID / IS / precision / recall
(``metrics``), classifier-space quick quality for the embedded datasets (``classifier``) and plots.

Submodules are imported where used (no heavy imports here); see docs/evaluation.md.
"""

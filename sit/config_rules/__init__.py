"""TrainConfig's validation, one torch-free module per feature (stdlib only).

Each feature owns its rules and its bounds: `basics` (choice fields, counts, optimiser, loss weight,
batch), `preview` (the preview sampler), `repa`, `phema` (post-hoc EMA), `cosine` (LightningDiT's
cosine term), `meanflow`, `vae` (the latent scale / shift). `TrainConfig.__post_init__` runs
`TRAIN_CHECKS` in order; the first broken rule is the one reported. A check takes the TrainConfig
and raises `ConfigError` / ValueError naming the field. Adding a feature: its module and its
check(s) in `TRAIN_CHECKS`.

Imports no torch. Must not import: `sit.config` (which imports this package), anything of sit but
`sit.config_rules` and `sit.field_errors` and `sit.bounds` and `sit.sampler_kinds`.
"""

from sit.config_rules.basics import check_batch_and_cfg, check_choices, check_counts, check_loss_weight, check_optimiser
from sit.config_rules.cosine import check_cosine_coeff, check_cosine_needs_velocity
from sit.config_rules.meanflow import check_meanflow
from sit.config_rules.phema import check_phema
from sit.config_rules.preview import check_preview
from sit.config_rules.repa import check_repa_fields
from sit.config_rules.vae import check_vae

TRAIN_CHECKS = (check_choices, check_preview, check_counts, check_optimiser, check_loss_weight, check_batch_and_cfg,
                check_repa_fields, check_phema, check_cosine_coeff, check_meanflow, check_cosine_needs_velocity, check_vae)

"""Sample sets: typed specs, per-row seeded noise, a sharded resumable engine, and model glue.

Modules (each imports only those above it):
  spec      `SampleSpec` (the set's identity), `DiscreteSampleConfig`, flag-value parsers
  presets   the paper's settings as typed records
  noise     `RowNoise` (sample i's randomness from seed + i), labels, --noise files
  parts     the part files: listing, verification, gaps, merge into the npz
  engine    `generate`: resume, manifest, sharding over ranks; `sample_images` in memory
  glue      network + RunMeta -> latent sampler (`latent_sampler`, `prepare_network`, `load_guide`)
  evaldata  data / model loading for the measurement commands
  run       `sample_set`: checkpoint + spec -> sample set (what `sit sample` runs)
"""

from sit.generate.engine import GenerateResult, generate, merge_parts, missing_chunks, sample_images, scan_parts
from sit.generate.evaldata import default_data_spec, eval_batches, load_eval_data, load_eval_model, match_model_input
from sit.generate.glue import (
    build_latent_sampler,
    default_device,
    find_loss_table,
    latent_sampler,
    load_guide,
    loss_table_path,
    model_num_classes,
    prepare_network,
    sample_config,
)
from sit.generate.noise import RowNoise, labels_for, load_noise, parse_labels
from sit.generate.spec import DiscreteSampleConfig, SampleSpec, parse_channels, parse_interval

__all__ = [
    "GenerateResult", "generate", "merge_parts", "missing_chunks", "sample_images", "scan_parts",
    "default_data_spec", "eval_batches", "load_eval_data", "load_eval_model", "match_model_input",
    "build_latent_sampler", "default_device", "find_loss_table", "latent_sampler", "load_guide", "loss_table_path",
    "model_num_classes", "prepare_network", "sample_config", "RowNoise", "labels_for", "load_noise",
    "parse_labels", "DiscreteSampleConfig", "SampleSpec", "parse_channels", "parse_interval",
]

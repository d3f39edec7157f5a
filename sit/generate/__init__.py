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

from sit.lazy_exports import lazy_exports

# the names below are imported when first used (PEP 562), so importing one submodule (a torch-free
# record, e.g. for `--help`) does not import the others
_EXPORTS = {
    "GenerateResult": ("sit.generate.engine", "GenerateResult"),
    "generate": ("sit.generate.engine", "generate"),
    "merge_parts": ("sit.generate.engine", "merge_parts"),
    "missing_chunks": ("sit.generate.engine", "missing_chunks"),
    "sample_images": ("sit.generate.engine", "sample_images"),
    "scan_parts": ("sit.generate.engine", "scan_parts"),
    "default_data_spec": ("sit.generate.evaldata", "default_data_spec"),
    "eval_batches": ("sit.generate.evaldata", "eval_batches"),
    "load_eval_data": ("sit.generate.evaldata", "load_eval_data"),
    "load_eval_model": ("sit.generate.evaldata", "load_eval_model"),
    "match_model_input": ("sit.generate.evaldata", "match_model_input"),
    "build_latent_sampler": ("sit.generate.glue", "build_latent_sampler"),
    "default_device": ("sit.generate.glue", "default_device"),
    "find_loss_table": ("sit.generate.glue", "find_loss_table"),
    "latent_sampler": ("sit.generate.glue", "latent_sampler"),
    "load_guide": ("sit.generate.glue", "load_guide"),
    "loss_table_path": ("sit.generate.glue", "loss_table_path"),
    "model_num_classes": ("sit.generate.glue", "model_num_classes"),
    "prepare_network": ("sit.generate.glue", "prepare_network"),
    "sample_config": ("sit.generate.glue", "sample_config"),
    "RowNoise": ("sit.generate.noise", "RowNoise"),
    "labels_for": ("sit.generate.noise", "labels_for"),
    "load_noise": ("sit.generate.noise", "load_noise"),
    "parse_labels": ("sit.generate.noise", "parse_labels"),
    "DiscreteSampleConfig": ("sit.generate.spec", "DiscreteSampleConfig"),
    "SampleSpec": ("sit.generate.spec", "SampleSpec"),
    "parse_channels": ("sit.generate.spec", "parse_channels"),
    "parse_interval": ("sit.generate.spec", "parse_interval"),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)


__all__ = [
    "GenerateResult", "generate", "merge_parts", "missing_chunks", "sample_images", "scan_parts",
    "default_data_spec", "eval_batches", "load_eval_data", "load_eval_model", "match_model_input",
    "build_latent_sampler", "default_device", "find_loss_table", "latent_sampler", "load_guide", "loss_table_path",
    "model_num_classes", "prepare_network", "sample_config", "RowNoise", "labels_for", "load_noise",
    "parse_labels", "DiscreteSampleConfig", "SampleSpec", "parse_channels", "parse_interval",
]

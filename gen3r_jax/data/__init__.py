"""Training data: the official Gen3R dataset layout, array_record conversion, clip sampling and grain pipelines.

* :mod:`~gen3r_jax.data.layout`: list files, transforms.json, captions, per-dataset weights; scene records.
* :mod:`~gen3r_jax.data.clips`: clip sampling (stride, padding, start), resize + centre crop, K, relative poses.
* :mod:`~gen3r_jax.data.captions`: caption choice and ``clean_prompt``.
* :mod:`~gen3r_jax.data.tfds_builder`: root → array_record (TFDS, no TensorFlow needed) and its reader.
* :mod:`~gen3r_jax.data.pipeline`: the grain pipeline (shuffle, shard, mix, batch, prefetch, resumable).
* :mod:`~gen3r_jax.data.synthetic`: procedurally rendered scenes in the official layout, with exact depth.

See ``docs/data.md``. Submodules are imported on demand (no heavy imports here).
"""

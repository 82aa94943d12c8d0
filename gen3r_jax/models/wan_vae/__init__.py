"""Wan2.1 video VAE: ``vae.py`` (the model, config, latent codec) and ``blocks.py`` (the causal encoder/decoder
blocks, also used by :mod:`gen3r_jax.models.geometry_adapter`)."""

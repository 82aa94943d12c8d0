"""Gen3R's geometry adapter (``model.py``): a Wan-VAE-style codec of VGGT point/depth maps (blocks from
:mod:`gen3r_jax.models.wan_vae.blocks`)."""

"""VGGT-1B (aggregator, camera head, DPT depth/point heads) in Flax NNX, and its geometry utilities."""

from gen3r_jax.models.vggt.config import VGGTConfig
from gen3r_jax.models.vggt.model import VGGT, abstract_model, create, validate_images

__all__ = ["VGGT", "VGGTConfig", "abstract_model", "create", "validate_images"]

"""LPIPS-AlexNet, the network the evaluation's perceptual metric runs (:mod:`gen3r_jax.eval.lpips`)."""

from gen3r_jax.models.lpips.model import CHANNELS, LPIPS, TORCHVISION_CONV_INDEX, LPIPSConfig

__all__ = ["CHANNELS", "LPIPS", "LPIPSConfig", "TORCHVISION_CONV_INDEX"]

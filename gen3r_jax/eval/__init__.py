"""Evaluation as in the Gen3R paper (see ``docs/evaluation.md``).

* :mod:`~gen3r_jax.eval.image`: PSNR, SSIM (jit, batched over frames; torchmetrics' or scikit-image's convention);
  :mod:`~gen3r_jax.eval.lpips`: LPIPS-AlexNet (network :mod:`~gen3r_jax.models.lpips`, weights converted by
  :mod:`~gen3r_jax.convert.lpips` from user-provided files).
* :mod:`~gen3r_jax.eval.pointcloud`: Sim(3) alignment, accuracy / completeness / Chamfer / relative %, with the
  ``"official"`` (repository) and ``"corrected"`` protocols; primitives in :mod:`~gen3r_jax.eval.pcd_ops`.
* :mod:`~gen3r_jax.eval.camera`: relative rotation / translation errors over frame pairs (two named relative-pose
  conventions, VGGT's current one by default), AUC@{5,10,15,30}.
* :mod:`~gen3r_jax.eval.io` (sample output format, its reader and reference writer),
  :mod:`~gen3r_jax.eval.scene` (ground-truth scene folders) and :mod:`~gen3r_jax.apps.evaluate` (the driver, in the application layer
  behind ``launch/eval.py``).

Submodules are imported on use; importing this package pulls in nothing heavy.
"""

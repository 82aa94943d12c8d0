"""Train Gen3R (stage 1: the geometry adapter; stage 2: the DiT) from a config file.

    python launch/train.py --config configs/cpu_debug.py --workdir /tmp/gen3r_debug
    python launch/train.py --config configs/cpu_debug.py:stage2 --workdir /tmp/gen3r_debug2
    python launch/train.py --config configs/gpu_h100.py:stage1 --workdir /ckpt/stage1 --config.data.root=/data
    # per-device memory of the stage-2 entries on their target hardware (abstract; allocates nothing):
    python launch/train.py --config configs/tpu_v5.py --workdir /tmp/dry --dry_run
    # several processes (one per host; on one machine for testing):
    python launch/train.py --config configs/cpu_debug.py --workdir /tmp/w --coordinator_address=localhost:12345 \
        --num_processes=2 --process_id=0   # and --process_id=1 in a second shell
    # slow or overloaded hosts: --heartbeat_timeout_s=600 (jax aborts a run whose process is silent 100 s)
    # TPU pods / SLURM: --distributed (jax.distributed.initialize() finds the cluster itself)

Console: a progress bar (plain lines off a terminal or with ``--config.progress=false``) with the loss, steps/s,
examples/s and ETA; warnings and errors. Everything logged at INFO (metrics, Orbax, the run's set-up) goes to
``<workdir>/train.log`` (``train.<process>.log`` for processes other than 0) beside the TensorBoard events;
``--verbosity=0`` shows it on the console too.

Thin: parses flags, sets up devices / distributed / logging, calls :func:`gen3r_jax.training.loop.train` (or
:func:`gen3r_jax.training.loop.dry_run`: the named stage-2 entry, or every stage-2 entry of the file). A run
restarted with the same ``--workdir`` resumes from its newest checkpoint. Exit status 2 on bad input (the
message says what to fix), 3 when training diverged (NaN/Inf; the last good checkpoint is kept).
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from configs import renamed  # noqa: E402  (after the path: the repository's configs package)
from launch.distributed import DISTRIBUTED, PROC_ID, setup_distributed  # noqa: E402  (defines the multi-process flags)

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file (configs/*.py)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard events and profiles go here")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "print the per-device memory of the config's stage-2 entries on their "
                             "target hardware (nothing is allocated) and exit")


def setup_devices(config) -> None:
  """Fake CPU devices (``config.host_device_count``) must be requested before jax is imported."""
  n = int(config.get("host_device_count", 0) or 0)
  if n > 0:
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    flag = f"--xla_force_host_platform_device_count={n}"
    xla = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in xla:
      os.environ["XLA_FLAGS"] = (xla + " " + flag).strip()


def dry_run(config) -> int:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  from gen3r_jax.errors import Gen3RInputError
  from gen3r_jax.training import loop
  try:
    flag = flags.FLAGS["config"]
    configs = loop.dry_run_configs(config_flags.get_config_filename(flag), config,
                                   config_flags.get_override_values(flag))
    print(loop.dry_run(configs))
  except Gen3RInputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


def main(argv) -> int:
  del argv
  config = _CONFIG.value
  if config is None or not _WORKDIR.value:
    print("error: --config and --workdir are required (see --helpfull)", file=sys.stderr)
    return 2
  renamed.exit_on_renamed((), renamed.TRAIN, config)   # a config file still setting an old name
  if _DRY_RUN.value:
    return dry_run(config)
  setup_devices(config)
  from gen3r_jax.apps.cli import setup_console
  import jax
  if DISTRIBUTED.value:     # the process index is known only once jax.distributed has found the cluster
    setup_distributed()
  proc = jax.process_index() if DISTRIBUTED.value else (PROC_ID.value or 0)
  setup_console(progress=bool(config.get("progress", True)),
                log_file=os.path.join(_WORKDIR.value, "train.log" if proc == 0 else f"train.{proc}.log"))
  jax.config.update("jax_default_matmul_precision", config.get("matmul_precision", "default"))
  if not DISTRIBUTED.value:
    setup_distributed()
  from gen3r_jax.errors import Gen3RInputError
  from gen3r_jax.training.loop import TrainingDivergedError, train
  os.makedirs(_WORKDIR.value, exist_ok=True)
  try:
    result = train(config, _WORKDIR.value)
  except Gen3RInputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  except TrainingDivergedError as e:
    print(f"error: {e}", file=sys.stderr)
    return 3
  last = result.history[-1] if result.history else {}
  print(f"done: step {last.get('step')}, loss {last.get('loss')}, last checkpoint {result.last_checkpoint} "
        f"(log: {os.path.join(_WORKDIR.value, 'train.log')})")
  return 0


if __name__ == "__main__":
  renamed.exit_on_renamed(sys.argv, renamed.TRAIN)   # old flag names: one line naming the new one, exit 2
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(lambda argv: sys.exit(main(argv)), flags_parser=renamed.parse_flags)

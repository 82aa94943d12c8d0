"""The multi-process start-up flags shared by ``launch/train.py`` and ``launch/sample.py`` (absl flags, defined on
import) and :func:`setup_distributed`, which calls ``jax.distributed.initialize`` from them.

One process per GPU on one host (docs/multi_gpu.md):

    CUDA_VISIBLE_DEVICES=0 python launch/sample.py ... --coordinator_address=localhost:12345 --num_processes=2 \\
        --process_id=0 &
    CUDA_VISIBLE_DEVICES=1 python launch/sample.py ... --coordinator_address=localhost:12345 --num_processes=2 \\
        --process_id=1

``--distributed`` instead lets ``jax.distributed.initialize()`` find the cluster itself (TPU pods, SLURM, Open MPI).
On CPU (tests) the cross-process collectives use gloo.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging

DISTRIBUTED = flags.DEFINE_bool("distributed", False, "call jax.distributed.initialize() (cluster auto-detect)")
COORD = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-process runs)")
NUM_PROC = flags.DEFINE_integer("num_processes", None, "number of processes (multi-process runs)")
PROC_ID = flags.DEFINE_integer("process_id", None, "this process's index (multi-process runs)")
INIT_TIMEOUT = flags.DEFINE_integer("initialization_timeout_s", None, "multi-process: seconds for all processes to "
                                    "connect (jax's default if unset)")
HEARTBEAT_TIMEOUT = flags.DEFINE_integer("heartbeat_timeout_s", None, "multi-process: a process silent this many "
                                         "seconds is declared dead and the run aborted (jax's default if unset; "
                                         "raise it on slow or overloaded hosts)")
SHUTDOWN_TIMEOUT = flags.DEFINE_integer("shutdown_timeout_s", None, "multi-process: seconds a finished process "
                                        "waits for the others at exit (jax's default if unset)")


def setup_distributed() -> None:
  """``jax.distributed.initialize`` when the flags ask for several processes (else nothing), then log where this
  process stands."""
  import jax
  multi = COORD.value is not None or PROC_ID.value is not None or (NUM_PROC.value or 1) > 1
  explicit = {"--coordinator_address": COORD.value, "--num_processes": NUM_PROC.value, "--process_id": PROC_ID.value}
  missing = [name for name, value in explicit.items() if value is None]
  if multi and missing:   # e.g. --process_id=1 alone would run a second "process 0" that writes the same outputs
    print(f"error: a multi-process run needs --coordinator_address, --num_processes and --process_id together "
          f"(missing {', '.join(missing)}); or --distributed to let jax.distributed find the cluster itself",
          file=sys.stderr)
    raise SystemExit(2)
  if multi or DISTRIBUTED.value:
    if jax.config.jax_platforms == "cpu" or os.environ.get("JAX_PLATFORMS") == "cpu":
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    from gen3r_jax.training import distributed
    timeouts = dict(initialization_timeout_s=INIT_TIMEOUT.value, heartbeat_timeout_s=HEARTBEAT_TIMEOUT.value,
                    shutdown_timeout_s=SHUTDOWN_TIMEOUT.value)
    if multi:
      distributed.initialize(COORD.value, NUM_PROC.value, PROC_ID.value, **timeouts)
    else:
      distributed.initialize(**timeouts)
  # on the console (train.py sends absl INFO to <workdir>/train.log only): which process this is matters to a user
  # reading several processes' output
  line = (f"jax process {jax.process_index()} of {jax.process_count()}, {jax.local_device_count()} local / "
          f"{jax.device_count()} global devices ({jax.devices()[0].platform})")
  logging.info(line)
  if multi or DISTRIBUTED.value:
    print(line, flush=True)

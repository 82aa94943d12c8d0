"""Write a directory completely or not at all: staging beside the target, then a swap.

    with staged_dir("ckpt/gen3r", overwrite=True, is_ours=looks_like_bundle) as tmp:
        ...write everything into tmp, verify it...
    # only now does ckpt/gen3r change: the new directory replaces the old one in one step

The staging directory is a sibling named ``.<name>.partial-<pid>`` (same filesystem, so the swap is a rename).
On a Python exception it is removed and the target is left exactly as it was. A process killed outright
(SIGKILL, power loss) leaves the clearly named ``.partial-<pid>`` folder, which the loaders refuse
(:func:`refuse_partial`) and the next staging of the same target removes once its process is gone.

The swap exchanges the two directories atomically with ``renameat2(RENAME_EXCHANGE)`` where the kernel and
filesystem offer it (Linux); elsewhere it renames the old directory aside (``.<name>.old-<pid>``), renames the new
one in and then deletes the old one, putting the old one back if the second rename fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import shutil
from typing import Callable, Iterator
import uuid

from gen3r_jax.errors import Gen3RInputError


_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old)-(?P<pid>\d+)$")



@contextlib.contextmanager
def atomic_path(path: str):
  """Yield a temporary path beside ``path`` (same folder and extension); on success it is flushed to disk and
  renamed over ``path`` (one atomic step), on failure removed. Readers never see a partly written ``path``."""
  folder, name = os.path.split(os.path.abspath(os.fspath(path)))
  root, ext = os.path.splitext(name)
  tmp = os.path.join(folder, f".{root}.partial-{uuid.uuid4().hex[:12]}{ext}")
  try:
    yield tmp
    with open(tmp, "rb") as f:
      os.fsync(f.fileno())
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)

def partial_path(target: str, kind: str = "partial", pid: int | None = None) -> str:
  target = os.path.abspath(os.fspath(target))
  parent, name = os.path.split(target)
  return os.path.join(parent, f".{name}.{kind}-{os.getpid() if pid is None else pid}")


def is_partial(path: str) -> bool:
  """Whether ``path`` is a staging (``.<name>.partial-<pid>``) or set-aside (``.old-<pid>``) directory."""
  return _LEFTOVER.match(os.path.basename(os.path.abspath(os.fspath(path)))) is not None


def refuse_partial(path: str) -> None:
  """Raise :class:`Gen3RInputError` for an unfinished staging directory left by a killed conversion."""
  m = _LEFTOVER.match(os.path.basename(os.path.abspath(os.fspath(path))))
  if m is not None:
    raise Gen3RInputError(
        f"{path} is an unfinished conversion left by process {m['pid']} (killed before it completed); it is never "
        f"loaded: delete it and re-run `python launch/convert.py ... --out <dir>/{m['name']}`")


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def remove_leftovers(target: str, log: Callable = print) -> None:
  """Delete ``.<name>.partial-<pid>`` / ``.old-<pid>`` siblings of ``target`` whose process has ended.

  A set-aside old directory whose target is missing (a kill between the two renames of the fallback swap) is
  renamed back instead."""
  target = os.path.abspath(os.fspath(target))
  parent, name = os.path.split(target)
  if not os.path.isdir(parent):
    return
  for entry in sorted(os.listdir(parent)):
    m = _LEFTOVER.match(entry)
    if m is None or m["name"] != name or int(m["pid"]) == os.getpid() or _alive(int(m["pid"])):
      continue
    path = os.path.join(parent, entry)
    if m["kind"] == "old" and not os.path.exists(target):
      os.rename(path, target)
      log(f"[convert] restored {target} from {entry} (a previous run was killed while swapping)")
      continue
    shutil.rmtree(path, ignore_errors=True)
    log(f"[convert] removed {entry}, left by a killed run")


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: str, b: str) -> bool:
  """Atomically swap two paths (Linux ``renameat2``); False where that is not available."""
  try:
    fn = ctypes.CDLL(None, use_errno=True).renameat2
  except (AttributeError, OSError):
    return False
  fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
  if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
    return True
  err = ctypes.get_errno()
  if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EXDEV):
    return False
  raise OSError(err, os.strerror(err), a)


def swap_in(new: str, target: str) -> None:
  """Put the complete directory ``new`` at ``target``, replacing (and deleting) what was there."""
  new, target = os.path.abspath(new), os.path.abspath(target)
  if not os.path.lexists(target):
    os.rename(new, target)
    return
  if os.path.isdir(target) and not os.listdir(target):
    os.rename(new, target)                 # over an empty directory
    return
  if _exchange(new, target):
    shutil.rmtree(new)                     # now holds the old contents
    return
  old = partial_path(target, "old")
  if os.path.lexists(old):
    shutil.rmtree(old)
  os.rename(target, old)
  try:
    os.rename(new, target)
  except BaseException:
    os.rename(old, target)
    raise
  shutil.rmtree(old)


def _write_error(path: str, e: OSError, flag: str = "--out") -> Gen3RInputError:
  why = os.strerror(e.errno) if e.errno else str(e)
  return Gen3RInputError(f"cannot write {path}: {why.lower()}; choose a writable {flag} directory")


@contextlib.contextmanager
def staged_dir(target: str, *, overwrite: bool, is_ours: Callable[[str], bool], what: str = "output",
               log: Callable = print) -> Iterator[str]:
  """Stage a new ``target`` directory (see module docstring); yields the staging directory.

  Args:
    overwrite: replace an existing non-empty ``target`` (``--overwrite``); it is only replaced once the new one
      is complete.
    is_ours: whether an existing ``target`` holds only what this writer produces; anything else is never
      replaced (the user pointed ``--out`` at a folder with other files).
  """
  target = os.path.abspath(os.fspath(target))
  refuse_partial(target)
  if os.path.islink(target):
    target = os.path.realpath(target)      # replace what the link points to; the link stays
  if os.path.exists(target) and not os.path.isdir(target):
    raise Gen3RInputError(f"{target} is a file; pass a directory as --out")
  if os.path.isdir(target) and os.listdir(target):
    if not is_ours(target):
      raise Gen3RInputError(f"{target} holds files that are not a gen3r_jax {what}; choose a new or empty "
                            "--out directory")
    if not overwrite:
      raise Gen3RInputError(f"{target} already holds a converted {what}; pass --overwrite (overwrite=True) to "
                            "replace it")
  parent = os.path.dirname(target)
  try:
    os.makedirs(parent, exist_ok=True)
  except OSError as e:
    raise _write_error(parent, e) from e
  remove_leftovers(target, log=log)
  tmp = partial_path(target)
  if os.path.lexists(tmp):
    shutil.rmtree(tmp)
  try:
    os.mkdir(tmp)
  except OSError as e:
    raise _write_error(parent, e) from e
  try:
    yield tmp
    swap_in(tmp, target)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


__all__ = ("partial_path", "is_partial", "refuse_partial", "remove_leftovers", "swap_in", "staged_dir")

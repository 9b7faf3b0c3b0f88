"""Training checkpoints: atomic writes, validation, rotation and RNG state capture.

A checkpoint is one ``torch.save`` file ``<out_dir>/checkpoints/step-<8-digit step>.pt`` holding
full (unsharded, CPU) state dicts keyed by parameter names, so a checkpoint written by any
strategy (single, DDP, FSDP) on any number of processes loads under any other. It is
written to a temporary file in the same directory, fsynced and moved into place with
``os.replace``: a crash mid-write leaves the previous checkpoints untouched. Every
checkpoint carries a digest of its whole content (tensor bytes, shapes, dtypes and every
other value), so a truncated or bit-flipped file is detected when it is loaded. Loading
uses ``weights_only=True``, so a checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from ..errors import CheckpointError

FORMAT = "tunecraft-train-checkpoint"
VERSION = 1
REQUIRED_KEYS = ("format", "version", "step", "epoch", "batch_in_epoch", "model", "optimizers",
                 "schedulers", "scaler", "ema", "rng", "world_size", "config")
_NAME = re.compile(r"^step-(\d{8,})\.pt$")
_TEMP = re.compile(r"^\.step-\d{8,}\.pt\.tmp-\d+$")


def checkpoint_path(directory: Path, step: int) -> Path:
    return Path(directory) / f"step-{step:08d}.pt"


def list_checkpoints(directory: Path) -> List[Tuple[int, Path]]:
    """``(step, path)`` of every checkpoint file in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        m = _NAME.match(entry.name)
        if m and entry.is_file():
            found.append((int(m.group(1)), entry))
    return sorted(found)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, then atomically
    replace ``path`` with it. On any failure the temporary file is removed and ``path`` is
    left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _update_digest(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            h.update(repr(key).encode())
            _update_digest(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}".encode())
        for item in obj:
            _update_digest(h, item)
    else:
        h.update(f"V{type(obj).__name__}:{obj!r};".encode())


def content_digest(state: Dict[str, Any]) -> str:
    """BLAKE2b digest of a checkpoint's content (everything but the ``digest`` entry)."""
    h = hashlib.blake2b(digest_size=32)
    _update_digest(h, {k: v for k, v in state.items() if k != "digest"})
    return h.hexdigest()


def save_checkpoint(state: Dict[str, Any], path: Path) -> None:
    """Atomically write a checkpoint dict (see :data:`REQUIRED_KEYS`) with its digest."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"refusing to write checkpoint {path}: missing {', '.join(missing)}")
    state = dict(state, digest=content_digest(state))
    atomic_write(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Read and validate a checkpoint; raise :class:`CheckpointError` if it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle, flipped bytes, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({reason})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tunecraft training checkpoint")
    if state.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {state.get('version')}, this tunecraft reads {VERSION}")
    missing = [k for k in REQUIRED_KEYS + ("digest",) if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete: missing {', '.join(missing)}")
    if state["digest"] != content_digest(state):
        raise CheckpointError(f"checkpoint {path} is corrupt (content digest mismatch)")
    return state


def find_latest_valid(directory: Path, warn: Callable[[str], None]) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """The newest checkpoint that loads, as ``(path, state)``; each unusable newer one is
    reported through ``warn`` and skipped. ``None`` when there is no usable checkpoint."""
    for step, path in reversed(list_checkpoints(directory)):
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            warn(f"{e}; falling back to an earlier checkpoint")
            continue
        if state["step"] != step:
            warn(f"checkpoint {path} claims step {state['step']}; skipping it")
            continue
        return path, state
    return None


def prune_checkpoints(directory: Path, keep: int) -> List[Path]:
    """Delete all but the newest ``keep`` checkpoints (``keep == 0`` keeps all)."""
    if keep <= 0:
        return []
    removed = []
    for _, path in list_checkpoints(directory)[:-keep]:
        try:
            path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def remove_stale_temp_files(directory: Path) -> List[Path]:
    """Delete temporary files that a crashed writer left behind."""
    directory = Path(directory)
    removed = []
    if directory.is_dir():
        for entry in directory.iterdir():
            if _TEMP.match(entry.name):
                try:
                    entry.unlink()
                    removed.append(entry)
                except FileNotFoundError:
                    pass
    return removed


# ---- RNG state ------------------------------------------------------------------------


def capture_rng_state() -> Dict[str, Any]:
    """This process's Python, NumPy, torch CPU and CUDA RNG states, as tensors and
    builtins only (loadable with ``weights_only=True``)."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: Dict[str, Any] = {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": {
            "name": np_name, "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
    }
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    try:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
        n = state["numpy"]
        np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            if len(state["cuda"]) != torch.cuda.device_count():
                warnings.warn("the CUDA device count changed since the checkpoint; CUDA RNG states not restored")
            else:
                torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint RNG state is malformed ({e})") from None

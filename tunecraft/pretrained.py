"""Model directories: how every tunecraft model is found, checked and loaded.

A model directory holds ``config.json`` (naming the class and its versions) and
``model.safetensors``. Default bundles ship inside the package under
``tunecraft/bundles/<name>`` and are found by name.

Every model class writes its directory through :func:`write_model_dir` (after
:func:`state_for_saving`), so the on-disk format is defined once: the weights file carries
``{"format": "pt", "class": <class>}`` as safetensors metadata, and ``config.json`` is the
``meta`` dict as indented JSON. Both files are written atomically.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .errors import CheckpointError, ConfigError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
BUNDLES_DIR = Path(__file__).resolve().parent / "bundles"
#: How the float32 parameters of a model may be stored (``save_pretrained(dtype=...)``).
STORAGE_DTYPES = ("float32", "float16")


def state_for_saving(model: nn.Module, dtype: str = "float32") -> dict[str, torch.Tensor]:
    """``model``'s state dict as contiguous CPU tensors, ready for :func:`write_model_dir`.

    ``dtype="float16"`` stores the float32 *parameters* in half precision (they load back as
    float32); buffers keep their dtype (EMA counts can exceed the float16 range).
    """
    from .errors import InvalidInput

    if dtype not in STORAGE_DTYPES:
        raise InvalidInput(f"storage dtype must be one of {', '.join(STORAGE_DTYPES)}, got {dtype!r}")
    params = {name for name, _ in model.named_parameters()}
    state = {}
    for key, value in model.state_dict().items():
        value = value.detach().cpu()
        if dtype == "float16" and key in params and value.dtype == torch.float32:
            value = value.to(torch.float16)
        state[key] = value.contiguous().clone()
    return state


def _replace_atomically(target: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``target``, flush it to disk, then
    ``os.replace`` it over ``target``: readers see the old file or the new one, never a part."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary open() would create it
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_model_dir(path: str | Path, meta: dict[str, Any], state: dict[str, torch.Tensor]) -> Path:
    """Write a model directory: ``model.safetensors`` (``state``) and ``config.json`` (``meta``).

    ``meta`` must name the ``class``; it is written as given (key order kept). Each file is
    written to a temporary file in ``path`` and moved into place with ``os.replace``, weights
    first and ``config.json`` last, so an interrupted save never leaves a truncated file, and
    other files in the directory (``training.json``, ``fit.json``) are kept.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "class": str(meta["class"])}
    _replace_atomically(path / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp), metadata=metadata))
    text = json.dumps(meta, indent=2) + "\n"
    _replace_atomically(path / CONFIG_NAME, lambda tmp: tmp.write_text(text))
    return path


def resolve_model_dir(name_or_path: str | Path) -> Path:
    """A model directory from a path, or from the name of a bundle in ``tunecraft/bundles``."""
    if not isinstance(name_or_path, (str, Path)) or not str(name_or_path).strip():
        raise CheckpointError(f"expected a model directory or bundle name, got {name_or_path!r}")
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is not a model directory (expected {CONFIG_NAME} + {WEIGHTS_NAME})")
        return path
    bundle = BUNDLES_DIR / str(name_or_path)
    if "/" not in str(name_or_path) and not str(name_or_path).startswith(".") and bundle.is_dir():
        return bundle
    available = sorted(p.name for p in BUNDLES_DIR.iterdir() if p.is_dir() and not p.name.startswith(".")) if BUNDLES_DIR.is_dir() else []
    hint = f"installed bundles: {', '.join(available)}" if available else "no bundles are installed"
    raise CheckpointError(f"no model directory or bundle named '{name_or_path}' ({hint})")


def load_state_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` after checking names and shapes; cast to the model's dtypes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s) (e.g. {', '.join(unexpected[:3])})")
        raise CheckpointError(f"{source} does not match the model: {'; '.join(parts)}")
    for key, ref in own.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{source}: tensor {key} has shape {tuple(state[key].shape)}, the model expects {tuple(ref.shape)}"
            )
    cast = {k: (v.to(own[k].dtype) if v.dtype != own[k].dtype else v) for k, v in state.items()}
    model.load_state_dict(cast, strict=True)


def read_model_config(path: Path) -> tuple[Path, dict]:
    """``(config_file, meta)`` of a model directory; ``meta`` names ``class`` and holds ``config``."""
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} has no {CONFIG_NAME}")
    try:
        meta = json.loads(cfg_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {e}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("class"), str) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{cfg_file} does not describe a tunecraft model (needs 'class' and 'config')")
    return cfg_file, meta


def check_model_versions(path: Path, meta: dict, model_version: Any, format_version: int) -> None:
    """Refuse directories written in a newer format or for another version of the model class."""
    fmt = meta.get("format_version")
    if not isinstance(fmt, int) or fmt > format_version:
        raise CheckpointError(f"{path} was written in format version {fmt!r}; this tunecraft reads up to "
                              f"{format_version} (upgrade tunecraft)")
    if meta.get("model_version") != model_version:
        raise CheckpointError(f"{path} holds {meta['class']} version {meta.get('model_version')!r}; this tunecraft "
                              f"expects version {model_version}")


def parse_model_config(config_class: type, meta: dict, cfg_file: Path) -> Any:
    """The typed config stored in ``meta``; a bad one is a :class:`CheckpointError`."""
    try:
        return config_class.from_dict(meta["config"])
    except ConfigError as e:
        raise CheckpointError(f"{cfg_file}: invalid config: {e}") from None


def read_weights(path: Path, name: str = WEIGHTS_NAME) -> dict[str, torch.Tensor]:
    """The tensors of ``path/name`` (default ``model.safetensors``); missing or corrupt is a
    :class:`CheckpointError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights = path / name
    if not weights.is_file():
        raise CheckpointError(f"{path} has no {name}")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights} is unreadable or corrupt: {e}") from None


def build_from_model_dir(path: Path, meta: dict, cfg_file: Path, *, config_class: type, model_version: Any,
                         format_version: int, build: Callable[[Any], nn.Module],
                         prepare_state: Callable[[nn.Module, dict], None] | None = None,
                         device: str | torch.device | None = None) -> nn.Module:
    """The common tail of every ``from_pretrained``: check versions, parse the typed config,
    ``build(config)`` the model (its :class:`TunecraftError` becomes a :class:`CheckpointError`),
    let ``prepare_state(model, state)`` complete the stored tensors, load them checked, move to
    ``device`` and return the model in eval mode. The caller resolves ``path``, reads
    ``(cfg_file, meta)`` with :func:`read_model_config` and checks the class it expects."""
    from .errors import TunecraftError

    check_model_versions(path, meta, model_version, format_version)
    config = parse_model_config(config_class, meta, cfg_file)
    state = read_weights(path)
    try:
        model = build(config)
    except TunecraftError as e:
        raise CheckpointError(f"{cfg_file}: cannot build the model: {e}") from None
    if prepare_state is not None:
        prepare_state(model, state)
    load_state_checked(model, state, str(path / WEIGHTS_NAME))
    if device is not None:
        model = model.to(device)
    return model.eval()

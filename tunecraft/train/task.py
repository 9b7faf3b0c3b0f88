"""Training tasks: what one model family contributes to the shared training loop.

A task knows how to build its model and datasets from typed configs, how to compute a
loss on a batch, how to render audio samples, and how to export the trained model as a
model directory. The loop (:mod:`tunecraft.train.trainer`) owns everything else:
distribution, mixed precision, optimisers, schedules, EMA, checkpoints and logging.

Tasks are found by name. Built-in names map to ``"module:Class"`` strings so that no
model code is imported until a recipe asks for it; ``@register_task`` registers a class
when its module is imported; third-party packages can add tasks through the
``tunecraft.train_tasks`` entry-point group; and a recipe may name a task directly as
``"package.module:Class"``.

Adding a task::

    @dataclasses.dataclass
    class MyTaskConfig(Config):
        hidden: int = 64

    @register_task("my-task")            # and add "my-task": "pkg.mod:MyTask" to BUILTIN_TASKS
    class MyTask(TrainTask):
        config_class = MyTaskConfig
        data_config_class = MyDataConfig

        def build_model(self): ...
        def build_train_dataset(self): ...
        def training_step(self, model, batch, step, phase="main"):
            return loss, {"l1": l1.detach()}
        def export(self, model, out_dir): model.save_pretrained(out_dir)
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, Iterable, List, Mapping, Optional, Tuple, Type, Union

import torch
from torch import nn

from ..config import Config
from ..errors import ConfigError, TunecraftError

Audio = Tuple[torch.Tensor, int]  # ([C, T] float32 in [-1, 1], sample rate)


@dataclasses.dataclass
class EmptyConfig(Config):
    """Config of a task (or data section) that takes no parameters."""


@dataclasses.dataclass
class SplitDataConfig(Config):
    """Base of the ``[data]`` sections that read a split corpus: ``source`` (a corpus directory
    written by ``tunecraft data synth``, a manifest or a folder of audio) and the names of the
    training and validation split manifests inside a corpus directory."""

    source: str = "data/synth"
    train_split: str = "train"
    valid_split: str = "valid"

    def __post_init__(self) -> None:
        if not self.source:
            raise ConfigError("data.source is empty: give a corpus directory, a manifest or a folder of audio")


@dataclasses.dataclass
class ClipDataConfig(SplitDataConfig):
    """Base of the ``[data]`` sections of tasks that train on fixed-length crops: crop length (s),
    validation size and seed on top of :class:`SplitDataConfig`. Subclasses override defaults only."""

    crop_seconds: float = 10.0
    valid_clips: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.crop_seconds > 0:
            raise ConfigError(f"data.crop_seconds must be > 0, got {self.crop_seconds}")
        if self.valid_clips < 0 or self.seed < 0:
            raise ConfigError("data.valid_clips and data.seed must be >= 0")


@dataclasses.dataclass
class OptimizerSpec:
    """One AdamW optimiser the loop should build.

    ``params`` is an iterable of parameters or of param-group dicts (``{"params": [...],
    "weight_decay": 0.0}``). ``None`` fields take their value from :class:`TrainConfig`.
    Every spec gets its own LR scheduler with the recipe's warm-up and schedule.
    """

    name: str
    params: Iterable[Any]
    lr: Optional[float] = None
    betas: Optional[Tuple[float, float]] = None
    weight_decay: Optional[float] = None
    eps: Optional[float] = None


def default_param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Split trainable parameters into a decayed group (matrices, kernels) and an undecayed
    one (biases, norm gains, anything with fewer than 2 dimensions)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


class TrainTask:
    """Base class of every training task (one per model family).

    Subclasses set ``config_class`` (the ``[task]`` section, without ``name``) and
    ``data_config_class`` (the ``[data]`` section) to :class:`~tunecraft.config.Config`
    dataclasses, and implement :meth:`build_model`, :meth:`build_train_dataset`,
    :meth:`training_step` and :meth:`export`.

    Determinism contract: datasets are map-style (``__getitem__`` + ``__len__``). The loop
    seeds Python's, NumPy's and torch's global RNGs from ``(seed, epoch, index)`` around
    every ``dataset[index]`` call and from ``(seed, rank, step)`` before every training
    step, so augmentation and training noise may use the global RNGs and a resumed run
    still matches an uninterrupted one bit for bit.
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[Type[Config]] = EmptyConfig
    data_config_class: ClassVar[Type[Config]] = EmptyConfig
    #: Let DDP tolerate parameters that get no gradient in a step (set automatically when
    #: a task has more than one optimiser).
    ddp_find_unused_parameters: ClassVar[bool] = False

    def __init__(self, config: Optional[Config] = None, data: Optional[Config] = None):
        self.config = config if config is not None else self.config_class()
        self.data = data if data is not None else self.data_config_class()
        if not isinstance(self.config, self.config_class):
            raise ConfigError(f"task {self.name!r} expects a {self.config_class.__name__} config")
        if not isinstance(self.data, self.data_config_class):
            raise ConfigError(f"task {self.name!r} expects a {self.data_config_class.__name__} data config")

    # ---- construction ---------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """Return a freshly initialised model (on CPU; the loop moves it)."""
        raise TunecraftError(f"task {type(self).__name__} does not implement build_model()")

    def build_train_dataset(self) -> torch.utils.data.Dataset:
        """Return the map-style training dataset."""
        raise TunecraftError(f"task {type(self).__name__} does not implement build_train_dataset()")

    def build_valid_dataset(self) -> Optional[torch.utils.data.Dataset]:
        """Return a map-style validation dataset, or ``None`` for no validation."""
        return None

    def collate(self, items: List[Any]) -> Any:
        """Merge dataset items into a batch (default: ``torch.utils.data.default_collate``)."""
        return torch.utils.data.default_collate(items)

    def configure_optimizers(self, model: nn.Module, train: Any) -> List[OptimizerSpec]:
        """Return the optimisers to build, in the order their phases run each step.

        The default is one AdamW (``"main"``) over all trainable parameters, without
        weight decay on biases and norm gains. A GAN task returns e.g.
        ``[OptimizerSpec("discriminator", disc_params), OptimizerSpec("generator", gen_params)]``;
        :meth:`training_step` is then called once per phase with ``phase`` set to that name.
        """
        return [OptimizerSpec("main", default_param_groups(model, train.weight_decay))]

    def fsdp_units(self, model: nn.Module) -> List[nn.Module]:
        """Sub-modules to shard separately under FSDP (e.g. transformer blocks). The root
        module is always sharded last."""
        return []

    # ---- training -------------------------------------------------------------------
    def prepare_model(self, model: nn.Module, train_dataset: torch.utils.data.Dataset) -> None:
        """Called once before the first step of a run that starts afresh (not on resume; after
        ``train.init_from``), with the unwrapped model and the training dataset: statistics a model
        takes from its data before training (none by default)."""

    def training_step(
        self, model: nn.Module, batch: Any, step: int, phase: str = "main"
    ) -> Tuple[torch.Tensor, Mapping[str, Union[float, torch.Tensor]]]:
        """Compute the loss of one micro-batch for optimiser ``phase``.

        ``model`` is the wrapped model (call it to run the forward pass so DDP/FSDP see
        it); ``batch`` is already on the training device; ``step`` is the 0-based index of
        the optimiser step being computed. Returns ``(loss, logs)`` where ``logs`` maps
        names to floats or 0-dim tensors (averaged over the logging window and ranks).
        """
        raise TunecraftError(f"task {type(self).__name__} does not implement training_step()")

    def validation_step(self, model: nn.Module, batch: Any, step: int) -> Mapping[str, Union[float, torch.Tensor]]:
        """Metrics of one validation batch, run under ``no_grad`` (default: the ``"main"``
        training loss and logs; tasks with several optimisers override this)."""
        loss, logs = self.training_step(model, batch, step)
        return {"loss": loss.detach(), **logs}

    def sample(self, model: nn.Module, step: int) -> Dict[str, Audio]:
        """Audio to log: ``{name: (audio [C, T], sample_rate)}``. Called under ``no_grad``
        with EMA weights when EMA is enabled; must be deterministic (seed from ``step``)."""
        return {}

    # ---- export ---------------------------------------------------------------------
    def export(self, model: nn.Module, out_dir: Path) -> None:
        """Save the trained model as a model directory (``config.json`` + ``model.safetensors``)
        into ``out_dir``, an existing empty directory. ``model`` is a fresh, unwrapped CPU
        model in eval mode holding the final weights (the EMA weights when EMA is on)."""
        raise TunecraftError(f"task {type(self).__name__} does not implement export()")


# ---- registry ---------------------------------------------------------------------------

#: Built-in tasks, imported lazily: name -> "module:Class".
BUILTIN_TASKS: Dict[str, str] = {
    "toy-audio-ae": "tunecraft.train.toy:ToyAudioAETask",
    "codec-rvq": "tunecraft.codecs.tasks:RVQCodecTask",
    "vae-gan": "tunecraft.codecs.tasks:VAEGANTask",
    "vae-gan-rvq": "tunecraft.codecs.tasks:LatentRVQTask",
    "masked-ae": "tunecraft.codecs.tasks:MaskedAETask",
    "joint": "tunecraft.joint.task:JointTask",
    "tag-classifier": "tunecraft.eval.task:TagClassifierTask",
    "n2m-wave-generator": "tunecraft.noise2music.tasks:WaveformGeneratorTask",
    "n2m-wave-cascader": "tunecraft.noise2music.tasks:WaveformCascaderTask",
    "n2m-spec-generator": "tunecraft.noise2music.tasks:SpectrogramGeneratorTask",
    "n2m-vocoder": "tunecraft.noise2music.tasks:SpectrogramVocoderTask",
    "n2m-sr-cascader": "tunecraft.noise2music.tasks:SRCascaderTask",
    "musicgen-lm": "tunecraft.lm.task:MusicGenTask",
}
ENTRY_POINT_GROUP = "tunecraft.train_tasks"

_LAZY: Dict[str, str] = dict(BUILTIN_TASKS)
_CLASSES: Dict[str, Type[TrainTask]] = {}


def register_task(name: str) -> Callable[[Type[TrainTask]], Type[TrainTask]]:
    """Class decorator: register a :class:`TrainTask` subclass under ``name``."""

    def decorate(cls: Type[TrainTask]) -> Type[TrainTask]:
        if not (isinstance(cls, type) and issubclass(cls, TrainTask)):
            raise ConfigError(f"@register_task({name!r}) must decorate a TrainTask subclass")
        existing = _CLASSES.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ConfigError(f"training task {name!r} is already registered to {existing.__module__}.{existing.__qualname__}")
        lazy = _LAZY.get(name)
        if lazy is not None and lazy != f"{cls.__module__}:{cls.__qualname__}":
            raise ConfigError(f"training task {name!r} is already registered to {lazy}")
        cls.name = name
        _CLASSES[name] = cls
        return cls

    return decorate


def register_task_path(name: str, target: str) -> None:
    """Register a task lazily as ``"package.module:Class"`` (imported on first use)."""
    if ":" not in target:
        raise ConfigError(f"task target must look like 'package.module:Class', got {target!r}")
    _LAZY[name] = target


def _entry_points() -> Dict[str, str]:
    from importlib.metadata import entry_points

    try:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # pragma: no cover - Python < 3.10 API
        eps = entry_points().get(ENTRY_POINT_GROUP, [])
    return {ep.name: ep.value for ep in eps}


def list_tasks() -> List[str]:
    """Names of every known training task."""
    return sorted(set(_LAZY) | set(_CLASSES) | set(_entry_points()))


def _import_target(target: str, what: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import {what} from {target!r}: {e}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what} {target!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def get_task_class(name: str) -> Type[TrainTask]:
    """Resolve a task name (or a ``"module:Class"`` target) to its class."""
    if name in _CLASSES:
        return _CLASSES[name]
    target = _LAZY.get(name) or _entry_points().get(name)
    if target is None and ":" in name:
        target = name
    if target is None:
        raise ConfigError(f"unknown training task {name!r}; known tasks: {', '.join(list_tasks())}")
    cls = _import_target(target, "training task")
    if not (isinstance(cls, type) and issubclass(cls, TrainTask)):
        raise ConfigError(f"training task {name!r} ({target}) is not a TrainTask subclass")
    if not cls.name:
        cls.name = name
    _CLASSES.setdefault(name, cls)
    return cls


def build_task(name: str, task_params: Mapping[str, Any], data_params: Mapping[str, Any]) -> TrainTask:
    """Instantiate a task from its name and the raw ``[task]``/``[data]`` tables."""
    cls = get_task_class(name)
    try:
        config = cls.config_class.from_dict(dict(task_params))
    except ConfigError as e:
        raise ConfigError(f"[task] {e}") from None
    try:
        data = cls.data_config_class.from_dict(dict(data_params))
    except ConfigError as e:
        raise ConfigError(f"[data] {e}") from None
    return cls(config, data)

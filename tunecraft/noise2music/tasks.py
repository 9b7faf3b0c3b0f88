"""Training tasks of the five Noise2Music stages (recipes ``tunecraft/recipes/n2m-*.toml``).

=======================  ==========================  ==========================================
task                     model                       training example (from a mono crop)
=======================  ==========================  ==========================================
``n2m-wave-generator``   :class:`WaveformGenerator`   3.2 kHz audio + caption (full 10 s clips)
``n2m-wave-cascader``    :class:`WaveformCascader`    16 kHz audio; its soxr-downsampled 3.2 kHz
                                                      version FFT-upsampled back; caption
``n2m-spec-generator``   :class:`SpectrogramGenerator` 80-mel log-mel (100 fps, [-1, 1]) + caption
``n2m-vocoder``          :class:`SpectrogramVocoder`  16 kHz audio + its log-mel (no text)
``n2m-sr-cascader``      :class:`SRCascader`          24 kHz audio; its 16 kHz version
                                                      FFT-upsampled back (no text)
=======================  ==========================  ==========================================

Data (``[data]``, :class:`StageDataConfig`): a corpus directory written by ``tunecraft data synth``
(``train.jsonl``/``valid.jsonl`` beside ``data.jsonl``, sidecars with ``captions``) or any source
:class:`~tunecraft.data.AudioDataset` reads. Item ``i`` is a ``crop_seconds`` crop of file ``i`` at
a random offset with one of its captions drawn uniformly (:class:`~tunecraft.joint.task.CaptionedClipDataset`,
a pure function of ``(seed, epoch, index)``), turned into the stage's example by the stage's
``prepare_example``. Crops are rounded down to a multiple of the stage's alignment (the mel hop,
or the rate ratio of a cascader) so derived signals align sample-exactly. The conditioning
augmentation, the 10 % text dropout, the diffusion times and the noise are drawn in
:meth:`~tunecraft.noise2music.models.DiffusionStage.loss` from the global RNG, which the loop seeds
from ``(seed, rank, step)``.

``sample()`` logs audio: generators sample ``sample_seconds`` of ``sample_prompt`` (the
spectrogram generator renders its spectrogram with Griffin-Lim, a preview only); cascaders and
the vocoder re-create the first held-out crop from its conditioning. ``export()`` writes
``save_pretrained(dir, dtype="float16")``; an unfinished run exports with
``tunecraft export runs/NAME OUT_DIR`` (that exporter works for every task).
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Type

import torch
from torch import nn

from ..config import Config
from ..errors import CheckpointError, ConfigError, InvalidInput
from ..joint.task import CaptionedClipDataset, load_captioned
from ..train.task import Audio, ClipDataConfig, TrainTask, register_task
from .configs import (
    SpectrogramGeneratorConfig,
    SpectrogramVocoderConfig,
    SRCascaderConfig,
    StageConfig,
    WaveformCascaderConfig,
    WaveformGeneratorConfig,
)
from .models import (
    DiffusionStage,
    SpectrogramGenerator,
    SpectrogramVocoder,
    SRCascader,
    WaveformCascader,
    WaveformGenerator,
)

__all__ = [
    "CascaderDataConfig",
    "GeneratorDataConfig",
    "SRCascaderTask",
    "SpectrogramGeneratorTask",
    "SpectrogramVocoderTask",
    "StageClipDataset",
    "StageDataConfig",
    "StageTaskConfig",
    "WaveformCascaderTask",
    "WaveformGeneratorTask",
    "collate_examples",
    "griffin_lim_preview",
]

DEFAULT_SAMPLE_PROMPT = "an upbeat pop song with piano, electric bass and drums, 120 bpm, in C major"


# ---------------------------------------------------------------------------------------- data
@dataclasses.dataclass
class StageDataConfig(ClipDataConfig):
    """``[data]`` of an ``n2m-*`` task: source, split names, crop length (s), validation size, seed."""

    crop_seconds: float = 10.0
    valid_clips: int = 16


@dataclasses.dataclass
class GeneratorDataConfig(StageDataConfig):
    """Generators train on full clips (10 s for the corpus)."""

    crop_seconds: float = 10.0


@dataclasses.dataclass
class CascaderDataConfig(StageDataConfig):
    """Cascaders and the vocoder train on short crops (paper: 3-4 s)."""

    crop_seconds: float = 3.2


class StageClipDataset(CaptionedClipDataset):
    """``{"x0", aligned conditioning..., "text", "index"}`` items: a crop of file ``i`` (see
    :class:`~tunecraft.joint.task.CaptionedClipDataset`) passed through ``prepare(wav [1, T])``.
    ``captions=None`` (stages without text) gives every item the empty caption."""

    def __init__(self, metas: List[Any], captions: Optional[List[List[str]]], segment: float, sample_rate: int,
                 random: bool, prepare, seed: int = 0, chords: Optional[List[Optional[list]]] = None):
        super().__init__(metas, captions if captions is not None else [[""]] * len(metas), segment, sample_rate,
                         random, seed)
        self.prepare = prepare
        if chords is not None and len(chords) != len(self.metas):
            raise InvalidInput(f"{len(self.metas)} files but {len(chords)} chord plans")
        self.chords = chords

    def _load(self, index: int) -> Dict[str, Any]:
        item = super()._load(index)
        out = dict(self.prepare(item.pop("wav")))
        out.update(item)
        if self.chords is not None:
            out["chords"] = self.chords[index]
        return out


def load_chord_plans(metas: List[Any]) -> Tuple[List[Optional[list]], int]:
    """``(plans, n_bad)``: each file's timed chord plan ``[[start_seconds, name], ...]`` from its
    sidecar's ``chords`` (what the procedural corpus writes), ``None`` for a file without one; a
    plan that is not a list of ``[number, chord name]`` pairs is ``None`` too, counted in ``n_bad``
    and reported once as a warning."""
    from ..data import load_info
    from ..modules.key import parse_chord_plan

    plans: List[Optional[list]] = []
    bad: List[str] = []
    for m in metas:
        try:
            raw = load_info(m).get("chords")
        except InvalidInput:
            raw = None
        if raw is None:
            plans.append(None)
            continue
        try:
            parse_chord_plan(raw)
            plans.append([[float(t), str(name)] for t, name in raw] or None)
        except InvalidInput:
            plans.append(None)
            bad.append(str(getattr(m, "path", m)))
    if bad:
        warnings.warn(f"ignoring the chords of {len(bad)} file(s) that are not [[seconds, chord name], ...] "
                      f"(first: {bad[0]})", stacklevel=2)
    return plans, len(bad)


def collate_examples(items: List[Mapping[str, Any]]) -> Dict[str, Any]:
    """Stack tensors to ``[B, ...]``, keep ``text`` (strings) and ``chords`` (timed plans or ``None``)
    as lists of ``B``, ``index`` ``[B]``."""
    out: Dict[str, Any] = {}
    for key, value in items[0].items():
        if key in ("text", "chords"):
            out[key] = [it[key] for it in items]
        elif key == "index":
            out[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
        elif key == "offset":
            out[key] = torch.tensor([float(it[key]) for it in items], dtype=torch.float64)
        else:
            out[key] = torch.stack([it[key] for it in items])
    return out


def griffin_lim_preview(mel: torch.Tensor, config, n_iter: int = 32) -> torch.Tensor:
    """Audio ``[1, T]`` from a Noise2Music log-mel ``[n_mels, F]`` in [-1, 1] by Griffin-Lim (a
    listening preview of the spectrogram generator's samples; the vocoder is the real inverse)."""
    m = config.mel
    with torch.autocast(device_type=mel.device.type, enabled=False):  # the trainer samples under autocast
        return _griffin_lim(mel, m, n_iter)


def _griffin_lim(mel: torch.Tensor, m, n_iter: int) -> torch.Tensor:
    import librosa

    from ..audio import LogMel

    logmel = LogMel(m.sample_rate, n_fft=m.n_fft, hop_length=m.hop_length, win_length=m.win_length, n_mels=m.n_mels,
                    f_min=m.f_min, f_max=m.f_max, min_db=m.min_db, max_db=m.max_db)
    # LogMel's magnitudes are peak-1 mel filters on |STFT| / sum(window)
    mag = logmel.denormalize(mel.detach().cpu().float(), to="magnitude") * float(logmel.mel.window.sum())
    mag = torch.cat([mag, mag[:, -1:]], dim=1)  # T // hop frames of T samples: centred STFTs have one more
    # least-squares (pseudo-inverse) STFT magnitudes: librosa's NNLS inverse takes seconds per clip
    fb = logmel.mel.mel_fb  # [n_mels, n_fft // 2 + 1]
    stft = (torch.linalg.pinv(fb) @ mag).clamp_min(0.0).numpy()
    wav = librosa.griffinlim(stft, n_iter=n_iter, hop_length=m.hop_length, win_length=m.win_length, n_fft=m.n_fft,
                             random_state=0, length=mel.shape[-1] * m.hop_length)
    return torch.from_numpy(wav).float().clamp(-1.0, 1.0)[None]


# ---------------------------------------------------------------------------------------- tasks
@dataclasses.dataclass
class StageTaskConfig(Config):
    """``[task]`` of an ``n2m-*`` task: the stage ``model`` (in subclasses) and the settings of the
    audio that ``sample()`` logs (denoising steps, seconds, the generators' prompt)."""

    sample_steps: int = 20
    sample_seconds: float = 2.0
    sample_prompt: str = DEFAULT_SAMPLE_PROMPT

    def __post_init__(self) -> None:
        if self.sample_steps < 1 or not self.sample_seconds > 0:
            raise ConfigError("sample_steps must be >= 1 and sample_seconds > 0")
        if not self.sample_prompt.strip():
            raise ConfigError("sample_prompt is empty")


def _stage_task_config(model_config: Type[StageConfig], task: str) -> Type[StageTaskConfig]:
    """``<Stage>TaskConfig``, the ``[task]`` of ``task``: :class:`StageTaskConfig` plus a ``model``
    field of type ``model_config`` (default: its defaults). The five stages differ only in that type."""
    name = model_config.__name__.replace("Config", "TaskConfig")
    return dataclasses.make_dataclass(
        name, [("model", model_config, dataclasses.field(default_factory=model_config))], bases=(StageTaskConfig,),
        namespace={"__doc__": f"``[task]`` of ``{task}``.", "__module__": __name__})


WaveformGeneratorTaskConfig = _stage_task_config(WaveformGeneratorConfig, "n2m-wave-generator")
WaveformCascaderTaskConfig = _stage_task_config(WaveformCascaderConfig, "n2m-wave-cascader")
SpectrogramGeneratorTaskConfig = _stage_task_config(SpectrogramGeneratorConfig, "n2m-spec-generator")
SpectrogramVocoderTaskConfig = _stage_task_config(SpectrogramVocoderConfig, "n2m-vocoder")
SRCascaderTaskConfig = _stage_task_config(SRCascaderConfig, "n2m-sr-cascader")


class _StageTask(TrainTask):
    """Shared training task of a Noise2Music stage (module docstring)."""

    stage_class: ClassVar[Type[DiffusionStage]] = DiffusionStage

    def __init__(self, config=None, data=None):
        super().__init__(config, data)
        self._valid: Optional[StageClipDataset] = None

    @property
    def model_config(self) -> StageConfig:
        return self.config.model

    def build_model(self) -> DiffusionStage:
        return self.stage_class(self.model_config)

    # ---- data -------------------------------------------------------------------------
    def _split_source(self, split: str) -> Optional[Any]:
        from ..data.manifest import split_source

        return split_source(self.data.source, split, self.data.train_split)

    def _items(self, source: Any, what: str) -> Tuple[List[Any], Optional[List[List[str]]]]:
        if self.model_config.uses_text:
            return load_captioned(source, what)
        from ..data import source_metas

        return source_metas(source, what), None

    def _segment(self) -> float:
        rate = self.stage_class.data_sample_rate(self.model_config)
        multiple = self.stage_class.crop_multiple(self.model_config)
        n = (int(round(self.data.crop_seconds * rate)) // multiple) * multiple
        if n < multiple:
            raise ConfigError(f"data.crop_seconds={self.data.crop_seconds} is shorter than {multiple} samples "
                              f"at {rate} Hz")
        return n / rate

    def _dataset(self, metas, captions, random: bool) -> StageClipDataset:
        cls, cfg = self.stage_class, self.model_config
        chords = load_chord_plans(metas)[0] if cfg.uses_chords else None
        return StageClipDataset(metas, captions, self._segment(), cls.data_sample_rate(cfg), random,
                                functools.partial(cls.prepare_example, cfg), seed=self.data.seed, chords=chords)

    def build_train_dataset(self) -> StageClipDataset:
        metas, caps = self._items(self._split_source(self.data.train_split), "training data")
        return self._dataset(metas, caps, random=True)

    def build_valid_dataset(self) -> Optional[StageClipDataset]:
        if self.data.valid_clips == 0:
            return None
        source = self._split_source(self.data.valid_split)
        if source is None:
            return None
        metas, caps = self._items(source, "validation data")
        n = self.data.valid_clips
        self._valid = self._dataset(metas[:n], None if caps is None else caps[:n], random=False)
        return self._valid

    def collate(self, items: List[Any]) -> Any:
        return collate_examples(items)

    #: training files the standardisation statistics are taken from (spread over the split)
    STANDARDIZE_FILES: ClassVar[int] = 512

    def prepare_model(self, model: nn.Module, train_dataset: StageClipDataset) -> None:
        """With ``standardize``: set the statistics from the deterministic first crops (the ones
        validation uses) of up to :attr:`STANDARDIZE_FILES` training files spread over the split,
        unless the model already has them (``train.init_from`` a standardised generator keeps its own)."""
        if not self.model_config.standardize or float(model.data_std) > 0:
            return
        metas, caps = train_dataset.metas, train_dataset.captions
        every = max(1, -(-len(metas) // self.STANDARDIZE_FILES))
        fixed = self._dataset(metas[::every], None if caps is None else caps[::every], random=False)
        model.fit_standardization(fixed[i]["x0"] for i in range(len(fixed)))

    # ---- training ---------------------------------------------------------------------
    def training_step(self, model: nn.Module, batch: Mapping[str, Any], step: int,
                      phase: str = "main") -> Tuple[torch.Tensor, Mapping[str, Any]]:
        from ..train.distributed import unwrap

        return unwrap(model).loss(batch, model=model)

    def _reference_item(self) -> Optional[Dict[str, Any]]:
        """The first held-out crop (or, without a valid split, the first training file's)."""
        ds = self._valid if self._valid is not None else self.build_valid_dataset()
        if ds is None:
            metas, caps = self._items(self._split_source(self.data.train_split), "training data")
            ds = self._dataset(metas[:1], None if caps is None else caps[:1], random=False)
        return ds[0] if len(ds) else None

    def _sampling(self, model: nn.Module, step: int) -> Tuple[DiffusionStage, int, torch.Generator]:
        """``(unwrapped stage, sample steps, generator seeded from (data.seed, step))``."""
        from ..train.distributed import unwrap

        g = torch.Generator().manual_seed(self.data.seed * 1_000_003 + step)
        return unwrap(model), self.config.sample_steps, g

    def sample(self, model: nn.Module, step: int) -> Dict[str, Audio]:
        """Cascaders and the vocoder: regenerate a validation item from its aligned condition
        (generator tasks override this to sample their prompt)."""
        raw, steps, g = self._sampling(model, step)
        item = self._reference_item()
        if item is None:
            return {}
        kw: Dict[str, Any] = {k: item[k][None] for k in raw.aligned_keys}
        if raw.uses_text:
            kw["text"] = [item["text"]]
        x0 = item["x0"]
        out = raw.sample((1, *x0.shape), steps=steps, generator=g, **kw)
        rate = raw.sample_rate
        return {"generated": (out[0].float().cpu(), rate), "target": (x0.float().cpu(), rate)}

    # ---- export -----------------------------------------------------------------------
    def export(self, model: nn.Module, out_dir: Path) -> None:
        if not isinstance(model, self.stage_class):
            raise CheckpointError(f"{self.name} exports a {self.stage_class.__name__}, got {type(model).__name__}")
        model.cpu().eval().save_pretrained(out_dir, dtype="float16")


@register_task("n2m-wave-generator")
class WaveformGeneratorTask(_StageTask):
    """Text -> 3.2 kHz waveform generator."""

    config_class = WaveformGeneratorTaskConfig
    data_config_class = GeneratorDataConfig
    stage_class = WaveformGenerator

    def sample(self, model: nn.Module, step: int) -> Dict[str, Audio]:
        raw, steps, g = self._sampling(model, step)
        n = int(round(self.config.sample_seconds * raw.sample_rate))
        out = raw.generate([self.config.sample_prompt], n, steps=steps, generator=g)
        return {"generated": (out[0].float().cpu(), raw.sample_rate)}


@register_task("n2m-wave-cascader")
class WaveformCascaderTask(_StageTask):
    """3.2 kHz -> 16 kHz waveform cascader (text-conditioned)."""

    config_class = WaveformCascaderTaskConfig
    data_config_class = CascaderDataConfig
    stage_class = WaveformCascader


@register_task("n2m-spec-generator")
class SpectrogramGeneratorTask(_StageTask):
    """Text -> log-mel spectrogram generator (sigma-weighted loss)."""

    config_class = SpectrogramGeneratorTaskConfig
    data_config_class = GeneratorDataConfig
    stage_class = SpectrogramGenerator

    def prepare_model(self, model: nn.Module, train_dataset: StageClipDataset) -> None:
        """The standardisation of :meth:`_StageTask.prepare_model`; then, with ``key_prior``, set
        the prior from every training file's first crop (the deterministic one validation uses) and
        its captions, unless the model already has one (``train.init_from`` a generator with a
        prior keeps that one, the one its network learned against)."""
        super().prepare_model(model, train_dataset)
        if not self.model_config.key_prior or float(model.key_prior_count.sum()) > 0:
            return
        fixed = self._dataset(train_dataset.metas, train_dataset.captions, random=False)

        def examples():
            for i in range(len(fixed)):
                item = fixed[i]  # a file that fails to load is replaced by the next good one
                yield item["x0"], fixed.captions[int(item["index"])]

        counted = model.fit_key_prior(examples())
        if counted == 0:
            raise InvalidInput("key_prior: no training caption states a key (\"<tonic> major|minor\")")

    def sample(self, model: nn.Module, step: int) -> Dict[str, Audio]:
        raw, steps, g = self._sampling(model, step)
        frames = max(1, int(round(self.config.sample_seconds * raw.frame_rate)))
        mel = raw.generate([self.config.sample_prompt], frames, steps=steps, generator=g)
        try:
            preview = griffin_lim_preview(mel[0], raw.config)
        except Exception as e:  # a preview must never stop training
            warnings.warn(f"spectrogram preview failed: {e}", stacklevel=2)
            return {}
        return {"griffin_lim": (preview, raw.config.mel.sample_rate)}


@register_task("n2m-vocoder")
class SpectrogramVocoderTask(_StageTask):
    """Log-mel -> 16 kHz waveform vocoder (audio only)."""

    config_class = SpectrogramVocoderTaskConfig
    data_config_class = CascaderDataConfig
    stage_class = SpectrogramVocoder


@register_task("n2m-sr-cascader")
class SRCascaderTask(_StageTask):
    """16 kHz -> 24 kHz super-resolution cascader (audio only)."""

    config_class = SRCascaderTaskConfig
    data_config_class = CascaderDataConfig
    stage_class = SRCascader

"""Noise2Music (Huang et al. 2023): cascaded diffusion over 1D Efficient U-Nets.

Two paths from text to 24 kHz audio, each a generator and a cascader/vocoder, then a shared
super-resolution cascader:

* waveform:    text -> :class:`WaveformGenerator` (3.2 kHz) -> :class:`WaveformCascader` (16 kHz)
* spectrogram: text -> :class:`SpectrogramGenerator` (80-mel, 100 fps) -> :class:`SpectrogramVocoder` (16 kHz)
* both:        16 kHz -> :class:`SRCascader` (24 kHz)

:mod:`.configs` holds the typed configs (CPU defaults and Table 8 presets), :mod:`.models` the
stages, :mod:`.augment` the conditioning corruption of the cascaders and vocoder, :mod:`.tasks`
their training tasks (``n2m-*`` recipes). The pipeline is :class:`tunecraft.systems.noise2music.Noise2Music`.
"""

from .augment import augment_condition, blur1d, blur2d, gaussian_kernels, noise_corrupt
from .configs import (
    ConditionAugmentConfig,
    MelConfig,
    SpectrogramGeneratorConfig,
    SpectrogramVocoderConfig,
    SRCascaderConfig,
    StageConfig,
    StageSampling,
    WaveformCascaderConfig,
    WaveformGeneratorConfig,
)
from .models import (
    STAGE_CLASSES,
    STAGES_BY_NAME,
    DiffusionStage,
    SpectrogramGenerator,
    SpectrogramVocoder,
    SRCascader,
    WaveformCascader,
    WaveformGenerator,
    load_stage,
    mel_frames,
)

__all__ = [
    "ConditionAugmentConfig",
    "DiffusionStage",
    "MelConfig",
    "SRCascader",
    "SRCascaderConfig",
    "STAGES_BY_NAME",
    "STAGE_CLASSES",
    "SpectrogramGenerator",
    "SpectrogramGeneratorConfig",
    "SpectrogramVocoder",
    "SpectrogramVocoderConfig",
    "StageConfig",
    "StageSampling",
    "WaveformCascader",
    "WaveformCascaderConfig",
    "WaveformGenerator",
    "WaveformGeneratorConfig",
    "augment_condition",
    "blur1d",
    "blur2d",
    "gaussian_kernels",
    "load_stage",
    "mel_frames",
    "noise_corrupt",
]

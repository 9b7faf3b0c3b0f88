"""Typed configs of the five Noise2Music diffusion stages (Huang et al. 2023, Sec. 3 and Table 8).

Every stage is a 1D Efficient U-Net (:class:`~tunecraft.diffusion.UNet1D`) trained as a Gaussian
diffusion model; :class:`StageConfig` holds what they share:

* ``unet`` - the U-Net (the CPU defaults below are much smaller than Table 8; ``paper()`` gives
  Table 8's sizes),
* ``schedule`` / ``objective`` - cosine schedule in log-SNR form, epsilon objective with the simple
  loss; the two generators' CPU defaults use v-prediction instead (at this scale an epsilon-trained
  generator never reads its prompt: ``benchmarks/noise2music_stages.py --text-gain``), their
  ``paper()`` configs the paper's epsilon objective (sigma-weighted for the spectrogram generator,
  as the paper found crucial),
* ``text_encoder`` / ``text_dropout`` - frozen encoder spec (MiniLM by default; the paper uses T5)
  and the 10 % classifier-free-guidance dropout that zeroes the cross-attention output,
* ``sampling`` - inference defaults: step count, CFG scale, step schedule, stochasticity,
* ``clip_x0`` - static clipping of the predicted clean sample (audio and log-mels live in [-1, 1]),
* ``text_attributes`` / ``beat_rates`` - not in the paper, on in the generators' CPU defaults: the
  tempo, tonic and mode a prompt states as extra cross-attention tokens
  (:mod:`tunecraft.text.attributes`), and the beat clock of its tempo (:mod:`tunecraft.modules.beat`)
  stacked with ``x_t``. Both go with the text, so CFG's null branch has neither. Why: MusicGen's
  small LM kept no tempo until it had a beat clock (README); the generators face the same problem.
* ``key_profile`` / ``tonic_octaves`` - not in the paper, on in the generators' CPU defaults: the
  stated key's pitch-class profile (12 channels) and, in the waveform generator's only, the tonic's
  frequency in a few octaves (:mod:`tunecraft.modules.key`), stacked with ``x_t`` after the beat
  clock and dropped with the text likewise. Why: with the tempo's clock and
  a tonic token alone, the spectrogram generator followed the tempo and not the key (README).

The stage-specific configs add their signals:

============================  =================================  ==========================================
stage                          input -> output                    conditioning
============================  =================================  ==========================================
:class:`WaveformGeneratorConfig`   text -> 3.2 kHz audio ``[B, 1, T]``  text (cross-attention)
:class:`WaveformCascaderConfig`    3.2 kHz -> 16 kHz audio           FFT-upsampled low-fi audio (stacked) + text
:class:`SpectrogramGeneratorConfig` text -> log-mel ``[B, 80, F]``   text; 80 mels at 100 frames/s in [-1, 1]
:class:`SpectrogramVocoderConfig`  log-mel -> 16 kHz audio           the spectrogram at the bottom of the U only
:class:`SRCascaderConfig`          16 kHz -> 24 kHz audio            FFT-upsampled 16 kHz audio (stacked), no text
============================  =================================  ==========================================

The cascaders and the vocoder train on short crops with the conditioning corrupted by diffusion
noise and blurred (:class:`ConditionAugmentConfig`); they have no self-attention, so they run
fully convolutionally on any length.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

from ..config import Config
from ..diffusion import DiffusionObjectiveConfig, NoiseScheduleConfig, UNet1DConfig
from ..errors import ConfigError
from ..modules.key import tonic_frequency
from ..text.attributes import ATTRIBUTES, check_attributes

__all__ = [
    "ConditionAugmentConfig",
    "MelConfig",
    "SRCascaderConfig",
    "STAGE_STEP_SCHEDULES",
    "SpectrogramGeneratorConfig",
    "SpectrogramVocoderConfig",
    "StageConfig",
    "StageSampling",
    "WaveformCascaderConfig",
    "WaveformGeneratorConfig",
]

#: step schedules a stage may sample with (Noise2Music's three; see tunecraft.diffusion.step_schedules)
STAGE_STEP_SCHEDULES = ("uniform", "front-heavy", "back-heavy")


# ---------------------------------------------------------------------------------------- parts
@dataclass
class StageSampling(Config):
    """Inference settings of one stage.

    ``steps``: denoising steps; ``cfg_scale``: classifier-free guidance ``w`` (1 = none; only
    stages with text use it); ``step_schedule``: ``uniform``, ``front-heavy`` (more steps near
    ``t = 0``) or ``back-heavy`` (near ``t = 1``); ``eta``: stochasticity in [0, 1] (0 = DDIM,
    1 = ancestral DDPM); ``fact_guidance``: the generators' fact guidance ``s_f`` (0 = off; not
    in the paper): ``uncond + w (cond - uncond) + s_f (cond - neg)`` with ``neg`` the prompt with
    its stated mode swapped (and the key signals and chord plan of that mode), as MusicGen's LM.
    """

    steps: int = 50
    cfg_scale: float = 1.0
    step_schedule: str = "uniform"
    eta: float = 0.0
    fact_guidance: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ConfigError(f"steps must be a positive integer, got {self.steps!r}")
        cfg = float(self.cfg_scale)
        if not cfg >= 0 or cfg == float("inf"):
            raise ConfigError(f"cfg_scale must be a finite number >= 0, got {self.cfg_scale!r}")
        if self.step_schedule not in STAGE_STEP_SCHEDULES:
            raise ConfigError(
                f"unknown step schedule {self.step_schedule!r} (choose from {', '.join(STAGE_STEP_SCHEDULES)})"
            )
        if not 0.0 <= float(self.eta) <= 1.0:
            raise ConfigError(f"eta (stochasticity) must be in [0, 1], got {self.eta!r}")
        f = self.fact_guidance
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0.0 <= float(f) < float("inf"):
            raise ConfigError(f"fact_guidance must be a finite number >= 0, got {f!r}")


@dataclass
class ConditionAugmentConfig(Config):
    """Training-time corruption of a cascader's / vocoder's conditioning (Noise2Music Sec. 4.1).

    With probability ``noise_p`` an example's conditioning ``c`` becomes
    ``alpha_s c + sigma_s eps`` with ``s ~ U[0, noise_t_max]`` under the stage's noise schedule
    (paper: ``t_max = 1.0`` for the cascader, 0.5 for the vocoder). With probability ``blur_p``
    it is blurred by a Gaussian kernel of ``blur_size`` taps (1D along time, or ``blur_size x
    blur_size`` over mel x time when ``blur_2d``) whose sigma is drawn from
    ``U[blur_sigma_min, blur_sigma_max]`` (paper: 1D size 10 with sigma 0.1-5.0 for the cascader,
    2D 5x5 with sigma 0.2-1.0 for the vocoder). The reviews do not give the probabilities; 0.5
    each is ours.
    """

    noise_p: float = 0.5
    noise_t_max: float = 1.0
    blur_p: float = 0.5
    blur_size: int = 10
    blur_sigma_min: float = 0.1
    blur_sigma_max: float = 5.0
    blur_2d: bool = False

    def __post_init__(self) -> None:
        for name in ("noise_p", "blur_p"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < float(self.noise_t_max) <= 1.0:
            raise ConfigError(f"noise_t_max must be in (0, 1], got {self.noise_t_max}")
        if isinstance(self.blur_size, bool) or not isinstance(self.blur_size, int) or self.blur_size < 1:
            raise ConfigError(f"blur_size must be a positive integer, got {self.blur_size!r}")
        if not 0.0 < float(self.blur_sigma_min) <= float(self.blur_sigma_max):
            raise ConfigError(
                f"need 0 < blur_sigma_min <= blur_sigma_max, got {self.blur_sigma_min}, {self.blur_sigma_max}"
            )

    @classmethod
    def cascader(cls) -> "ConditionAugmentConfig":
        """The paper's cascader: noise up to t = 1.0, 1D blur of size 10, sigma 0.1-5.0."""
        return cls()

    @classmethod
    def vocoder(cls) -> "ConditionAugmentConfig":
        """The paper's vocoder: noise up to t = 0.5, 2D 5x5 blur, sigma 0.2-1.0."""
        return cls(noise_t_max=0.5, blur_size=5, blur_sigma_min=0.2, blur_sigma_max=1.0, blur_2d=True)


@dataclass
class MelConfig(Config):
    """The Noise2Music spectrogram: :class:`~tunecraft.audio.LogMel` settings (80 mels, 16 kHz,
    hop 160 = 100 frames/s, dB floor/ceiling mapped to [-1, 1])."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop_length: int = 160
    win_length: int = 640
    n_mels: int = 80
    f_min: float = 0.0
    f_max: float | None = None
    min_db: float = -100.0
    max_db: float = 20.0

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "win_length", "n_mels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"mel.{name} must be a positive integer, got {v!r}")
        if self.win_length > self.n_fft:
            raise ConfigError(f"mel.win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        if not self.max_db > self.min_db:
            raise ConfigError(f"mel.max_db ({self.max_db}) must exceed min_db ({self.min_db})")

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


def _sampling(steps: int, cfg_scale: float, schedule: str) -> StageSampling:
    return StageSampling(steps=steps, cfg_scale=cfg_scale, step_schedule=schedule, eta=0.0)


#: the generators' CPU-default beat clock: cycles per beat (one per 4 beats up to four per beat)
CPU_BEAT_RATES = (0.25, 0.5, 1.0, 2.0, 4.0)
# octaves of the waveform generator's tonic reference (C2-B4, 65-494 Hz: below 3.2 kHz's Nyquist)
CPU_TONIC_OCTAVES = (2, 3, 4)
# octaves of its triad reference (thirds and fifths above C3-B4: D#3-F#5, 156-740 Hz)
CPU_TRIAD_OCTAVES = (3, 4)
# octaves of its chord reference (roots C3-B4 and the thirds and fifths above them: up to G5, 784 Hz)
CPU_CHORD_OCTAVES = (3, 4)

# CPU-sized U-Nets (see each config's docstring for the comparison with Table 8).
_CPU_COMMON = dict(kernel_size=5, num_heads=4, norm_groups=8, embed_dim=128)


def _cpu_unet(**kw) -> UNet1DConfig:
    return UNet1DConfig(**{**_CPU_COMMON, **kw})


#: the generators' key options: name, value when off, input channels per unit (a flag counts 1,
#: a list of octaves its length)
_KEY_OPTIONS = (("key_profile", False, 12), ("tonic_octaves", [], 2), ("triad_octaves", [], 4),
                ("chord_octaves", [], 6))


def _aligned_width(beat_rates, options: dict) -> int:
    """Aligned-conditioning channels of a beat clock with ``beat_rates`` ([sin, cos] per rate) and
    the key options in ``options`` (name -> flag or octave list; absent ones are off)."""
    return 2 * len(beat_rates) + sum(
        per * (len(options[name]) if isinstance(options[name], (list, tuple)) else int(bool(options[name])))
        for name, _, per in _KEY_OPTIONS if name in options)


# ---------------------------------------------------------------------------------------- base
@dataclass
class StageConfig(Config):
    """What every Noise2Music stage shares (module docstring)."""

    unet: UNet1DConfig = field(default_factory=UNet1DConfig)
    schedule: NoiseScheduleConfig = field(default_factory=NoiseScheduleConfig.noise2music)
    objective: DiffusionObjectiveConfig = field(default_factory=DiffusionObjectiveConfig)
    sampling: StageSampling = field(default_factory=StageSampling)
    clip_x0: float | None = 1.0
    text_encoder: str = "minilm"
    text_max_length: int | None = None
    text_dropout: float = 0.1
    # not in the paper (0 = off): weight of a multi-resolution STFT loss (spectral convergence + log
    # magnitude) between the clean signal the model's output implies and the target, added to the
    # denoising loss; phase-blind, so it rewards the right harmonics where the plain loss prefers a
    # shrunken guess (the vocoder, whose phase is not in its conditioning)
    spectral_loss_weight: float = 0.0
    # not in the paper (empty = off): facts a prompt states (``bpm``, ``tonic``, ``mode``), read by
    # tunecraft.text.attributes.parse_facts and appended to the text states as extra cross-attention
    # tokens (dropped with the text), as MusicGen's task.text_attributes
    text_attributes: list = field(default_factory=list)
    # not in the paper (generators only; empty = off): the beat clock of the tempo a prompt states
    # (tunecraft.modules.beat), [sin, cos](2 pi r phi) for each rate r (cycles per beat) at every
    # output position, stacked with x_t as aligned conditioning (unet.cond_channels = 2 x rates);
    # dropped with the text (CFG's null branch has none)
    beat_rates: list = field(default_factory=list)
    # not in the paper (generators only; off here, on in both generators' CPU defaults): the stated
    # key's standardised Krumhansl-Kessler pitch-class profile (tunecraft.modules.key), 12 channels
    # constant over time, stacked with x_t after the beat clock; dropped with the text
    key_profile: bool = False
    # not in the paper (generators only; empty = off; octaves 2-4 in the waveform generator's CPU
    # default): [sin, cos] of the stated tonic's frequency in each of these octaves (A4 = 440 Hz), 2
    # channels per octave after the key profile; every frequency must lie below half the stage's
    # position rate (waveform generators)
    tonic_octaves: list = field(default_factory=list)
    # not in the paper (generators only; empty = off; octaves 3-4 in the waveform generator's CPU
    # default): [sin, cos] of the stated key's third (major or minor, by its mode) and fifth, the
    # tonic in each of these octaves giving the pitches above it, 4 channels per octave after the
    # tonic reference; below half the stage's position rate like tonic_octaves
    triad_octaves: list = field(default_factory=list)
    # not in the paper (generators only; empty = off): [sin, cos] of the root, third and fifth of the
    # chord sounding at each position, each in these octaves (6 channels per octave, after the triad
    # reference), from a timed chord plan: the training clip's (its sidecar's ``chords``) and, at
    # generation, one drawn in the stated key and tempo by the procedural composer's harmony
    # grammar (tunecraft.data.composer.harmony_plan); zero without a stated key, dropped with the
    # text; below half the stage's position rate like tonic_octaves
    chord_octaves: list = field(default_factory=list)
    # not in the paper (generators only; off here, on in the spectrogram generator's CPU default): the
    # diffusion runs on the training data standardised, (x0 - per-channel mean) / one overall
    # standard deviation (buffers ``data_mean``, ``data_std`` set from the training data before the
    # first step), and generation undoes it. v-prediction's output and loss weighting assume data
    # of unit variance (EDM's preconditioning with sigma_data = 1); log-mels in [-1, 1] vary by
    # about 0.2, 3.2 kHz audio by about 0.13
    standardize: bool = False

    #: whether this stage makes music from text alone (the generators), so may take a beat clock
    _generator: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.text_dropout) <= 1.0:
            raise ConfigError(f"text_dropout must be in [0, 1], got {self.text_dropout}")
        w = self.spectral_loss_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= float(w) < float("inf"):
            raise ConfigError(f"spectral_loss_weight must be a number >= 0, got {w!r}")
        if self.clip_x0 is not None and not float(self.clip_x0) > 0:
            raise ConfigError(f"clip_x0 must be positive or null, got {self.clip_x0}")
        if not str(self.text_encoder).strip():
            raise ConfigError("text_encoder is empty (use 'minilm' or a local encoder spec)")
        self.text_attributes = check_attributes(self.text_attributes, "text_attributes")
        if self.text_attributes and not self.uses_text:
            raise ConfigError(f"{type(self).__name__}: text_attributes need a text-conditioned stage (unet.text_dim > 0)")
        rates = self.beat_rates
        if not isinstance(rates, (list, tuple)) or not all(
                isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r) and r > 0 for r in rates):
            raise ConfigError(f"beat_rates must be a list of positive numbers (cycles per beat), got {rates!r}")
        self.beat_rates = [float(r) for r in rates]
        if self.beat_rates and not self._generator:
            raise ConfigError(f"{type(self).__name__}: only the generators take a beat clock (beat_rates)")
        if not isinstance(self.key_profile, bool):
            raise ConfigError(f"key_profile must be true or false, got {self.key_profile!r}")
        for name in ("tonic_octaves", "triad_octaves", "chord_octaves"):
            octaves = getattr(self, name)
            if not isinstance(octaves, (list, tuple)) or not all(
                    isinstance(o, int) and not isinstance(o, bool) and -1 <= o <= 9 for o in octaves) \
                    or len(set(octaves)) != len(octaves):
                raise ConfigError(f"{name} must be a list of distinct octave numbers -1..9, got {octaves!r}")
            setattr(self, name, list(octaves))
        if not isinstance(self.standardize, bool):
            raise ConfigError(f"standardize must be true or false, got {self.standardize!r}")
        if self.standardize and not self._generator:
            raise ConfigError(f"{type(self).__name__}: only the generators standardise their data (standardize)")
        if (self.key_profile or self.tonic_octaves or self.triad_octaves or self.chord_octaves) \
                and not self._generator:
            raise ConfigError(f"{type(self).__name__}: only the generators take key conditioning "
                              "(key_profile, tonic_octaves, triad_octaves, chord_octaves)")
        self._check()

    def _check(self) -> None:  # stage-specific validation
        pass

    def _need(self, ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"{type(self).__name__}: {message}")

    @property
    def aligned_channels(self) -> int:
        """Channels of the text-derived aligned conditioning (generators): beat clock, key profile,
        tonic reference, triad reference, chord reference."""
        return _aligned_width(self.beat_rates, {name: getattr(self, name) for name, _, _ in _KEY_OPTIONS})

    @property
    def uses_chords(self) -> bool:
        """Whether the stage reads a timed chord plan (``chord_octaves``; a spectrogram generator's
        ``chord_mel`` too): its training examples carry their clip's chords."""
        return bool(self.chord_octaves)

    @property
    def uses_text(self) -> bool:
        return self.unet.text_dim > 0


def _check_cascader(config: StageConfig, name: str, mono_note: str = "", no_text: bool = False) -> None:
    """The checks a cascader stage (``WaveformCascaderConfig``, ``SRCascaderConfig``) shares: a mono
    U-Net with the upsampled low-rate audio stacked as its one conditioning channel, no compressed
    sequence (and no text when ``no_text``), ``0 < low_sample_rate < sample_rate`` and
    ``inference_cond_t`` in [0, 1]. ``name`` ("the cascader") starts the messages."""
    u = config.unet
    config._need(u.in_channels == 1 and u.output_channels == 1 and u.cond_channels == 1,
                 f"{name} is mono: in/out channels 1 and cond_channels 1{mono_note}")
    config._need(u.compressed_channels == 0, f"{name} takes no compressed sequence")
    if no_text:
        config._need(u.text_dim == 0, f"{name} takes no text (unet.text_dim = 0)")
    config._need(0 < config.low_sample_rate < config.sample_rate, "need 0 < low_sample_rate < sample_rate")
    config._need(0.0 <= config.inference_cond_t <= 1.0, "inference_cond_t must be in [0, 1]")
    config._need(isinstance(config.residual, bool), f"residual must be true or false, got {config.residual!r}")


def _check_generator(config: StageConfig, positions_per_second: float) -> None:
    """A generator reads text and takes no aligned conditioning besides what its prompt states (beat
    clock, key profile, tonic, triad and chord references), whose frequencies fit its position rate."""
    u = config.unet
    config._need(u.compressed_channels == 0, "a generator takes no compressed sequence")
    config._need(u.cond_channels == config.aligned_channels,
                 f"a generator's only aligned conditioning is what its prompt states: unet.cond_channels must be "
                 f"2 x len(beat_rates) + 12 x key_profile + 2 x len(tonic_octaves) + 4 x len(triad_octaves) "
                 f"+ 6 x len(chord_octaves){' + mel.n_mels x chord_mel' if hasattr(config, 'chord_mel') else ''} = "
                 f"{config.aligned_channels}, "
                 f"got {u.cond_channels}")
    config._need(u.text_dim > 0, "a generator is text-conditioned (unet.text_dim > 0)")
    # the highest pitch class each reference reaches above its octave's C: B, B's fifth (F#), the
    # augmented fifth above B (G)
    for name, highest in (("tonic_octaves", 11), ("triad_octaves", 11 + 7), ("chord_octaves", 11 + 8)):
        octaves = getattr(config, name)
        if octaves:
            top = tonic_frequency(highest, max(octaves))
            config._need(top < positions_per_second / 2,
                         f"{name} up to {max(octaves)} reach {top:.0f} Hz, above half the "
                         f"{positions_per_second:g} positions per second")


def _without_newer_key_options(data: dict, extra: tuple = ()) -> dict:
    """A generator config written before some of its key options existed: where ``data`` lacks
    ``key_profile`` / ``tonic_octaves`` / ``triad_octaves`` / ``chord_octaves`` (or an ``extra``
    option, ``(name, value when off, channels when on)``) and its U-Net's ``cond_channels`` count
    none of the missing ones (the beat clock and the options it has), those are off, as they were
    when it was written; otherwise ``data`` unchanged (the defaults apply)."""
    options = _KEY_OPTIONS + tuple(extra)
    missing = [name for name, _, _ in options if name not in data]
    unet = data.get("unet")
    if not missing or not isinstance(unet, dict) or "cond_channels" not in unet:
        return data
    rates = data.get("beat_rates")
    if not isinstance(rates, (list, tuple)):
        return data  # not a stored config (those list their beat rates)
    present = {name: data[name] for name, _, _ in _KEY_OPTIONS if name in data}
    if not all(isinstance(v, (bool, list, tuple)) for v in present.values()):
        return data  # let validation report it
    width = _aligned_width(rates, present)
    for name, _, channels in extra:
        if name in data:
            if not isinstance(data[name], bool):
                return data
            width += channels if data[name] else 0
    if unet["cond_channels"] != width:
        return data
    return {**data, **{name: (list(off) if isinstance(off, list) else off) for name, off, _ in options
                       if name in missing}}


# ---------------------------------------------------------------------------------------- stages
@dataclass
class WaveformGeneratorConfig(StageConfig):
    """Text -> 3.2 kHz waveform. Trained on full clips (it has self-attention).

    CPU default vs Table 8: 4 levels, strides [4, 4, 4, 4] (total 256) instead of 6 x 4; channels
    [32, 64, 128, 192] (16-channel stem) instead of 256 x [1, 1, 2, 3, 4, 4]; 6 residual blocks
    instead of 21; kernel 5 instead of 7; self- and cross-attention in the last 2 levels (paper: 3).
    Sampling: front-heavy and CFG 10 as in the paper, but 50 steps instead of 1000. Objective:
    v-prediction instead of epsilon (module docstring). Not in the paper: the prompt's tempo, tonic
    and mode as extra cross-attention tokens and the tempo's beat clock stacked with ``x_t``
    (``text_attributes``, ``beat_rates``; :meth:`paper` has neither); the key's profile and the
    tonic's frequency in octaves 2-4, its triad's third and fifth above the tonic in octaves 3-4
    and the root, third and fifth of the chord sounding at each position in octaves 3-4 (from a
    chord plan) stacked likewise (``key_profile``, ``tonic_octaves``, ``triad_octaves``,
    ``chord_octaves``).
    """

    sample_rate: int = 3200
    unet: UNet1DConfig = field(default_factory=lambda: _cpu_unet(
        in_channels=1, cond_channels=2 * len(CPU_BEAT_RATES) + 12 + 2 * len(CPU_TONIC_OCTAVES)
        + 4 * len(CPU_TRIAD_OCTAVES) + 6 * len(CPU_CHORD_OCTAVES), text_dim=256,
        channels=[32, 64, 128, 192],
        strides=[4, 4, 4, 4], blocks=[1, 1, 2, 2], stem_channels=16, self_attention_levels=[2, 3],
        cross_attention_levels=[2, 3]))
    text_attributes: list = field(default_factory=lambda: list(ATTRIBUTES))
    beat_rates: list = field(default_factory=lambda: list(CPU_BEAT_RATES))
    key_profile: bool = True
    tonic_octaves: list = field(default_factory=lambda: list(CPU_TONIC_OCTAVES))
    triad_octaves: list = field(default_factory=lambda: list(CPU_TRIAD_OCTAVES))
    chord_octaves: list = field(default_factory=lambda: list(CPU_CHORD_OCTAVES))
    objective: DiffusionObjectiveConfig = field(default_factory=lambda: DiffusionObjectiveConfig(parameterization="v"))
    sampling: StageSampling = field(default_factory=lambda: _sampling(50, 10.0, "front-heavy"))

    _generator: ClassVar[bool] = True

    @classmethod
    def from_dict(cls, data: dict) -> "WaveformGeneratorConfig":
        return super().from_dict(_without_newer_key_options(data))

    def _check(self) -> None:
        u = self.unet
        self._need(u.in_channels == 1 and u.output_channels == 1, "the waveform is mono (in/out channels 1)")
        self._need(self.sample_rate > 0, f"sample_rate must be positive, got {self.sample_rate}")
        _check_generator(self, float(self.sample_rate))

    @classmethod
    def paper(cls, **kw) -> "WaveformGeneratorConfig":
        """Table 8 U-Net, epsilon objective, 1000 front-heavy steps, CFG 10."""
        unet = UNet1DConfig.noise2music(in_channels=1, text_dim=kw.pop("text_dim", 256))
        kw.setdefault("objective", DiffusionObjectiveConfig())
        kw.setdefault("text_attributes", [])
        kw.setdefault("beat_rates", [])
        kw.setdefault("key_profile", False)
        kw.setdefault("tonic_octaves", [])
        kw.setdefault("triad_octaves", [])
        kw.setdefault("chord_octaves", [])
        return cls(unet=unet, sampling=_sampling(1000, 10.0, "front-heavy"), **kw)


@dataclass
class WaveformCascaderConfig(StageConfig):
    """3.2 kHz -> 16 kHz waveform from the FFT-upsampled low-fi audio (stacked with ``x_t``) and text.

    CPU default vs Table 8: 4 levels, strides [4, 4, 4, 4]; channels [16, 32, 64, 128] (8-channel
    stem); 5 residual blocks; kernel 5; no self-attention (fully convolutional, trained on 3.2 s
    crops as in the paper), cross-attention to the text at the bottom level only.
    Sampling: 20 front-heavy steps without guidance (``cfg_scale`` 1 halves the cost).
    Not in the paper (CPU default; :meth:`paper` has neither): ``residual`` (the model makes what
    the upsampled input lacks, the 1.6-8 kHz band, instead of re-creating all of it) and
    v-prediction, as the SR cascader.
    """

    sample_rate: int = 16000
    low_sample_rate: int = 3200
    unet: UNet1DConfig = field(default_factory=lambda: _cpu_unet(
        in_channels=1, cond_channels=1, text_dim=256, channels=[16, 32, 64, 128], strides=[4, 4, 4, 4],
        blocks=[1, 1, 1, 2], stem_channels=8, self_attention_levels=[], cross_attention_levels=[3]))
    objective: DiffusionObjectiveConfig = field(default_factory=lambda: DiffusionObjectiveConfig(parameterization="v"))
    sampling: StageSampling = field(default_factory=lambda: _sampling(20, 1.0, "front-heavy"))
    augment: ConditionAugmentConfig = field(default_factory=ConditionAugmentConfig.cascader)
    #: diffusion time of the noise put on the conditioning at inference (0 = clean)
    inference_cond_t: float = 0.0
    #: not in the paper: model the difference from the upsampled input, and add it back (see
    #: SpectrogramVocoderConfig.residual)
    residual: bool = True

    def _check(self) -> None:
        _check_cascader(self, "the cascader", mono_note=" (the upsampled low-fi audio)")

    @classmethod
    def paper(cls, **kw) -> "WaveformCascaderConfig":
        """Table 8 U-Net with cross-attention in the last 3 levels, front-heavy steps, the epsilon
        objective, not residual."""
        unet = UNet1DConfig.noise2music(in_channels=1, cond_channels=1, text_dim=kw.pop("text_dim", 256),
                                        self_attention_levels=[])
        kw.setdefault("objective", DiffusionObjectiveConfig())
        kw.setdefault("residual", False)
        return cls(unet=unet, sampling=_sampling(1000, 1.0, "front-heavy"), **kw)


@dataclass
class SpectrogramGeneratorConfig(StageConfig):
    """Text -> 80-bin log-mel at 100 frames/s in [-1, 1]. Full clips.

    CPU default vs Table 8: 4 levels, strides [2, 2, 2, 2] over frames (total 16), channels
    [128, 128, 192, 256] (128-channel stem) instead of 256 x [1, 1, 2, 3, 4, 4]; 6 residual blocks
    instead of 21; kernel 5; self-attention in the last 2 levels, cross-attention in the last 3.
    Sampling: back-heavy and CFG 5 as in the paper, 50 steps instead of 1000. Objective:
    v-prediction instead of the paper's sigma-weighted epsilon loss (module docstring). Not in the
    paper: attribute tokens and a beat clock, as :class:`WaveformGeneratorConfig`; the key's
    profile (``key_profile``); the chord plan's mel templates (``chord_mel``); standardised data
    (``standardize``: without it this generator's samples were mostly noise, README).
    """

    mel: MelConfig = field(default_factory=MelConfig)
    unet: UNet1DConfig = field(default_factory=lambda: _cpu_unet(
        in_channels=80, cond_channels=2 * len(CPU_BEAT_RATES) + 12 + MelConfig.n_mels, text_dim=256,
        channels=[128, 128, 192, 256],
        strides=[2, 2, 2, 2], blocks=[1, 1, 2, 2], stem_channels=128, self_attention_levels=[2, 3],
        cross_attention_levels=[1, 2, 3]))
    text_attributes: list = field(default_factory=lambda: list(ATTRIBUTES))
    beat_rates: list = field(default_factory=lambda: list(CPU_BEAT_RATES))
    key_profile: bool = True
    # not in the paper (off; measured in the README): the diffusion models the log-mel minus the
    # stated key's prior, the training spectrograms' mean log-mel in that key minus their mean over
    # all keys (buffers, set from the training data before the first step), and generation adds it back
    key_prior: bool = False
    # not in the paper (on in the CPU default): the mel template of the chord sounding at each frame (the time-averaged,
    # standardised log-mel of a steady rendering of its root, third and fifth; tunecraft.modules.key),
    # mel.n_mels channels after the key profile, from a timed chord plan as the waveform generator's
    # chord_octaves (the clip's sidecar chords in training, a plan drawn in the stated key at
    # generation); zero without a stated key, dropped with the text
    chord_mel: bool = True
    objective: DiffusionObjectiveConfig = field(default_factory=lambda: DiffusionObjectiveConfig(parameterization="v"))
    sampling: StageSampling = field(default_factory=lambda: _sampling(50, 5.0, "back-heavy"))
    standardize: bool = True

    _generator: ClassVar[bool] = True

    @classmethod
    def from_dict(cls, data: dict) -> "SpectrogramGeneratorConfig":
        mel = data.get("mel")
        n_mels = mel.get("n_mels", MelConfig.n_mels) if isinstance(mel, dict) else MelConfig.n_mels
        extra = (("chord_mel", False, n_mels), ("standardize", False, 0)) if isinstance(n_mels, int) else ()
        return super().from_dict(_without_newer_key_options(data, extra))

    @property
    def aligned_channels(self) -> int:
        """The beat clock and key channels of :class:`StageConfig`, then ``mel.n_mels`` for ``chord_mel``."""
        return super().aligned_channels + (self.mel.n_mels if self.chord_mel is True else 0)

    @property
    def uses_chords(self) -> bool:
        return super().uses_chords or self.chord_mel is True

    def _check(self) -> None:
        self._need(isinstance(self.chord_mel, bool), f"chord_mel must be true or false, got {self.chord_mel!r}")
        u = self.unet
        self._need(u.in_channels == self.mel.n_mels and u.output_channels == self.mel.n_mels,
                   f"in/out channels must equal mel.n_mels ({self.mel.n_mels})")
        _check_generator(self, self.mel.frame_rate)
        self._need(isinstance(self.key_prior, bool), f"key_prior must be true or false, got {self.key_prior!r}")
        self._need(not self.spectral_loss_weight, "spectral_loss_weight is for waveform stages (this one makes log-mels)")

    @classmethod
    def paper(cls, **kw) -> "SpectrogramGeneratorConfig":
        """Table 8 channels/blocks with frame strides [2]*6, sigma-weighted epsilon loss, 1000
        back-heavy steps, CFG 5."""
        unet = UNet1DConfig.noise2music(in_channels=80, text_dim=kw.pop("text_dim", 256), strides=[2] * 6)
        kw.setdefault("objective", DiffusionObjectiveConfig(weighting="sigma"))
        kw.setdefault("text_attributes", [])
        kw.setdefault("beat_rates", [])
        kw.setdefault("key_profile", False)
        kw.setdefault("chord_mel", False)
        kw.setdefault("standardize", False)
        return cls(unet=unet, sampling=_sampling(1000, 5.0, "back-heavy"), **kw)


@dataclass
class SpectrogramVocoderConfig(StageConfig):
    """Log-mel -> 16 kHz waveform, conditioned on the aligned spectrogram only (no text).

    The U-Net's total stride equals the mel hop (160), so its bottom runs at the spectrogram's
    100 frames/s and the spectrogram enters there (the "compressed aligned sequence" of Fig. 1).
    CPU default vs Table 8: 4 levels, strides [4, 4, 2, 5]; channels [16, 32, 64, 128] (8-channel
    stem); 5 residual blocks; kernel 5; no attention (3.2 s crops, any length at inference).
    Sampling: 20 front-heavy steps. The CPU default also uses the three options below that the
    paper does not have (Griffin-Lim estimate, residual, consistency projection), v-prediction,
    linear upsampling and no noise augmentation of the spectrogram (a noised log-mel turns into a
    Griffin-Lim estimate that is mostly loud noise; the blur augmentation stays): the measurements
    are in the README. :meth:`paper` has none of them.

    ``griffin_lim_iters > 0`` (not in the paper; off by default) also stacks a deterministic
    estimate of the waveform, made from the same (augmented) spectrogram by the mel
    pseudo-inverse and that many fast Griffin-Lim iterations, with ``x_t`` at the top of the U
    (``unet.cond_channels = 1``), as the cascaders stack their upsampled input. The conditioning is
    still a function of the spectrogram alone; the estimate hands the U-Net the harmonics' exact
    frequencies, which a small vocoder trained for minutes on a CPU does not learn to place.

    ``residual`` (not in the paper; needs ``griffin_lim_iters > 0``) makes the diffusion model the
    difference between the audio and that estimate, and generation return estimate + sample: the
    vocoder refines the Griffin-Lim audio instead of re-creating it. Why: a small vocoder's guess of
    the clean signal at high noise is shrunk towards zero, and its upsampling artefacts (near 4 and
    8 kHz) then decide what the sampler builds on, so the key is lost (README, sessions 5-7); with a
    residual, the worst a weak model does is leave the estimate (key kept on 10 of 12 clips) as it is.

    ``consistency_iters > 0`` (not in the paper; off by default) projects the sampled audio onto
    the spectrogram it was asked for: the magnitudes implied by the spectrogram (mel
    pseudo-inverse) under the sample's own phase, refined by that many fast Griffin-Lim
    iterations. A vocoder trained long enough produces audio whose spectrogram is its input; a
    small CPU-trained one does not (its upsampling artefacts near 4-6 kHz outweigh the partials),
    and the projection restores what the input says (pitch, onsets) while the phase comes from
    the diffusion model instead of from zero.
    """

    sample_rate: int = 16000
    mel: MelConfig = field(default_factory=MelConfig)
    unet: UNet1DConfig = field(default_factory=lambda: _cpu_unet(
        in_channels=1, cond_channels=1, compressed_channels=80, channels=[16, 32, 64, 128], strides=[4, 4, 2, 5],
        blocks=[1, 1, 1, 2], stem_channels=8, self_attention_levels=[], cross_attention_levels=[], upsample="linear"))
    objective: DiffusionObjectiveConfig = field(default_factory=lambda: DiffusionObjectiveConfig(parameterization="v"))
    sampling: StageSampling = field(default_factory=lambda: _sampling(20, 1.0, "front-heavy"))
    augment: ConditionAugmentConfig = field(default_factory=lambda: ConditionAugmentConfig.vocoder().replace(noise_p=0.0))
    inference_cond_t: float = 0.0
    griffin_lim_iters: int = 8
    residual: bool = True
    consistency_iters: int = 8

    def _check(self) -> None:
        u = self.unet
        it = self.griffin_lim_iters
        ci = self.consistency_iters
        self._need(not isinstance(ci, bool) and isinstance(ci, int) and ci >= 0,
                   f"consistency_iters must be an integer >= 0, got {ci!r}")
        self._need(isinstance(self.residual, bool), f"residual must be true or false, got {self.residual!r}")
        self._need(not self.residual or it > 0, "residual needs griffin_lim_iters > 0 (the estimate it is relative to)")
        self._need(not isinstance(it, bool) and isinstance(it, int) and it >= 0,
                   f"griffin_lim_iters must be an integer >= 0, got {it!r}")
        self._need(u.in_channels == 1 and u.output_channels == 1,
                   "the vocoder makes mono audio (unet in/out channels 1)")
        self._need(u.cond_channels == (1 if it else 0),
                   "unet.cond_channels must be 1 with griffin_lim_iters > 0 (the Griffin-Lim estimate is "
                   "stacked with x_t) and 0 without")
        self._need(u.compressed_channels == self.mel.n_mels,
                   f"unet.compressed_channels must equal mel.n_mels ({self.mel.n_mels})")
        self._need(u.text_dim == 0, "the vocoder is conditioned on the spectrogram only (unet.text_dim = 0)")
        self._need(u.total_stride == self.mel.hop_length,
                   f"the U-Net's total stride ({u.total_stride}) must equal the mel hop ({self.mel.hop_length})")
        self._need(self.sample_rate == self.mel.sample_rate, "sample_rate must equal mel.sample_rate")
        self._need(0.0 <= self.inference_cond_t <= 1.0, "inference_cond_t must be in [0, 1]")

    @classmethod
    def paper(cls, **kw) -> "SpectrogramVocoderConfig":
        """Table 8 widths with strides whose product is the hop (160); the paper's conditioning
        (the spectrogram only), epsilon objective and augmentation."""
        unet = UNet1DConfig.noise2music(in_channels=1, compressed_channels=80, strides=[2, 2, 2, 4, 5, 1],
                                        self_attention_levels=[], cross_attention_levels=[])
        for key, value in dict(griffin_lim_iters=0, residual=False, consistency_iters=0).items():
            kw.setdefault(key, value)
        kw.setdefault("objective", DiffusionObjectiveConfig())
        kw.setdefault("augment", ConditionAugmentConfig.vocoder())
        return cls(unet=unet, sampling=_sampling(1000, 1.0, "front-heavy"), **kw)


@dataclass
class SRCascaderConfig(StageConfig):
    """16 kHz -> 24 kHz waveform from the FFT-upsampled 16 kHz audio; no text ("lightweight").

    CPU default: 4 levels, strides [4, 4, 4, 4], channels [16, 32, 64, 128] (8-channel stem), one
    residual block per level, kernel 5, no attention. Same conditioning augmentation as the
    waveform cascader (the reviews do not give the SR cascader's). Sampling: 20 front-heavy steps.
    Not in the paper: ``residual`` (the model makes what the upsampled input lacks, above all the
    8-12 kHz band, instead of re-creating all of it) and v-prediction.
    """

    sample_rate: int = 24000
    low_sample_rate: int = 16000
    unet: UNet1DConfig = field(default_factory=lambda: _cpu_unet(
        in_channels=1, cond_channels=1, channels=[16, 32, 64, 128], strides=[4, 4, 4, 4], blocks=[1, 1, 1, 1],
        stem_channels=8, self_attention_levels=[], cross_attention_levels=[]))
    objective: DiffusionObjectiveConfig = field(default_factory=lambda: DiffusionObjectiveConfig(parameterization="v"))
    sampling: StageSampling = field(default_factory=lambda: _sampling(20, 1.0, "front-heavy"))
    augment: ConditionAugmentConfig = field(default_factory=ConditionAugmentConfig.cascader)
    inference_cond_t: float = 0.0
    residual: bool = True

    def _check(self) -> None:
        _check_cascader(self, "the SR cascader", no_text=True)


def replace_unet(config: StageConfig, **unet_overrides) -> StageConfig:
    """``config`` with its U-Net fields replaced (validation re-runs)."""
    return dataclasses.replace(config, unet=config.unet.replace(**unet_overrides))

"""The five Noise2Music diffusion stages (Huang et al. 2023, Sec. 3.2-3.4).

Each stage is a :class:`DiffusionStage`: a 1D Efficient U-Net (:class:`~tunecraft.diffusion.UNet1D`)
trained with the denoising loss ``E [w_t || eps_theta(x_t, c, t) - eps ||^2]`` (Eq. 1) under a cosine
schedule, optionally cross-attending to text (T5 in the paper, MiniLM here) with 10 % of the
training examples' cross-attention output zeroed (classifier-free guidance, Eq. 2 at inference):

* :class:`WaveformGenerator` - text -> 3.2 kHz waveform ``[B, 1, T]``;
* :class:`WaveformCascader` - 16 kHz waveform from the 3.2 kHz one, FFT-upsampled
  (:func:`~tunecraft.audio.fft_resample`) and stacked with ``x_t``, plus text;
* :class:`SpectrogramGenerator` - text -> 80-bin log-mel ``[B, 80, F]`` at 100 frames/s in [-1, 1]
  (sigma-weighted loss);
* :class:`SpectrogramVocoder` - 16 kHz waveform from the spectrogram alone, which enters at the
  bottom of the U where the resolution equals the spectrogram's (total stride = hop = 160);
* :class:`SRCascader` - 24 kHz waveform from the FFT-upsampled 16 kHz one, no text.

The cascaders and the vocoder see corrupted conditioning in training (:mod:`.augment`), train on
short crops and, having no self-attention, run on any length.

Each stage saves and loads as a model directory (``config.json`` naming its class and versions,
``model.safetensors`` with float16 parameters); the frozen text encoder is not stored, the config
names it. :func:`load_stage` loads any stage directory.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..audio import fft_resample, log_mel, log_mel_inverse, resample
from ..diffusion import (
    BACK_HEAVY,
    FRONT_HEAVY,
    DiffusionObjective,
    DiffusionSampler,
    UNet1D,
    guided_model_fn,
    text_dropout_mask,
)
from ..errors import CheckpointError, ConfigError, InvalidInput, InvalidPrompt
from ..pretrained import (
    build_from_model_dir,
    read_model_config,
    resolve_model_dir,
    state_for_saving,
    write_model_dir,
)
from ..modules.beat import beat_clock, beat_features
from ..modules.key import chord_features, chord_mel_features, key_profile, tonic_features, triad_features
from ..text import TextConditioner, TextStates
from ..text.attributes import parse_facts
from ..text.counterfactual import guidance_negatives
from .augment import augment_condition, noise_corrupt
from .configs import (
    MelConfig,
    SpectrogramGeneratorConfig,
    SpectrogramVocoderConfig,
    SRCascaderConfig,
    StageConfig,
    StageSampling,
    WaveformCascaderConfig,
    WaveformGeneratorConfig,
)

__all__ = [
    "DiffusionStage",
    "SRCascader",
    "STAGE_CLASSES",
    "SpectrogramGenerator",
    "SpectrogramVocoder",
    "WaveformCascader",
    "WaveformGenerator",
    "load_stage",
    "mel_frames",
]

FORMAT_VERSION = 1
_PIECEWISE_MIN_STEPS = max(len(FRONT_HEAVY), len(BACK_HEAVY))


#: a prompt that asks for three beats to the bar
_TRIPLE_METER = re.compile(r"\b3/4\b|\bthree-four\b|\bwaltz", re.IGNORECASE)


def _floats(values: Sequence[float] | torch.Tensor) -> list[float]:
    return [float(v) for v in (values.tolist() if isinstance(values, torch.Tensor) else values)]


def mel_frames(wav: torch.Tensor, mel: MelConfig) -> torch.Tensor:
    """Noise2Music log-mel of ``wav [..., T]`` (at ``mel.sample_rate``) with exactly ``T // hop`` frames:
    frame ``k`` is centred on sample ``k * hop``, so frame ``k`` aligns with samples
    ``[k * hop, (k + 1) * hop)``. ``[T]`` -> ``[n_mels, T // hop]``, ``[B, 1, T]`` -> ``[B, n_mels, T // hop]``."""
    t = wav.shape[-1]
    frames = t // mel.hop_length
    if frames < 1:
        raise InvalidInput(f"{t} samples are shorter than one spectrogram hop ({mel.hop_length})")
    x = wav if wav.dim() == 1 else wav.reshape(-1, t)
    spec = log_mel(x.float(), mel.sample_rate, mel.n_fft, mel.hop_length, mel.win_length, mel.n_mels,
                   mel.f_min, mel.f_max, mel.min_db, mel.max_db)[..., :frames]
    if wav.dim() == 3:
        spec = spec.reshape(wav.shape[0], mel.n_mels, frames)
    return spec


def _progress_bar(total: int, desc: str, enabled: bool):
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=total, desc=desc, unit="step", leave=False)


class DiffusionStage(nn.Module):
    """One Noise2Music stage: U-Net + noise schedule + objective + optional text conditioning.

    ``forward(x_t [B, C, T], t [B], *, text, drop_text, cond, compressed)`` is the denoiser: it
    converts the diffusion time ``t`` to the U-Net's noise level (log-SNR) and returns the
    prediction (``eps`` by default) ``[B, C, T]``. ``text`` is a list of prompts (encoded and
    projected here) or :class:`~tunecraft.text.TextStates` from :meth:`encode_text`.
    """

    CLASS_NAME: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    config_class: ClassVar[type[StageConfig]] = StageConfig
    #: key of this stage in a Noise2Music bundle
    stage_name: ClassVar[str] = ""
    #: tensor keys of a training example besides ``x0`` (the aligned conditioning)
    aligned_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: StageConfig | None = None, *, text_encoder=None):
        super().__init__()
        config = config if config is not None else self.config_class()
        if not isinstance(config, self.config_class):
            raise ConfigError(f"{type(self).__name__} needs a {self.config_class.__name__}, "
                              f"got {type(config).__name__}")
        self.config = config
        self.unet = UNet1D(config.unet)
        self.text: TextConditioner | None = None
        if config.uses_text:
            encoder = text_encoder if text_encoder is not None else config.text_encoder
            self.text = TextConditioner(config.unet.text_dim, encoder, max_length=config.text_max_length,
                                        attributes=config.text_attributes)
        self.schedule = config.schedule.build()
        self.objective = DiffusionObjective(self.schedule, config.objective)
        if config.standardize:  # float64, set before training; exported as they are
            self.register_buffer("data_mean", torch.zeros(config.unet.in_channels, dtype=torch.float64))
            self.register_buffer("data_std", torch.zeros((), dtype=torch.float64))

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def uses_text(self) -> bool:
        return self.text is not None

    def num_parameters(self) -> int:
        """Trainable parameters (the frozen text encoder is not part of the stage)."""
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ standardisation (not in the paper)
    @property
    def standardized(self) -> bool:
        """Whether the diffusion runs on standardised data (``config.standardize``)."""
        return self.config.standardize

    def _standard_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        if float(self.data_std) <= 0:
            raise InvalidInput(f"the {self.stage_name} standardises its data (standardize = true) but its "
                               "statistics were never set (fit_standardization, done before training starts)")
        return self.data_mean.view(1, -1, 1), self.data_std

    def to_diffusion(self, x: torch.Tensor) -> torch.Tensor:
        """Data ``[B, C, T]`` -> the space the diffusion runs in (standardised with
        ``config.standardize``; else unchanged)."""
        if not self.standardized:
            return x
        mean, std = self._standard_stats()
        return ((x - mean.to(x.device)) / std.to(x.device)).to(x.dtype)

    def from_diffusion(self, z: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_diffusion`."""
        if not self.standardized:
            return z
        mean, std = self._standard_stats()
        return (z * std.to(z.device) + mean.to(z.device)).to(z.dtype)

    def _diffusion_clip(self) -> float | None:
        """``clip_x0`` in the diffusion's space: with standardisation, the bound of ``[-c, c]``
        data after standardising (the widest channel's), so the sampler's clamp never cuts data
        inside the range; the output is clamped to ``[-c, c]`` itself afterwards."""
        clip = self.config.clip_x0
        if clip is None or not self.standardized:
            return clip
        mean, std = self._standard_stats()
        return float((float(clip) + mean.abs().max()) / std)

    @torch.no_grad()
    def fit_standardization(self, examples: Iterable[torch.Tensor]) -> int:
        """Set ``data_mean`` (per channel) and ``data_std`` (over every channel, about its own
        mean) from training targets ``x0 [C, T]``. Returns how many examples counted."""
        if not self.standardized:
            raise InvalidInput(f"the {self.stage_name} does not standardise its data (config.standardize = false)")
        c = self.data_mean.numel()
        total = torch.zeros(c, dtype=torch.float64)
        squares = torch.zeros(c, dtype=torch.float64)
        count = 0
        frames = 0
        for x0 in examples:
            if x0.dim() != 2 or x0.shape[0] != c:
                raise InvalidInput(f"fit_standardization takes [{c}, T] examples, got {tuple(x0.shape)}")
            x = x0.detach().to("cpu", torch.float64)
            total += x.sum(-1)
            squares += x.pow(2).sum(-1)
            frames += x.shape[-1]
            count += 1
        if frames == 0:
            raise InvalidInput(f"the {self.stage_name} has no training data to standardise by")
        mean = total / frames
        var = (squares / frames - mean.pow(2)).clamp_min(0).mean()
        if not float(var) > 0:
            raise InvalidInput(f"the {self.stage_name}'s training data are constant: nothing to standardise by")
        self.data_mean.copy_(mean)  # in place: the EMA copy holds these buffers
        self.data_std.copy_(var.sqrt())
        return count

    # ------------------------------------------------------------------ data (used by the training tasks)
    @classmethod
    def data_sample_rate(cls, config: StageConfig) -> int:
        """Rate at which training audio is loaded for this stage."""
        return int(config.sample_rate)  # type: ignore[attr-defined]

    @classmethod
    def crop_multiple(cls, config: StageConfig) -> int:
        """Training crops are a multiple of this many samples (so derived signals align exactly)."""
        return 1

    @classmethod
    def prepare_example(cls, config: StageConfig, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """A training example from a mono crop ``wav [1, T]`` at :meth:`data_sample_rate`:
        ``{"x0": target, **aligned conditioning}`` (CPU, no randomness)."""
        return {"x0": wav}

    def augment_aligned(
        self, aligned: dict[str, torch.Tensor], generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """Training-time corruption of the aligned conditioning (identity for generators)."""
        return aligned

    # ------------------------------------------------------------------ the denoiser
    def encode_text(self, texts: Sequence[str]) -> TextStates:
        """Projected text states ``[B, L, text_dim]`` for ``texts`` (``""`` is the null condition)."""
        if self.text is None:
            raise InvalidInput(f"the {self.stage_name} takes no text")
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise InvalidPrompt("texts must be a list of strings")
        return self.text(list(texts))

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor | float,
        *,
        text: TextStates | Sequence[str] | None = None,
        drop_text: torch.Tensor | None = None,
        cond: torch.Tensor | None = None,
        compressed: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Model prediction for ``x_t`` at diffusion time ``t`` (``[]`` or ``[B]`` in [0, 1])."""
        states = text
        if text is not None and not isinstance(text, TextStates):
            states = self.encode_text(text)
        cond = self._text_aligned(cond, text, x, drop_text)
        level = self.unet.noise_level(self.schedule, t if isinstance(t, torch.Tensor) else torch.tensor(float(t)))
        return self.unet(x, level.to(x.device), cond=cond, text=states, drop_text=drop_text, compressed=compressed)

    def _text_aligned(self, cond: torch.Tensor | None, text, x: torch.Tensor,
                      drop_text: torch.Tensor | None) -> torch.Tensor | None:
        """The aligned conditioning ``forward`` passes to the U-Net (the generators' beat clock,
        which goes with the text: see :class:`_Generator`); ``cond`` as given by default."""
        return cond

    def _output_offset(self, aligned: Mapping[str, Any]) -> torch.Tensor | None:
        """A deterministic signal the output is relative to: the diffusion models ``x0 - offset``
        and generation adds it back (:meth:`_with_offset`; the residual stages, a generator's key
        prior); ``None`` by default."""
        return None

    @staticmethod
    def _with_offset(out: torch.Tensor, base: torch.Tensor | None, limit: float | None = 1.0,
                     clamp: bool = False) -> torch.Tensor:
        """A sample of ``x0 - base`` brought back to ``x0``, clamped to ``[-limit, limit]`` (none
        when ``limit`` is ``None``); ``out`` unchanged without an offset, unless ``clamp`` (a sample
        the sampler did not clip to the data range itself: a standardised generator's)."""
        if base is not None:
            out = out + base.to(device=out.device, dtype=out.dtype)
        elif not clamp:
            return out
        return out if limit is None else out.clamp(-float(limit), float(limit))

    def _training_aligned(self, batch: Mapping[str, Any], x0: torch.Tensor) -> dict[str, torch.Tensor]:
        """Aligned conditioning a training example derives from its caption (none by default)."""
        return {}

    # ------------------------------------------------------------------ training
    def loss(
        self,
        batch: Mapping[str, Any],
        model: nn.Module | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Denoising loss of a batch ``{"x0": [B, C, T], aligned keys..., "text": [B strings]}``.

        ``model`` is the (possibly DDP-wrapped) module to call for the forward pass (default
        ``self``). Draws, in order: the aligned-conditioning augmentation, the text-dropout mask,
        the diffusion times and the noise, from ``generator`` or the global RNG.
        Logs the loss of the low-noise (``t < 0.5``) and high-noise halves of the batch.
        """
        x0 = batch["x0"]
        if x0.dim() != 3:
            raise InvalidInput(f"x0 must be [B, C, T], got {tuple(x0.shape)}")
        b = x0.shape[0]
        kw: dict[str, Any] = self.augment_aligned({k: batch[k] for k in self.aligned_keys}, generator)
        if self.uses_text:
            texts = batch.get("text")
            if texts is None or len(texts) != b:
                raise InvalidInput(f"the {self.stage_name} needs one text per example")
            kw["text"] = [str(t) for t in texts]
            kw["drop_text"] = text_dropout_mask(b, self.config.text_dropout, generator=generator, device=x0.device)
            kw.update(self._training_aligned(batch, x0))
        fn = model if model is not None else self
        t = self.objective.sample_t(b, generator=generator, device=x0.device)
        weight = float(self.config.spectral_loss_weight)
        base = self._output_offset(kw)  # the diffusion runs on x0 - base (the vocoder's residual mode)
        target = self.to_diffusion(x0 if base is None else x0 - base.to(x0.dtype))
        per = self.objective.loss(lambda x, tt: fn(x, tt, **kw), target, t=t, generator=generator, reduction="none",
                                  return_pred_x0=weight > 0)
        logs: dict[str, torch.Tensor] = {}
        extra = None
        if weight > 0:
            per, x0_hat = per
            x0_hat = self.from_diffusion(x0_hat)
            if base is not None:
                x0_hat = x0_hat + base.to(x0_hat.dtype)
            with torch.autocast(device_type=x0.device.type, enabled=False):
                sc, mag = self._spectral_loss()(x0_hat.float(), x0.float())
            extra = weight * (sc + mag)
            logs["spectral_sc"], logs["spectral_mag"] = sc.detach(), mag.detach()
        with torch.no_grad():
            lo = t < 0.5
            if bool(lo.any()):
                logs["loss_t_lo"] = per[lo].mean().detach()
            if bool((~lo).any()):
                logs["loss_t_hi"] = per[~lo].mean().detach()
        denoise = per.mean()
        if extra is None:
            return denoise, logs
        logs["denoise"] = denoise.detach()
        return denoise + extra, logs

    def _spectral_loss(self) -> nn.Module:
        """The multi-resolution STFT loss of ``spectral_loss_weight`` (windows of ~25-75 ms at the
        stage's rate: Parallel WaveGAN's resolutions, scaled from 24 kHz), made on first use."""
        if getattr(self, "_mrstft", None) is None:
            from ..modules.losses import MultiResolutionSTFTLoss

            scale = self.sample_rate / 24000
            ffts, hops, wins = (1024, 2048, 512), (120, 240, 50), (600, 1200, 240)
            loss = MultiResolutionSTFTLoss(
                fft_sizes=[max(64, 2 ** round(math.log2(n * scale))) for n in ffts],
                hop_sizes=[max(8, round(h * scale)) for h in hops], win_lengths=[max(32, round(w * scale)) for w in wins])
            object.__setattr__(self, "_mrstft", loss.to(self.device))  # not a submodule: no weights, no state
        return self._mrstft

    # ------------------------------------------------------------------ sampling
    def sampling_options(
        self,
        steps: int | None = None,
        cfg_scale: float | None = None,
        step_schedule: str | None = None,
        eta: float | None = None,
        fact_guidance: float | None = None,
    ) -> StageSampling:
        """This stage's default :class:`StageSampling` with the given (non-``None``) overrides."""
        changes = {k: v for k, v in dict(steps=steps, cfg_scale=cfg_scale, step_schedule=step_schedule, eta=eta,
                                         fact_guidance=fact_guidance).items() if v is not None}
        try:
            return self.config.sampling.replace(**changes)
        except ConfigError as e:
            raise InvalidInput(f"{self.stage_name}: {e}") from None

    @torch.no_grad()
    def sample(
        self,
        shape: Sequence[int],
        *,
        text: TextStates | Sequence[str] | None = None,
        cond: torch.Tensor | None = None,
        compressed: torch.Tensor | None = None,
        steps: int | None = None,
        cfg_scale: float | None = None,
        step_schedule: str | None = None,
        eta: float | None = None,
        generator: torch.Generator | None = None,
        progress: bool = False,
        desc: str | None = None,
        fact_guidance: float | None = None,
        negative: Mapping[str, Any] | None = None,
    ) -> torch.Tensor:
        """Run the reverse process from ``t = 1`` to 0 and return ``x0 [B, C, T]`` (``shape``), in the
        diffusion's space (standardised with ``config.standardize``: :meth:`from_diffusion` undoes it).

        Unset sampling arguments take the stage's defaults (``config.sampling``); with fewer steps
        than a front-/back-heavy schedule has intervals (3) the steps are uniform. With text and
        ``cfg_scale != 1`` the conditional and text-dropped branches run as one doubled batch and
        are combined as ``w eps(x, c) + (1 - w) eps(x)``. ``generator`` seeds the initial noise
        and every stochastic step. ``progress`` shows a bar named ``desc`` on a terminal.
        ``fact_guidance = s_f > 0`` adds ``s_f (eps(x, c) - eps(x, n))`` in the same batch, ``n`` the
        ``negative`` condition (``{"text": ..., "cond": ...}``; the generators make it from the
        prompt with its mode swapped).
        """
        opts = self.sampling_options(steps, cfg_scale, step_schedule, eta, fact_guidance)
        shape = tuple(int(d) for d in shape)
        device = self.device
        aligned: dict[str, torch.Tensor] = {}
        if cond is not None:
            aligned["cond"] = cond.to(device=device, dtype=torch.float32)
        if compressed is not None:
            aligned["compressed"] = compressed.to(device=device, dtype=torch.float32)
        states = None
        if self.uses_text:
            if text is None:
                raise InvalidPrompt(f"the {self.stage_name} needs text prompts")
            states = text if isinstance(text, TextStates) else self.encode_text(text)
            if states.batch_size != shape[0]:
                raise InvalidInput(f"{states.batch_size} prompts for a batch of {shape[0]}")
        elif text is not None:
            raise InvalidInput(f"the {self.stage_name} takes no text")
        # a piecewise (front-/back-heavy) schedule needs a step per interval; fewer steps are uniform
        schedule_name = opts.step_schedule if opts.steps >= _PIECEWISE_MIN_STEPS else "uniform"
        sampler = DiffusionSampler(self.schedule, self.config.objective.parameterization, "ddim", eta=opts.eta,
                                   clip_x0=self._diffusion_clip(), step_schedule=schedule_name)
        negatives = []
        if float(opts.fact_guidance) > 0:
            if states is None or negative is None:
                raise InvalidInput(f"the {self.stage_name} has no fact guidance (the text generators have; "
                                   "fact_guidance must be 0 here)")
            neg_text = negative["text"]
            neg_states = neg_text if isinstance(neg_text, TextStates) else self.encode_text(neg_text)
            neg_aligned = {k: negative[k].to(device=device, dtype=torch.float32) for k in aligned}
            negatives.append({"text": neg_states, "drop_text": torch.zeros(shape[0], dtype=torch.bool, device=device),
                              **neg_aligned})
        if states is not None and (float(opts.cfg_scale) != 1.0 or negatives):
            keep = torch.zeros(shape[0], dtype=torch.bool, device=device)
            fn = guided_model_fn(self, float(opts.cfg_scale), {"text": states, "drop_text": keep, **aligned},
                                 {"text": states, "drop_text": ~keep, **aligned}, negatives=negatives,
                                 negative_scale=float(opts.fact_guidance))
        else:
            kw = dict(aligned, text=states) if states is not None else aligned

            def fn(x, t):
                return self(x, t, **kw)

        bar = _progress_bar(opts.steps, desc or self.stage_name, progress)
        callback = None if bar is None else (lambda k, n, t, x, x0: bar.update(1))
        try:
            out = sampler.sample(fn, shape, steps=opts.steps, generator=generator, device=device, callback=callback)
        finally:
            if bar is not None:
                bar.close()
        return out

    # ------------------------------------------------------------------ model directory
    def save_pretrained(self, path: str | Path, dtype: str = "float16") -> Path:
        """Write ``config.json`` + ``model.safetensors`` into directory ``path``; ``dtype="float16"``
        stores the float32 parameters in half precision (loaded back as float32)."""
        from .. import __version__

        state = state_for_saving(self, dtype)
        meta = {"class": self.CLASS_NAME, "format_version": FORMAT_VERSION, "model_version": self.VERSION,
                "tunecraft_version": __version__, "stage": self.stage_name, "dtype": dtype,
                "config": self.config.to_dict()}
        return write_model_dir(path, meta, state)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device | None = None,
                        text_encoder=None) -> "DiffusionStage":
        """Load a stage directory, checking its class, versions, tensor names and shapes. Called on
        :class:`DiffusionStage` itself it loads whichever stage the directory holds. Eval mode."""
        path = resolve_model_dir(name_or_path)
        cfg_file, meta = read_model_config(path)
        target = STAGE_CLASSES.get(meta["class"])
        if target is None or (cls is not DiffusionStage and target is not cls):
            expected = "a Noise2Music stage" if cls is DiffusionStage else cls.CLASS_NAME
            raise CheckpointError(f"{path} holds a {meta['class']!r}, not {expected}")
        return build_from_model_dir(path, meta, cfg_file, config_class=target.config_class,
                                    model_version=target.VERSION, format_version=FORMAT_VERSION,
                                    build=lambda config: target(config, text_encoder=text_encoder), device=device)


# ---------------------------------------------------------------------------------------- generators
class _Generator(DiffusionStage):
    """A text -> music stage, with optional aligned conditioning drawn from what the prompt states
    (not in the paper): the beat clock of its tempo (``config.beat_rates``;
    :mod:`tunecraft.modules.beat`), its key's pitch-class profile (``config.key_profile``) and a
    reference of its tonic's frequency (``config.tonic_octaves``), of its triad's third and fifth
    (``config.triad_octaves``) and of the chord sounding at each position (``config.chord_octaves``;
    :mod:`tunecraft.modules.key`), from a chord plan in the stated key: the training clip's own
    (its sidecar's ``chords``), or at generation one drawn by :meth:`harmony_plans`.

    The facts come from :func:`~tunecraft.text.attributes.parse_facts`; their features at every
    output position, stacked in that order, are the U-Net's aligned conditioning
    ``cond [B, C, T]``: zero where a prompt does not state the fact and for every row whose text
    is dropped (the 10 % CFG dropout in training, the null branch of guided sampling), so they are
    part of the text condition. ``forward`` with prompt strings and no ``cond`` makes them itself.
    """

    @property
    def positions_per_second(self) -> float:
        """Output positions (samples or spectrogram frames) per second of music: the training-data
        rate over the samples behind one output position (``crop_multiple``: 1 for the waveform,
        the hop for a spectrogram)."""
        return self.data_sample_rate(self.config) / self.crop_multiple(self.config)

    @property
    def has_beat_clock(self) -> bool:
        return bool(self.config.beat_rates)

    @property
    def has_prompt_aligned(self) -> bool:
        """Whether the U-Net takes aligned conditioning drawn from the prompt (beat clock, key)."""
        return self.config.aligned_channels > 0

    def beat_clock(self, texts: Sequence[str], length: int,
                   offsets: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor | None:
        """``[B, 2R, length]`` clock features of the tempo each prompt states (zero where none), for
        outputs that start ``offsets[b]`` seconds into a piece whose first beat is at 0 (default 0);
        ``None`` without a beat clock."""
        if not self.has_beat_clock:
            return None
        rate = self.positions_per_second
        starts = None
        if offsets is not None:
            starts = [float(o) * rate for o in _floats(offsets)]
        clock = beat_clock([parse_facts(t).bpm for t in texts], rate, starts)
        cycles = torch.tensor(self.config.beat_rates, dtype=torch.float64)
        feats = beat_features(clock, torch.arange(int(length), dtype=torch.float64), cycles)  # [B, T, 2R]
        return feats.transpose(1, 2).contiguous().to(self.device)

    @property
    def has_chords(self) -> bool:
        """Whether the U-Net takes a chord plan: the chord reference (``config.chord_octaves``) or,
        in a spectrogram generator, the chord's mel template (``config.chord_mel``)."""
        return self.config.uses_chords

    def harmony_plans(self, texts: Sequence[str], seconds: float,
                      generator: torch.Generator | None = None) -> list[list | None]:
        """A chord plan ``[[start_seconds, chord_name], ...]`` of ``seconds`` for each prompt that
        states a key (``None`` for the others), drawn by the procedural composer's harmony grammar
        (:func:`tunecraft.data.composer.harmony_plan`, the grammar of the training corpus) in the
        stated key, at the stated tempo (else the middle of the named style's range, else 110 bpm),
        from the progressions of the style the prompt names (else pop's), in 3/4 where it says
        "3/4", "three-four" or "waltz". The draws come from ``generator`` (default: torch's global
        generator), one 62-bit seed per prompt, so a seeded generation is reproducible."""
        return self._plans(texts, seconds, self._plan_seeds(texts, generator))

    @staticmethod
    def _plan_seeds(texts: Sequence[str], generator: torch.Generator | None) -> list[int | None]:
        """One 62-bit seed from ``generator`` per prompt that states a key (``None`` for the others)."""
        seeds: list[int | None] = []
        for text in texts:
            facts = parse_facts(text)
            keyed = facts.tonic is not None and facts.mode in ("major", "minor")
            seeds.append(int(torch.randint(0, 2 ** 62, (1,), generator=generator).item()) if keyed else None)
        return seeds

    @staticmethod
    def _plans(texts: Sequence[str], seconds: float, seeds: Sequence[int | None]) -> list[list | None]:
        """The plans of :meth:`harmony_plans` from per-prompt seeds (``None``: no plan)."""
        from ..data.composer import STYLES, harmony_plan, style_in_text

        plans: list[list | None] = []
        for text, seed in zip(texts, seeds):
            facts = parse_facts(text)
            if seed is None or facts.tonic is None or facts.mode not in ("major", "minor"):
                plans.append(None)
                continue
            style = style_in_text(text)
            bpm = facts.bpm if facts.bpm is not None else (sum(STYLES[style].bpm) / 2 if style else 110.0)
            bpb = 3 if _TRIPLE_METER.search(text) else 4
            plans.append(harmony_plan(int(facts.tonic), facts.mode, bpm, float(seconds), style=style,
                                      beats_per_bar=bpb, rng=seed))
        return plans

    def prompt_aligned(self, texts: Sequence[str], length: int,
                       offsets: Sequence[float] | torch.Tensor | None = None,
                       chords: Sequence[Sequence | None] | None = None) -> torch.Tensor | None:
        """``[B, config.aligned_channels, length]``: the beat clock (:meth:`beat_clock`), then the
        stated key's profile (12 channels, constant), then the tonic reference (2 per octave), then
        the triad reference (4 per octave: third, fifth), then the chord reference (6 per octave:
        root, third, fifth of ``chords[b]``, a timed plan per prompt; default: drawn by
        :meth:`harmony_plans`), then the chords' mel templates (``n_mels``, spectrogram generators
        with ``chord_mel``), for outputs that start ``offsets[b]`` seconds into their piece;
        zero for what a prompt does not state (no chords without a key); ``None`` when the stage
        has none."""
        if not self.has_prompt_aligned:
            return None
        texts = list(texts)
        parts = []
        clock = self.beat_clock(texts, length, offsets)
        if clock is not None:
            parts.append(clock)
        if self.config.key_profile or self.config.tonic_octaves or self.config.triad_octaves or self.has_chords:
            facts = [parse_facts(t) for t in texts]
            tonics = [f.tonic for f in facts]  # parse_facts reads a tonic only with its mode
            modes = [f.mode for f in facts]
            starts = None if offsets is None else _floats(offsets)
            if self.config.key_profile:
                prof = key_profile(tonics, modes)
                parts.append(prof.unsqueeze(-1).expand(-1, -1, int(length)).to(self.device))
            if self.config.tonic_octaves:
                parts.append(tonic_features(tonics, self.config.tonic_octaves, self.positions_per_second,
                                            int(length), starts).to(self.device))
            if self.config.triad_octaves:
                parts.append(triad_features(tonics, modes, self.config.triad_octaves, self.positions_per_second,
                                            int(length), starts).to(self.device))
            if self.has_chords:
                if chords is None:
                    first = 0.0 if starts is None else max(starts, default=0.0)
                    chords = self.harmony_plans(texts, first + int(length) / self.positions_per_second)
                if len(chords) != len(texts):
                    raise InvalidInput(f"{len(texts)} prompts but {len(chords)} chord plans")
                # a plan only where the prompt states the key it belongs to, as at generation
                plans = [plan if t is not None and m is not None else None
                         for plan, t, m in zip(chords, tonics, modes)]
                if self.config.chord_octaves:
                    parts.append(chord_features(plans, self.config.chord_octaves, self.positions_per_second,
                                                int(length), starts).to(self.device))
                if getattr(self.config, "chord_mel", False):
                    parts.append(chord_mel_features(plans, self.positions_per_second, int(length), starts,
                                                    **self.config.mel.to_dict()).to(self.device))
        return torch.cat(parts, dim=1).contiguous()

    def _text_aligned(self, cond, text, x, drop_text):
        if not self.has_prompt_aligned:
            return cond
        if cond is None:
            if text is None or isinstance(text, TextStates):
                raise InvalidInput(f"the {self.stage_name} takes aligned conditioning from its prompt: pass prompt "
                                   "strings, or cond=prompt_aligned(...)")
            cond = self.prompt_aligned(list(text), x.shape[-1])
        if drop_text is not None:
            cond = cond * (~drop_text.to(cond.device).bool()).view(-1, 1, 1).to(cond.dtype)
        return cond

    def _training_aligned(self, batch, x0):
        if not self.has_prompt_aligned:
            return {}
        chords = batch.get("chords")
        if self.has_chords and chords is None:
            raise InvalidInput(f"the {self.stage_name} trains on the clips' chord plans: a batch needs 'chords' "
                               "(a sidecar's timed chords per clip, None where it has none)")
        return {"cond": self.prompt_aligned([str(t) for t in batch["text"]], x0.shape[-1], batch.get("offset"),
                                            chords=chords)}

    def _generate(self, texts: Sequence[str], shape: Sequence[int], sampling: dict,
                  chords: Sequence[Sequence | None] | None = None) -> torch.Tensor:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise InvalidPrompt("texts must be a list of strings")
        texts = list(texts)
        seconds = shape[-1] / self.positions_per_second
        seeds = None
        if self.has_chords and chords is None:
            seeds = self._plan_seeds(texts, sampling.get("generator"))
            chords = self._plans(texts, seconds, seeds)
        cond = self.prompt_aligned(texts, shape[-1], chords=chords)
        if cond is not None:
            sampling = dict(sampling, cond=cond)
        if float(self.sampling_options(fact_guidance=sampling.get("fact_guidance")).fact_guidance) > 0:
            # the negative: the prompt with its mode swapped, with that mode's key signals and a chord
            # plan drawn from the same seeds (the plan of the other mode); unchanged for a prompt
            # that states no mode, whose term is then zero
            negs = guidance_negatives(texts, (("mode", None),))
            neg_texts = negs[0] if negs else texts
            neg = {"text": neg_texts}
            if cond is not None:
                neg_chords = None
                if self.has_chords:
                    if seeds is None:
                        seeds = self._plan_seeds(texts, sampling.get("generator"))
                    neg_chords = self._plans(neg_texts, seconds, seeds)
                neg["cond"] = self.prompt_aligned(neg_texts, shape[-1], chords=neg_chords)
            sampling = dict(sampling, negative=neg)
        out = self.from_diffusion(self.sample(shape, text=texts, **sampling))
        return self._with_offset(out, self._output_offset({"text": texts}), self.config.clip_x0,
                                 clamp=self.standardized)


class WaveformGenerator(_Generator):
    """Text -> low-fidelity waveform ``[B, 1, T]`` at ``config.sample_rate`` (3.2 kHz)."""

    CLASS_NAME = "Noise2MusicWaveformGenerator"
    config_class = WaveformGeneratorConfig
    stage_name = "waveform_generator"
    config: WaveformGeneratorConfig

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def generate(self, texts: Sequence[str], length: int, chords: Sequence[Sequence | None] | None = None,
                 **sampling) -> torch.Tensor:
        """``[B, 1, length]`` low-fi audio for ``B`` prompts (``sampling``: see :meth:`sample`);
        ``chords``: a timed chord plan per prompt for a stage with the chord reference (default:
        :meth:`harmony_plans` draws them from ``sampling["generator"]``)."""
        return self._generate(texts, (len(texts), 1, int(length)), sampling, chords)


class SpectrogramGenerator(_Generator):
    """Text -> log-mel ``[B, n_mels, F]`` in [-1, 1] at ``mel.frame_rate`` (100 frames/s)."""

    CLASS_NAME = "Noise2MusicSpectrogramGenerator"
    config_class = SpectrogramGeneratorConfig
    stage_name = "spectrogram_generator"
    config: SpectrogramGeneratorConfig

    def __init__(self, config: SpectrogramGeneratorConfig | None = None, *, text_encoder=None):
        super().__init__(config, text_encoder=text_encoder)
        if self.config.key_prior:  # float64 means, fitted before training; exported as they are (buffers keep their dtype)
            self.register_buffer("key_prior_mean", torch.zeros(24, self.config.mel.n_mels, dtype=torch.float64))
            self.register_buffer("key_prior_count", torch.zeros(24, dtype=torch.float64))

    @property
    def frame_rate(self) -> float:
        return self.config.mel.frame_rate

    # ------------------------------------------------------------------ the key prior (not in the paper)
    @staticmethod
    def _key_index(text: str) -> int | None:
        """Row of the key ``text`` states (tonic + 12 for minor), ``None`` without one."""
        facts = parse_facts(text)
        if facts.tonic is None or facts.mode not in ("major", "minor"):
            return None
        return int(facts.tonic) + (12 if facts.mode == "minor" else 0)

    @torch.no_grad()
    def fit_key_prior(self, examples: Iterable[tuple[torch.Tensor, Sequence[str]]]) -> int:
        """Set the key prior from training examples ``(x0 [n_mels, F], captions)``: the mean over
        frames and examples of the log-mel of each key the captions state (the first caption that
        states one; examples whose captions state none are left out). Returns how many examples
        counted. Fixed before training starts (:class:`~tunecraft.noise2music.tasks.SpectrogramGeneratorTask`):
        a prior that moved during training would be a key-dependent target shift the network
        learns to cancel."""
        if not self.config.key_prior:
            raise InvalidInput(f"the {self.stage_name} has no key prior (config.key_prior = false)")
        mean = torch.zeros_like(self.key_prior_mean)
        count = torch.zeros_like(self.key_prior_count)
        for x0, captions in examples:
            k = next((i for i in (self._key_index(str(c)) for c in captions) if i is not None), None)
            if k is None:
                continue
            if x0.dim() != 2 or x0.shape[0] != self.config.mel.n_mels:
                raise InvalidInput(f"fit_key_prior takes [n_mels, frames] log-mels, got {tuple(x0.shape)}")
            count[k] += 1.0
            mean[k] += (x0.detach().to(mean.device, torch.float64).mean(dim=-1) - mean[k]) / count[k]
        self.key_prior_mean.copy_(mean)  # in place: the EMA copy holds these buffers
        self.key_prior_count.copy_(count)
        return int(count.sum().item())

    def key_prior(self, texts: Sequence[str]) -> torch.Tensor | None:
        """``[B, n_mels, 1]``: the mean log-mel of the key each prompt states minus the mean over
        all keys (count-weighted), from the training spectrograms (:meth:`fit_key_prior`); zero for
        a prompt without a key or a key never seen. ``None`` without ``config.key_prior``."""
        if not self.config.key_prior:
            return None
        out = torch.zeros(len(texts), self.config.mel.n_mels, 1, dtype=torch.float64, device=self.key_prior_mean.device)
        counts = self.key_prior_count
        total = counts.sum()
        if float(total) > 0:
            overall = (self.key_prior_mean * counts[:, None]).sum(0) / total
            for b, text in enumerate(texts):
                k = self._key_index(str(text))
                if k is not None and float(counts[k]) > 0:
                    out[b, :, 0] = self.key_prior_mean[k] - overall
        return out.float()

    def _output_offset(self, aligned):
        """The key prior of the prompts (``config.key_prior``): the diffusion runs on the log-mel
        minus it, for the text-dropped rows as well (the prior is part of the target, not of the
        condition), and :meth:`generate` adds it back."""
        texts = aligned.get("text")
        if not self.config.key_prior or texts is None or isinstance(texts, TextStates):
            return None
        return self.key_prior([str(t) for t in texts])

    @classmethod
    def data_sample_rate(cls, config: SpectrogramGeneratorConfig) -> int:
        return config.mel.sample_rate

    @classmethod
    def crop_multiple(cls, config: SpectrogramGeneratorConfig) -> int:
        return config.mel.hop_length

    @classmethod
    def prepare_example(cls, config: SpectrogramGeneratorConfig, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"x0": mel_frames(wav[0], config.mel)}

    def generate(self, texts: Sequence[str], frames: int, chords: Sequence[Sequence | None] | None = None,
                 **sampling) -> torch.Tensor:
        """``[B, n_mels, frames]`` spectrograms for ``B`` prompts; ``chords`` as
        :meth:`WaveformGenerator.generate` (for ``config.chord_mel``)."""
        return self._generate(texts, (len(texts), self.config.mel.n_mels, int(frames)), sampling, chords)


# ---------------------------------------------------------------------------------------- residual stages
class _ResidualStage(DiffusionStage):
    """A stage whose aligned input ``cond`` is a deterministic guess of its output (the cascaders'
    upsampled audio, the vocoder's Griffin-Lim estimate). With ``config.residual`` (not in the
    paper) the diffusion models the output minus ``cond`` and :meth:`_sample_output` adds it back."""

    def _output_offset(self, aligned):
        return aligned["cond"] if self.config.residual else None

    def _sample_output(self, shape: Sequence[int], aligned: Mapping[str, torch.Tensor],
                       generator: torch.Generator | None, **kw) -> torch.Tensor:
        """:meth:`sample` with the ``aligned`` inputs, plus the offset in residual mode."""
        out = self.sample(shape, generator=generator, **aligned, **kw)
        return self._with_offset(out, self._output_offset(aligned))


# ---------------------------------------------------------------------------------------- cascaders
class _UpsamplingCascader(_ResidualStage):
    """Shared part of the two cascaders: ``low_sample_rate`` audio, FFT-upsampled to ``sample_rate``
    and stacked with ``x_t``; the conditioning is blurred and noise-corrupted in training."""

    aligned_keys = ("cond",)
    config: WaveformCascaderConfig | SRCascaderConfig

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def low_sample_rate(self) -> int:
        return self.config.low_sample_rate

    @classmethod
    def crop_multiple(cls, config) -> int:
        return config.sample_rate // math.gcd(config.sample_rate, config.low_sample_rate)

    @classmethod
    def prepare_example(cls, config, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """Target ``wav [1, T]``; conditioning: ``wav`` resampled down (soxr) then FFT-upsampled back."""
        low = resample(wav.float(), config.sample_rate, config.low_sample_rate)
        return {"x0": wav, "cond": fft_resample(low, config.low_sample_rate, config.sample_rate, length=wav.shape[-1])}

    def upsample(self, low: torch.Tensor, length: int | None = None) -> torch.Tensor:
        """FFT-upsample ``low [B, 1, T_low]`` to ``sample_rate`` (default ``round(T_low * ratio)`` samples)."""
        if low.dim() != 3 or low.shape[1] != 1:
            raise InvalidInput(f"the {self.stage_name} expects mono audio [B, 1, T], got {tuple(low.shape)}")
        return fft_resample(low.float(), self.low_sample_rate, self.sample_rate, length=length)

    def augment_aligned(self, aligned, generator):
        return {"cond": augment_condition(aligned["cond"], self.config.augment, self.schedule, generator)}

    def _cascade(self, low: torch.Tensor, generator: torch.Generator | None, **kw) -> torch.Tensor:
        """Sample the high-rate audio for ``low`` (``kw``: text and sampling options); in residual
        mode the sample is added to the upsampled input."""
        cond = self._condition(low, generator)
        return self._sample_output(tuple(cond.shape), {"cond": cond}, generator, **kw)

    def _condition(self, low: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        cond = self.upsample(low.to(self.device))
        if self.config.inference_cond_t > 0:
            t = torch.full((cond.shape[0],), float(self.config.inference_cond_t))
            cond = noise_corrupt(cond, self.schedule, t, generator)
        return cond


class WaveformCascader(_UpsamplingCascader):
    """3.2 kHz waveform + text -> 16 kHz waveform."""

    CLASS_NAME = "Noise2MusicWaveformCascader"
    config_class = WaveformCascaderConfig
    stage_name = "waveform_cascader"

    def generate(self, low: torch.Tensor, texts: Sequence[str], generator: torch.Generator | None = None,
                 **sampling) -> torch.Tensor:
        """``[B, 1, T * 5]`` 16 kHz audio from ``low [B, 1, T]`` at 3.2 kHz and ``B`` prompts."""
        return self._cascade(low, generator, text=texts, **sampling)


class SRCascader(_UpsamplingCascader):
    """16 kHz waveform -> 24 kHz waveform (no text)."""

    CLASS_NAME = "Noise2MusicSRCascader"
    config_class = SRCascaderConfig
    stage_name = "sr_cascader"

    def generate(self, low: torch.Tensor, generator: torch.Generator | None = None, **sampling) -> torch.Tensor:
        """``[B, 1, T * 3 / 2]`` 24 kHz audio from ``low [B, 1, T]`` at 16 kHz."""
        return self._cascade(low, generator, **sampling)


# ---------------------------------------------------------------------------------------- vocoder
class SpectrogramVocoder(_ResidualStage):
    """Log-mel ``[B, n_mels, F]`` -> 16 kHz waveform ``[B, 1, F * hop]``, spectrogram-conditioned only."""

    CLASS_NAME = "Noise2MusicSpectrogramVocoder"
    config_class = SpectrogramVocoderConfig
    stage_name = "spectrogram_vocoder"
    aligned_keys = ("compressed",)
    config: SpectrogramVocoderConfig

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def hop_length(self) -> int:
        return self.config.mel.hop_length

    @classmethod
    def crop_multiple(cls, config: SpectrogramVocoderConfig) -> int:
        return config.mel.hop_length

    @classmethod
    def prepare_example(cls, config: SpectrogramVocoderConfig, wav: torch.Tensor) -> dict[str, torch.Tensor]:
        """Target ``wav [1, T]`` (``T`` a multiple of the hop) and its ``T / hop`` mel frames."""
        return {"x0": wav, "compressed": mel_frames(wav[0], config.mel)}

    def augment_aligned(self, aligned, generator):
        mel = augment_condition(aligned["compressed"], self.config.augment, self.schedule, generator)
        return self._conditioning(mel)

    def estimate(self, mel: torch.Tensor) -> torch.Tensor:
        """The deterministic Griffin-Lim estimate ``[B, 1, F * hop]`` of the audio behind ``mel
        [B, n_mels, F]`` (mel pseudo-inverse + ``griffin_lim_iters`` fast Griffin-Lim iterations).
        ``mel`` is clamped to the spectrogram range [-1, 1] first: a noise-augmented spectrogram
        above the dB ceiling would otherwise turn into audio a hundred times too loud."""
        m = self.config.mel
        frames = mel.shape[-1]
        with torch.no_grad():
            wav = log_mel_inverse(mel.float().clamp(-1.0, 1.0), n_iter=self.config.griffin_lim_iters, length=frames * m.hop_length,
                                  **m.to_dict())
        return wav[:, None]

    def _conditioning(self, mel: torch.Tensor) -> dict[str, torch.Tensor]:
        """The U-Net's aligned inputs for ``mel``: the spectrogram at the bottom, plus the
        Griffin-Lim estimate at the top when ``griffin_lim_iters > 0``."""
        out = {"compressed": mel}
        if self.config.griffin_lim_iters:
            out["cond"] = self.estimate(mel)
        return out

    def generate(self, mel: torch.Tensor, generator: torch.Generator | None = None, **sampling) -> torch.Tensor:
        """``[B, 1, F * hop]`` audio from ``mel [B, n_mels, F]`` in [-1, 1]."""
        n_mels = self.config.mel.n_mels
        if mel.dim() != 3 or mel.shape[1] != n_mels or mel.shape[-1] < 1:
            raise InvalidInput(f"the vocoder expects a spectrogram [B, {n_mels}, F], got {tuple(mel.shape)}")
        mel = mel.to(self.device, torch.float32)
        if self.config.inference_cond_t > 0:
            t = torch.full((mel.shape[0],), float(self.config.inference_cond_t))
            mel = noise_corrupt(mel, self.schedule, t, generator)
        shape = (mel.shape[0], 1, mel.shape[-1] * self.hop_length)
        out = self._sample_output(shape, self._conditioning(mel), generator, **sampling)
        if self.config.consistency_iters:
            m = self.config.mel
            with torch.no_grad():
                out = log_mel_inverse(mel.clamp(-1.0, 1.0), n_iter=self.config.consistency_iters, length=out.shape[-1],
                                      init=out[:, 0].float(), **m.to_dict())[:, None].clamp(-1.0, 1.0)
        return out


#: class name in config.json -> stage class
STAGE_CLASSES: dict[str, type[DiffusionStage]] = {
    c.CLASS_NAME: c
    for c in (WaveformGenerator, WaveformCascader, SpectrogramGenerator, SpectrogramVocoder, SRCascader)
}
#: bundle key -> stage class
STAGES_BY_NAME: dict[str, type[DiffusionStage]] = {c.stage_name: c for c in STAGE_CLASSES.values()}


def load_stage(name_or_path: str | Path, device: str | torch.device | None = None, text_encoder=None) -> DiffusionStage:
    """Load any Noise2Music stage directory (its ``config.json`` names the class)."""
    return DiffusionStage.from_pretrained(name_or_path, device=device, text_encoder=text_encoder)

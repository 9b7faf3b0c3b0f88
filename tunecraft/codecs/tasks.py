"""Training tasks for the three codecs: ``codec-rvq``, ``vae-gan`` and ``masked-ae``.

Each task trains one :class:`~tunecraft.codecs.CompressionModel` inside a
:class:`~tunecraft.codecs.CodecGAN` (codec + discriminator + objective) with the shared loop
(:mod:`tunecraft.train`):

* ``codec-rvq`` - MusicGen's EnCodec-style tokenizer (:class:`RVQCodec`): 32 kHz mono, 50 Hz
  frames, EnCodec's objective (time L1 0.1, multi-scale mel 1, hinge GAN 3, feature matching 3,
  commitment 1). Quantiser dropout trains every bitrate from 1 to ``n_q`` codebooks.
* ``vae-gan`` - MeLoDy's VAE-GAN (:class:`VAEGANCodec`): 24 kHz, hop 96 (250 Hz), 16-d latents;
  MR-STFT 50, feature matching 20, least-squares GAN 1, KL 5e-3 (MPD + MRD discriminators).
* ``masked-ae`` - JEN-1's masked autoencoder (:class:`MaskedAutoencoder`): 48 kHz stereo, hop 320,
  128-d latents, 5% of the latent frames masked in training.

Data (``[data]``, :class:`CodecDataConfig`): a corpus directory written by ``tunecraft data synth``
(``train.jsonl``/``valid.jsonl``/``test.jsonl`` beside ``data.jsonl``), or any source
:class:`~tunecraft.data.AudioDataset` reads. Training items are ``max_segment``-second crops at a
random offset of a random train-split file, resampled and channel-converted to the codec's
format; every step then trains on a random ``[min_segment, max_segment]``-second window of the
batch (the same window for both optimiser phases of a step), so the codec sees 0.5-1 s crops.

Adversarial warm-up (``[task] adversarial_start``): before that step the generator trains on the
reconstruction terms (+ bottleneck penalty) only and the discriminator phase is skipped (its
optimiser receives no gradient, so its step is a no-op); from that step on both phases run.
Measured on this project's 2-core CPU machine (1 thread, batch 8 x 1 s, the CPU-sized RVQ codec):
a reconstruction-only step takes about 0.8 s, an adversarial step (MS-STFT discriminator
forward/backward on real and fake audio, feature matching) about 25-40 s, so the shipped CPU
recipes train reconstruction-only (``adversarial_start`` beyond ``train.steps``) and a GPU run
sets ``--set task.adversarial_start=N``.

``sample()`` reconstructs fixed held-out clips (the first ``sample_clips`` clips of the valid
split); ``export()`` rounds the weights to float16 precision, runs the post-training fits
(MeLoDy's latent scale, JEN-1's whitening) on train-split clips so the statistics match the
weights that ship, and writes ``save_pretrained(dir, dtype="float16")``.

``tunecraft export RUN_DIR OUT`` (:func:`tunecraft.train.export.export_checkpoint`) exports a model
directory from any training checkpoint, so an unfinished run can ship its current weights and
continue later with ``tunecraft train ... --resume``.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Tuple, Type, Union

import torch
from torch import nn

from ..config import Config
from ..data.dataset import source_metas
from ..data.manifest import split_source
from ..errors import AudioFormatError, CheckpointError, ConfigError, InvalidInput
from ..modules.discriminators import DiscriminatorConfig
from ..modules.losses import CodecLossConfig
from ..modules.quantization import EuclideanCodebook, RVQConfig
from ..modules.seanet import SEANetConfig
from ..train.task import Audio, OptimizerSpec, SplitDataConfig, TrainTask, default_param_groups, register_task
from .base import CompressionModel, codec_format
from .masked_ae import MaskedAEConfig, MaskedAutoencoder
from .latent_rvq import LatentRVQCodec, LatentRVQConfig
from .rvq_codec import RVQCodec, RVQCodecConfig
from .training import CodecGAN
from .vae_gan import VAEGANCodec, VAEGANConfig

__all__ = [
    "CodecDataConfig",
    "CodecClipDataset",
    "CodecTask",
    "LatentRVQTask",
    "LatentRVQTaskConfig",
    "MaskedAETask",
    "MaskedAETaskConfig",
    "RVQCodecTask",
    "RVQCodecTaskConfig",
    "VAEGANTask",
    "VAEGANTaskConfig",
    "cpu_masked_ae_config",
    "cpu_rvq_codec_config",
    "cpu_vae_gan_config",
]

#: ``adversarial_start`` of the CPU recipes: later than any CPU run gets (reconstruction only).
NEVER = 10**9


# ---- default (CPU-sized) codec configs ------------------------------------------------------


def cpu_rvq_codec_config() -> RVQCodecConfig:
    """``codec-rvq``'s CPU default: MusicGen's codec layout (32 kHz mono, ratios [8, 5, 4, 4] =
    50 Hz, D = 128, 2 LSTM layers, 2048-entry codebooks) with 16 instead of 64 filters (about
    16x fewer convolution FLOPs) and 8 codebooks instead of 4 with quantiser dropout: 8 x 11 bit
    x 50 Hz = 4.4 kbps at full rate, MusicGen's 4 x 2048 (2.2 kbps) with ``set_num_codebooks(4)``.

    The dead-code threshold is 0.01 instead of EnCodec's 2.0: the EMA usage ``N_i`` of a codeword
    settles at (frames per batch) / (codebook size), about 0.15 for a CPU batch of 8 x 0.75 s,
    so a threshold of 2 would re-seed every codeword at every step.
    """
    return RVQCodecConfig(
        sample_rate=32000,
        seanet=SEANetConfig(channels=1, n_filters=16, ratios=[8, 5, 4, 4], dimension=128, lstm=2),
        quantizer=RVQConfig(dimension=128, n_q=8, bins=2048, threshold_ema_dead_code=0.01, q_dropout=True),
        loss=CodecLossConfig.encodec(),
        discriminator=DiscriminatorConfig.encodec(),
    )


def cpu_vae_gan_config() -> VAEGANConfig:
    """``vae-gan``'s CPU default: the paper's rates (24 kHz, hop 96, 16-d latents) and losses, with
    :class:`VAEGANConfig`'s CPU-sized network (16 filters, no LSTM, 4x narrower MPD)."""
    return VAEGANConfig()


def cpu_masked_ae_config() -> MaskedAEConfig:
    """``masked-ae``'s CPU default: the paper's rates (48 kHz stereo, hop 320, 128-d latents,
    5% masking) with :class:`MaskedAEConfig`'s CPU-sized network (16 filters, no LSTM)."""
    return MaskedAEConfig()


# ---- configs --------------------------------------------------------------------------------


@dataclass
class CodecDataConfig(SplitDataConfig):
    """The ``[data]`` section of the codec recipes.

    ``source``: a corpus directory (``tunecraft data synth`` output, with ``<split>.jsonl``
    manifests), a manifest, or a folder of audio. ``train_split``/``valid_split`` name the split
    manifests inside a corpus directory; a source without them trains on everything and has no
    validation (then ``sample()`` reconstructs training clips, with a warning).
    ``min_segment``/``max_segment``: training crops are drawn uniformly in this range (seconds).
    ``valid_clips``: validation items (fixed crops of ``max_segment`` s). ``sample_clips`` x
    ``sample_seconds``: the held-out clips ``sample()`` reconstructs. ``fit_clips`` x
    ``fit_seconds``: train-split audio for the export-time fits (latent scale, whitening).
    """

    min_segment: float = 0.5
    max_segment: float = 1.0
    valid_clips: int = 16
    sample_clips: int = 2
    sample_seconds: float = 4.0
    fit_clips: int = 64
    fit_seconds: float = 2.0
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.min_segment <= self.max_segment:
            raise ConfigError(f"need 0 < min_segment <= max_segment, got {self.min_segment}, {self.max_segment}")
        for name in ("valid_clips", "sample_clips", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name} must be >= 0, got {getattr(self, name)}")
        if self.fit_clips < 1:
            raise ConfigError(f"data.fit_clips must be >= 1, got {self.fit_clips}")
        if not self.sample_seconds > 0 or not self.fit_seconds > 0:
            raise ConfigError("data.sample_seconds and data.fit_seconds must be > 0")


@dataclass
class RVQCodecTaskConfig(Config):
    """``[task]`` of ``codec-rvq``: the codec config, the adversarial warm-up length (steps), how
    many training crops initialise the codebooks and how often dead codewords are revived (see
    :class:`RVQCodecTask`)."""

    codec: RVQCodecConfig = field(default_factory=cpu_rvq_codec_config)
    adversarial_start: int = NEVER
    init_clips: int = 64  # training crops whose frames k-means-initialise the codebooks
    revive_every: int = 10  # steps between dead-codeword revivals (0: never)

    def __post_init__(self) -> None:
        _check_start(self.adversarial_start)
        if self.init_clips < 0 or self.revive_every < 0:
            raise ConfigError(f"init_clips and revive_every must be >= 0, got {self.init_clips}, {self.revive_every}")


@dataclass
class VAEGANTaskConfig(Config):
    """``[task]`` of ``vae-gan``."""

    codec: VAEGANConfig = field(default_factory=cpu_vae_gan_config)
    adversarial_start: int = NEVER

    def __post_init__(self) -> None:
        _check_start(self.adversarial_start)


@dataclass
class MaskedAETaskConfig(Config):
    """``[task]`` of ``masked-ae``."""

    codec: MaskedAEConfig = field(default_factory=cpu_masked_ae_config)
    adversarial_start: int = NEVER

    def __post_init__(self) -> None:
        _check_start(self.adversarial_start)


def _broadcast_from_rank0(module: nn.Module) -> None:
    """Make every rank hold rank 0's buffers of ``module`` (a no-op outside torch.distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for buf in module.buffers(recurse=False):
            dist.broadcast(buf.data, src=0)


def _check_start(value: int) -> None:
    if value < 0:
        raise ConfigError(f"adversarial_start must be >= 0, got {value}")


# ---- data -----------------------------------------------------------------------------------


class CodecClipDataset(torch.utils.data.Dataset):
    """Fixed-length crops ``[C, T]`` of audio files at the codec's rate and channel count.

    Item ``i`` is a ``segment``-second crop of file ``i``; its start is drawn from the global torch
    RNG when ``random_crop`` (the training loop seeds it from ``(seed, epoch, index)``), else taken
    from a generator seeded with ``(seed, i)`` (a fixed crop: validation, samples, fits). Files
    shorter than the segment are zero-padded. A file that fails to load is replaced by the next
    loadable one (deterministically) and reported once as a warning.
    """

    def __init__(self, metas: List[Any], segment: float, sample_rate: int, channels: int, random_crop: bool,
                 seed: int = 0):
        if not metas:
            raise InvalidInput("CodecClipDataset needs at least one audio file")
        if not segment > 0:
            raise InvalidInput(f"segment must be > 0 seconds, got {segment}")
        self.metas = list(metas)
        self.segment = float(segment)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.random_crop = bool(random_crop)
        self.seed = int(seed)
        self.num_samples = int(round(self.segment * self.sample_rate))
        self._bad: set = set()

    def __len__(self) -> int:
        return len(self.metas)

    def crop_start(self, index: int) -> float:
        slack = float(self.metas[index].duration) - self.segment
        if slack <= 0:
            return 0.0
        if self.random_crop:
            return float(torch.rand(()).item()) * slack
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        return float(torch.rand((), generator=g).item()) * slack

    def _load(self, index: int) -> torch.Tensor:
        from ..audio.io import fit_length, load_audio

        meta = self.metas[index]
        wav, _ = load_audio(meta.path, sample_rate=self.sample_rate, channels=self.channels,
                            offset=self.crop_start(index), duration=self.segment, pad=True)
        if not torch.isfinite(wav).all():
            raise AudioFormatError(f"{meta.path} holds NaN or infinite samples")
        return fit_length(wav.float(), self.num_samples).clamp(-1.0, 1.0)

    def __getitem__(self, index: int) -> torch.Tensor:
        from ..data.dataset import load_first_good

        return load_first_good(index, self.metas, self._bad, self._load)


# ---- the tasks ------------------------------------------------------------------------------


class CodecTask(TrainTask):
    """Shared behaviour of the codec tasks (see the module docstring)."""

    codec_class: ClassVar[Type[CompressionModel]]
    data_config_class = CodecDataConfig
    data: CodecDataConfig

    def __init__(self, config: Optional[Config] = None, data: Optional[CodecDataConfig] = None):
        super().__init__(config, data)
        codec_cfg = self.config.codec
        hop = codec_format(codec_cfg)[1]
        min_len = int(round(self.data.min_segment * codec_cfg.sample_rate))
        if min_len < hop:
            raise ConfigError(f"data.min_segment={self.data.min_segment} s is shorter than one codec frame "
                              f"({hop} samples at {codec_cfg.sample_rate} Hz)")
        self._train_metas: Optional[List[Any]] = None

    # ---- codec format ------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.config.codec.sample_rate)

    @property
    def channels(self) -> int:
        return codec_format(self.config.codec)[0]

    @property
    def hop_length(self) -> int:
        return codec_format(self.config.codec)[1]

    # ---- construction ------------------------------------------------------------------
    def build_model(self) -> CodecGAN:
        return CodecGAN(self.codec_class(self.config.codec))

    def _split_source(self, split: str) -> Optional[Union[str, Path]]:
        return split_source(self.data.source, split, self.data.train_split)

    def train_metas(self) -> List[Any]:
        if self._train_metas is None:
            self._train_metas = source_metas(self._split_source(self.data.train_split), "training data")
        return self._train_metas

    def heldout_metas(self) -> Optional[List[Any]]:
        source = self._split_source(self.data.valid_split)
        return None if source is None else source_metas(source, "validation data")

    def build_train_dataset(self) -> CodecClipDataset:
        return CodecClipDataset(self.train_metas(), self.data.max_segment, self.sample_rate, self.channels,
                                random_crop=True, seed=self.data.seed)

    def build_valid_dataset(self) -> Optional[torch.utils.data.Dataset]:
        if self.data.valid_clips == 0:
            return None
        metas = self.heldout_metas()
        if not metas:
            return None
        return CodecClipDataset(metas[: self.data.valid_clips], self.data.max_segment, self.sample_rate,
                                self.channels, random_crop=False, seed=self.data.seed)

    def configure_optimizers(self, model: nn.Module, train: Any) -> List[OptimizerSpec]:
        gan: CodecGAN = model  # the loop passes the unwrapped model
        specs = []
        if gan.discriminator is not None:
            specs.append(OptimizerSpec("discriminator", default_param_groups(gan.discriminator, train.weight_decay)))
        specs.append(OptimizerSpec("generator", default_param_groups(gan.codec, train.weight_decay)))
        return specs

    # ---- training ----------------------------------------------------------------------
    def crop_window(self, length: int, step: int) -> Tuple[int, int]:
        """``(start, size)`` of the training window of ``step`` inside batches of ``length`` samples:
        size uniform in ``[min_segment, max_segment]`` seconds (a multiple of the hop), start
        uniform. A pure function of ``(data.seed, step)``, so both phases of a step agree."""
        hop = self.hop_length
        lo = max(hop, int(round(self.data.min_segment * self.sample_rate)) // hop * hop)
        hi = max(lo, min(length, int(round(self.data.max_segment * self.sample_rate))) // hop * hop)
        if length < lo:
            return 0, length
        g = torch.Generator().manual_seed(self.data.seed * 1_000_003 + int(step))
        size = int(torch.randint(lo // hop, hi // hop + 1, (1,), generator=g).item()) * hop
        start = int(torch.randint(0, length - size + 1, (1,), generator=g).item())
        return start, size

    def adversarial(self, step: int) -> bool:
        return step >= self.config.adversarial_start

    def training_step(self, model: nn.Module, batch: torch.Tensor, step: int,
                      phase: str = "generator") -> Tuple[torch.Tensor, Mapping[str, Any]]:
        if phase == "main":  # the base class's validation hook calls the default phase
            phase = "generator"
        start, size = self.crop_window(batch.shape[-1], step)
        wav = batch[..., start:start + size]
        adversarial = self.adversarial(step)
        if phase == "discriminator" and not adversarial:
            # warm-up: no discriminator update (no parameter gets a gradient, the step is a no-op)
            return torch.zeros((), device=batch.device, requires_grad=True), {}
        loss, logs = model(wav, phase=phase, adversarial=adversarial)
        return loss, logs

    def validation_step(self, model: nn.Module, batch: torch.Tensor, step: int) -> Mapping[str, Any]:
        loss, logs = model(batch, phase="generator", adversarial=False)
        return {"loss": loss.detach(), **{k: v for k, v in logs.items() if k != "generator"}}

    def sample(self, model: nn.Module, step: int) -> Dict[str, Audio]:
        codec: CompressionModel = model.codec
        metas = self.heldout_metas()
        if not metas:
            warnings.warn("no held-out split: samples reconstruct training clips", stacklevel=2)
            metas = self.train_metas()
        clips = CodecClipDataset(metas[: max(1, self.data.sample_clips)], self.data.sample_seconds,
                                 self.sample_rate, self.channels, random_crop=False, seed=self.data.seed)
        out: Dict[str, Audio] = {}
        for i in range(len(clips)):
            clip = clips[i]
            recon = codec.reconstruct(clip[None].to(codec.device))[0].float().cpu()
            out[f"clip{i}/target"] = (clip, self.sample_rate)
            out[f"clip{i}/reconstruction"] = (recon, self.sample_rate)
        return out

    # ---- export ------------------------------------------------------------------------
    def fit_batches(self, batch_size: int = 8) -> List[torch.Tensor]:
        """Train-split audio for the export-time fits: ``fit_clips`` fixed crops, in batches."""
        metas = self.train_metas()
        ds = CodecClipDataset(metas[: self.data.fit_clips], self.data.fit_seconds, self.sample_rate, self.channels,
                              random_crop=False, seed=self.data.seed + 1)
        items = [ds[i] for i in range(len(ds))]
        return [torch.stack(items[i:i + batch_size]) for i in range(0, len(items), batch_size)]

    def post_training_fit(self, codec: CompressionModel) -> Dict[str, float]:
        """Fits that follow training (none for the RVQ codec); returns values to report."""
        return {}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        if not isinstance(model, CodecGAN) or not isinstance(model.codec, self.codec_class):
            raise CheckpointError(f"{self.name} exports a CodecGAN around a {self.codec_class.__name__}, "
                                  f"got {type(model).__name__}")
        codec = model.codec.cpu().eval()
        with torch.no_grad():  # the fits must see the float16-rounded weights that will ship
            for p in codec.parameters():
                p.copy_(p.half().float())
            for module in codec.modules():  # the codewords ship in float16 as well
                if isinstance(module, EuclideanCodebook):
                    module.embed.copy_(module.embed.half().float())
        report = self.post_training_fit(codec)
        codec.save_pretrained(out_dir, dtype="float16")
        if report:
            (Path(out_dir) / "fit.json").write_text(json.dumps(report, indent=2) + "\n")


@register_task("codec-rvq")
class RVQCodecTask(CodecTask):
    """MusicGen's EnCodec-style RVQ codec (see the module docstring).

    Codebook initialisation: k-means needs more vectors than codewords, and a CPU batch (8 x
    0.5-1 s at 50 Hz, about 300 frames) has far fewer than 2048, which would leave most codewords
    of a k-means-initialised codebook empty (an empty cluster's EMA sum is zero, so the codeword
    collapses to the zero vector at the first update). So before the first step every stage is
    initialised by k-means on the residuals of ``init_clips`` x ``max_segment`` s of training
    audio (``64 x 1 s = 3200`` frames by default), stage by stage as in the residual VQ.

    Dead-code revival: every ``revive_every`` steps, codewords whose EMA usage ``N_i`` is below
    the quantiser's ``threshold_ema_dead_code`` are re-seeded with encoder residuals of the current
    batch, and their EMA state is reset with them (``e_i = x``, ``m_i = t x``, ``N_i = t``). The
    codebook's own expiry (like audiocraft's) re-seeds ``embed`` only, and the EMA renormalisation
    ``e_i = m_i / N_i`` of the same step writes the old codeword back, so without this an unused
    codeword never returns (measured on this corpus after 500 steps: 37 of 2048 stage-1 codewords
    in use, and up to 1992 all-zero codewords in the later stages).
    """

    codec_class = RVQCodec
    config_class = RVQCodecTaskConfig
    config: RVQCodecTaskConfig

    def __init__(self, config: Optional[RVQCodecTaskConfig] = None, data: Optional[CodecDataConfig] = None):
        super().__init__(config, data)
        q = self.config.codec.quantizer
        frame_rate = self.config.codec.sample_rate / codec_format(self.config.codec)[1]
        kbps = q.n_q * (q.bins - 1).bit_length() * frame_rate / 1000.0
        if kbps > 6.0 + 1e-9:
            warnings.warn(f"codec-rvq at full rate is {kbps:.2f} kbps (> 6 kbps)", stacklevel=2)

    @torch.no_grad()
    def init_codebooks(self, codec: RVQCodec, wav: torch.Tensor) -> bool:
        """k-means-initialise every not-yet-initialised codebook on the residuals of ``wav [B, C, T]``,
        stage by stage. Returns whether anything was initialised."""
        layers = list(codec.quantizer.layers)
        if all(bool(layer.codebook.inited.item()) for layer in layers):
            return False
        residual = codec.pre_quantization(wav)
        for layer in layers:
            h = layer.project_in(residual.transpose(1, 2))
            layer.codebook.init_embed_(h.reshape(-1, h.shape[-1]))
            residual = residual - layer.decode(layer.encode(residual))
        return True

    @torch.no_grad()
    def revive_dead_codes(self, codec: RVQCodec, wav: torch.Tensor) -> int:
        """Re-seed codewords with EMA usage below the threshold from the residuals of ``wav``
        (see the class docstring); returns how many were re-seeded."""
        from ..modules.quantization import sample_vectors

        threshold = float(self.config.codec.quantizer.threshold_ema_dead_code)
        if threshold <= 0:
            return 0
        # every stage's inputs under the current codebooks first: re-seeding a stage with vectors
        # of this batch would quantise them exactly and leave zero residuals for the next stage
        inputs = []
        residual = codec.pre_quantization(wav)
        for layer in codec.quantizer.layers:
            h = layer.project_in(residual.transpose(1, 2))
            inputs.append(h.reshape(-1, h.shape[-1]))
            residual = residual - layer.decode(layer.encode(residual))
        revived = 0
        for layer, h in zip(codec.quantizer.layers, inputs):
            book = layer.codebook
            dead = book.cluster_size < threshold
            n_dead = int(dead.sum().item())
            candidates = h[h.norm(dim=1) > 1e-6]  # never seed a codeword with an exact-zero residual
            if n_dead and candidates.shape[0]:
                fresh = sample_vectors(candidates, n_dead).to(book.embed.dtype)
                book.embed[dead] = fresh
                book.embed_avg[dead] = fresh * threshold
                book.cluster_size[dead] = threshold
                revived += n_dead
            _broadcast_from_rank0(book)
        return revived

    def training_step(self, model: nn.Module, batch: torch.Tensor, step: int,
                      phase: str = "generator") -> Tuple[torch.Tensor, Mapping[str, Any]]:
        revived = None
        if model.training and phase != "discriminator":
            from ..train.distributed import unwrap

            codec = unwrap(model).codec
            if self.config.codec.quantizer.kmeans_init and not all(
                    bool(layer.codebook.inited.item()) for layer in codec.quantizer.layers):
                self.init_codebooks(codec, self.init_audio(batch))
            elif self.config.revive_every and step % self.config.revive_every == 0:
                start, size = self.crop_window(batch.shape[-1], step)
                revived = self.revive_dead_codes(codec, batch[..., start:start + size])
        loss, logs = super().training_step(model, batch, step, phase)
        if revived is not None:
            logs = dict(logs, revived_codes=float(revived))
        return loss, logs

    def init_audio(self, batch: torch.Tensor) -> torch.Tensor:
        """``batch`` plus ``init_clips`` random training crops (from the step-seeded global RNG)."""
        if self.config.init_clips == 0:
            return batch
        ds = self.build_train_dataset()
        n = min(len(ds), self.config.init_clips)
        idx = torch.randperm(len(ds))[:n].tolist()
        extra = torch.stack([ds[i] for i in idx]).to(batch.device)
        length = min(extra.shape[-1], batch.shape[-1])
        return torch.cat([batch[..., :length], extra[..., :length]])


@dataclass
class LatentRVQTaskConfig(Config):
    """``[task]`` of ``vae-gan-rvq``: the frozen base codec (bundle name or model directory; its
    config and weights are copied into the new codec), the codec config (``codec.base`` is filled
    from the base model) and :class:`RVQCodecTaskConfig`'s codebook settings."""

    base: str = "vae-gan"
    codec: LatentRVQConfig = field(default_factory=LatentRVQConfig)
    adversarial_start: int = NEVER
    init_clips: int = 64
    revive_every: int = 10

    def __post_init__(self) -> None:
        _check_start(self.adversarial_start)
        if self.init_clips < 0 or self.revive_every < 0:
            raise ConfigError(f"init_clips and revive_every must be >= 0, got {self.init_clips}, {self.revive_every}")


@register_task("vae-gan-rvq")
class LatentRVQTask(RVQCodecTask):
    """RVQ tokens over the frozen ``vae-gan`` latents (:class:`LatentRVQCodec`): MusicGen's token
    layout (50 Hz, 4 x 2048) with a decoder that keeps pitch. Codebook initialisation and revival
    as in :class:`RVQCodecTask`; the base codec's weights are loaded when the model is built (a
    resumed run restores them from its checkpoint)."""

    codec_class = LatentRVQCodec
    config_class = LatentRVQTaskConfig
    config: LatentRVQTaskConfig

    def __init__(self, config: Optional[LatentRVQTaskConfig] = None, data: Optional[CodecDataConfig] = None):
        config = config if config is not None else LatentRVQTaskConfig()
        if config.codec.base is None:
            from ..pretrained import read_model_config, resolve_model_dir

            _, meta = read_model_config(resolve_model_dir(config.base))
            if meta.get("class") != "VAEGANCodec":
                raise ConfigError(f"task.base must be a VAE-GAN codec, got a {meta.get('class')} ({config.base})")
            base = VAEGANConfig.from_dict(meta["config"])
            config = config.replace(codec=config.codec.replace(base=base, sample_rate=base.sample_rate))
        super().__init__(config, data)

    def build_model(self) -> CodecGAN:
        gan = super().build_model()
        base = VAEGANCodec.from_pretrained(self.config.base)
        if base.config.to_dict() != self.config.codec.base.to_dict():
            raise ConfigError(f"task.codec.base differs from the config of the base codec {self.config.base}")
        gan.codec.base.load_state_dict(base.state_dict())
        return gan


@register_task("vae-gan")
class VAEGANTask(CodecTask):
    """MeLoDy's VAE-GAN; export fits the latent scale (``1 / std`` of the posterior means)."""

    codec_class = VAEGANCodec
    config_class = VAEGANTaskConfig
    config: VAEGANTaskConfig

    def post_training_fit(self, codec: CompressionModel) -> Dict[str, float]:
        scale = codec.fit_latent_scale(self.fit_batches())
        return {"latent_scale": float(scale)}


@register_task("masked-ae")
class MaskedAETask(CodecTask):
    """JEN-1's masked autoencoder; export fits the latent whitening."""

    codec_class = MaskedAutoencoder
    config_class = MaskedAETaskConfig
    config: MaskedAETaskConfig

    def post_training_fit(self, codec: CompressionModel) -> Dict[str, float]:
        batches = self.fit_batches()
        codec.fit_whitening(batches)
        z = torch.cat([codec.encode(b) for b in batches], dim=0)  # whitened latents
        flat = z.transpose(0, 1).reshape(z.shape[1], -1)
        return {"whitened_mean_abs": float(flat.mean(1).abs().mean()),
                "whitened_var_mean": float(flat.var(1).mean()),
                "frames": float(flat.shape[1])}

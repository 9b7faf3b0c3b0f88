"""``toy-audio-ae``: a tiny 1D convolutional autoencoder on procedurally generated notes.

It is the training harness's self-test: no external data, a step takes milliseconds on
CPU, and the loss (L1 + multi-resolution STFT) visibly falls within a few dozen steps.
Clips are random sums of decaying harmonic notes; clip ``i`` is fixed by
``(data.seed, i)`` and augmented with a random gain and circular shift drawn from the
global RNGs (which the harness seeds per item).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config
from ..errors import CheckpointError, ConfigError
from .task import Audio, TrainTask, register_task


@dataclasses.dataclass
class ToyAudioAEConfig(Config):
    """Model and loss of the toy autoencoder (the ``[task]`` section)."""

    sample_rate: int = 8000
    channels: int = 1
    hidden: int = 16
    latent_dim: int = 8
    strides: List[int] = dataclasses.field(default_factory=lambda: [2, 2])
    kernel_size: int = 7
    l1_weight: float = 1.0
    stft_weight: float = 1.0
    fft_sizes: List[int] = dataclasses.field(default_factory=lambda: [64, 128, 256])

    def __post_init__(self) -> None:
        for name in ("sample_rate", "channels", "hidden", "latent_dim", "kernel_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be odd, got {self.kernel_size}")
        if not self.strides or any(s < 2 or s % 2 for s in self.strides):
            raise ConfigError(f"strides must be a non-empty list of even numbers >= 2, got {self.strides}")
        if not self.fft_sizes or any(n < 8 for n in self.fft_sizes):
            raise ConfigError(f"fft_sizes must be a non-empty list of sizes >= 8, got {self.fft_sizes}")
        if self.l1_weight < 0 or self.stft_weight < 0 or self.l1_weight + self.stft_weight == 0:
            raise ConfigError("l1_weight and stft_weight must be >= 0 and not both 0")

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.strides))


@dataclasses.dataclass
class ToyAudioDataConfig(Config):
    """The procedural clips (the ``[data]`` section)."""

    num_clips: int = 512
    valid_clips: int = 16  # 0 disables validation
    clip_seconds: float = 0.25
    max_notes: int = 3
    harmonics: int = 4
    min_pitch: int = 45  # MIDI note numbers (A2 .. A5)
    max_pitch: int = 81
    seed: int = 1234
    gain_jitter_db: float = 3.0  # augmentation: uniform gain in +-gain_jitter_db
    max_shift_seconds: float = 0.05  # augmentation: circular shift

    def __post_init__(self) -> None:
        if self.num_clips < 1 or self.valid_clips < 0:
            raise ConfigError("num_clips must be >= 1 and valid_clips >= 0")
        if not self.clip_seconds > 0:
            raise ConfigError(f"clip_seconds must be > 0, got {self.clip_seconds}")
        if self.max_notes < 1 or self.harmonics < 1:
            raise ConfigError("max_notes and harmonics must be >= 1")
        if not 0 <= self.min_pitch <= self.max_pitch <= 127:
            raise ConfigError(f"need 0 <= min_pitch <= max_pitch <= 127, got {self.min_pitch}..{self.max_pitch}")
        if self.gain_jitter_db < 0 or self.max_shift_seconds < 0:
            raise ConfigError("gain_jitter_db and max_shift_seconds must be >= 0")


def render_notes(rng: np.random.Generator, num_samples: int, sample_rate: int, channels: int,
                 max_notes: int, harmonics: int, min_pitch: int, max_pitch: int) -> np.ndarray:
    """A ``[channels, num_samples]`` float32 clip: 1..max_notes decaying harmonic notes with
    random pitch, onset, decay, brightness and stereo placement, peak-normalised to 0.7."""
    t = np.arange(num_samples, dtype=np.float64) / sample_rate
    out = np.zeros((channels, num_samples), dtype=np.float64)
    for _ in range(int(rng.integers(1, max_notes + 1))):
        pitch = rng.integers(min_pitch, max_pitch + 1)
        f0 = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
        onset = rng.uniform(0.0, 0.5) * t[-1] if num_samples > 1 else 0.0
        decay = rng.uniform(2.0, 12.0)
        rolloff = rng.uniform(0.8, 2.0)
        tau = np.clip(t - onset, 0.0, None)
        envelope = np.where(t >= onset, np.exp(-decay * tau) * (1.0 - np.exp(-tau * 400.0)), 0.0)
        note = np.zeros(num_samples)
        for k in range(1, harmonics + 1):
            if k * f0 >= sample_rate / 2:
                break
            note += np.sin(2 * np.pi * k * f0 * tau + rng.uniform(0, 2 * np.pi)) / k ** rolloff
        pan = rng.uniform(0.0, 1.0)
        gains = np.linspace(1.0 - pan, pan, channels) if channels > 1 else np.ones(1)
        out += rng.uniform(0.3, 1.0) * gains[:, None] * (envelope * note)[None]
    peak = np.abs(out).max()
    if peak > 0:
        out *= 0.7 / peak
    return out.astype(np.float32)


class ToyAudioDataset(torch.utils.data.Dataset):
    """``num_clips`` procedural clips ``[C, T]``; item ``i`` depends only on ``(seed, i)``
    plus, when ``augment``, the global torch RNG (gain jitter and circular shift)."""

    def __init__(self, cfg: ToyAudioDataConfig, sample_rate: int, channels: int, num_clips: int,
                 seed: int, augment: bool):
        self.cfg = cfg
        self.sample_rate = sample_rate
        self.channels = channels
        self.num_clips = num_clips
        self.seed = seed
        self.augment = augment
        self.num_samples = max(1, int(round(cfg.clip_seconds * sample_rate)))

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self.num_clips:
            raise IndexError(f"clip {index} out of range [0, {self.num_clips})")
        rng = np.random.default_rng([self.seed, index])
        c = self.cfg
        clip = torch.from_numpy(render_notes(rng, self.num_samples, self.sample_rate, self.channels,
                                             c.max_notes, c.harmonics, c.min_pitch, c.max_pitch))
        if self.augment:
            if c.gain_jitter_db > 0:
                db = (torch.rand(()) * 2 - 1) * c.gain_jitter_db
                clip = (clip * 10.0 ** (db / 20.0)).clamp(-1.0, 1.0)
            max_shift = int(c.max_shift_seconds * self.sample_rate)
            if max_shift > 0:
                clip = torch.roll(clip, int(torch.randint(-max_shift, max_shift + 1, ())), dims=-1)
        return clip


class ToyAudioAutoencoder(nn.Module):
    """Conv encoder ``[B, C, T] -> [B, D, T / hop]`` and transposed-conv decoder back,
    with ``hop = prod(strides)``; the output passes through ``tanh``."""

    CLASS_NAME = "ToyAudioAutoencoder"
    VERSION = 1

    def __init__(self, config: ToyAudioAEConfig):
        super().__init__()
        self.config = config
        c, h, k = config.channels, config.hidden, config.kernel_size
        enc: List[nn.Module] = [nn.Conv1d(c, h, k, padding=k // 2), nn.ELU()]
        dec: List[nn.Module] = [nn.Conv1d(config.latent_dim, h, 3, padding=1), nn.ELU()]
        for s in config.strides:
            enc += [nn.Conv1d(h, h, 2 * s, stride=s, padding=s // 2), nn.ELU()]
        for s in reversed(config.strides):
            dec += [nn.ConvTranspose1d(h, h, 2 * s, stride=s, padding=s // 2), nn.ELU()]
        enc.append(nn.Conv1d(h, config.latent_dim, 3, padding=1))
        dec.append(nn.Conv1d(h, c, k, padding=k // 2))
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """``[B, C, T]`` with ``T % hop == 0`` -> latents ``[B, D, T / hop]``."""
        return self.encoder(audio)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, D, L]`` -> audio ``[B, C, L * hop]`` in (-1, 1)."""
        return torch.tanh(self.decoder(latents))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``[B, C, T]`` (any ``T``: padded to a multiple of the hop, then cropped)."""
        if audio.ndim != 3 or audio.shape[1] != self.config.channels:
            raise ValueError(f"expected audio [B, {self.config.channels}, T], got {tuple(audio.shape)}")
        length = audio.shape[-1]
        pad = (-length) % self.config.hop_length
        x = F.pad(audio, (0, pad)) if pad else audio
        y = self.decode(self.encode(x))
        return y[..., :length].contiguous() if pad else y

    # ---- model directory ------------------------------------------------------------
    def save_pretrained(self, path: Union[str, Path]) -> None:
        """Write ``config.json`` and ``model.safetensors`` into directory ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"class": self.CLASS_NAME, "version": self.VERSION, "config": self.config.to_dict()}
        (path / "config.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(cls, path: Union[str, Path]) -> "ToyAudioAutoencoder":
        """Load a directory written by :meth:`save_pretrained`, checking class, version and shapes."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        cfg_path, weights_path = path / "config.json", path / "model.safetensors"
        if not cfg_path.is_file() or not weights_path.is_file():
            raise CheckpointError(f"{path} is not a model directory (needs config.json and model.safetensors)")
        try:
            meta = json.loads(cfg_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{cfg_path} is not valid JSON ({e})") from None
        if not isinstance(meta, dict) or meta.get("class") != cls.CLASS_NAME:
            raise CheckpointError(f"{path} holds a {meta.get('class') if isinstance(meta, dict) else '?'}, not a {cls.CLASS_NAME}")
        if meta.get("version") != cls.VERSION:
            raise CheckpointError(f"{path} has {cls.CLASS_NAME} version {meta.get('version')}, this tunecraft reads {cls.VERSION}")
        try:
            config = ToyAudioAEConfig.from_dict(meta.get("config", {}))
        except ConfigError as e:
            raise CheckpointError(f"{cfg_path}: {e}") from None
        model = cls(config)
        try:
            state = load_file(str(weights_path))
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{weights_path} is corrupt ({e})") from None
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        if missing or unexpected:
            raise CheckpointError(f"{weights_path} does not match the config (missing: {missing}, unexpected: {unexpected})")
        for k, v in expected.items():
            if v.shape != state[k].shape:
                raise CheckpointError(f"{weights_path}: {k} has shape {tuple(state[k].shape)}, expected {tuple(v.shape)}")
        model.load_state_dict(state)
        return model.eval()


def multi_resolution_stft_loss(pred: torch.Tensor, target: torch.Tensor, fft_sizes: List[int]) -> torch.Tensor:
    """Mean over resolutions of spectral convergence ``||S - S^||_F / ||S||_F`` plus log-magnitude
    L1 (Yamamoto et al. 2020, Parallel WaveGAN eq. 4-6); hop = n_fft / 4, Hann window."""
    pred = pred.float().reshape(-1, pred.shape[-1])
    target = target.float().reshape(-1, target.shape[-1])
    total = pred.new_zeros(())
    for n_fft in fft_sizes:
        window = torch.hann_window(n_fft, device=pred.device)
        kw = dict(n_fft=n_fft, hop_length=n_fft // 4, window=window, return_complex=True, center=True)
        p = torch.stft(pred, **kw).abs().clamp_min(1e-5)
        t = torch.stft(target, **kw).abs().clamp_min(1e-5)
        sc = torch.linalg.vector_norm(t - p) / torch.linalg.vector_norm(t).clamp_min(1e-7)
        mag = (p.log() - t.log()).abs().mean()
        total = total + sc + mag
    return total / len(fft_sizes)


@register_task("toy-audio-ae")
class ToyAudioAETask(TrainTask):
    """Reconstruct procedural notes with L1 + multi-resolution STFT loss."""

    config_class = ToyAudioAEConfig
    data_config_class = ToyAudioDataConfig
    config: ToyAudioAEConfig
    data: ToyAudioDataConfig

    def __init__(self, config: Optional[ToyAudioAEConfig] = None, data: Optional[ToyAudioDataConfig] = None):
        super().__init__(config, data)
        clip = int(round(self.data.clip_seconds * self.config.sample_rate))
        if clip < max(self.config.fft_sizes):
            raise ConfigError(
                f"data.clip_seconds={self.data.clip_seconds} gives {clip} samples, fewer than the largest FFT size "
                f"{max(self.config.fft_sizes)}"
            )

    def build_model(self) -> nn.Module:
        return ToyAudioAutoencoder(self.config)

    def _dataset(self, num_clips: int, seed: int, augment: bool) -> ToyAudioDataset:
        return ToyAudioDataset(self.data, self.config.sample_rate, self.config.channels, num_clips, seed, augment)

    def build_train_dataset(self) -> ToyAudioDataset:
        return self._dataset(self.data.num_clips, self.data.seed, augment=True)

    def build_valid_dataset(self) -> Optional[ToyAudioDataset]:
        if self.data.valid_clips == 0:
            return None
        # a disjoint seed stream: validation never sees training clips
        return self._dataset(self.data.valid_clips, self.data.seed + 1_000_003, augment=False)

    def losses(self, pred: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        l1 = (pred.float() - target.float()).abs().mean()
        stft = multi_resolution_stft_loss(pred, target, self.config.fft_sizes)
        loss = self.config.l1_weight * l1 + self.config.stft_weight * stft
        return loss, {"l1": l1.detach(), "stft": stft.detach()}

    def training_step(self, model: nn.Module, batch: torch.Tensor, step: int,
                      phase: str = "main") -> Tuple[torch.Tensor, Mapping[str, Any]]:
        return self.losses(model(batch), batch)

    def sample(self, model: nn.Module, step: int) -> Dict[str, Audio]:
        clip = self._dataset(1, self.data.seed + 2_000_003, augment=False)[0]
        device = next(model.parameters()).device
        recon = model(clip[None].to(device))[0].float().cpu()
        sr = self.config.sample_rate
        return {"reconstruction": (recon, sr), "target": (clip, sr)}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        if not isinstance(model, ToyAudioAutoencoder):
            raise CheckpointError(f"toy-audio-ae exports a ToyAudioAutoencoder, got {type(model).__name__}")
        model.save_pretrained(out_dir)

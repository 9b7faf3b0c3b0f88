"""Run logging: ``metrics.jsonl``, TensorBoard scalars and audio, sample WAVs, progress bar.

Only rank 0 creates a :class:`RunLogger`; the other ranks use :class:`NullLogger`.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
import wave
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch

METRICS_FILE = "metrics.jsonl"


def write_wav(path: Path, audio: torch.Tensor, sample_rate: int) -> None:
    """Write ``audio`` ``[C, T]`` (float in [-1, 1]) as 16-bit PCM WAV with the stdlib."""
    a = audio.detach().float().cpu()
    if a.ndim == 1:
        a = a[None]
    pcm = (a.clamp(-1.0, 1.0).numpy().T * 32767.0).round().astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(a.shape[0])
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(np.ascontiguousarray(pcm).tobytes())


def truncate_metrics(path: Path, after_step: int) -> None:
    """Drop records logged after ``after_step`` (they belong to steps a resumed run redoes)."""
    if not path.is_file():
        return
    kept = []
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a crash
                continue
            if isinstance(record, dict) and record.get("step", 0) <= after_step:
                kept.append(json.dumps(record) + "\n")
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    tmp.replace(path)


class NullLogger:
    """Logger of non-zero ranks: does nothing."""

    def log_metrics(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        pass

    def log_audio(self, step: int, samples: Mapping[str, Tuple[torch.Tensor, int]]) -> None:
        pass

    def progress(self, step: int, postfix: Optional[Mapping[str, float]] = None) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class RunLogger(NullLogger):
    """Rank 0's logger for one invocation of a run in ``out_dir``."""

    def __init__(self, out_dir: Path, start_step: int, total_steps: int, quiet: bool):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.out_dir / METRICS_FILE
        truncate_metrics(self.metrics_path, start_step)
        self._metrics = open(self.metrics_path, "a", encoding="utf-8")
        self._tb = self._open_tensorboard(start_step)
        self._bar = None
        self._quiet = quiet
        if not quiet and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step",
                             dynamic_ncols=True, file=sys.stderr)

    def _open_tensorboard(self, start_step: int) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            warnings.warn(f"TensorBoard logging disabled: {e} (pip install tensorboard)")
            return None
        # purge_step drops events of steps after the checkpoint we resumed from
        return SummaryWriter(log_dir=str(self.out_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def log_metrics(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        record: Dict[str, Any] = {"step": step, "split": split, "time": round(time.time(), 3)}
        for k, v in metrics.items():
            record[k] = v if math.isfinite(v) else str(v)
        self._metrics.write(json.dumps(record) + "\n")
        self._metrics.flush()
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{split}/{k}", v, step)
            self._tb.flush()

    def log_audio(self, step: int, samples: Mapping[str, Tuple[torch.Tensor, int]]) -> None:
        for name, (audio, sr) in samples.items():
            audio = audio.detach().float().cpu()
            if audio.ndim == 1:
                audio = audio[None]
            write_wav(self.out_dir / "samples" / f"step-{step:08d}-{name}.wav", audio, sr)
            if self._tb is not None:  # TensorBoard audio is mono
                self._tb.add_audio(f"samples/{name}", audio.mean(0).clamp(-1, 1)[None], step, sample_rate=int(sr))
        if self._tb is not None:
            self._tb.flush()

    def progress(self, step: int, postfix: Optional[Mapping[str, float]] = None) -> None:
        if self._bar is None:
            return
        self._bar.n = step
        if postfix:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)
        self._bar.refresh()

    def message(self, text: str) -> None:
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        elif not self._quiet:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if not self._metrics.closed:
            self._metrics.close()

"""Noise2Music (Huang et al. 2023): text -> 24 kHz music by cascaded diffusion.

Sec. 3 of the paper, as a pipeline over :mod:`tunecraft.noise2music`'s stages:

1. a **generator** turns the prompt (encoded by a frozen text encoder and read through
   cross-attention) into an intermediate representation - a 3.2 kHz waveform
   (``path="waveform"``) or an 80-bin log-mel spectrogram at 100 frames/s (``path="spectrogram"``);
2. a **cascader** (waveform path; the FFT-upsampled low-fi audio is stacked with ``x_t``, and the
   text is read again) or a **vocoder** (spectrogram path; conditioned on the spectrogram only)
   makes 16 kHz audio;
3. the **super-resolution cascader** makes 24 kHz audio from the FFT-upsampled 16 kHz audio.

Every stage samples with its own step count, classifier-free guidance scale, step schedule
(uniform, front-heavy: more steps near t = 0, back-heavy: near t = 1) and stochasticity ``eta``
(0 = DDIM, 1 = ancestral DDPM). Defaults come from each stage's config, then from the bundle's
``"sampling"`` table; :meth:`Noise2Music.generate` overrides them: a scalar ``steps`` /
``cfg_scale`` / ``step_schedule`` / ``eta`` sets the *generator* stage (the one the paper's
Figures 2-3 vary); a mapping ``{stage_name: value}`` sets any stage of the path.

Default step counts of the CPU configs (:mod:`tunecraft.noise2music.configs`), chosen so that
10 s at 24 kHz takes well under 30 s on 2 CPU cores (``benchmarks/noise2music_speed.py``):

=====================  =====  ===========  ====  ========================================
stage                  steps  schedule     CFG   paper (Table 3 / Sec. 4)
=====================  =====  ===========  ====  ========================================
waveform_generator     50     front-heavy  10    front-heavy, CFG 10, 1000 steps
waveform_cascader      20     front-heavy  1     front-heavy
spectrogram_generator  50     back-heavy   5     back-heavy, CFG 5, 1000 steps
spectrogram_vocoder    20     front-heavy  -     -
sr_cascader            20     front-heavy  -     -
=====================  =====  ===========  ====  ========================================

A bundle is a directory whose ``config.json`` reads::

    {"system": "noise2music", "format_version": 1, "default_path": "waveform",
     "stages": {"waveform_generator": "waveform_generator", ..., "sr_cascader": "sr_cascader"},
     "sampling": {"waveform_cascader": {"steps": 10}}, "description": "..."}

``stages`` maps stage names to model directories (relative to the bundle); a bundle needs the
SR cascader and every stage of at least one path. Generation with the same ``seed`` is
bit-identical on the same machine and versions: one ``torch.Generator`` feeds every stage.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..audio import resampled_length, save_audio
from ..errors import CheckpointError, ConfigError, InvalidInput
from ..noise2music.models import STAGES_BY_NAME, DiffusionStage, load_stage
from ..pretrained import CONFIG_NAME, resolve_model_dir
from .base import GenerationSystem, check_cfg_scale, check_descriptions, check_duration, check_steps

__all__ = ["BUNDLE_FORMAT_VERSION", "Noise2Music", "PATHS"]

BUNDLE_FORMAT_VERSION = 1
#: generation path -> its stages, in order
PATHS: dict[str, tuple[str, str, str]] = {
    "waveform": ("waveform_generator", "waveform_cascader", "sr_cascader"),
    "spectrogram": ("spectrogram_generator", "spectrogram_vocoder", "sr_cascader"),
}
SAMPLING_KEYS = ("steps", "cfg_scale", "step_schedule", "eta", "fact_guidance")
_BUNDLE_KEYS = {"system", "format_version", "tunecraft_version", "default_path", "stages", "sampling", "description",
                "default"}
_STAGE_TITLES = {
    "waveform_generator": "waveform generator",
    "waveform_cascader": "waveform cascader",
    "spectrogram_generator": "spectrogram generator",
    "spectrogram_vocoder": "vocoder",
    "sr_cascader": "super-resolution",
}


def _check_sampling_table(table: Any, where: str, err: type[Exception]) -> dict[str, dict[str, Any]]:
    if table is None:
        return {}
    if not isinstance(table, Mapping):
        raise err(f"{where} must map stage names to sampling settings")
    out: dict[str, dict[str, Any]] = {}
    for stage, opts in table.items():
        if stage not in STAGES_BY_NAME:
            raise err(f"{where}: unknown stage {stage!r} (stages: {', '.join(STAGES_BY_NAME)})")
        if not isinstance(opts, Mapping) or set(opts) - set(SAMPLING_KEYS):
            raise err(f"{where}.{stage} may set only {', '.join(SAMPLING_KEYS)}")
        out[stage] = dict(opts)
    return out


def _seeded(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (a non-negative integer), or from fresh entropy for ``None``."""
    generator = torch.Generator(device="cpu")
    if seed is None:
        generator.seed()
        return generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer, got {seed!r}")
    return generator.manual_seed(int(seed))


class Noise2Music(GenerationSystem):
    """The Noise2Music cascade (module docstring). Build it from stages, or load a bundle with
    :meth:`from_pretrained`; :meth:`generate` returns ``(wav [B, 1, T] at 24 kHz, 24000)``."""

    system_name = "noise2music"
    capabilities = frozenset({"text"})
    channels = 1

    def __init__(
        self,
        stages: Mapping[str, DiffusionStage],
        *,
        default_path: str | None = None,
        sampling: Mapping[str, Mapping[str, Any]] | None = None,
        description: str = "",
    ):
        self.stages: dict[str, DiffusionStage] = {}
        for name, stage in stages.items():
            cls = STAGES_BY_NAME.get(name)
            if cls is None:
                raise ConfigError(f"unknown Noise2Music stage {name!r} (stages: {', '.join(STAGES_BY_NAME)})")
            if not isinstance(stage, cls):
                raise ConfigError(f"stage {name!r} must be a {cls.__name__}, got {type(stage).__name__}")
            self.stages[name] = stage.eval()
        self.paths = [p for p, names in PATHS.items() if all(n in self.stages for n in names)]
        if not self.paths:
            raise ConfigError("a Noise2Music system needs the sr_cascader and every stage of the waveform path "
                              "(waveform_generator, waveform_cascader) or of the spectrogram path "
                              f"(spectrogram_generator, spectrogram_vocoder); it has "
                              f"{', '.join(self.stages) or 'none'}")
        self.default_path = default_path or ("waveform" if "waveform" in self.paths else self.paths[0])
        if self.default_path not in self.paths:
            raise ConfigError(f"default path {self.default_path!r} is not available (this system has: "
                              f"{', '.join(self.paths)})")
        self.sampling = _check_sampling_table(sampling, "sampling", ConfigError)
        for name, opts in self.sampling.items():
            if name in self.stages:
                try:
                    self.stages[name].sampling_options(**opts)
                except InvalidInput as e:
                    raise ConfigError(str(e)) from None
        self.description = description
        self._check_rates()
        self.sample_rate = self.stages["sr_cascader"].sample_rate

    def _check_rates(self) -> None:
        s = self.stages
        sr = s["sr_cascader"]
        if "waveform" in self.paths:
            gen, casc = s["waveform_generator"], s["waveform_cascader"]
            if gen.sample_rate != casc.low_sample_rate or casc.sample_rate != sr.low_sample_rate:
                raise ConfigError(f"waveform path rates do not chain: generator {gen.sample_rate} Hz -> cascader "
                                  f"{casc.low_sample_rate}->{casc.sample_rate} Hz -> SR {sr.low_sample_rate} Hz")
        if "spectrogram" in self.paths:
            gen, voc = s["spectrogram_generator"], s["spectrogram_vocoder"]
            if gen.config.mel != voc.config.mel or voc.sample_rate != sr.low_sample_rate:
                raise ConfigError("spectrogram path does not chain: the generator and vocoder need the same mel "
                                  f"settings and the vocoder's rate ({voc.sample_rate}) must be the SR cascader's "
                                  f"input rate ({sr.low_sample_rate})")

    # ------------------------------------------------------------------ bundles
    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None) -> "Noise2Music":
        """Load a bundle directory (or an installed bundle by name); see the module docstring."""
        root = resolve_model_dir(path)
        cfg_file = root / CONFIG_NAME
        if not cfg_file.is_file():
            raise CheckpointError(f"{root} is not a Noise2Music bundle (no {CONFIG_NAME})")
        try:
            meta = json.loads(cfg_file.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{cfg_file} is not valid JSON: {e}") from None
        if not isinstance(meta, dict) or meta.get("system") != "noise2music":
            raise CheckpointError(f"{cfg_file} does not describe a Noise2Music bundle "
                                  f"(needs \"system\": \"noise2music\")")
        unknown = sorted(set(meta) - _BUNDLE_KEYS)
        if unknown:
            raise CheckpointError(f"{cfg_file}: unknown key(s) {', '.join(unknown)}")
        fmt = meta.get("format_version")
        if not isinstance(fmt, int) or fmt > BUNDLE_FORMAT_VERSION:
            raise CheckpointError(f"{cfg_file}: bundle format version {fmt!r}; this tunecraft reads up to "
                                  f"{BUNDLE_FORMAT_VERSION} (upgrade tunecraft)")
        stage_dirs = meta.get("stages")
        if not isinstance(stage_dirs, dict) or not stage_dirs:
            raise CheckpointError(f"{cfg_file}: 'stages' must map stage names to model directories")
        stages: dict[str, DiffusionStage] = {}
        for name, rel in stage_dirs.items():
            if name not in STAGES_BY_NAME:
                raise CheckpointError(f"{cfg_file}: unknown stage {name!r} (stages: {', '.join(STAGES_BY_NAME)})")
            if not isinstance(rel, str) or not rel:
                raise CheckpointError(f"{cfg_file}: stage {name!r} needs a directory name")
            stage_dir = (root / rel).resolve()
            if not stage_dir.is_dir():
                raise CheckpointError(f"{cfg_file}: stage {name!r} directory {stage_dir} does not exist")
            stage = load_stage(stage_dir, device=device)
            if not isinstance(stage, STAGES_BY_NAME[name]):
                raise CheckpointError(f"{stage_dir} holds a {type(stage).__name__}, not the {name}")
            stages[name] = stage
        sampling = _check_sampling_table(meta.get("sampling"), f"{cfg_file}: sampling", CheckpointError)
        try:
            return cls(stages, default_path=meta.get("default_path"), sampling=sampling,
                       description=str(meta.get("description", "")))
        except ConfigError as e:
            raise CheckpointError(f"{cfg_file}: {e}") from None

    def save_pretrained(self, path: str | Path, dtype: str = "float16") -> Path:
        """Write the bundle: each stage in ``path/<stage name>/`` and ``path/config.json``."""
        from .. import __version__

        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        for name, stage in self.stages.items():
            stage.save_pretrained(root / name, dtype=dtype)
        meta = {"system": "noise2music", "format_version": BUNDLE_FORMAT_VERSION, "tunecraft_version": __version__,
                "description": self.description, "default_path": self.default_path,
                "stages": {name: name for name in self.stages}, "sampling": self.sampling}
        (root / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        return root

    @classmethod
    def assemble(
        cls,
        out_dir: str | Path,
        stage_dirs: Mapping[str, str | Path],
        *,
        default_path: str | None = None,
        sampling: Mapping[str, Mapping[str, Any]] | None = None,
        description: str = "",
    ) -> Path:
        """Build a bundle in ``out_dir`` from trained stage directories (e.g. the ``model`` exports
        of the ``n2m-*`` training runs): ``{"waveform_generator": "runs/n2m-wave-generator/model", ...}``."""
        stages = {name: load_stage(d) for name, d in stage_dirs.items()}
        system = cls(stages, default_path=default_path, sampling=sampling, description=description)
        return system.save_pretrained(out_dir)

    # ------------------------------------------------------------------ generation
    def stage_options(self, path: str, **overrides: Any) -> dict[str, dict[str, Any]]:
        """Resolved sampling settings ``{stage: {steps, cfg_scale, step_schedule, eta}}`` of ``path``.

        Each of ``steps``, ``cfg_scale``, ``step_schedule`` and ``eta`` may be ``None`` (defaults), a
        scalar (the generator stage) or a mapping ``{stage_name: value}``.
        """
        names = PATHS[path]
        opts: dict[str, dict[str, Any]] = {n: dict(self.sampling.get(n, {})) for n in names}
        for key in SAMPLING_KEYS:
            value = overrides.get(key)
            if value is None:
                continue
            if isinstance(value, Mapping):
                for stage, v in value.items():
                    if stage not in STAGES_BY_NAME:
                        raise InvalidInput(f"{key}: unknown stage {stage!r} (stages: {', '.join(STAGES_BY_NAME)})")
                    if stage not in names:
                        raise InvalidInput(f"{key}: stage {stage!r} is not part of the {path} path "
                                           f"({', '.join(names)})")
                    if v is not None:
                        opts[stage][key] = v
            else:
                opts[names[0]][key] = value
        resolved = {}
        for n in names:
            o = opts[n]
            try:
                if "steps" in o:
                    check_steps(o["steps"])
                if "cfg_scale" in o:
                    check_cfg_scale(o["cfg_scale"])
            except (TypeError, ValueError) as e:
                if isinstance(e, InvalidInput):
                    raise
                raise InvalidInput(f"{n}: steps must be an integer and cfg_scale a number, got "
                                   f"{o.get('steps')!r} and {o.get('cfg_scale')!r}") from None
            resolved[n] = self.stages[n].sampling_options(**o).to_dict()
        return resolved

    def _lengths(self, path: str, duration: float) -> tuple[int, int]:
        """``(generator length, final length)``: samples (waveform) or frames (spectrogram) for the
        generator, chosen so the chain's 24 kHz output covers ``round(duration * rate)`` samples."""
        final = max(1, int(round(duration * self.sample_rate)))
        sr = self.stages["sr_cascader"]
        if path == "waveform":
            gen, casc = self.stages["waveform_generator"], self.stages["waveform_cascader"]

            def out_len(n: int) -> int:
                mid = resampled_length(n, casc.low_sample_rate, casc.sample_rate)
                return resampled_length(mid, sr.low_sample_rate, sr.sample_rate)

            n = max(1, math.ceil(final * gen.sample_rate / self.sample_rate))
        else:
            voc = self.stages["spectrogram_vocoder"]

            def out_len(n: int) -> int:
                return resampled_length(n * voc.hop_length, sr.low_sample_rate, sr.sample_rate)

            n = max(1, math.ceil(final * voc.sample_rate / (voc.hop_length * self.sample_rate)))
        while out_len(n) < final:
            n += 1
        return n, final

    def generate_stages(
        self,
        descriptions: Sequence[str] | str,
        duration: float = 10.0,
        seed: int | None = None,
        path: str | None = None,
        progress: bool = False,
        force: bool = False,
        chords: Sequence[Sequence | None] | None = None,
        **sampling: Any,
    ) -> dict[str, torch.Tensor]:
        """Run the cascade and return every stage's output: ``{stage_name: tensor}`` in path order
        (3.2 kHz / 16 kHz / 24 kHz audio ``[B, 1, T]`` or a spectrogram ``[B, 80, F]``); the last one
        is cropped to ``round(duration * 24000)`` samples. ``sampling``: see :meth:`stage_options`;
        ``chords``: see :meth:`generate`."""
        descriptions = check_descriptions(descriptions)
        duration = check_duration(duration, force=force)
        path = self._check_path(path)
        first = self.stages[PATHS[path][0]]
        if chords is None:
            chords = self.harmony_plans(descriptions, duration, seed=seed, path=path)
        elif not getattr(first, "has_chords", False):
            raise InvalidInput(f"the {path} path's generator takes no chord plan (its bundle has no chord conditioning)")
        elif isinstance(chords, (str, bytes)) or len(chords) != len(descriptions):
            raise InvalidInput(f"chords: one timed plan ([[seconds, chord name], ...] or None) per prompt, "
                               f"{len(descriptions)} in all")
        unknown = sorted(set(sampling) - set(SAMPLING_KEYS))
        if unknown:
            raise InvalidInput(f"unknown noise2music option(s): {', '.join(unknown)}")
        opts = self.stage_options(path, **sampling)
        generator = _seeded(seed)
        n, final = self._lengths(path, duration)
        names = PATHS[path]
        bars = {name: f"{_STAGE_TITLES[name]} ({i + 1}/3)" for i, name in enumerate(names)}
        common = {name: dict(generator=generator, progress=progress, desc=bars[name], **opts[name]) for name in names}
        s = self.stages
        out: dict[str, torch.Tensor] = {}
        plan = {} if chords is None else {"chords": chords}
        if path == "waveform":
            low = s["waveform_generator"].generate(descriptions, n, **plan, **common["waveform_generator"])
            out["waveform_generator"] = low
            mid = s["waveform_cascader"].generate(low, descriptions, **common["waveform_cascader"])
            out["waveform_cascader"] = mid
        else:
            mel = s["spectrogram_generator"].generate(descriptions, n, **plan, **common["spectrogram_generator"])
            out["spectrogram_generator"] = mel
            mid = s["spectrogram_vocoder"].generate(mel, **common["spectrogram_vocoder"])
            out["spectrogram_vocoder"] = mid
        high = s["sr_cascader"].generate(mid, **common["sr_cascader"])
        out["sr_cascader"] = high[..., :final]
        return {k: v.float().cpu() for k, v in out.items()}

    @staticmethod
    def _stem(prompts: Sequence[str], b: int) -> str:
        """``[<item>_]<prompt slug>`` of prompt ``b`` (the item number when there are several)."""
        slug = re.sub(r"[^A-Za-z0-9]+", "_", prompts[b].strip()).strip("_").lower()[:40] or "clip"
        return f"{b:02d}_{slug}" if len(prompts) > 1 else slug

    def harmony_plans(self, descriptions: Sequence[str] | str, duration: float = 10.0, seed: int | None = None,
                      path: str | None = None) -> list[list | None] | None:
        """The chord plans the generator of ``path`` follows for these prompts and ``seed``: a timed
        plan ``[[start_seconds, chord_name], ...]`` per prompt that states a key (``None`` for the
        others; :meth:`~tunecraft.noise2music.models.WaveformGenerator.harmony_plans`), drawn from a
        generator of their own seeded with ``seed`` (fresh entropy without one), so the plan of a
        seed does not depend on the sampling; ``None`` when that generator takes no chord plan."""
        descriptions = check_descriptions(descriptions)
        path = self._check_path(path)
        gen = self.stages[PATHS[path][0]]
        if not getattr(gen, "has_chords", False):
            return None
        n, _ = self._lengths(path, check_duration(duration, force=True))
        return gen.harmony_plans(descriptions, n / gen.positions_per_second, _seeded(seed))

    def _check_path(self, path: str | None) -> str:
        if path is None:
            return self.default_path
        if path not in PATHS:
            raise InvalidInput(f"unknown noise2music path {path!r}; choose from {', '.join(PATHS)}")
        if path not in self.paths:
            missing = [n for n in PATHS[path] if n not in self.stages]
            raise InvalidInput(f"this noise2music bundle has no {path} path (missing: {', '.join(missing)})")
        return path

    def generate(
        self,
        descriptions: Sequence[str] | str,
        duration: float = 10.0,
        seed: int | None = None,
        cfg_scale: float | Mapping[str, float] | None = None,
        steps: int | Mapping[str, int] | None = None,
        progress: bool = False,
        force: bool = False,
        path: str | None = None,
        keep_stages: str | Path | None = None,
        step_schedule: str | Mapping[str, str] | None = None,
        eta: float | Mapping[str, float] | None = None,
        chords: Sequence[Sequence | None] | None = None,
        fact_guidance: float | Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, int]:
        """Text to music: ``(wav [B, 1, round(duration * 24000)], 24000)``.

        Args:
            descriptions: one prompt or a list of ``B`` prompts (non-empty).
            duration: seconds (> 0; over 600 s needs ``force=True``).
            seed: non-negative integer; the same seed gives bit-identical audio.
            cfg_scale, steps, step_schedule, eta, fact_guidance: sampling overrides - a scalar sets
                the generator stage, a mapping ``{stage_name: value}`` any stage of the path (module
                docstring); ``fact_guidance`` (generators only, 0 = off) guides away from the
                prompt with its stated mode swapped.
            progress: a progress bar per stage on a terminal.
            path: ``"waveform"`` or ``"spectrogram"`` (default: the bundle's ``default_path``).
            keep_stages: a directory to save every stage's output in (audio as ``.wav``, the
                spectrogram as ``.npy`` ``[80, F]`` in [-1, 1]), named
                ``[<item>_]<prompt slug>_<k>_<stage>[_<rate>hz]``, and the chord plan the
                generator followed as ``[<item>_]<prompt slug>_chords.json``.
            chords: for a generator with a chord plan (``chord_octaves`` / ``chord_mel``), the plan
                of each prompt, ``[[start_seconds, chord_name], ...]`` (names like ``"Am7"``,
                ``"F#"``, ``"Bbmaj7"``) or ``None``; default: :meth:`harmony_plans` draws them in
                each stated key. A prompt that states no key gets none either way.
        """
        if kwargs:
            raise InvalidInput(f"unknown noise2music option(s): {', '.join(sorted(kwargs))}")
        if isinstance(cfg_scale, (int, float)) and not isinstance(cfg_scale, bool):
            check_cfg_scale(cfg_scale)
        if isinstance(steps, (int, float)) and not isinstance(steps, bool):
            check_steps(steps)
        keep_dir = None
        if keep_stages is not None:
            keep_dir = Path(keep_stages).expanduser()
            if keep_dir.exists() and not keep_dir.is_dir():
                raise InvalidInput(f"--keep-stages must name a directory, {keep_dir} is a file")
        if chords is None and keep_dir is not None:  # the plans drawn, to be kept with the stages
            chords = self.harmony_plans(descriptions, check_duration(duration, force=force), seed=seed, path=path)
        outs = self.generate_stages(descriptions, duration, seed=seed, path=path, progress=progress, force=force,
                                    cfg_scale=cfg_scale, steps=steps, step_schedule=step_schedule, eta=eta,
                                    fact_guidance=fact_guidance, chords=chords)
        if keep_dir is not None:
            self._save_stages(keep_dir, outs, check_descriptions(descriptions), chords)
        final = outs[PATHS[self._check_path(path)][-1]]
        return final.clamp(-1.0, 1.0), self.sample_rate

    def _save_stages(self, directory: Path, outs: Mapping[str, torch.Tensor], prompts: Sequence[str],
                     chords: Sequence[Sequence | None] | None = None) -> list[Path]:
        """Write each stage's output as ``[<item>_]<prompt slug>_<k>_<stage>[_<rate>hz].wav|.npy``
        and each prompt's chord plan (where it has one) as ``[<item>_]<prompt slug>_chords.json``."""
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for b, plan in enumerate(chords or []):
            if plan:
                p = directory / f"{self._stem(prompts, b)}_chords.json"
                p.write_text(json.dumps({"prompt": prompts[b], "chords": [[float(t), str(c)] for t, c in plan]},
                                        indent=1) + "\n")
                written.append(p)
        for k, (name, x) in enumerate(outs.items(), 1):
            stage = self.stages[name]
            for b in range(x.shape[0]):
                stem = self._stem(prompts, b)
                if name == "spectrogram_generator":
                    p = directory / f"{stem}_{k}_{name}.npy"
                    np.save(p, x[b].numpy())
                else:
                    p = directory / f"{stem}_{k}_{name}_{stage.sample_rate}hz.wav"
                    save_audio(p, x[b].clamp(-1.0, 1.0), stage.sample_rate)
                written.append(p)
        return written

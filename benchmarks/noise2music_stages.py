"""Noise2Music stage diagnostics: does each stage of either path keep what the evaluation asks of a
prompt (key, mode, tempo)? Separates the vocoder's or cascader's loss from the generator's.

    # the vocoder on real spectrograms, against Griffin-Lim; pure-tone artefacts
    python benchmarks/noise2music_stages.py --vocoder runs/n2m-vocoder --clips 12
    # the spectrogram generator, its spectrograms inverted by Griffin-Lim (no vocoder involved)
    python benchmarks/noise2music_stages.py --generator runs/n2m-spec-generator --prompts runs/eval-prompts-valid.jsonl

``--vocoder`` / ``--generator`` take a stage directory, a training run (its newest checkpoint) or a
checkpoint file. Vocoder part: ``--clips`` clips of the ``--split`` split of ``--corpus`` (first
10 s, 16 kHz mono) go through their log-mel and back, by the vocoder (``--vocoder-steps``) and by
the mel pseudo-inverse + fast Griffin-Lim at ``--gl-iters`` iterations; "key kept" / "mode kept" /
"tempo kept" compare the evaluation's estimators (``tunecraft.eval.attributes``) on the result with
the same estimators on the original clip. Pure tones (220, 330, 440 Hz, each with its octave)
through the vocoder show whether its output peaks (above 20 Hz) where the input does or on
upsampling artefacts (fs/4, fs/2 of a transposed-convolution stride 4). Generator part: each prompt's spectrogram
(``--generator-steps``, CFG ``--cfg``, seed = row index) is inverted by Griffin-Lim (32 iterations)
and scored against the prompt's targets (key exact, tonic, mode, tempo within 6%); with
``--chroma-profile`` also the mean chroma (the key estimator's) of the outputs and of the prompts'
corpus clips by scale degree of the stated key, for major and minor prompts apart, and their
spectral flatness over 50-1500 Hz (near 0 for steady tones, 1 for white noise); for a spectrogram
generator also the mean absolute frame-to-frame change of the log-mels (in [-1, 1] units: a sample
that keeps the diffusion's noise changes far more than music does). A spectrogram
generator with a key prior (``key_prior``) adds it back as generation does; ``--without-key-prior``
leaves it out, to see what the network makes by itself.

Text gain of a generator (``--text-gain STAGE``: the spectrogram or waveform generator): its
denoising loss on the first ``--clips`` clips of ``--split`` (first 10 s, each with its first
caption) at fixed diffusion times and noise, with the real caption, another clip's caption and
the null condition. ``other - real`` is what the stage takes from the prompt (0: it ignores the
text, and no CFG scale can make it follow one)::

    python benchmarks/noise2music_stages.py --text-gain runs/n2m-spec-generator --clips 16

An upsampling cascader (``--cascader STAGE``, alias ``--sr``): ``--clips`` clips at its rate
(24 kHz for the SR cascader, 16 kHz for the waveform cascader, which also reads each clip's first
caption), resampled to its low rate and brought back by the cascader, against the FFT-upsampled
input: log-spectral distance over the band the cascader adds (8-12 kHz, 1.6-8 kHz) and over the
whole band (what it must not spoil), the added band's energy, and key, mode and tempo kept::

    python benchmarks/noise2music_stages.py --cascader runs/n2m-sr-cascader --clips 8
    python benchmarks/noise2music_stages.py --cascader runs/n2m-wave-cascader --clips 8

A waveform generator (``--generator``) is scored on its 3.2 kHz output resampled to 16 kHz, or
lifted by a waveform cascader first (``--then STAGE``)::

    python benchmarks/noise2music_stages.py --generator runs/n2m-wave-generator --then runs/n2m-wave-cascader

The generator part reads a prompt set: ``python -m tunecraft.eval.prompt_set build --split valid
--per-style 3 -o runs/eval-prompts-valid36.jsonl`` writes the validation one used in the README.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tunecraft.audio import LogMel, load_audio  # noqa: E402
from tunecraft.data.manifest import resolve_split  # noqa: E402
from tunecraft.eval.attributes import key_match  # noqa: E402
from tunecraft.eval.metrics import attribute_hits, clip_attributes, estimate_attributes  # noqa: E402
from tunecraft.noise2music.models import load_stage, mel_frames  # noqa: E402

SR = 16000


def stage_dir(src: str, tmp: Path):
    """A loadable stage directory for a stage directory, a training run or a checkpoint file."""
    p = Path(src)
    if (p / "config.json").is_file():
        return load_stage(p)
    from tunecraft.train.export import export_checkpoint

    return load_stage(export_checkpoint(p, tmp / p.name))


def logmel_of(mel) -> LogMel:
    """The :class:`LogMel` of a stage's mel configuration (for the Griffin-Lim inversion)."""
    return LogMel(**mel.to_dict())


def split_clips(corpus: Path, split: str, n: int, sample_rate: int = SR) -> list[tuple[torch.Tensor, dict, Path]]:
    """``(wav [1, T], manifest row, manifest folder)`` of the first ``n`` clips of a split: mono,
    the first 10 s at ``sample_rate``."""
    manifest = resolve_split(corpus, split)
    if manifest is None:
        raise SystemExit(f"{corpus} has no {split} split (make the corpus with `tunecraft data synth`)")
    base = Path(manifest).parent
    out = []
    for line in Path(manifest).read_text().splitlines()[:n]:
        meta = json.loads(line)
        path = Path(meta["path"])
        wav, _ = load_audio(path if path.is_absolute() else base / path, sample_rate=sample_rate, channels=1)
        out.append((wav[:, : 10 * sample_rate], meta, base))
    return out


def clips(corpus: Path, split: str, n: int) -> list[torch.Tensor]:
    return [wav[0] for wav, _, _ in split_clips(corpus, split, n)]


def captioned_clips(corpus: Path, split: str, n: int, sample_rate: int) -> tuple[list[torch.Tensor], list[str]]:
    """:func:`split_clips` with the first caption of each clip's sidecar."""
    wavs, texts = [], []
    for wav, meta, base in split_clips(corpus, split, n, sample_rate):
        info = Path(meta.get("info_path") or Path(meta["path"]).with_suffix(".json"))
        info = info if info.is_absolute() else base / info
        wavs.append(wav)
        texts.append((json.loads(info.read_text()).get("captions") or [""])[0])
    return wavs, texts


@torch.no_grad()
def text_gain(stage, corpus: Path, split: str, n: int, times=(0.2, 0.4, 0.6, 0.8, 0.95)) -> list[dict]:
    """Denoising loss of a text-conditioned generator at each diffusion time in ``times`` (same
    noise for the three conditions) with the real caption, the next clip's caption and no text.
    A generator with a beat clock gets each caption's own clock (the tempo is part of the prompt)."""
    if not stage.uses_text or stage.aligned_keys:
        raise SystemExit(f"--text-gain takes a text-to-audio generator, not the {stage.stage_name}")
    wavs, texts = captioned_clips(corpus, split, n, stage.data_sample_rate(stage.config))
    multiple = stage.crop_multiple(stage.config)
    length = min(w.shape[-1] for w in wavs) // multiple * multiple
    x0 = torch.stack([stage.prepare_example(stage.config, w[:, :length])["x0"] for w in wavs])
    others = texts[1:] + texts[:1]
    g = torch.Generator().manual_seed(0)
    rows = []
    for tv in times:
        t = torch.full((len(texts),), float(tv))
        noise = torch.randn(x0.shape, generator=g)
        loss = {name: float(stage.objective.loss(lambda x, tt: stage(x, tt, text=caps), x0, t=t, noise=noise))
                for name, caps in (("real", texts), ("other", others), ("null", [""] * len(texts)))}
        rows.append(dict(t=tv, **loss, gain=loss["other"] - loss["real"]))
    return rows


def kept(refs: list[dict], outs: list[torch.Tensor], rate: int = SR) -> dict[str, float]:
    """Fractions of outputs (at ``rate``) that keep their reference's key, mode and tempo (the
    evaluation's criteria, :func:`attribute_hits`; ``refs`` are the references'
    :func:`estimate_attributes`). A reference without onsets counts as tempo not kept."""
    hits = [attribute_hits(estimate_attributes(out, rate), ref) for ref, out in zip(refs, outs)]
    n = len(hits)
    return {f"{a}_kept": sum(bool(h.get(f"{a}_acc")) for h in hits) / n for a in ("key", "mode", "tempo")}


def tone_peaks(voc, steps: int) -> list[dict]:
    t = torch.arange(2 * SR) / SR
    rows = []
    for f in (220.0, 330.0, 440.0):
        x = 0.3 * torch.sin(2 * math.pi * f * t) + 0.15 * torch.sin(2 * math.pi * 2 * f * t)
        out = voc.generate(mel_frames(x[None, None], voc.config.mel), steps=steps,
                           generator=torch.Generator().manual_seed(0))[0, 0]
        seg = out[SR // 4: -SR // 4]
        spec = torch.fft.rfft(seg * torch.hann_window(seg.numel())).abs()
        freqs = torch.fft.rfftfreq(seg.numel(), 1 / SR)
        spec[freqs < 20.0] = 0.0  # a DC offset is no pitch
        peak = float(freqs[int(spec.argmax())])
        share = float(spec[(freqs - f).abs() <= 0.03 * f].max() / spec.max())
        rows.append({"tone_hz": f, "strongest_output_hz": round(peak, 1), "input_partial_vs_strongest": round(share, 3)})
    return rows


def log_spectral_distance(x: torch.Tensor, ref: torch.Tensor, sr: int, band: tuple[float, float]) -> float:
    """Root-mean-square difference (dB) of the log power spectra of ``x`` and ``ref`` (STFT 2048 /
    512) over the frequencies in ``band``, averaged over frames (the super-resolution literature's LSD)."""
    win = torch.hann_window(2048)
    spec = [torch.stft(s, 2048, 512, window=win, return_complex=True).abs().pow(2).clamp_min(1e-10).log10() * 10
            for s in (x, ref)]
    freqs = torch.fft.rfftfreq(2048, 1 / sr)
    keep = (freqs >= band[0]) & (freqs < band[1])
    return float((spec[0][keep] - spec[1][keep]).pow(2).mean(dim=0).sqrt().mean())


def cascader_check(stage, corpus: Path, split: str, n: int, steps: int | None) -> dict:
    """An upsampling cascader (SR or waveform) on real audio: each clip at the stage's rate,
    resampled to its low rate and brought back up by the cascader (the waveform cascader with the
    clip's first caption), against the FFT-upsampled input (nothing above low_rate / 2): LSD over
    the band the cascader adds and over the whole band, the added band's energy relative to the
    reference's, and whether the output keeps the reference's key, mode and tempo."""
    from tunecraft.audio import resample

    rate, low_rate = stage.sample_rate, stage.low_sample_rate
    rows = {"FFT-upsampled input": [], "cascader": []}
    outs_all = {name: [] for name in rows}
    refs = []
    wavs, texts = captioned_clips(corpus, split, n, rate)
    for i, (wav, text) in enumerate(zip(wavs, texts)):
        ref = wav[0]
        refs.append(estimate_attributes(ref, rate))
        low = resample(wav, rate, low_rate)[None]
        g = torch.Generator().manual_seed(i)
        up = stage.generate(low, [text], steps=steps, generator=g) if stage.uses_text else \
            stage.generate(low, steps=steps, generator=g)
        outs = {"FFT-upsampled input": stage.upsample(low, ref.numel())[0, 0], "cascader": up[0, 0]}
        hi = torch.fft.rfftfreq(ref.numel(), 1 / rate) >= low_rate / 2
        ref_energy = torch.fft.rfft(ref).abs().pow(2)[hi].sum().clamp_min(1e-12)
        for name, out in outs.items():
            out = out[: ref.numel()]
            outs_all[name].append(out)
            energy = float(torch.fft.rfft(out).abs().pow(2)[hi].sum() / ref_energy)
            rows[name].append((log_spectral_distance(out, ref, rate, (low_rate / 2, rate / 2)),
                               log_spectral_distance(out, ref, rate, (20.0, rate / 2)), energy))
    return {name: {"lsd_high_db": sum(r[0] for r in v) / len(v), "lsd_full_db": sum(r[1] for r in v) / len(v),
                   "high_band_energy_ratio": sum(r[2] for r in v) / len(v), **kept(refs, outs_all[name], rate)}
            for name, v in rows.items()}


def with_fitted_key_prior(gen, corpus: Path):
    """A copy of spectrogram generator ``gen`` (trained without a key prior) with one, fitted by the
    training task from ``corpus``'s training split as before a training run's first step."""
    from tunecraft.noise2music.models import SpectrogramGenerator
    from tunecraft.noise2music.tasks import GeneratorDataConfig, SpectrogramGeneratorTask

    config = gen.config.replace(key_prior=True)
    out = SpectrogramGenerator(config)
    missing, unexpected = out.load_state_dict(gen.state_dict(), strict=False)
    assert not unexpected and set(missing) == {"key_prior_mean", "key_prior_count"}, (missing, unexpected)
    task = SpectrogramGeneratorTask(SpectrogramGeneratorTask.config_class(model=config),
                                    GeneratorDataConfig(source=str(corpus)))
    task.prepare_model(out, task.build_train_dataset())
    return out.eval()


def add_profile(profiles: dict, source: str, row: dict, audio: torch.Tensor, rate: int) -> None:
    """Add a clip's time-averaged chroma (the key estimator's CLP chroma), rotated so that index 0
    is the prompt's tonic, to ``profiles[(source, mode)]``."""
    from tunecraft.eval.attributes import _chroma, _mono, _parse_key

    tonic, mode = _parse_key(row["key"])
    v = _chroma(_mono(audio.numpy(), rate)).mean(axis=1)
    profiles.setdefault((source, mode), []).append(torch.tensor(v).roll(-tonic))
    profiles.setdefault(("flatness", source), []).append(spectral_flatness(audio, rate))


def spectral_flatness(audio: torch.Tensor, rate: int, band: tuple[float, float] = (50.0, 1500.0)) -> float:
    """Wiener entropy of the clip's long-term power spectrum (Welch, 4096-point segments) over
    ``band`` (inside the 3.2 kHz generator's band): geometric over arithmetic mean, 1 for white
    noise, near 0 for a few steady tones."""
    import numpy as np
    from scipy.signal import welch

    f, p = welch(audio.double().numpy(), fs=rate, nperseg=4096)
    p = p[(f >= band[0]) & (f <= band[1])] + 1e-20
    return float(np.exp(np.mean(np.log(p))) / np.mean(p))


#: per-clip numbers kept beside the chroma profiles (``profiles[(kind, source)]``), by table title
SCALAR_PROFILES = {"flatness": "spectral flatness 50-1500 Hz", "mel change": "log-mel frame-to-frame change"}


def print_profiles(profiles: dict) -> dict:
    """Print the mean profiles by scale degree, each scaled to its largest value."""
    names = ["1", "b2", "2", "b3", "3", "4", "#4", "5", "b6", "6", "b7", "7"]
    print("| mean chroma by degree of the stated key | clips | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * 12)
    out = {}
    for (source, mode), rows in sorted(profiles.items()):
        if source in SCALAR_PROFILES:
            continue
        v = torch.stack(rows).mean(0)
        v = v / v.max()
        out[f"{source} {mode}"] = [round(float(x), 3) for x in v]
        print(f"| {source}, {mode} prompts | {len(rows)} | " + " | ".join(f"{float(x):.2f}" for x in v) + " |")
    print()
    for kind, title in SCALAR_PROFILES.items():
        sources = sorted((source, rows) for (k, source), rows in profiles.items() if k == kind)
        if not sources:
            continue
        print(f"| {title} | clips | mean | median |\n|---|---|---|---|")
        for source, rows in sources:
            out[f"{kind} {source}"] = [round(float(x), 4) for x in rows]
            print(f"| {source} | {len(rows)} | {sum(rows) / len(rows):.4f} | {sorted(rows)[len(rows) // 2]:.4f} |")
        print()
    return out


def mel_change(mel: torch.Tensor) -> float:
    """Mean absolute difference between neighbouring frames of a log-mel ``[..., n_mels, F]``."""
    return float((mel[..., 1:] - mel[..., :-1]).abs().mean())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocoder", default=None)
    p.add_argument("--generator", default=None)
    p.add_argument("--corpus", type=Path, default=Path("data/synth"))
    p.add_argument("--split", default="valid")
    p.add_argument("--clips", type=int, default=12)
    p.add_argument("--vocoder-steps", type=int, default=20)
    p.add_argument("--consistency-iters", type=int, default=None,
                   help="override the vocoder's consistency_iters (projection onto the input spectrogram)")
    p.add_argument("--gl-iters", type=int, nargs="*", default=[8, 16, 32])
    p.add_argument("--prompts", type=Path, default=Path("runs/eval-prompts-valid36.jsonl"))
    p.add_argument("--limit", type=int, default=16)
    p.add_argument("--generator-steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--step-schedule", default=None, help="the generator's step schedule (default: the stage's)")
    p.add_argument("--fact-guidance", type=float, default=None,
                   help="the generator's fact guidance scale (mode-swapped negative; default: the stage's)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--text-gain", default=None, metavar="STAGE")
    p.add_argument("--sr", "--cascader", dest="cascader", default=None, metavar="STAGE",
                   help="an upsampling cascader (SR: 24 kHz, waveform: 16 kHz) on real audio")
    p.add_argument("--sr-steps", "--cascader-steps", dest="cascader_steps", type=int, default=None,
                   help="cascader sampling steps (default: the stage's)")
    p.add_argument("--then", default=None, metavar="STAGE",
                   help="with a waveform --generator: lift its 3.2 kHz output through this waveform cascader before scoring")
    p.add_argument("--without-key-prior", action="store_true",
                   help="with a spectrogram --generator that has a key prior: do not add it back (what the network "
                        "makes by itself)")
    p.add_argument("--fit-key-prior", action="store_true",
                   help="with a spectrogram --generator trained without a key prior: fit one from the --corpus "
                        "training split and add it at generation (the network untouched)")
    p.add_argument("--chroma-profile", action="store_true",
                   help="with --generator: also print the mean chroma of its outputs and of the prompts' corpus clips "
                        "by scale degree of the stated key, major and minor prompts apart")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    if args.vocoder is None and args.generator is None and args.text_gain is None and args.cascader is None:
        p.error("give --vocoder, --generator, --text-gain and/or --cascader")
    torch.set_num_threads(args.threads)
    report: dict = {}
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        if args.vocoder is not None:
            voc = stage_dir(args.vocoder, Path(tmp))
            if args.consistency_iters is not None:
                import dataclasses

                voc.config = dataclasses.replace(voc.config, consistency_iters=args.consistency_iters)
            lm = logmel_of(voc.config.mel)
            xs = clips(args.corpus, args.split, args.clips)
            refs = [estimate_attributes(x, SR) for x in xs]
            mels = [mel_frames(x[None, None], voc.config.mel) for x in xs]
            rows = {}
            t0 = time.time()
            outs = [voc.generate(m, steps=args.vocoder_steps, generator=torch.Generator().manual_seed(i))[0, 0]
                    for i, m in enumerate(mels)]
            rows[f"vocoder ({args.vocoder_steps} steps)"] = dict(kept(refs, outs), seconds=time.time() - t0)
            for it in args.gl_iters:
                t0 = time.time()
                outs = [lm.invert(m, n_iter=it, length=m.shape[-1] * lm.hop_length)[0] for m in mels]
                rows[f"Griffin-Lim ({it} iterations)"] = dict(kept(refs, outs), seconds=time.time() - t0)
            print(f"### Real spectrograms back to audio ({len(xs)} {args.split}-split clips x 10 s)\n")
            print("| inversion | key kept | mode kept | tempo kept | seconds |\n|---|---|---|---|---|")
            for name, r in rows.items():
                print(f"| {name} | {r['key_kept']:.3f} | {r['mode_kept']:.3f} | {r['tempo_kept']:.3f} | {r['seconds']:.1f} |")
            tones = tone_peaks(voc, args.vocoder_steps)
            print("\n| pure tone (+ octave) | strongest output frequency (Hz) | input partial / strongest |\n|---|---|---|")
            for r in tones:
                print(f"| {r['tone_hz']:g} Hz | {r['strongest_output_hz']:g} | {r['input_partial_vs_strongest']:.3f} |")
            print()
            report["vocoder"] = {"rows": rows, "tones": tones}
        if args.generator is not None:
            from tunecraft.audio import resample

            gen = stage_dir(args.generator, Path(tmp))
            then = stage_dir(args.then, Path(tmp)) if args.then is not None else None
            wave = gen.stage_name == "waveform_generator"
            if then is not None and not wave:
                p.error("--then follows a waveform generator")
            if args.fit_key_prior:
                if wave or gen.config.key_prior:
                    p.error("--fit-key-prior needs a spectrogram generator without a key prior")
                gen = with_fitted_key_prior(gen, args.corpus)
            if args.without_key_prior:
                if wave or not gen.config.key_prior:
                    p.error("--without-key-prior needs a spectrogram generator with a key prior")
                gen.key_prior_count.zero_()  # an empty prior: key_prior() is zero for every prompt
            lm = None if wave else logmel_of(gen.config.mel)
            prompts = [json.loads(line) for line in args.prompts.read_text().splitlines() if line.strip()][: args.limit]
            hits = {"key": 0, "tonic": 0, "mode": 0, "tempo": 0}
            sched = {} if args.step_schedule is None else {"step_schedule": args.step_schedule}
            if args.fact_guidance is not None:
                sched["fact_guidance"] = args.fact_guidance
            profiles: dict = {}
            t0 = time.time()
            for i, row in enumerate(prompts):
                g = torch.Generator().manual_seed(i)
                if wave:  # 3.2 kHz audio, scored at 16 kHz (resampled, or through the cascader)
                    low = gen.generate([row["prompt"]], 10 * gen.sample_rate, steps=args.generator_steps,
                                       cfg_scale=args.cfg, generator=g, **sched)
                    audio = (then.generate(low, [row["prompt"]], generator=g) if then is not None
                             else resample(low[0], gen.sample_rate, SR)[None])[0, 0]
                else:  # log-mel inverted by Griffin-Lim
                    mel = gen.generate([row["prompt"]], frames=int(10 * lm.frame_rate), steps=args.generator_steps,
                                       cfg_scale=args.cfg, generator=g, **sched)
                    audio = lm.invert(mel, n_iter=32, length=mel.shape[-1] * lm.hop_length)[0]
                found = clip_attributes(audio, SR, {k: row[k] for k in ("bpm", "key", "mode")})
                if args.chroma_profile:
                    add_profile(profiles, "generated", row, audio, SR)
                    if not wave:
                        profiles.setdefault(("mel change", "generated"), []).append(mel_change(mel))
                    ref = args.corpus / "audio" / f"{row['id']}.wav"
                    if ref.is_file():
                        ref_audio = load_audio(ref, sample_rate=SR, channels=1)[0][0]
                        add_profile(profiles, "corpus clip", row, ref_audio, SR)
                        if not wave:
                            ref_mel = mel_frames(ref_audio[None, None, : 10 * SR], gen.config.mel)
                            profiles.setdefault(("mel change", "corpus clip"), []).append(mel_change(ref_mel))
                tonic = found["estimates"]["key"].split()[0]
                hits["key"] += found["hits"]["key_acc"]
                hits["tonic"] += key_match(f"{tonic} {row['mode']}", row["key"])
                hits["mode"] += found["hits"]["mode_acc"]
                hits["tempo"] += found["hits"]["tempo_acc"]
            n = len(prompts)
            acc = {k: v / n for k, v in hits.items()}
            how = (f"through the waveform cascader {args.then}" if then is not None else "resampled to 16 kHz") if wave \
                else "through Griffin-Lim" + (", without its key prior" if args.without_key_prior else "") + (
                    ", with a key prior fitted to it afterwards" if args.fit_key_prior else "")
            print(f"### {gen.stage_name.replace('_', ' ').capitalize()} {how} ({n} prompts of {args.prompts}, "
                  f"{args.generator_steps} steps{'' if args.step_schedule is None else ' ' + args.step_schedule}"
                  f"{'' if args.fact_guidance is None else f', fact guidance {args.fact_guidance:g}'}, "
                  f"CFG {args.cfg:g}, {time.time() - t0:.0f} s)\n")
            print("| key exact | tonic | mode | tempo within 6% |\n|---|---|---|---|")
            print(f"| {acc['key']:.3f} | {acc['tonic']:.3f} | {acc['mode']:.3f} | {acc['tempo']:.3f} |\n")
            report["generator"] = acc
            if args.chroma_profile:
                report["chroma_profile"] = print_profiles(profiles)
        if args.text_gain is not None:
            stage = stage_dir(args.text_gain, Path(tmp)).eval()
            rows = text_gain(stage, args.corpus, args.split, args.clips)
            print(f"### Text gain of {args.text_gain} ({args.clips} {args.split}-split clips, denoising loss)\n")
            print("| t | real caption | other caption | no text | other - real |\n|---|---|---|---|---|")
            for r in rows:
                print(f"| {r['t']:g} | {r['real']:.4f} | {r['other']:.4f} | {r['null']:.4f} | {r['gain']:.4f} |")
            print()
            report["text_gain"] = rows
        if args.cascader is not None:
            stage = stage_dir(args.cascader, Path(tmp)).eval()
            rows = cascader_check(stage, args.corpus, args.split, args.clips, args.cascader_steps)
            print(f"### {stage.stage_name.replace('_', ' ').capitalize()} on {args.clips} {args.split}-split clips "
                  f"({stage.sample_rate} Hz -> {stage.low_sample_rate} Hz -> {stage.sample_rate} Hz)\n")
            print("| output | LSD added band (dB) | LSD whole band (dB) | added-band energy / reference "
                  "| key kept | mode kept | tempo kept |\n|---|---|---|---|---|---|---|")
            for name, r in rows.items():
                print(f"| {name} | {r['lsd_high_db']:.2f} | {r['lsd_full_db']:.2f} | {r['high_band_energy_ratio']:.3f} "
                      f"| {r['key_kept']:.3f} | {r['mode_kept']:.3f} | {r['tempo_kept']:.3f} |")
            print()
            report["cascader"] = rows
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

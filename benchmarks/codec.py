"""Codec benchmark: speed against transformers' EnCodec and quality against Opus at 6 kbps.

(a) Speed: encode + decode of ``--seconds`` of audio on CPU with ``--threads`` threads, in x
    real time (audio seconds per wall-clock second, best of ``--repeats`` after a warm-up, all
    contenders interleaved), for each shipped codec bundle (default: encoder in the bit-exact
    ``[B, C, T]`` layout; also with the faster NWC encoder, see ``SEANetEncoder``) and for a
    freshly built ``transformers.EncodecModel`` with the same
    configuration (random weights: speed does not depend on them). For ``codec-rvq`` the
    reference is the exact same codec (filters, ratios, LSTM, codebooks, bitrate); the continuous
    codecs have no transformers counterpart, so theirs is an EncodecModel with the same SEANet
    (filters, ratios, channels, bottleneck width; its LSTM removed when the codec has none) and
    one codebook.
(b) Quality: each bundle reconstructs held-out clips (the corpus test split: fixed crops of
    ``--clip-seconds``) at its own rate and channel count; the same references go through Opus
    at ``--opus-kbps`` (ffmpeg ``-c:a libopus -b:a 6k``, decoded back, resampled to the codec's
    rate and aligned by cross-correlation). Metrics: log-mel L1 (mean |log10 M(x) - log10 M(y)|
    with 80-band magnitude mel spectrograms, n_fft 2048, hop 512, floor 1e-5) and SI-SNR (dB),
    averaged over clips and channels; pitch content: frame-wise chroma cosine similarity with the
    reference and "key kept", the fraction of clips in which the key-profile estimator of
    ``tunecraft.eval.attributes`` finds the same key in the reconstruction as in the reference
    (a codec that keeps the spectral envelope but not the harmonics scores well on log-mel L1 and
    badly here, and no LM over its tokens can then follow a prompt's key); "mode kept" the same for
    the mode alone, and "tempo kept" the fraction in which the tempo estimator's figure for the
    reconstruction is within 6% of the reference's (onsets the codec smears cannot carry a tempo).

    python benchmarks/codec.py                      # both parts, markdown tables on stdout
    python benchmarks/codec.py --skip-quality --threads 2
    python benchmarks/codec.py --corpus data/synth --clips 16 --json runs/codec-bench.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from tunecraft.audio import resample
from tunecraft.codecs import CompressionModel, LatentRVQCodec, RVQCodec, load_codec
from tunecraft.pretrained import BUNDLES_DIR
from tunecraft.codecs.tasks import CodecClipDataset
from tunecraft.data.manifest import resolve_split
from tunecraft.errors import DependencyError, TunecraftError
from tunecraft.eval.metrics import attribute_hits, estimate_attributes

DEFAULT_BUNDLES = ["codec-rvq", "vae-gan", "masked-ae"]


# ---- speed ------------------------------------------------------------------------------------


def transformers_reference(codec: CompressionModel):
    """A random-weight ``transformers.EncodecModel`` with ``codec``'s SEANet (and, for an RVQ
    codec, its codebooks); returns ``(model, bandwidth_kbps)``."""
    import transformers

    s = codec.config.seanet
    if isinstance(codec, RVQCodec):
        bins, n_q = codec.cardinality, codec.num_codebooks
    else:
        bins, n_q = 1024, 1
    frame_rate = math.ceil(codec.sample_rate / math.prod(s.ratios))
    bandwidth = n_q * math.ceil(math.log2(bins)) * frame_rate / 1000.0
    cfg = transformers.EncodecConfig(
        sampling_rate=codec.sample_rate, audio_channels=s.channels, hidden_size=s.dimension,
        num_filters=s.n_filters, num_residual_layers=s.n_residual_layers, upsampling_ratios=list(s.ratios),
        norm_type=s.norm, kernel_size=s.kernel_size, last_kernel_size=s.last_kernel_size,
        residual_kernel_size=s.residual_kernel_size, dilation_growth_rate=s.dilation_base,
        use_causal_conv=s.causal, pad_mode=s.pad_mode, compress=s.compress, num_lstm_layers=max(1, s.lstm),
        trim_right_ratio=s.trim_right_ratio, codebook_size=bins, codebook_dim=s.dimension,
        use_conv_shortcut=not s.true_skip, target_bandwidths=[bandwidth], normalize=False, chunk_length_s=None,
    )
    torch.manual_seed(0)
    model = transformers.EncodecModel(cfg).eval()
    if s.lstm == 0:  # transformers always builds an LSTM; remove it to match a codec without one
        from transformers.models.encodec.modeling_encodec import EncodecLSTM

        for stack in (model.encoder.layers, model.decoder.layers):
            for i, layer in enumerate(stack):
                if isinstance(layer, EncodecLSTM):
                    stack[i] = torch.nn.Identity()
    return model, bandwidth


def x_realtime(fns: List, seconds: float, repeats: int) -> List[float]:
    """Best-of-``repeats`` x real time of each function, run interleaved (so that load from other
    processes on a shared machine hits them alike), after one warm-up call each."""
    for fn in fns:
        fn()
    best = [math.inf] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return [seconds / b for b in best]


def speed(codec: CompressionModel, seconds: float, repeats: int) -> Dict[str, float]:
    torch.manual_seed(0)
    x = 0.1 * torch.randn(1, codec.channels, int(seconds * codec.sample_rate))

    def ours():
        codec.decode(codec.encode(x), length=x.shape[-1])

    def ours_nwc_encoder():
        layout = codec.encoder.inference_layout
        codec.encoder.inference_layout = "nwc"
        try:
            ours()
        finally:
            codec.encoder.inference_layout = layout

    ref, bandwidth = transformers_reference(codec)

    def theirs():
        with torch.inference_mode():
            enc = ref.encode(x, bandwidth=bandwidth)
            ref.decode(enc.audio_codes, enc.audio_scales)

    ours_x, nwc_x, theirs_x = x_realtime([ours, ours_nwc_encoder, theirs], seconds, repeats)
    return {"ours_xrt": ours_x, "transformers_xrt": theirs_x, "ratio": ours_x / theirs_x,
            "ours_nwc_encoder_xrt": nwc_x, "ratio_nwc_encoder": nwc_x / theirs_x}


# ---- quality ----------------------------------------------------------------------------------


def log_mel_l1(x: torch.Tensor, y: torch.Tensor, sample_rate: int) -> float:
    """Mean |log10 M(x) - log10 M(y)| over 80-band magnitude mel spectrograms (floor 1e-5)."""
    from tunecraft.audio import MelSpectrogram

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mel = MelSpectrogram(sample_rate, n_fft=2048, hop_length=512, n_mels=80, power=1.0)
    mx = torch.log10(mel(x.reshape(-1, x.shape[-1])).clamp_min(1e-5))
    my = torch.log10(mel(y.reshape(-1, y.shape[-1])).clamp_min(1e-5))
    return float((mx - my).abs().mean())


def si_snr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Scale-invariant SNR (dB) of estimate ``y`` against reference ``x`` (``[C, T]``), mean over channels."""
    vals = []
    for ref, est in zip(x.double(), y.double()):
        ref, est = ref - ref.mean(), est - est.mean()
        energy = float(ref.pow(2).sum())
        if energy < 1e-10:
            continue
        target = (est @ ref) / energy * ref
        noise = est - target
        vals.append(10 * math.log10(float(target.pow(2).sum()) / max(float(noise.pow(2).sum()), 1e-20)))
    return float(np.mean(vals)) if vals else float("nan")


def align(ref: torch.Tensor, est: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Shift ``est [C, T']`` by the lag (within +-max_lag) that maximises its cross-correlation with
    ``ref [C, T]``; return it cut/padded to ``T``."""
    r, e = ref.mean(0).double().numpy(), est.mean(0).double().numpy()
    n = len(r)
    e_pad = np.pad(e, (max_lag, max(0, n + max_lag - len(e))))
    lags = range(-max_lag, max_lag + 1)
    scores = [float(np.dot(r, e_pad[max_lag + lag: max_lag + lag + n])) for lag in lags]
    lag = list(lags)[int(np.argmax(scores))]
    out = torch.zeros_like(ref)
    src = est[:, max(0, lag): max(0, lag) + n - max(0, -lag)]
    out[:, max(0, -lag): max(0, -lag) + src.shape[-1]] = src
    return out


def opus_round_trip(wav: torch.Tensor, sample_rate: int, kbps: float, workdir: Path) -> torch.Tensor:
    """``wav [C, T]`` through libopus at ``kbps`` kbit/s and back, at ``sample_rate``, aligned."""
    import soundfile as sf

    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise DependencyError("ffmpeg is needed for the Opus comparison (apt-get install -y ffmpeg)")
    src, enc, dec = workdir / "ref.wav", workdir / "ref.opus", workdir / "dec.wav"
    sf.write(src, wav.T.numpy(), sample_rate, subtype="FLOAT")
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(src), "-ar", "48000", "-c:a", "libopus",
                    "-b:a", f"{kbps:g}k", str(enc)], check=True)
    subprocess.run([ffmpeg, "-v", "error", "-y", "-i", str(enc), "-ar", str(sample_rate), "-ac", str(wav.shape[0]),
                    "-c:a", "pcm_f32le", str(dec)], check=True)
    out, sr = sf.read(dec, dtype="float32", always_2d=True)
    out = torch.from_numpy(out.T.copy())
    if sr != sample_rate:
        out = resample(out, sr, sample_rate)
    return align(wav, out, max_lag=int(0.05 * sample_rate))


def heldout_clips(corpus: Path, split: str, codec: CompressionModel, n: int, seconds: float) -> torch.Tensor:
    from tunecraft.data import AudioDataset

    manifest = resolve_split(corpus, split)
    if manifest is None:
        raise TunecraftError(f"{corpus} has no {split}.jsonl (make the corpus with `tunecraft data synth`)")
    metas = AudioDataset(manifest, return_info=False).metas[:n]
    ds = CodecClipDataset(metas, seconds, codec.sample_rate, codec.channels, random_crop=False, seed=0)
    clips = [ds[i] for i in range(len(ds))]
    return torch.stack([c for c in clips if float(c.abs().max()) > 1e-3])


def quality(codec: CompressionModel, clips: torch.Tensor, opus_kbps: float, workdir: Path,
            with_opus: bool = True) -> Dict[str, float]:
    sr = codec.sample_rate
    res: Dict[str, List[float]] = {"mel": [], "sisnr": [], "chroma": [], "key": [], "mode": [], "tempo": [],
                                   "opus_mel": [], "opus_sisnr": [], "opus_chroma": [], "opus_key": [], "opus_mode": [],
                                   "opus_tempo": []}
    for clip in clips:
        reference = estimate_attributes(clip, sr)  # once per clip, for the codec and for Opus
        recon = codec.reconstruct(clip[None])[0]
        res["mel"].append(log_mel_l1(clip, recon, sr))
        res["sisnr"].append(si_snr(clip, recon))
        res["chroma"].append(chroma_cos(clip, recon, sr))
        for k, v in kept(reference, recon, sr).items():
            res[k].append(v)
        if with_opus:
            opus = opus_round_trip(clip, sr, opus_kbps, workdir)
            res["opus_mel"].append(log_mel_l1(clip, opus, sr))
            res["opus_sisnr"].append(si_snr(clip, opus))
            res["opus_chroma"].append(chroma_cos(clip, opus, sr))
            for k, v in kept(reference, opus, sr).items():
                res[f"opus_{k}"].append(v)
    return {k: float(np.nanmean(v)) for k, v in res.items() if v}


def chroma_cos(x: torch.Tensor, y: torch.Tensor, sample_rate: int) -> float:
    """Frame-wise chroma cosine similarity of a reconstruction with its reference (pitch content)."""
    from tunecraft.eval.metrics import chroma_cosine_similarity

    return float(chroma_cosine_similarity(x[None], y[None], sample_rate))


def kept(reference: Dict, y: torch.Tensor, sample_rate: int) -> Dict[str, float]:
    """Whether ``y`` keeps the key, the mode and the tempo (within 6%) that the evaluation's
    analyzers found in the reference (``reference``: its :func:`estimate_attributes`); 1.0 / 0.0,
    tempo NaN when the reference has no onsets."""
    hits = attribute_hits(estimate_attributes(y, sample_rate), reference)
    return {"key": float(hits["key_acc"]), "mode": float(hits["mode_acc"]),
            "tempo": float(hits["tempo_acc"]) if "tempo_acc" in hits else float("nan")}


def check_codebooks_used(codec: RVQCodec, clip: torch.Tensor, k: int) -> None:
    """Assert that ``set_num_codebooks(k)`` is honoured: ``k`` code streams, and decoding them
    gives the same audio as decoding the first ``k`` streams of a full-rate encoding."""
    codes = codec.encode(clip[None])
    if codes.shape[1] != k:
        raise AssertionError(f"set_num_codebooks({k}) gave {codes.shape[1]} codebooks")
    full = codec.num_codebooks
    codec.set_num_codebooks(codec.total_codebooks)
    all_codes = codec.encode(clip[None])
    codec.set_num_codebooks(full)
    if not torch.equal(all_codes[:, :k], codes):
        raise AssertionError("the first codebooks of a full-rate encoding differ from a k-codebook encoding")
    if torch.equal(codec.decode(codes), codec.decode(all_codes)):
        raise AssertionError(f"decoding {k} codebooks gives the same audio as decoding all of them")


def bitrate(codec: CompressionModel) -> str:
    if codec.is_discrete:
        return f"{codec.bandwidth:.1f} kbps ({codec.num_codebooks} x {codec.cardinality})"
    return f"continuous {codec.latent_dim} x {codec.frame_rate:g} Hz"


# ---- main -------------------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundles", nargs="+", default=DEFAULT_BUNDLES, help="bundle names or model directories")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=10.0, help="audio length of the speed test")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--corpus", type=Path, default=Path("data/synth"))
    p.add_argument("--split", default="test")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--clip-seconds", type=float, default=5.0)
    p.add_argument("--opus-kbps", type=float, default=6.0)
    p.add_argument("--rvq-codebooks", type=int, nargs="*", default=[4],
                   help="also evaluate the RVQ codec at these lower codebook counts")
    p.add_argument("--skip-speed", action="store_true")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    codecs: Dict[str, CompressionModel] = {}
    for name in args.bundles:
        if not (Path(name).is_dir() or (BUNDLES_DIR / name).is_dir()):
            print(f"skipping {name}: no such bundle", file=sys.stderr)
            continue
        codecs[name] = load_codec(name)
    if not codecs:
        print("no codec bundle found", file=sys.stderr)
        return 2
    report: Dict[str, Dict] = {"threads": args.threads, "speed": {}, "quality": {}}

    if not args.skip_speed:
        print(f"### Encode + decode speed (CPU, {args.threads} threads, {args.seconds:g} s of audio)\n")
        print("| codec | format | ours (x real time) | transformers EncodecModel, same config (x real time) | ours / theirs "
              "| ours with the NWC encoder (x real time) | NWC / theirs |")
        print("|---|---|---|---|---|---|---|")
        for name, codec in codecs.items():
            if isinstance(codec, LatentRVQCodec):  # no transformers model has its layout
                print(f"| {name} | {codec.sample_rate // 1000} kHz x{codec.channels}, {bitrate(codec)} | "
                      "(no reference: tokens over another codec's latents) | | | | |", flush=True)
                continue
            s = speed(codec, args.seconds, args.repeats)
            report["speed"][name] = s
            ref = "same codec" if isinstance(codec, RVQCodec) else "same SEANet, 1 codebook"
            print(f"| {name} | {codec.sample_rate // 1000} kHz x{codec.channels}, {bitrate(codec)} | "
                  f"{s['ours_xrt']:.1f} | {s['transformers_xrt']:.1f} ({ref}) | {s['ratio']:.2f} | "
                  f"{s['ours_nwc_encoder_xrt']:.1f} | {s['ratio_nwc_encoder']:.2f} |", flush=True)
        print()

    if not args.skip_quality:
        print(f"### Reconstruction of held-out clips ({args.split} split of {args.corpus}, up to {args.clips} x "
              f"{args.clip_seconds:g} s) vs Opus {args.opus_kbps:g} kbps\n")
        print(f"| codec | bitrate | log-mel L1 (codec) | log-mel L1 (Opus {args.opus_kbps:g}k) | "
              f"SI-SNR dB (codec) | SI-SNR dB (Opus {args.opus_kbps:g}k) | chroma cos (codec / Opus) | "
              f"key kept (codec / Opus) | mode kept (codec / Opus) | tempo kept (codec / Opus) |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        with tempfile.TemporaryDirectory() as tmp:
            for name, codec in codecs.items():
                clips = heldout_clips(args.corpus, args.split, codec, args.clips, args.clip_seconds)
                q = quality(codec, clips, args.opus_kbps, Path(tmp))
                report["quality"][name] = dict(q, clips=len(clips), bitrate=bitrate(codec))
                print(f"| {name} | {bitrate(codec)} | {q['mel']:.4f} | {q['opus_mel']:.4f} | {q['sisnr']:.2f} | "
                      f"{q['opus_sisnr']:.2f} | {q['chroma']:.3f} / {q['opus_chroma']:.3f} | "
                      f"{q['key']:.3f} / {q['opus_key']:.3f} | {q['mode']:.3f} / {q['opus_mode']:.3f} | "
                      f"{q['tempo']:.3f} / {q['opus_tempo']:.3f} |", flush=True)
                if codec.is_discrete:
                    full = codec.num_codebooks
                    for k in args.rvq_codebooks:
                        if not 1 <= k < full:
                            continue
                        codec.set_num_codebooks(k)
                        check_codebooks_used(codec, clips[0], k)
                        qk = quality(codec, clips, args.opus_kbps, Path(tmp), with_opus=False)
                        label = f"{name} ({k} codebooks)"
                        report["quality"][label] = dict(qk, clips=len(clips), bitrate=bitrate(codec))
                        print(f"| {label} | {bitrate(codec)} | {qk['mel']:.4f} | {q['opus_mel']:.4f} | "
                              f"{qk['sisnr']:.2f} | {q['opus_sisnr']:.2f} | {qk['chroma']:.3f} / {q['opus_chroma']:.3f} | "
                              f"{qk['key']:.3f} / {q['opus_key']:.3f} | {qk['mode']:.3f} / {q['opus_mode']:.3f} | "
                              f"{qk['tempo']:.3f} / {q['opus_tempo']:.3f} |", flush=True)
                    codec.set_num_codebooks(full)
        print()
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

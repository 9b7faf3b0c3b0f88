"""Greedy MusicGen decoding: tunecraft's CodecLM (KV cache) vs transformers' MusicgenForConditionalGeneration.

Both run the same random weights (a transformers model is built from a config, saved, and
converted with :func:`tunecraft.lm.convert.convert_transformers_musicgen`), the same text
prompt, greedy decoding with classifier-free guidance, for the same number of frames. Each
timed run is a fresh subprocess (so peak memory is per run); runs alternate between the two
implementations and the best time of each is kept, which is robust on a shared machine.
The script checks that both produce identical tokens and prints frames/s, tokens/s, the
speed ratio and the peak resident memory of each run.

Only LM decoding is timed: transformers' final EnCodec decode is bypassed (its codes are
captured instead), and its tiny T5 text encoder runs inside its ``generate`` (about a
millisecond); tunecraft gets the same text states already projected.

    python benchmarks/musicgen_decode.py                      # d=512, 8 layers, 250 frames, CFG 3
    python benchmarks/musicgen_decode.py --dim 1024 --layers 24 --heads 16 --frames 100

``--e2e BUNDLE`` also times a shipped MusicGen bundle end to end (prompt -> text encoder -> LM
with top-k sampling and CFG -> codec decode -> waveform) for ``--e2e-seconds`` of audio and
prints its real-time factor (audio seconds per wall-clock second; > 1 is faster than real time);
``--skip-compare`` runs only that part:

    python benchmarks/musicgen_decode.py --e2e musicgen-tiny --skip-compare --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _rss_mb(field: str) -> float:
    """VmRSS / VmHWM of this process in MB (Linux); resource.getrusage as a fallback for the peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) so that it measures from now on (Linux)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _quiet_transformers() -> None:
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def _build(args: argparse.Namespace, workdir: Path) -> None:
    """Build and save the transformers model, its tunecraft conversion and the prompt."""
    import torch

    _quiet_transformers()
    from transformers import (EncodecConfig, MusicgenConfig, MusicgenDecoderConfig,
                              MusicgenForConditionalGeneration, T5Config)

    from tunecraft.lm.convert import convert_transformers_musicgen

    torch.manual_seed(args.seed)
    t5 = T5Config(vocab_size=128, d_model=64, d_kv=16, d_ff=128, num_layers=1, num_heads=4)
    codec = EncodecConfig(target_bandwidths=[2.2], upsampling_ratios=[8, 5, 4, 4], num_filters=2, hidden_size=8,
                          codebook_size=args.card, num_lstm_layers=1, sampling_rate=32000, audio_channels=1)
    decoder = MusicgenDecoderConfig(vocab_size=args.card, hidden_size=args.dim, num_hidden_layers=args.layers,
                                    num_attention_heads=args.heads, ffn_dim=4 * args.dim, num_codebooks=args.codebooks,
                                    max_position_embeddings=max(2048, args.frames + 64),
                                    pad_token_id=args.card, bos_token_id=args.card)
    model = MusicgenForConditionalGeneration(
        MusicgenConfig(text_encoder=t5.to_dict(), audio_encoder=codec.to_dict(), decoder=decoder.to_dict())).eval()
    model.generation_config.decoder_start_token_id = args.card
    model.generation_config.pad_token_id = args.card
    model.save_pretrained(str(workdir / "hf"))
    converted = convert_transformers_musicgen(model)
    converted.lm.save_pretrained(workdir / "ours")
    ids = torch.randint(2, 128, (args.batch, 12))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        hidden = model.text_encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    text = converted.project_text(hidden, mask)
    torch.save({"ids": ids, "mask": mask, "states": text.states, "text_mask": text.mask}, workdir / "inputs.pt")
    print(f"model: d={args.dim}, {args.layers} layers, {args.heads} heads, {args.codebooks} codebooks x {args.card}, "
          f"{converted.lm.num_parameters() / 1e6:.1f}M LM parameters; {args.frames} frames, batch {args.batch}, "
          f"CFG {args.cfg}, {args.threads} threads")


def _worker(args: argparse.Namespace) -> None:
    """One timed run of one implementation; prints a JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    workdir = Path(args.dir)
    inputs = torch.load(workdir / "inputs.pt")
    frames = args.frames
    if args.worker == "tunecraft":
        from tunecraft.lm import CodecLM
        from tunecraft.text import TextStates

        lm = CodecLM.from_pretrained(workdir / "ours")
        text = TextStates(inputs["states"], inputs["text_mask"])

        def run(n: int):
            return lm.generate(text, max_new_frames=n, greedy=True, cfg_scale=args.cfg)
    else:
        _quiet_transformers()
        from types import SimpleNamespace

        from transformers import MusicgenForConditionalGeneration

        model = MusicgenForConditionalGeneration.from_pretrained(str(workdir / "hf")).eval()
        captured = {}

        def capture(audio_codes, *_, **__):  # skip the EnCodec decode, keep the codes
            captured["codes"] = audio_codes[0].clone()
            return SimpleNamespace(audio_values=audio_codes.float())

        model.audio_encoder.decode = capture
        k = model.decoder.num_codebooks

        def run(n: int):
            with torch.inference_mode():
                model.generate(input_ids=inputs["ids"], attention_mask=inputs["mask"], do_sample=False,
                               guidance_scale=args.cfg, max_new_tokens=n + k - 1)
            return captured["codes"]

    run(8)  # warm-up (allocator, kernels)
    rss_loaded = _rss_mb("VmRSS")
    reset = _reset_peak_rss()  # peak memory of the generation itself, not of loading the weights
    start = time.perf_counter()
    codes = run(frames)
    seconds = time.perf_counter() - start
    torch.save(codes, workdir / f"codes-{args.worker}.pt")
    print(json.dumps({"impl": args.worker, "seconds": seconds, "rss_loaded_mb": rss_loaded,
                      "peak_rss_mb": _rss_mb("VmHWM"), "peak_is_generation_only": reset,
                      "shape": list(codes.shape)}))


def end_to_end(bundle: str, seconds: float, threads: int, repeats: int) -> dict:
    """Best-of-``repeats`` wall time of ``bundle`` making ``seconds`` of audio from text (in process)."""
    import torch

    from tunecraft.systems import load_system

    torch.set_num_threads(threads)
    system = load_system(bundle, device="cpu")
    prompt = "an upbeat pop song in C major with piano, bass and drums, 120 bpm"
    system.generate([prompt], duration=1.0, seed=0)  # warm-up (text encoder, kernels)
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        wav, sr = system.generate([prompt], duration=seconds, seed=r)
        times.append(time.perf_counter() - t0)
    best = min(times)
    out = {"bundle": bundle, "audio_seconds": wav.shape[-1] / sr, "best_wall_s": best, "rtf": seconds / best,
           "threads": threads, "peak_rss_mb": _rss_mb("VmHWM")}
    print(f"\nend to end: {bundle} made {out['audio_seconds']:.1f} s of {sr} Hz audio in {best:.2f} s "
          f"(best of {repeats}, {threads} threads): {out['rtf']:.2f}x real time; peak RSS {out['peak_rss_mb']:.0f} MB")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--codebooks", type=int, default=4)
    parser.add_argument("--card", type=int, default=2048)
    parser.add_argument("--frames", type=int, default=250, help="frames to generate (50 per second of audio)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--cfg", type=float, default=3.0, help="guidance scale (1 disables CFG)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each implementation")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--e2e", metavar="BUNDLE", help="also time this MusicGen bundle end to end (text to wav)")
    parser.add_argument("--e2e-seconds", type=float, default=10.0, help="audio seconds for --e2e (default 10)")
    parser.add_argument("--skip-compare", action="store_true", help="skip the transformers comparison")
    parser.add_argument("--worker", choices=["tunecraft", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args)
        return 0
    if args.skip_compare:
        if not args.e2e:
            parser.error("--skip-compare needs --e2e BUNDLE")
        end_to_end(args.e2e, args.e2e_seconds, args.threads, args.repeats)
        return 0

    with tempfile.TemporaryDirectory(prefix="musicgen-bench-") as tmp:
        workdir = Path(tmp)
        _build(args, workdir)
        results: dict[str, list[dict]] = {"tunecraft": [], "transformers": []}
        order = ["tunecraft", "transformers"]
        for r in range(args.repeats):
            for impl in (order if r % 2 == 0 else order[::-1]):
                cmd = [sys.executable, __file__, "--worker", impl, "--dir", str(workdir)]
                for name in ("frames", "cfg", "threads"):
                    cmd += [f"--{name}", str(getattr(args, name))]
                env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode != 0:
                    print(proc.stdout + proc.stderr, file=sys.stderr)
                    return 1
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")][-1]
                res = json.loads(line)
                results[impl].append(res)
                print(f"  run {r + 1} {impl:12s} {args.frames / res['seconds']:7.1f} frames/s  "
                      f"peak RSS {res['peak_rss_mb']:7.0f} MB")
                import torch

                codes = torch.load(workdir / f"codes-{impl}.pt")
                results[impl][-1]["codes"] = codes
        import torch

        ref = results["transformers"][0]["codes"]
        same = all(torch.equal(r["codes"], ref) for impl in results for r in results[impl])
        tokens = args.batch * args.codebooks * args.frames
        gen_only = all(r.get("peak_is_generation_only") for runs in results.values() for r in runs)
        print(f"\n{'implementation':14s} {'frames/s':>9s} {'tokens/s':>9s} {'best s':>8s} {'loaded MB':>10s} {'peak MB':>8s}")
        best = {}
        for impl, runs in results.items():
            fastest = min(runs, key=lambda r: r["seconds"])
            best[impl] = fastest["seconds"]
            print(f"{impl:14s} {args.frames / fastest['seconds']:9.1f} {tokens / fastest['seconds']:9.1f} "
                  f"{fastest['seconds']:8.2f} {fastest['rss_loaded_mb']:10.0f} {max(r['peak_rss_mb'] for r in runs):8.0f}")
        ratio = best["transformers"] / best["tunecraft"]
        print(f"identical tokens: {'yes' if same else 'NO'}   shape {list(ref.shape)}")
        print("memory: resident set after loading and warm-up; peak resident set "
              + ("while generating (VmHWM reset before the timed run)" if gen_only else "of the whole run"))
        print(f"speed-up (tunecraft vs transformers, best of {args.repeats}): {ratio:.2f}x")
    if args.e2e:
        end_to_end(args.e2e, args.e2e_seconds, args.threads, args.repeats)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Noise2Music inference speed on CPU: per-stage time per step, real-time factor, end-to-end time.

    OMP_NUM_THREADS=2 python benchmarks/noise2music_speed.py --threads 2 --duration 10
    python benchmarks/noise2music_speed.py --bundle path/to/bundle --threads 2 --json runs/n2m-speed.json

Without ``--bundle`` the system is built from the CPU default configs of
:mod:`tunecraft.noise2music.configs` with random weights: the cost of a diffusion step does not
depend on the weights, so this measures the shipped architecture and default step counts.
Each path is generated ``--repeats`` times after one warm-up run; the best time is reported
(the machine is shared). The real-time factor is audio seconds per wall-clock second. The
process CPU time is printed too: with ``--threads 1`` it approximates the wall time on an idle
core even when other jobs share the machine, and the load average at the start is recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tunecraft.noise2music import (  # noqa: E402
    SpectrogramGenerator,
    SpectrogramVocoder,
    SRCascader,
    WaveformCascader,
    WaveformGenerator,
)
from tunecraft.systems.noise2music import PATHS, Noise2Music  # noqa: E402


def default_system() -> Noise2Music:
    torch.manual_seed(0)
    stages = [WaveformGenerator(), WaveformCascader(), SpectrogramGenerator(), SpectrogramVocoder(), SRCascader()]
    return Noise2Music({s.stage_name: s for s in stages})


def time_path(system: Noise2Music, path: str, duration: float, prompt: str, repeats: int) -> dict:
    """Best-of-``repeats`` wall time of each stage and of the whole path."""
    opts = system.stage_options(path)
    n, final = system._lengths(path, duration)
    best: dict[str, float] = {}
    totals, cpu_totals = [], []
    for r in range(repeats + 1):
        g = torch.Generator().manual_seed(r)
        s = system.stages
        times = {}
        c0 = time.process_time()
        t0 = time.perf_counter()
        if path == "waveform":
            x = s["waveform_generator"].generate([prompt], n, generator=g, **opts["waveform_generator"])
            times["waveform_generator"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            x = s["waveform_cascader"].generate(x, [prompt], generator=g, **opts["waveform_cascader"])
            times["waveform_cascader"] = time.perf_counter() - t1
        else:
            x = s["spectrogram_generator"].generate([prompt], n, generator=g, **opts["spectrogram_generator"])
            times["spectrogram_generator"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            x = s["spectrogram_vocoder"].generate(x, generator=g, **opts["spectrogram_vocoder"])
            times["spectrogram_vocoder"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        s["sr_cascader"].generate(x, generator=g, **opts["sr_cascader"])
        times["sr_cascader"] = time.perf_counter() - t2
        total = time.perf_counter() - t0
        cpu = time.process_time() - c0
        if r == 0:
            continue  # warm-up (text encoder load, allocator)
        totals.append(total)
        cpu_totals.append(cpu)
        for k, v in times.items():
            best[k] = min(best.get(k, float("inf")), v)
    rows = {}
    for name in PATHS[path]:
        steps = opts[name]["steps"]
        guided = system.stages[name].uses_text and float(opts[name]["cfg_scale"]) != 1.0
        rows[name] = {"steps": steps, "cfg": guided, "seconds": best[name], "ms_per_step": 1000 * best[name] / steps}
    total = min(totals)
    return {"stages": rows, "total_s": total, "cpu_s": min(cpu_totals), "rtf": duration / total,
            "audio_s": final / system.sample_rate}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default=None,
                    help="a Noise2Music bundle (default: CPU default configs, random weights)")
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--paths", default="waveform,spectrogram")
    ap.add_argument("--prompt", default="an upbeat pop song with piano and drums, 120 bpm, in C major")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    system = Noise2Music.from_pretrained(args.bundle) if args.bundle else default_system()
    import os

    results = {"threads": args.threads, "duration": args.duration, "bundle": args.bundle or "cpu-default-random",
               "load_average": os.getloadavg()[0], "paths": {}}
    print(f"load average at start: {results['load_average']:.2f}")
    with torch.inference_mode():
        for path in args.paths.split(","):
            r = time_path(system, path, args.duration, args.prompt, args.repeats)
            results["paths"][path] = r
            print(f"{path} path, {args.duration:g} s at {system.sample_rate} Hz, {args.threads} thread(s): "
                  f"{r['total_s']:.1f} s wall ({r['rtf']:.2f}x real time), {r['cpu_s']:.1f} s process CPU time")
            for name, row in r["stages"].items():
                print(f"  {name:22s} {row['steps']:4d} steps{' (CFG)' if row['cfg'] else '      '} "
                      f"{row['seconds']:6.2f} s  {row['ms_per_step']:6.0f} ms/step")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``tunecraft eval``: generate a prompt set with a system, score it, write the report.

:func:`run_evaluation` does, in order:

1. read the prompt set (default: the shipped benchmark, :mod:`tunecraft.eval.prompt_set`) and
   load the system with :func:`tunecraft.systems.load_system` (no system installed is a one-line
   :class:`~tunecraft.errors.UnknownSystem` error);
2. references: re-rendered from each prompt's composer parameters, or with ``reference=DIR`` a
   folder of the user's audio. Files named ``<prompt id>.<ext>`` pair with that prompt; when no
   file name matches a prompt id, the sorted files pair with the prompts in order. Every readable
   file of the folder joins the FAD reference set; unreadable ones are skipped and counted;
3. generation: prompt ``i`` with ``seed + i`` (``generate_with_chroma`` on the reference when
   ``melody=True`` and the system has the ``melody`` capability), saved as ``audio/<id>.wav``; the
   references as ``reference/<id>.wav``;
4. scoring (:mod:`tunecraft.eval.metrics`, :mod:`tunecraft.eval.fad`):

   * ``fad`` - Fréchet distance between the embeddings of all references and all generations
     (``fad_embedder``, default the joint model; ``clap:/dir`` etc. plug in), needs >= 2 of each;
   * ``kld`` / ``kld_rev`` / ``kld_both`` - paired KL of the tag classifier's posteriors
     (bundle ``tag-classifier``), mean over heads, then over prompts with a reference;
   * ``text_audio`` - joint-model cosine of each generation with its prompt
     (``text_audio_reference``: the same for the references);
   * ``chroma`` - chroma cosine similarity of each generation with its reference (with
     ``melody=True`` the reference is the melody that conditioned it);
   * ``tempo_acc`` / ``key_acc`` / ``mode_acc`` (beat-tracking and key-profile estimators of
     :mod:`tunecraft.eval.attributes`, which share no code with any generator) and ``style_acc`` /
     ``instrument_acc`` (the tag classifier's argmax) against the prompt's targets;
     ``reference_accuracy`` holds the same accuracies measured on the references (the analyzers'
     ceiling) and ``chance_accuracy`` their chance level on this run
     (:func:`~tunecraft.eval.metrics.permutation_chance`: each clip scored against the other
     prompts' targets), ``p_values`` a one-sided permutation test of each accuracy against that
     pairing (:func:`~tunecraft.eval.metrics.permutation_p_values`, 10,000 draws: small means
     the clips follow their own prompts); ``tempo_steady`` - share of generations whose two
     halves get the same tempo estimate (within 6 %; :func:`~tunecraft.eval.metrics.tempo_steady`),
     with the references' share in ``reference_accuracy``: a drifting rhythm cannot follow a
     requested tempo;

5. ``report.json`` and ``report.html`` (:mod:`tunecraft.eval.report`) with the per-prompt rows,
   timings, settings, the system and the command line.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import AudioFormatError, InvalidInput, TunecraftError
from .prompt_set import BENCHMARK_PROMPTS, PromptItem, read_prompt_set, render_reference

__all__ = ["EvalSettings", "run_evaluation"]

_ACC = ("tempo_acc", "key_acc", "mode_acc", "style_acc", "instrument_acc")


@dataclasses.dataclass
class EvalSettings:
    """Everything ``tunecraft eval`` takes (see :func:`run_evaluation`)."""

    system: str
    out: str
    prompts: Optional[str] = None
    reference: Optional[str] = None
    limit: Optional[int] = None
    seed: int = 0
    #: generate() keywords (``steps``, ``cfg_scale``, ``temperature``, ``top_k``, ``top_p``,
    #: ``step_schedule``, ``eta``, ``path``: :data:`tunecraft.sampling_flags.SAMPLING_FLAGS`)
    options: Dict[str, Any] = dataclasses.field(default_factory=dict)
    duration: Optional[float] = None
    fad_embedder: str = "joint"
    classifier: str = "tag-classifier"
    joint: str = "joint-tiny"
    melody: bool = False
    images: bool = True
    device: Optional[str] = None
    progress: bool = False

    def validate(self) -> None:
        from ..systems import check_cfg_scale, check_duration, check_steps

        if self.limit is not None and (isinstance(self.limit, bool) or self.limit < 1):
            raise InvalidInput(f"--limit must be >= 1, got {self.limit}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InvalidInput(f"--seed must be a non-negative integer, got {self.seed!r}")
        from ..sampling_flags import SAMPLING_FLAGS

        known = {dest for _, dest, _, _ in SAMPLING_FLAGS}
        unknown = sorted(set(self.options) - known)
        if unknown:
            raise InvalidInput(f"unknown generation option(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        # a mapping {stage: value} (noise2music) is checked by the system
        for key, check in (("steps", check_steps), ("cfg_scale", check_cfg_scale)):
            if not isinstance(self.options.get(key), dict):
                check(self.options.get(key))
        if self.duration is not None:
            check_duration(self.duration)
        if self.reference is not None and not Path(self.reference).expanduser().is_dir():
            raise InvalidInput(f"--reference must be a folder of audio files: {self.reference}")
        out = Path(self.out).expanduser()
        if out.exists() and not out.is_dir():
            raise InvalidInput(f"--out must be a directory: {self.out}")

    def command_line(self) -> str:
        """The ``tunecraft eval`` command that reproduces this run."""
        import shlex

        from ..sampling_flags import sampling_flags

        parts = ["tunecraft", "eval", "--system", self.system] + sampling_flags(self.options)
        for flag, value in (("--prompts", self.prompts), ("--reference", self.reference), ("--limit", self.limit),
                            ("--seed", self.seed), ("--duration", self.duration), ("--fad-embedder", self.fad_embedder),
                            ("--classifier", self.classifier), ("--joint", self.joint), ("--device", self.device),
                            ("--out", self.out)):
            if value is not None:
                parts += [flag, str(value)]
        if self.melody:
            parts.append("--melody")
        if not self.images:
            parts.append("--no-images")
        return " ".join(shlex.quote(p) for p in parts)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "clip"


def _mean(values: Sequence[Optional[float]]) -> Optional[float]:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _load_references(folder: Path, items: Sequence[PromptItem]) -> Tuple[Dict[int, Tuple[torch.Tensor, int]],
                                                                         List[Tuple[torch.Tensor, int]], int]:
    """(paired references by prompt index, every readable file, unreadable count)."""
    from ..audio.io import load_audio
    from ..data.manifest import iter_audio_files

    files = iter_audio_files(folder)
    loaded: List[Tuple[Path, torch.Tensor, int]] = []
    bad = 0
    for f in files:
        try:
            wav, sr = load_audio(f)
        except (AudioFormatError, InvalidInput) as e:
            warnings.warn(f"reference {f} skipped: {e}", stacklevel=2)
            bad += 1
            continue
        if wav.shape[-1] == 0 or not torch.isfinite(wav).all():
            warnings.warn(f"reference {f} skipped: empty or non-finite audio", stacklevel=2)
            bad += 1
            continue
        loaded.append((f, wav, sr))
    if not loaded:
        raise InvalidInput(f"no readable audio in --reference {folder}" + (f" ({bad} unreadable)" if bad else ""))
    by_stem = {p.stem: (w, sr) for p, w, sr in loaded}
    paired: Dict[int, Tuple[torch.Tensor, int]] = {}
    if any(it.id in by_stem for it in items):
        for i, it in enumerate(items):
            if it.id in by_stem:
                paired[i] = by_stem[it.id]
    else:
        for i, (_, w, sr) in enumerate(loaded[: len(items)]):
            paired[i] = (w, sr)
    return paired, [(w, sr) for _, w, sr in loaded], bad


def _progress(iterable, total: int, enabled: bool, desc: str):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="prompt", file=sys.stderr)


def run_evaluation(settings: EvalSettings, system=None) -> Dict[str, Any]:
    """Run the evaluation of the module docstring; returns the report dict (also written to
    ``settings.out``/report.json and report.html). ``system`` may be an already loaded
    :class:`~tunecraft.systems.GenerationSystem` (``settings.system`` is then only its name)."""
    from .. import __version__
    from ..audio import save_audio
    from ..systems import load_system

    t_start = time.perf_counter()
    settings.validate()
    items = read_prompt_set(settings.prompts)
    if settings.limit is not None:
        items = items[: settings.limit]
    out = Path(settings.out).expanduser()
    timings: Dict[str, float] = {}
    notes: List[str] = []

    # ---- system -------------------------------------------------------------------------------
    t0 = time.perf_counter()
    if system is None:
        system = load_system(settings.system, device=settings.device)
    timings["load_system_s"] = time.perf_counter() - t0
    caps = sorted(getattr(system, "capabilities", ()))
    if settings.melody and "melody" not in caps:
        raise InvalidInput(f"--melody needs a system with the 'melody' capability; '{settings.system}' has "
                           f"{', '.join(caps) or 'none'}")

    # ---- references ---------------------------------------------------------------------------
    t0 = time.perf_counter()
    refs: Dict[int, Tuple[torch.Tensor, int]] = {}
    fad_refs: List[Tuple[torch.Tensor, int]] = []
    ref_skipped = 0
    if settings.reference is not None:
        refs, fad_refs, ref_skipped = _load_references(Path(settings.reference).expanduser(), items)
        ref_source = str(settings.reference)
    else:
        for i, it in enumerate(items):
            if it.composer:
                refs[i] = render_reference(it)
        fad_refs = [refs[i] for i in sorted(refs)]
        ref_source = "composer (re-rendered from each prompt's composer parameters)"
        if not refs:
            notes.append("no prompt has composer parameters and no --reference was given: FAD, KL and chroma "
                         "are not computed")
    timings["references_s"] = time.perf_counter() - t0

    # ---- generation ---------------------------------------------------------------------------
    out.mkdir(parents=True, exist_ok=True)
    kwargs: Dict[str, Any] = {k: v for k, v in settings.options.items() if v is not None}
    generated: List[Tuple[torch.Tensor, int]] = []
    rows: List[Dict[str, Any]] = []
    used_names: Dict[str, int] = {}
    t_gen = 0.0
    for i, it in _progress(list(enumerate(items)), len(items), settings.progress, "generating"):
        duration = settings.duration or it.duration or (refs[i][0].shape[-1] / refs[i][1] if i in refs else 10.0)
        t0 = time.perf_counter()
        if settings.melody and i in refs:
            wav, sr = system.generate_with_chroma([it.prompt], refs[i][0][None], refs[i][1], duration=duration,
                                                  seed=settings.seed + i, **kwargs)
        else:
            wav, sr = system.generate([it.prompt], duration=duration, seed=settings.seed + i, **kwargs)
        dt = time.perf_counter() - t0
        t_gen += dt
        if not isinstance(wav, torch.Tensor) or wav.dim() != 3 or wav.shape[0] < 1 or wav.shape[-1] == 0:
            raise TunecraftError(f"system '{settings.system}' returned no audio of shape [B, C, T] for prompt {it.id}")
        wav = wav[0].detach().float().cpu()
        if not torch.isfinite(wav).all():
            raise TunecraftError(f"system '{settings.system}' produced NaN or infinite samples for prompt {it.id}")
        name = _safe_name(it.id)
        used_names[name] = used_names.get(name, 0) + 1
        if used_names[name] > 1:
            name = f"{name}_{used_names[name]}"
        audio_rel = f"audio/{name}.wav"
        save_audio(out / audio_rel, wav.clamp(-1.0, 1.0), int(sr))
        row: Dict[str, Any] = {"id": it.id, "prompt": it.prompt, "seed": settings.seed + i, "duration": duration,
                               "generate_s": round(dt, 3), "audio": audio_rel, "targets": it.targets}
        if i in refs:
            ref_rel = f"reference/{name}.wav"
            save_audio(out / ref_rel, refs[i][0].clamp(-1.0, 1.0), int(refs[i][1]))
            row["reference_audio"] = ref_rel
        generated.append((wav, int(sr)))
        rows.append(row)
    timings["generate_s"] = t_gen
    audio_seconds = sum(w.shape[-1] / sr for w, sr in generated)
    timings["generated_audio_s"] = audio_seconds
    timings["realtime_factor"] = audio_seconds / t_gen if t_gen > 0 else float("inf")

    # ---- scoring ------------------------------------------------------------------------------
    t0 = time.perf_counter()
    from ..joint import JointEmbeddingModel
    from .classifiers import TagClassifier
    from .fad import GaussianStats, JointAudioEmbedder, get_embedder
    from .metrics import (KLDivergenceMetric, chroma_cosine_similarity, clip_attributes, kl_divergence,
                          permutation_chance, permutation_p_values, tempo_steady)

    joint = JointEmbeddingModel.from_pretrained(settings.joint)
    classifier = TagClassifier.from_pretrained(settings.classifier)
    # the classifier reads the same joint model: reuse the clip embeddings computed for text_audio
    shared = "joint" in classifier.config.features and classifier.config.joint_model == settings.joint
    if shared:
        classifier.use_joint(joint)
    embedder = JointAudioEmbedder(joint) if settings.fad_embedder in ("joint", f"joint:{settings.joint}") \
        else get_embedder(settings.fad_embedder)
    timings["load_scorers_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    kl = KLDivergenceMetric()
    fields = set(classifier.fields)
    gen_emb: List[torch.Tensor] = []
    ref_joint: Dict[int, torch.Tensor] = {}
    text = joint.embed_text([it.prompt for it in items])
    ref_hits: Dict[str, List[bool]] = {}
    for i, (row, (wav, sr)) in enumerate(zip(rows, generated)):
        it = items[i]
        a = joint.embed_audio(wav[None], sr)
        row["text_audio"] = float((a[0] * text[i]).sum())
        gen_emb.append(a if isinstance(embedder, JointAudioEmbedder) else embedder.embed(wav[None], sr))
        post = classifier.posteriors(wav[None], sr, a if shared else None)
        row["predicted"] = {f: classifier.config.vocab[f][int(p[0].argmax())] for f, p in post.items()
                            if f in ("style", "instrument", "key", "tempo_bucket")}
        predicted = {f: row["predicted"].get(f) for f in ("style", "instrument") if f in fields}
        attrs = clip_attributes(wav, sr, it.targets, predicted)
        row["estimates"], row["hits"] = attrs["estimates"], attrs["hits"]
        row["tempo_steady"] = tempo_steady(wav, sr)
        if i in refs:
            rw, rsr = refs[i]
            ra = joint.embed_audio(rw[None], rsr)
            ref_joint[i] = ra
            row["text_audio_reference"] = float((ra[0] * text[i]).sum())
            rpost = classifier.posteriors(rw[None], rsr, ra if shared else None)
            kl.update(rpost, post)
            # KL(p || p) is -O(eps) with the eps of kl_divergence: clamp at the true minimum, 0
            row["kld"] = max(0.0, float(torch.stack([kl_divergence(rpost[h], post[h]) for h in sorted(post)]).mean()))
            row["chroma"] = float(chroma_cosine_similarity(rw[None], wav[None], rsr, generated_sample_rate=sr))
            row["reference_predicted"] = {f: classifier.config.vocab[f][int(p[0].argmax())] for f, p in rpost.items()
                                          if f in ("style", "instrument", "key", "tempo_bucket")}
            rattrs = clip_attributes(rw, rsr, it.targets, {f: row["reference_predicted"].get(f) for f in predicted})
            row["reference_estimates"] = rattrs["estimates"]
            for k, v in rattrs["hits"].items():
                ref_hits.setdefault(k, []).append(bool(v))
            steady = tempo_steady(rw, rsr)
            if steady is not None:
                ref_hits.setdefault("tempo_steady", []).append(steady)
    fad = None
    if settings.reference is not None or refs:
        if isinstance(embedder, JointAudioEmbedder) and settings.reference is None:
            ref_emb = [ref_joint[i] for i in sorted(refs)]  # the composer references, embedded above
        else:
            ref_emb = [embedder.embed(w[None], sr) for w, sr in fad_refs]
        if len(ref_emb) >= 2 and len(gen_emb) >= 2:
            g = torch.cat([e.float().cpu() for e in gen_emb])
            r = torch.cat([e.float().cpu() for e in ref_emb])
            # a distance: clamp the -O(1e-7) round-off of identical sets at 0
            fad = max(0.0, GaussianStats.from_embeddings(r).distance(GaussianStats.from_embeddings(g)))
            if g.shape[0] < g.shape[1] or r.shape[0] < r.shape[1]:
                notes.append(f"FAD from {r.shape[0]} reference and {g.shape[0]} generated clips in {g.shape[1]} "
                             f"dimensions: the covariances are rank-deficient, so compare FAD only between runs on "
                             f"the same prompt set")
        else:
            notes.append("FAD needs at least 2 reference and 2 generated clips")
    timings["score_s"] = time.perf_counter() - t0

    metrics: Dict[str, Any] = {"fad": fad}
    counts: Dict[str, int] = {}
    pairs = sum(1 for r in rows if "kld" in r)
    if pairs:
        metrics.update({k: max(0.0, v) for k, v in kl.compute().items() if k != "pairs"})
        counts.update({"kld": pairs, "kld_rev": pairs, "kld_both": pairs})
    else:
        metrics.update({"kld": None, "kld_rev": None, "kld_both": None})
    for name in ("text_audio", "text_audio_reference", "chroma", "tempo_steady"):
        vals = [float(r[name]) for r in rows if r.get(name) is not None]
        metrics[name] = _mean(vals)
        counts[name] = len(vals)
    for name in _ACC:
        hits = [r["hits"][name] for r in rows if name in r.get("hits", {})]
        metrics[name] = (sum(hits) / len(hits)) if hits else None
        counts[name] = len(hits)
    counts["fad"] = len(gen_emb) if fad is not None else 0
    reference_accuracy = {k: sum(v) / len(v) for k, v in ref_hits.items()}
    pairing = ([r["estimates"] for r in rows], [items[i].targets for i in range(len(rows))], [r["predicted"] for r in rows])
    chance_accuracy = permutation_chance(*pairing)
    p_values = permutation_p_values(*pairing)

    report: Dict[str, Any] = {
        "tunecraft_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": settings.command_line(),
        "system": {"name": settings.system, "family": getattr(system, "system_name", "") or type(system).__name__,
                   "class": f"{type(system).__module__}.{type(system).__qualname__}",
                   "sample_rate": int(generated[0][1]) if generated else None, "capabilities": caps},
        "prompts": {"file": str(settings.prompts or BENCHMARK_PROMPTS), "count": len(items)},
        "reference": {"source": ref_source, "paired": len(refs), "fad_set": len(fad_refs),
                      "skipped_unreadable": ref_skipped},
        "settings": {"seed": settings.seed, "options": dict(settings.options),
                     "duration": settings.duration, "melody": settings.melody, "fad_embedder": settings.fad_embedder,
                     "classifier": settings.classifier, "joint": settings.joint, "device": settings.device},
        "metrics": metrics,
        "counts": counts,
        "reference_accuracy": reference_accuracy,
        "chance_accuracy": chance_accuracy,
        "p_values": p_values,
        "timings": {},
        "notes": notes,
        "rows": rows,
    }

    t0 = time.perf_counter()
    images: Dict[int, bytes] = {}
    if settings.images:
        from .report import clip_figure_png

        for i, (wav, sr) in enumerate(generated):
            clips = [("generated", wav, sr)] + ([("reference", refs[i][0], refs[i][1])] if i in refs else [])
            png = clip_figure_png(clips)
            if png is None:
                report["images_note"] = "matplotlib is not installed (pip install 'tunecraft[eval]')"
                break
            images[i] = png
    else:
        report["images_note"] = "images were turned off (--no-images)"
    timings["images_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    report["timings"] = {k: round(v, 3) for k, v in timings.items()}
    from .report import write_report

    write_report(out, report, images)
    return report

"""Evaluation reports: ``report.json`` and a self-contained ``report.html``.

:func:`write_report` takes the report dict that :func:`tunecraft.eval.runner.run_evaluation`
builds (metrics, per-prompt rows, timings, the system and the command line) and writes

* ``report.json`` - the dict as JSON (written atomically);
* ``report.html`` - one page with no external resources except the audio it plays: summary
  and timing tables, then one section per prompt with its text, targets and estimates, audio
  players for the generation and the reference (``<audio>`` elements that point at the wav files
  beside the report, relative paths) and a PNG (base64 ``data:`` URI) with the log-mel
  spectrogram and the chromagram of both clips.

Images are drawn with matplotlib's Agg canvas (``matplotlib.figure.Figure`` +
``FigureCanvasAgg``: no pyplot, no change of the global backend). matplotlib comes with the
``eval`` extra (``pip install 'tunecraft[eval]'``); without it the HTML report is written without
images and says so.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch

__all__ = ["METRIC_HELP", "clip_figure_png", "render_html", "write_json", "write_report"]

#: What each summary metric means (shown in the HTML summary table).
METRIC_HELP: Dict[str, str] = {
    "fad": "Fréchet Audio Distance between the generations and the references (lower is better)",
    "kld": "KL(p_ref || p_gen) of the tag classifier's posteriors, mean over heads and prompts (lower is better)",
    "kld_rev": "KL(p_gen || p_ref), mean over heads and prompts",
    "kld_both": "kld + kld_rev",
    "text_audio": "cosine of the generation and its prompt in the joint embedding (CLAP-score analogue, higher is better)",
    "text_audio_reference": "the same for the reference clips (what a perfect system would get)",
    "chroma": "chroma cosine similarity of generation and reference (melody adherence, higher is better)",
    "tempo_acc": "estimated tempo within 6% of the prompt's BPM",
    "tempo_steady": "the two halves of the generation get the same tempo estimate (within 6%): a steady rhythm",
    "key_acc": "estimated key equals the prompt's key (tonic and mode)",
    "mode_acc": "estimated mode equals the prompt's mode",
    "style_acc": "tag classifier's style equals the prompt's style",
    "instrument_acc": "tag classifier's lead instrument equals the prompt's instrument",
}


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _matplotlib():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    return Figure, FigureCanvasAgg


def _mono(wav: torch.Tensor) -> torch.Tensor:
    x = wav.detach().float().cpu()
    return x.mean(0) if x.dim() == 2 else x.reshape(-1)


def clip_figure_png(clips: Sequence[Tuple[str, torch.Tensor, int]], dpi: int = 72) -> Optional[bytes]:
    """A PNG with one row per ``(title, wav [C, T], sample_rate)``: log-mel spectrogram (16 kHz,
    80 bands) on the left, 12-bin chromagram on the right. ``None`` without matplotlib."""
    mpl = _matplotlib()
    if mpl is None or not clips:
        return None
    Figure, FigureCanvasAgg = mpl
    from ..audio import chromagram, log_mel, resample

    fig = Figure(figsize=(9.0, 1.9 * len(clips)), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(clips), 2, squeeze=False, gridspec_kw={"width_ratios": [3, 2]})
    for row, (title, wav, sr) in enumerate(clips):
        x = _mono(wav)
        x16 = resample(x[None], int(sr), 16000)[0] if int(sr) != 16000 else x
        mel = log_mel(x16[None], 16000, n_fft=1024, hop_length=320, win_length=1024, n_mels=80)[0].numpy()
        seconds = x.shape[-1] / float(sr)
        ax = axes[row][0]
        ax.imshow(mel, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, mel.shape[0]))
        ax.set_title(f"{title}: log-mel spectrogram", fontsize=8)
        ax.set_ylabel("mel band", fontsize=7)
        ax.tick_params(labelsize=6)
        chroma = chromagram(x[None], int(sr))[0].numpy()
        ax = axes[row][1]
        ax.imshow(chroma, origin="lower", aspect="auto", cmap="viridis", extent=(0, seconds, -0.5, 11.5),
                  vmin=0, vmax=1)
        ax.set_yticks(range(12))
        ax.set_yticklabels(["C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"], fontsize=5)
        ax.set_title(f"{title}: chromagram", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("seconds", fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 1000 else f"{v:.1f}"
    return html.escape(str(v))


def _table(rows: Sequence[Sequence[Any]], head: Sequence[str]) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{c if isinstance(c, _Raw) else _fmt(c)}</td>" for c in r) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


class _Raw(str):
    """Already-escaped HTML for a table cell."""


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:1.5em} h2{font-size:1.2em;margin-top:1.6em} h3{font-size:1em;margin:0 0 .3em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em} th,td{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f3f3f3} .prompt{border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:14px 0}
.meta{color:#666;font-size:.85em} code{background:#f5f5f5;padding:1px 4px} audio{height:32px;vertical-align:middle}
.hit{color:#1a7f37;font-weight:600} .miss{color:#b42318;font-weight:600} img{max-width:100%}
"""


def _hit(v: Optional[bool]) -> _Raw:
    if v is None:
        return _Raw("–")
    return _Raw('<span class="hit">yes</span>' if v else '<span class="miss">no</span>')


def render_html(report: Mapping[str, Any], images: Mapping[int, bytes]) -> str:
    """The HTML page of a report (``images[i]``: PNG of row ``i``)."""
    sysinfo = report.get("system", {})
    title = f"tunecraft eval: {sysinfo.get('name', '?')}"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    parts.append("<p class='meta'>" + "<br>".join([
        f"command: <code>{html.escape(str(report.get('command', '')))}</code>",
        f"created {html.escape(str(report.get('created', '')))} with tunecraft {html.escape(str(report.get('tunecraft_version', '')))}",
        f"system family {html.escape(str(sysinfo.get('family', '?')))}, {html.escape(str(sysinfo.get('sample_rate', '?')))} Hz, "
        f"capabilities: {html.escape(', '.join(sysinfo.get('capabilities', [])))}",
        f"prompts: {html.escape(str(report.get('prompts', {}).get('file', '')))} ({report.get('prompts', {}).get('count', 0)}); "
        f"references: {html.escape(str(report.get('reference', {}).get('source', '')))}",
    ]) + "</p>")
    metrics = report.get("metrics", {})
    counts = report.get("counts", {})
    rows = [(name, metrics.get(name), counts.get(name), METRIC_HELP.get(name, "")) for name in METRIC_HELP
            if name in metrics]
    parts.append("<h2>Summary</h2>" + _table(rows, ["metric", "value", "prompts", "meaning"]))
    for key, title in (("reference_accuracy", "The same analyzers on the reference clips (their ceiling on this set)"),
                       ("chance_accuracy", "Chance level of the generated clips (each scored against the other "
                                           "prompts' targets)"),
                       ("p_values", "p-value of each accuracy against that chance (one-sided permutation test, "
                                    "10,000 draws)")):
        acc = report.get(key) or {}
        if acc:
            parts.append(f"<p class='meta'>{title}: "
                         + ", ".join(f"{html.escape(k)} {_fmt(v)}" for k, v in acc.items() if k != "counts") + "</p>")
    settings = report.get("settings", {})
    if settings:
        parts.append("<h2>Settings</h2>" + _table([(k, v) for k, v in settings.items()], ["setting", "value"]))
    timings = report.get("timings", {})
    if timings:
        parts.append("<h2>Timings</h2>" + _table([(k, v) for k, v in timings.items()], ["step", "seconds / value"]))
    if report.get("notes"):
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report["notes"]) + "</ul>")
    head = ["#", "id", "tempo", "key", "mode", "style", "instr.", "text-audio", "KL", "chroma", "gen s"]
    table_rows = []
    for i, r in enumerate(report.get("rows", [])):
        h = r.get("hits", {})
        table_rows.append((i, _Raw(f"<a href='#p{i}'>{html.escape(str(r.get('id')))}</a>"), _hit(h.get("tempo_acc")),
                           _hit(h.get("key_acc")), _hit(h.get("mode_acc")), _hit(h.get("style_acc")),
                           _hit(h.get("instrument_acc")), r.get("text_audio"), r.get("kld"), r.get("chroma"),
                           r.get("generate_s")))
    parts.append("<h2>Prompts</h2>" + _table(table_rows, head))
    if not images:
        parts.append("<p class='meta'>No spectrogram images: " + html.escape(
            report.get("images_note") or "images were turned off") + "</p>")
    for i, r in enumerate(report.get("rows", [])):
        parts.append(f"<div class='prompt' id='p{i}'><h3>{i}. {html.escape(str(r.get('id')))}</h3>")
        parts.append(f"<p>{html.escape(str(r.get('prompt', '')))}</p>")
        players = []
        for label, key in (("generated", "audio"), ("reference", "reference_audio")):
            if r.get(key):
                players.append(f"{label}: <audio controls preload='none' src='{html.escape(r[key], quote=True)}'></audio>")
        if players:
            parts.append("<p>" + " &nbsp; ".join(players) + "</p>")
        tgt = r.get("targets", {})
        est = r.get("estimates", {})
        ref_est = r.get("reference_estimates", {})
        pred = r.get("predicted", {})
        attr_rows = []
        for name, t_key, e_key in (("tempo (bpm)", "bpm", "bpm"), ("key", "key", "key"), ("mode", "mode", "mode"),
                                   ("style", "style", None), ("instrument", "instrument", None)):
            got = est.get(e_key) if e_key else pred.get(t_key)
            ref = ref_est.get(e_key) if e_key else (r.get("reference_predicted") or {}).get(t_key)
            if tgt.get(t_key) is None and got is None:
                continue
            attr_rows.append((name, tgt.get(t_key), got, ref))
        if attr_rows:
            parts.append(_table(attr_rows, ["attribute", "prompt", "generated (estimate)", "reference (estimate)"]))
        if i in images:
            b64 = base64.b64encode(images[i]).decode("ascii")
            parts.append(f"<img alt='spectrograms and chromagrams of prompt {i}' src='data:image/png;base64,{b64}'>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(out_dir: Path, report: Dict[str, Any], images: Optional[Mapping[int, bytes]] = None) -> Tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "report.json"
    write_json(json_path, report)
    html_path = out_dir / "report.html"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".html", dir=str(out_dir))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(render_html(report, dict(images or {})))
        os.replace(tmp, html_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return json_path, html_path

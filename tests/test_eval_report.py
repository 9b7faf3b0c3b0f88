"""`tunecraft eval`: the shipped prompt set, re-rendered references, report.json and report.html.

The systems here are real GenerationSystem subclasses registered the documented way (an entry in
``SYSTEM_CLASSES`` plus a model directory whose ``config.json`` names the family): ``echo``
renders each benchmark prompt's own clip with the composer (a perfect system: FAD, KL ~ 0, chroma
1), ``noise`` returns seeded white noise (a useless one).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tunecraft.cli import main
from tunecraft.eval.prompt_set import BENCHMARK_PROMPTS, read_prompt_set, render_reference
from tunecraft.systems import GenerationSystem, check_descriptions, check_duration

N = 3  # prompts per run (fast); the full 24-prompt timing is measured in the README


class ComposerSystem(GenerationSystem):
    system_name = "composer-test"
    capabilities = frozenset({"text"})
    sample_rate = 32000
    channels = 2

    def __init__(self, mode: str):
        self.mode = mode
        self.lookup = {it.prompt: it for it in read_prompt_set()}
        self.calls = []

    @classmethod
    def from_pretrained(cls, path, device=None, **kwargs):
        return cls(json.loads((Path(path) / "config.json").read_text())["mode"])

    def generate(self, descriptions, duration=10.0, seed=None, cfg_scale=None, steps=None, progress=False,
                 force=False, **kwargs):
        descriptions = check_descriptions(descriptions)
        duration = check_duration(duration, force)
        self.calls.append(dict(cfg_scale=cfg_scale, steps=steps, **kwargs))
        out = []
        for d in descriptions:
            if self.mode == "echo":
                wav, sr = render_reference(self.lookup[d])
                assert sr == self.sample_rate
            else:
                g = torch.Generator().manual_seed(int(seed or 0))
                wav = 0.1 * torch.randn(2, int(duration * self.sample_rate), generator=g)
            out.append(wav)
        return torch.stack(out), self.sample_rate


def bundle(tmp_path, monkeypatch, mode: str) -> Path:
    from tunecraft import systems

    monkeypatch.setitem(systems.SYSTEM_CLASSES, "composer-test", f"{__name__}:ComposerSystem")
    d = tmp_path / f"composer-{mode}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"system": "composer-test", "mode": mode}))
    return d


# ---- the shipped prompt set -----------------------------------------------------------------------


def test_benchmark_prompts_are_held_out_and_rerender_their_clips():
    from tunecraft.data.composer import ComposerConfig, compose
    from tunecraft.data.synth import clip_seed, split_of

    items = read_prompt_set()
    assert read_prompt_set(BENCHMARK_PROMPTS)[0] == items[0]
    assert len(items) >= 20 and len({it.id for it in items}) == len(items)
    assert len({it.style for it in items}) == 12  # every style family
    for it in items:
        c = it.composer
        assert set(it.targets) == {"bpm", "key", "tonic", "mode", "style", "instrument"}
        # the clip seed is the corpus's, and it lies in the held-out split
        assert c["seed"] == clip_seed(c["corpus_seed"], c["index"])
        assert split_of(c["seed"]) == "test"
        # composing the seed again gives the attributes the prompt asks for
        meta = compose(c["seed"], c["duration"], config=ComposerConfig(styles=c["styles"])).metadata
        assert (meta["style"], meta["key"], meta["bpm"], meta["instrument"]) == \
            (it.style, it.key, it.bpm, it.instrument)
        assert f"{it.bpm:g} bpm" in it.prompt.lower() or it.key in it.prompt or it.style in it.prompt.lower() \
            or it.instrument in it.prompt
    wav, sr = render_reference(items[0])
    again, _ = render_reference(items[0])
    assert sr == 32000 and wav.shape == (2, 320000) and torch.equal(wav, again)
    assert float(wav.abs().max()) > 0.5


def test_prompt_set_reader_errors(tmp_path):
    from tunecraft.errors import InvalidInput, InvalidPrompt

    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "calm piano", "key": "H major"}\n')
    with pytest.raises(InvalidInput):
        read_prompt_set(bad)
    bad.write_text('{"prompt": "  "}\n')
    with pytest.raises(InvalidPrompt):
        read_prompt_set(bad)
    txt = tmp_path / "p.txt"
    txt.write_text("# comment\ncalm piano\n\nfast drums\n")
    items = read_prompt_set(txt)
    assert [it.prompt for it in items] == ["calm piano", "fast drums"] and items[0].targets == {}
    with pytest.raises(InvalidInput):
        render_reference(items[0])


# ---- end to end ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("eval")
    try:
        b = bundle(tmp, mp, "echo")
        out = tmp / "echo"
        rc = main(["eval", "--system", str(b), "--limit", str(N), "--out", str(out), "-q"])
        yield rc, out, tmp, b
    finally:
        mp.undo()


def test_eval_writes_report_json_and_html(echo_run):
    rc, out, _, b = echo_run
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    for key in ("fad", "kld", "kld_rev", "text_audio", "chroma", "tempo_acc", "key_acc", "mode_acc", "style_acc",
                "instrument_acc"):
        assert key in m and m[key] is not None, key
    # a system that reproduces the references scores perfectly on the distribution metrics
    assert m["fad"] < 1e-4 and m["kld"] < 1e-4 and m["chroma"] > 0.999
    assert m["text_audio"] == pytest.approx(m["text_audio_reference"], abs=1e-5)
    assert set(report["chance_accuracy"]) >= {"tempo_acc", "key_acc", "mode_acc"}
    assert all(0 <= v <= 1 for v in report["chance_accuracy"].values())
    assert 0 <= m["text_audio"] <= 1
    # the attribute accuracies equal those of the analyzers on the references themselves
    for key in ("tempo_acc", "key_acc", "mode_acc", "style_acc", "instrument_acc"):
        assert m[key] == report["reference_accuracy"][key]
    # so do the rhythm steadiness and the permutation test (p in (0, 1] for every accuracy)
    assert m["tempo_steady"] == report["reference_accuracy"]["tempo_steady"]
    assert set(report["p_values"]) == set(report["chance_accuracy"])
    assert all(0 < p <= 1 for p in report["p_values"].values())
    assert report["counts"]["chroma"] == N and report["counts"]["tempo_acc"] == N
    assert report["system"]["name"] == str(b) and report["system"]["family"] == "composer-test"
    assert report["command"].startswith(f"tunecraft eval --system {b}") and "--limit 3" in report["command"]
    assert report["prompts"]["count"] == N and report["reference"]["paired"] == N
    t = report["timings"]
    assert t["generated_audio_s"] == pytest.approx(10.0 * N) and t["total_s"] >= t["score_s"] > 0
    rows = report["rows"]
    assert len(rows) == N
    items = read_prompt_set()
    for row, it in zip(rows, items):
        assert row["id"] == it.id and row["targets"]["bpm"] == it.bpm
        assert (out / row["audio"]).is_file() and (out / row["reference_audio"]).is_file()
        assert set(row["hits"]) == {"tempo_acc", "key_acc", "mode_acc", "style_acc", "instrument_acc"}
        assert row["estimates"]["key"].split()[-1] in ("major", "minor")
    html = (out / "report.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "</html>" in html
    assert len(re.findall(r"data:image/png;base64,", html)) == N
    for row in rows:
        assert f"src='{row['audio']}'" in html and f"src='{row['reference_audio']}'" in html
    assert "<link" not in html and "<script" not in html  # self-contained apart from the wavs


def test_eval_noise_system_scores_worse_and_reference_dir_override(echo_run, tmp_path, monkeypatch):
    _, echo_out, _, echo_bundle = echo_run
    echo = json.loads((echo_out / "report.json").read_text())["metrics"]
    noise = bundle(tmp_path, monkeypatch, "noise")
    out = tmp_path / "noise"
    assert main(["eval", "--system", str(noise), "--limit", str(N), "--out", str(out), "--no-images", "-q"]) == 0
    rep = json.loads((out / "report.json").read_text())
    m = rep["metrics"]
    assert m["fad"] > echo["fad"] + 0.1
    assert m["kld"] > 0.5 and m["chroma"] < 0.9 and m["text_audio"] < echo["text_audio"]
    assert m["key_acc"] <= echo["key_acc"]
    assert "data:image/png" not in (out / "report.html").read_text()
    # a user's reference folder (files named by prompt id) replaces the composer references
    refs = tmp_path / "refs"
    refs.mkdir()
    for row in rep["rows"]:
        (refs / f"{row['id']}.wav").write_bytes((echo_out / row["reference_audio"]).read_bytes())
    (refs / "broken.wav").write_bytes(b"RIFF0000WAVEjunk")
    out2 = tmp_path / "echo-refdir"
    with pytest.warns(UserWarning, match="broken.wav"):
        assert main(["eval", "--system", str(echo_bundle), "--limit", str(N), "--reference", str(refs),
                     "--out", str(out2), "--no-images", "-q"]) == 0
    rep2 = json.loads((out2 / "report.json").read_text())
    assert rep2["reference"]["source"] == str(refs) and rep2["reference"]["skipped_unreadable"] == 1
    assert rep2["reference"]["paired"] == N and rep2["metrics"]["fad"] < 1e-4
    assert rep2["metrics"]["chroma"] > 0.999


def test_eval_without_an_installed_system_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    from tunecraft import systems

    monkeypatch.setattr(systems, "BUNDLES_DIR", tmp_path / "no-bundles")
    assert main(["eval", "--system", "musicgen", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no generation system is installed") and "\n" not in err
    assert not (tmp_path / "o" / "report.json").exists()


@pytest.mark.parametrize("argv", [
    ["--limit", "0"],
    ["--steps", "0"],
    ["--prompts", "does-not-exist.jsonl"],
    ["--reference", "no-such-dir"],
    ["--duration", "-1"],
])
def test_eval_bad_input_exit_2(argv, tmp_path, monkeypatch, capsys):
    b = bundle(tmp_path, monkeypatch, "echo")
    assert main(["eval", "--system", str(b), "--out", str(tmp_path / "o"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_melody_flag_needs_the_capability(tmp_path, monkeypatch, capsys):
    b = bundle(tmp_path, monkeypatch, "echo")
    assert main(["eval", "--system", str(b), "--limit", "1", "--melody", "--out", str(tmp_path / "o")]) == 2
    assert "melody" in capsys.readouterr().err


def test_eval_passes_sampling_options_to_generate(tmp_path):
    from tunecraft.eval.runner import EvalSettings, run_evaluation

    system = ComposerSystem("noise")
    options = {"steps": 3, "cfg_scale": 2.5, "temperature": 0.7, "top_k": 5, "step_schedule": "back-heavy"}
    settings = EvalSettings(system="noise", out=str(tmp_path / "o"), limit=2, images=False, options=options)
    report = run_evaluation(settings, system=system)
    assert system.calls == [{"cfg_scale": 2.5, "steps": 3, "temperature": 0.7, "top_k": 5,
                             "step_schedule": "back-heavy"}] * 2
    assert report["settings"]["options"] == options
    cmd = report["command"]
    for flag in ("--steps 3", "--cfg 2.5", "--temperature 0.7", "--top-k 5", "--step-schedule back-heavy"):
        assert flag in cmd


def test_eval_rejects_unknown_generation_options(tmp_path):
    from tunecraft.errors import InvalidInput
    from tunecraft.eval.runner import EvalSettings, run_evaluation

    with pytest.raises(InvalidInput, match="unknown generation option"):
        run_evaluation(EvalSettings(system="noise", out=str(tmp_path / "o"), options={"topk": 5}),
                       system=ComposerSystem("noise"))

"""The CLI's contract for bad input: exit code 2, one line on stderr, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tunecraft.cli import main, read_prompt_file
from tunecraft.errors import InvalidInput, InvalidPrompt


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code == 2, f"exit code {code}, stderr: {err!r}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {lines!r}"
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n.lower() in lines[0].lower(), f"{n!r} not in {lines[0]!r}"


@pytest.fixture
def wav_file(tmp_path):
    path = tmp_path / "melody.wav"
    sf.write(path, np.zeros(16000, dtype=np.float32), 16000)
    return path


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["generate", ""], ["empty prompt"]),
        (["generate", "   "], ["empty prompt"]),
        (["generate", "calm piano", "--duration", "0"], ["duration"]),
        (["generate", "calm piano", "--duration", "-3"], ["duration"]),
        (["generate", "calm piano", "--duration", "nan"], ["duration"]),
        (["generate", "calm piano", "--duration", "601"], ["--force"]),
        (["generate", "calm piano", "--cfg", "-1"], ["cfg"]),
        (["generate", "calm piano", "--steps", "0"], ["steps"]),
        (["generate", "calm piano", "-o", "out.mp3"], [".wav"]),
        (["generate", "calm piano", "--melody", "/nonexistent/melody.wav"], ["/nonexistent/melody.wav"]),
        (["generate", "--prompts", "/nonexistent/prompts.txt"], ["prompts file not found"]),
        (["generate"], ["prompt"]),
        (["generate", "calm piano", "--duration", "ten"], ["invalid float"]),
        (["generate", "calm piano", "--no-such-flag"], ["unrecognized"]),
        (["no-such-command"], ["invalid choice"]),
        (["train", "no-such-recipe"], ["no-such-recipe"]),
        (["data", "synth", "--out", "x", "--n", "0"], ["--n"]),
        (["data", "synth", "--out", "x", "--duration", "-1"], ["--duration"]),
        (["data", "synth", "--out", "x", "--soundfont", "/nonexistent.sf2"], ["soundfont"]),
        (["data", "manifest", "/nonexistent/folder"], ["not a directory"]),
        (["data"], ["subcommand"]),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, needles):
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, *needles)


def test_unsupported_melody_format(capsys, tmp_path):
    bad = tmp_path / "melody.xyz"
    bad.write_bytes(b"not audio at all")
    code, _, err = run_cli(capsys, "generate", "calm piano", "--melody", str(bad))
    assert_one_line_error(code, err, "melody.xyz")


def test_corrupt_melody_file(capsys, tmp_path):
    bad = tmp_path / "melody.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")
    code, _, err = run_cli(capsys, "generate", "calm piano", "--melody", str(bad))
    assert_one_line_error(code, err, "melody.wav")


def test_unknown_system(capsys, wav_file):
    code, _, err = run_cli(capsys, "generate", "calm piano", "--system", "no-such-system", "-o", "x.wav")
    assert_one_line_error(code, err, "no-such-system")


def test_unknown_system_directory_without_config(capsys, tmp_path):
    code, _, err = run_cli(capsys, "generate", "calm piano", "--system", str(tmp_path), "-o", str(tmp_path / "x.wav"))
    assert_one_line_error(code, err, "config.json")


def test_generate_without_installed_system_says_so(capsys, tmp_path):
    from tunecraft.systems import list_systems

    if list_systems():
        pytest.skip("a system is installed")
    code, _, err = run_cli(capsys, "generate", "calm piano", "-o", str(tmp_path / "x.wav"))
    assert_one_line_error(code, err, "no generation system is installed")
    assert not (tmp_path / "x.wav").exists()


def test_systems_lists_capabilities(capsys):
    code, out, _ = run_cli(capsys, "systems")
    assert code == 0
    code, out, _ = run_cli(capsys, "systems", "--json")
    assert code == 0
    listed = json.loads(out)
    assert isinstance(listed, list)
    for s in listed:
        assert {"name", "system", "capabilities", "path"} <= set(s)
        assert "text" in s["capabilities"]


def test_prompt_files(tmp_path):
    txt = tmp_path / "p.txt"
    txt.write_text("# a comment\ncalm piano\n\nfast rock, 150 bpm\n")
    assert [it["prompt"] for it in read_prompt_file(str(txt))] == ["calm piano", "fast rock, 150 bpm"]
    jl = tmp_path / "p.jsonl"
    jl.write_text(json.dumps({"prompt": "jazz trio", "seed": 3, "duration": 5}) + "\n" + json.dumps("lofi beat") + "\n")
    items = read_prompt_file(str(jl))
    assert items[0] == {"prompt": "jazz trio", "seed": 3, "duration": 5}
    assert items[1] == {"prompt": "lofi beat"}
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n\n")
    with pytest.raises(InvalidPrompt):
        read_prompt_file(str(empty))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "ok"}\n{not json\n')
    with pytest.raises(InvalidInput, match=":2:"):
        read_prompt_file(str(broken))
    blank = tmp_path / "blank.jsonl"
    blank.write_text('{"prompt": "  "}\n')
    with pytest.raises(InvalidPrompt):
        read_prompt_file(str(blank))


def test_console_script_bad_input_no_traceback(tmp_path):
    """The installed entry point behaves like main(): exit 2, one line, no traceback."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("TUNECRAFT_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "tunecraft", "generate", "", "-o", str(tmp_path / "x.wav")],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: empty prompt"]
    proc = subprocess.run([sys.executable, "-m", "tunecraft", "--version"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("tunecraft ")


@pytest.mark.slow
def test_data_synth_200_clips_under_two_minutes(capsys, tmp_path):
    """Acceptance: `tunecraft data synth --n 200 --duration 10 --seed 1` in under 2 minutes."""
    import time

    from tunecraft.audio import audio_info
    from tunecraft.data import read_manifest

    out = tmp_path / "synth"
    t0 = time.perf_counter()
    code, stdout, err = run_cli(capsys, "data", "synth", "--n", "200", "--duration", "10", "--seed", "1",
                                "--out", str(out))
    elapsed = time.perf_counter() - t0
    print(f"synth 200 x 10 s: {elapsed:.1f} s wall")
    assert code == 0, err
    assert elapsed < 120
    metas = read_manifest(out / "data.jsonl")
    assert len(metas) == 200
    split_total = sum(len(read_manifest(p)) for p in out.glob("*.jsonl") if p.name != "data.jsonl")
    assert split_total == 200
    for meta in metas[::25]:
        info = audio_info(meta.path)
        assert abs(info.duration - 10.0) < 0.05 and info.sample_rate == 32000
        side = json.loads(Path(meta.info_path).read_text())
        for key in ("title", "key", "bpm", "genre", "moods", "instrument", "keywords", "description"):
            assert key in side, key
        assert 60 <= side["bpm"] <= 180


def test_data_synth_styles_and_bad_style(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "data", "synth", "--list-styles")
    assert code == 0 and "jazz" in out.split()
    code, _, err = run_cli(capsys, "data", "synth", "--out", str(tmp_path), "--styles", "jazz,polka-fusion")
    assert_one_line_error(code, err, "polka-fusion")
    code, _, err = run_cli(capsys, "data", "synth", "--n", "3")
    assert_one_line_error(code, err, "--out")
    code, _, _ = run_cli(capsys, "data", "synth", "--out", str(tmp_path / "j"), "--n", "3", "--duration", "2",
                         "--styles", "jazz", "-q")
    assert code == 0
    sides = [json.loads(p.read_text()) for p in (tmp_path / "j" / "audio").glob("*.json")]
    assert len(sides) == 3 and {s["style"] for s in sides} == {"jazz"}

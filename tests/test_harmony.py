"""Chord plans: the composer's harmony grammar as a public plan, and the chord reference the
Noise2Music waveform generator reads (tunecraft.modules.key.chord_features)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tunecraft.data.composer import STYLES, compose, harmony_plan, style_in_text
from tunecraft.errors import InvalidInput
from tunecraft.modules.key import CHORD_TRIADS, chord_features, chord_triad, tonic_frequency


def test_chord_triad_reads_every_name_the_composer_writes():
    assert chord_triad("Am7") == (9, 0, 4)
    assert chord_triad("Bm7b5") == (11, 2, 5)
    assert chord_triad("F#") == (6, 10, 1)
    assert chord_triad("Bbmaj7") == (10, 2, 5)
    assert chord_triad("Caug") == (0, 4, 8) and chord_triad("Csus4") == (0, 5, 7) and chord_triad("Ebdim7") == (3, 6, 9)
    for bad in ("H", "Cm13", "", "am", None, 7):
        with pytest.raises(InvalidInput, match="chord name"):
            chord_triad(bad)
    # every chord of composed pieces parses, and its triad's pitch classes are in the chord
    from tunecraft.data.composer import parse_roman

    seen = set()
    for seed in range(30):
        meta = compose(seed, 12.0).metadata
        for _, name in meta["chords"]:
            seen.add(name)
            chord_triad(name)
    assert len(seen) > 30
    for symbol in ("I", "ii7", "iiø7", "vii°7", "V7", "bVII", "III+", "IVsus4", "Imaj7", "vi9", "Iadd9", "I6"):
        ch = parse_roman(symbol, 2, "major")
        assert set(chord_triad(ch.name())) <= ch.pcs, symbol
    assert set(CHORD_TRIADS) >= {"", "m", "7", "m7", "maj7", "dim", "m7b5", "aug", "sus2", "sus4"}


def test_chord_features_follow_the_plan_at_the_crop_offset():
    rate, n = 3200.0, 6400
    plan = [[1.0, "G"], [0.0, "C"], [1.5, "Am"]]  # any order; C from 0 s, G from 1 s, Am from 1.5 s
    feats = chord_features([plan, None], [3, 4], rate, n, start=[0.5, 0.0])
    assert feats.shape == (2, 12, n) and feats.dtype == torch.float32
    assert torch.count_nonzero(feats[1]) == 0
    t = 0.5 + torch.arange(n, dtype=torch.float64) / rate
    # C3 E3 G3 | G3 B3 D4 | A3 C4 E4 (each tone at or above the root of its octave)
    tones = {"C": (0, 4, 7), "G": (7, 11, 14), "Am": (9, 12, 16)}
    for name, lo, hi in (("C", 0.5, 1.0), ("G", 1.0, 1.5), ("Am", 1.5, 2.5)):
        sel = (t >= lo) & (t < hi)
        for k, pc in enumerate(tones[name]):
            for j, octave in enumerate((3, 4)):
                angle = 2 * math.pi * tonic_frequency(pc, octave) * t[sel]
                torch.testing.assert_close(feats[0, 4 * k + j][sel], torch.sin(angle).float(), atol=2e-4, rtol=0)
                torch.testing.assert_close(feats[0, 4 * k + 2 + j][sel], torch.cos(angle).float(), atol=2e-4, rtol=0)
    # a crop is the same slice of the whole clip's reference
    whole = chord_features([plan], [3, 4], rate, n + 1600)
    torch.testing.assert_close(feats[:1], whole[..., 1600:], atol=2e-4, rtol=0)
    # before the first chord the first one sounds
    early = chord_features([[[1.0, "D"]]], [4], rate, 100)
    torch.testing.assert_close(early, chord_features([[[0.0, "D"]]], [4], rate, 100))
    with pytest.raises(InvalidInput, match="chord name"):
        chord_features([[[0.0, "X"]]], [4], rate, 10)
    with pytest.raises(InvalidInput, match="chord plan"):
        chord_features([[[0.0]]], [4], rate, 10)
    with pytest.raises(InvalidInput, match="finite"):
        chord_features([[[float("nan"), "C"]]], [4], rate, 10)
    with pytest.raises(InvalidInput, match="start times"):
        chord_features([plan], [4], rate, 10, start=[0.0, 1.0])


def test_harmony_plan_is_the_composers_grammar():
    plan = harmony_plan(9, "minor", 134, 10.0, style="latin", rng=1)
    assert plan == harmony_plan(9, "minor", 134, 10.0, style="latin", rng=np.random.default_rng(1))
    times = [t for t, _ in plan]
    assert times[0] == 0.0 and times == sorted(times) and times[-1] < 10.0
    assert plan[0][1].startswith("Am") and plan[-1][1].startswith("Am")  # opens and closes on the tonic chord
    # its chords are those the composer writes for the style and key: every one a composed piece of the
    # same style, key and tempo could hold
    composed = set()
    for seed in range(40):
        meta = compose(seed, 10.0, "latin", key="A minor", bpm=134).metadata
        composed |= {name for _, name in meta["chords"]}
    drawn = {name for s in range(20) for _, name in harmony_plan(9, "minor", 134, 10.0, style="latin", rng=s)}
    assert drawn <= composed and len(drawn) >= 4
    # the chord grid follows the tempo and meter: changes on bar lines (or half bars in slow 4/4)
    for bpm, bpb in ((120, 4), (90, 3), (60, 4)):
        beat = 60.0 / bpm
        for t, _ in harmony_plan(0, "major", bpm, 20.0, beats_per_bar=bpb, rng=3):
            assert abs(t / beat - round(t / beat)) < 1e-2
    # minor plans put the minor third on the tonic chord, major ones the major third
    assert chord_triad(harmony_plan(4, "minor", 100, 8.0, rng=0)[0][1]) == (4, 7, 11)
    assert chord_triad(harmony_plan(4, "major", 100, 8.0, rng=0)[0][1]) == (4, 8, 11)
    # a clip shorter than the composer's 50 ms of slack is one chord: the tonic's
    assert harmony_plan(0, "minor", 110, 0.02, rng=0) == [[0.0, "Cm"]]
    # long plans keep going
    long = harmony_plan(2, "major", 100, 60.0, style="jazz", rng=0)
    assert long[-1][0] > 55.0 and len(long) > 20
    for kwargs, match in ((dict(tonic=12), "tonic"), (dict(mode="dorian"), "mode"), (dict(bpm=5), "bpm"),
                          (dict(duration=0), "duration"), (dict(beats_per_bar=5), "beats_per_bar"),
                          (dict(style="polka"), "style")):
        args = dict(tonic=0, mode="major", bpm=100, duration=4.0) | kwargs
        with pytest.raises(InvalidInput, match=match):
            harmony_plan(args.pop("tonic"), args.pop("mode"), args.pop("bpm"), args.pop("duration"), **args)


def test_style_in_text():
    assert style_in_text("a smoky bossa nova in A minor") == "latin"
    assert style_in_text("Lo-fi hip-hop beat, 80 bpm") == "hiphop"
    assert style_in_text("heavy metal with distorted guitars") == "metal"
    assert style_in_text("a cool jazz trio") == "jazz"
    assert style_in_text("an upbeat POP song") == "pop"
    assert style_in_text("a calm tune") is None and style_in_text("") is None and style_in_text(None) is None
    assert style_in_text("popular music") is None  # whole words only
    for name in STYLES:
        assert style_in_text(f"some {name} music") == name


def test_chord_mel_templates_tell_chords_apart_and_follow_the_plan():
    from tunecraft.modules.key import chord_mel_features, chord_mel_template

    c, cm, a = (chord_mel_template(chord_triad(n)) for n in ("C", "Cm", "A"))
    for tpl in (c, cm, a):
        assert tpl.shape == (80,) and abs(tpl.mean().item()) < 1e-5 and tpl.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-4)
    assert not torch.allclose(c, cm, atol=0.1) and not torch.allclose(c, a, atol=0.1)
    # what sets a differently voiced rendering of a chord apart (octaves 3-4 only, harmonics falling as
    # 1/h^2, random phases; minus the mean over the 24 major and minor triads so rendered) is nearest,
    # by correlation, to that chord's template
    from tunecraft.audio import log_mel

    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000.0

    def rendered(triad):
        wav = np.zeros_like(t)
        for pc in triad:
            for octave in (3, 4):
                for h in range(1, 7):
                    wav += np.sin(2 * np.pi * h * tonic_frequency(pc, octave) * t + rng.uniform(0, 2 * np.pi)) / h ** 2
        mel = log_mel(torch.tensor(0.1 * wav / np.sqrt(np.mean(wav ** 2)), dtype=torch.float32)[None, None])
        return mel.reshape(80, -1)[:, 5:-5].double().mean(dim=1)

    common = torch.stack([rendered((r, (r + k) % 12, (r + 7) % 12)) for r in range(12) for k in (3, 4)]).mean(dim=0)
    names = ("C", "Cm", "A", "Am", "F#", "Ebm", "G7", "Bdim")
    templates = torch.stack([chord_mel_template(chord_triad(n)) for n in names]).double()
    for i, name in enumerate(names):
        prof = rendered(chord_triad(name)) - common
        corr = templates @ ((prof - prof.mean()) / prof.std(unbiased=False)) / 80
        assert int(corr.argmax()) == i, (name, corr)
    # smaller settings give smaller templates; the cache keys on them
    assert chord_mel_template(chord_triad("C"), n_mels=16, n_fft=512, win_length=400).shape == (16,)
    feats = chord_mel_features([[[0.0, "C"], [1.0, "A"]], None], 100.0, 150, start=[0.5, 0.0])
    assert feats.shape == (2, 80, 150) and torch.count_nonzero(feats[1]) == 0
    torch.testing.assert_close(feats[0, :, :50], c[:, None].expand(-1, 50))  # 0.5-1.0 s: C
    torch.testing.assert_close(feats[0, :, 50:], a[:, None].expand(-1, 100))  # from 1.0 s: A

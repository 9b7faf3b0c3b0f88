"""Counterfactual captions (tunecraft.text.counterfactual): one stated fact changed, nothing else."""

import random
import re

import pytest

from tunecraft.errors import InvalidInput
from tunecraft.text.counterfactual import EDITS, counterfactual, pick_counterfactual

CAPTION = ("A cheerful folk tune in the key of Db major at a tempo of 82 BPM. "
           "Tags: folk, Db major, 82 bpm, a minor-key bridge")


def test_mode_swaps_every_major_and_minor_keeping_case():
    out = counterfactual("Key: A Minor. MAJOR lift, minor turn", "mode")
    assert out == "Key: A Major. MINOR lift, major turn"
    assert counterfactual(counterfactual(CAPTION, "mode"), "mode") == CAPTION  # an involution
    assert counterfactual("a calm piano piece", "mode") is None


@pytest.mark.parametrize("seed", range(20))
def test_tempo_moves_every_bpm_by_one_factor_outside_the_hit_window(seed):
    out = counterfactual(CAPTION, "tempo", random.Random(seed))
    bpms = [int(b) for b in re.findall(r"(\d+) ?bpm", out, flags=re.IGNORECASE)]
    assert len(bpms) == 2 and bpms[0] == bpms[1]
    assert abs(bpms[0] / 82 - 1) > 0.15  # never within the evaluation's 6 %
    assert re.sub(r"\d+", "N", out) == re.sub(r"\d+", "N", CAPTION)  # nothing else changed
    assert counterfactual("slow and sad, 200 bpm", "tempo", random.Random(seed)) is not None
    assert counterfactual("slow and sad", "tempo") is None
    spelled = counterfactual("a groove at 90 beats per minute", "tempo", random.Random(seed))
    assert spelled.endswith(" beats per minute") and abs(int(spelled.split()[-4]) / 90 - 1) > 0.15


@pytest.mark.parametrize("seed", range(12))
def test_tonic_moves_every_key_by_one_interval_and_leaves_articles_alone(seed):
    out = counterfactual(CAPTION, "tonic", random.Random(seed))
    keys = re.findall(r"\b([A-G][#b]?) major\b", out)
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0] not in ("Db", "C#")
    assert out.endswith("a minor-key bridge")  # "a minor" is an article, not A minor
    assert counterfactual("in a minor key", "tonic") is None


def test_pick_draws_among_the_stated_facts_and_rejects_unknown_edits():
    rng = random.Random(0)
    picked = {pick_counterfactual("C minor at 90 bpm", EDITS, rng)[0] for _ in range(60)}
    assert picked == {"mode", "tempo", "tonic"}
    assert pick_counterfactual("C minor", ("tempo", "mode"), rng) == ("mode", "C major")
    assert pick_counterfactual("no facts at all", EDITS, rng) is None
    # a tempo at the 300 bpm bound cannot always move: then nothing, never ("tempo", None)
    picks = [pick_counterfactual("300 bpm", ("tempo",), random.Random(s)) for s in range(20)]
    assert None in picks and all(p is None or (p[0] == "tempo" and p[1] != "300 bpm") for p in picks)
    with pytest.raises(InvalidInput, match="unknown caption edit"):
        counterfactual(CAPTION, "genre")


def test_guidance_negatives_change_one_stated_fact_per_list():
    from tunecraft.text.counterfactual import guidance_negatives

    texts = ["A jazz tune (142 bpm, Eb minor).", "calm piano", "a groove at 90 beats per minute"]
    assert guidance_negatives(texts) == [["A jazz tune (142 bpm, Eb major).", "calm piano",
                                          "a groove at 90 beats per minute"]]  # the default: mode only
    mode, slower, faster = guidance_negatives(texts, [("mode", None), ("tempo", 0.72), ("tempo", 1.4)])
    assert mode == guidance_negatives(texts)[0]
    assert slower == ["A jazz tune (102 bpm, Eb minor).", "calm piano", "a groove at 65 beats per minute"]
    assert faster == ["A jazz tune (199 bpm, Eb minor).", "calm piano", "a groove at 126 beats per minute"]
    assert guidance_negatives(["calm piano", "soft strings"]) == []  # nothing stated: no extra rows
    assert guidance_negatives(["in C major"]) == [["in C minor"]]

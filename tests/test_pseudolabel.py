"""Pseudo-labelling (Noise2Music 3.5): top-K retrieval, inverse-frequency sampling, sidecars, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tunecraft.cli import main
from tunecraft.errors import InvalidInput
from tunecraft.joint.pseudolabel import (
    VOCAB_DIR,
    ClipLabels,
    PseudoLabeler,
    Vocabulary,
    build_vocabularies,
    caption_frequencies,
    clip_rng,
    merge_sidecar,
    read_vocabulary,
    sample_inverse_frequency,
)

# ---- the maths --------------------------------------------------------------------------------


def test_caption_frequencies_count_clips_per_caption():
    cand = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4]])
    assert caption_frequencies(cand, 6).tolist() == [1, 2, 3, 2, 1, 0]
    with pytest.raises(InvalidInput):
        caption_frequencies(np.array([1, 2]), 3)


def test_inverse_frequency_sampling_probabilities_and_no_replacement():
    counts = np.array([1, 9, 3, 3])
    rng = np.random.default_rng(0)
    first = [sample_inverse_frequency([0, 1], counts, 1, rng)[0] for _ in range(4000)]
    # p(0) = (1/1) / (1/1 + 1/9) = 0.9
    assert abs(np.mean(np.array(first) == 0) - 0.9) < 0.02
    for _ in range(50):
        draw = sample_inverse_frequency([0, 1, 2, 3], counts, 3, rng)
        assert len(set(draw)) == 3 and set(draw) <= {0, 1, 2, 3}
    assert sorted(sample_inverse_frequency([3, 1, 2], counts, 3, rng)) == [1, 2, 3]
    with pytest.raises(InvalidInput):
        sample_inverse_frequency([0, 1], counts, 3, rng)
    with pytest.raises(InvalidInput):
        sample_inverse_frequency([5], np.array([1, 1, 1, 1, 1, 0]), 1, rng)


class StubModel:
    """A joint model whose text embeddings are fixed unit vectors: caption j -> e_j."""

    def __init__(self, texts):
        self.index = {t: i for i, t in enumerate(texts)}
        self.dim = len(texts)
        self.calls = 0

    def embed_text(self, texts):
        self.calls += 1
        return torch.eye(self.dim)[[self.index[t] for t in texts]]


def test_labeler_top_k_and_frequencies_over_the_whole_set():
    vocab = Vocabulary("v", [f"caption {i}" for i in range(6)])
    model = StubModel(vocab.entries)
    labeler = PseudoLabeler(model, [vocab], k=3, k_prime=2, seed=1, text_batch_size=4)
    # clip i is closest to captions i, i+1, i+2 (in that order)
    audio = torch.zeros(4, 6)
    for i in range(4):
        audio[i, i], audio[i, i + 1], audio[i, i + 2] = 0.8, 0.5, 0.3
    labels = labeler.label(audio, [f"clip{i}.wav" for i in range(4)])
    assert model.calls == 2  # 6 captions in batches of 4, embedded once
    labeler.label(audio, [f"clip{i}.wav" for i in range(4)])
    assert model.calls == 2
    for i, lab in enumerate(labels):
        assert [c for c, _ in lab.top_k["v"]] == [f"caption {i}", f"caption {i + 1}", f"caption {i + 2}"]
        assert lab.top_k["v"][0][1] == pytest.approx(0.8)
        assert len(lab.sampled["v"]) == 2 and set(lab.sampled["v"]) <= {c for c, _ in lab.top_k["v"]}
    # the draws of a clip depend on its key and the seed, not on the order of the clips
    perm = [2, 0, 3, 1]
    again = labeler.label(audio[perm], [f"clip{i}.wav" for i in perm])
    assert {lab.key: lab.sampled for lab in again} == {lab.key: lab.sampled for lab in labels}
    other = PseudoLabeler(model, [vocab], k=3, k_prime=2, seed=2).label(audio, [f"clip{i}.wav" for i in range(4)])
    assert all(set(o.sampled["v"]) <= {c for c, _ in o.top_k["v"]} for o in other)
    # rare captions are preferred: caption 0 appears in one list, caption 2 in three
    many = PseudoLabeler(model, [vocab], k=3, k_prime=1, seed=0)
    audio_many = audio[[0] * 1 + [1, 2, 3]]
    picks = []
    for s in range(300):
        many.seed = s
        picks.append(many.label(audio_many, ["a", "b", "c", "d"])[0].sampled["v"][0])
    share = {c: picks.count(c) / len(picks) for c in set(picks)}
    # counts: caption0 1, caption1 2, caption2 3 -> p = (1, 1/2, 1/3) / (11/6) = 0.545, 0.273, 0.182
    assert abs(share["caption 0"] - 6 / 11) < 0.08 and abs(share["caption 2"] - 2 / 11) < 0.08


def test_labeler_validates_arguments():
    vocab = Vocabulary("v", ["a", "b", "c"])
    model = StubModel(vocab.entries)
    with pytest.raises(InvalidInput, match="fewer than k"):
        PseudoLabeler(model, [vocab], k=5, k_prime=1)
    with pytest.raises(InvalidInput, match="k_prime"):
        PseudoLabeler(model, [vocab], k=2, k_prime=3)
    with pytest.raises(InvalidInput, match="one per vocabulary"):
        PseudoLabeler(model, [vocab], k=2, k_prime=[1, 1])
    with pytest.raises(InvalidInput):
        PseudoLabeler(model, [], k=2)


def test_merge_sidecar_policy():
    lab = ClipLabels("x.wav", {"long_form": [("A calm song.", 0.9), ("A sad song.", 0.8)], "short_tags": [("calm", 0.7)]},
                     {"long_form": ["A sad song."], "short_tags": ["calm"]})
    record = {"model": "joint-tiny", "k": 2}
    fresh = merge_sidecar(None, lab, record)
    assert fresh["description"] == "A sad song." and fresh["captions"] == ["A sad song.", "calm"]
    assert fresh["pseudo_labels"]["vocabularies"]["long_form"]["top_k"][0] == {"caption": "A calm song.", "score": 0.9}
    kept = merge_sidecar({"title": "T", "description": "human words", "captions": ["mine"], "bpm": 90,
                          "pseudo_labels": {"old": True}}, lab, record)
    assert kept["title"] == "T" and kept["description"] == "human words" and kept["captions"] == ["mine"]
    assert kept["bpm"] == 90 and "old" not in kept["pseudo_labels"] and kept["pseudo_labels"]["model"] == "joint-tiny"


# ---- vocabularies ---------------------------------------------------------------------------------


def test_shipped_vocabularies_are_generated_from_the_composer():
    built = build_vocabularies()
    for name in ("long_form", "short_tags"):
        shipped = read_vocabulary(name)
        assert shipped.entries == built[name], "regenerate with python -m tunecraft.joint.pseudolabel build-vocab"
        assert Path(shipped.source) == VOCAB_DIR / f"{name}.txt"
    tags = set(built["short_tags"])
    assert {"bossa nova", "tenor sax", "F# minor", "120 bpm", "mid-tempo", "melancholic"} <= tags
    assert len(built["long_form"]) > 1000 and all(s.endswith(".") for s in built["long_form"])


def test_read_vocabulary(tmp_path):
    f = tmp_path / "v.txt"
    f.write_text("# a comment\n calm  piano \n\ncalm piano\nfast drums\n")
    v = read_vocabulary(f)
    assert v.name == "v" and v.entries == ["calm piano", "fast drums"]
    with pytest.raises(InvalidInput):
        read_vocabulary(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InvalidInput):
        read_vocabulary(tmp_path / "empty.txt")


def test_clip_rng_is_deterministic():
    assert clip_rng(3, "a/b.wav").integers(1 << 30) == clip_rng(3, "a/b.wav").integers(1 << 30)
    assert clip_rng(3, "a/b.wav").integers(1 << 30) != clip_rng(3, "a/c.wav").integers(1 << 30)


# ---- end to end with joint-tiny --------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from tunecraft.data.synth import synthesize_corpus

    root = tmp_path_factory.mktemp("pl")
    synthesize_corpus(root / "corpus", n=6, duration=3.0, seed=5, sample_rate=16000, channels=1, quiet=True)
    return root / "corpus"


@pytest.fixture(scope="module")
def small_vocab(tmp_path_factory):
    """Every 40th long-form sentence and every 6th tag of the shipped vocabularies (embedding all
    2.4k captions with MiniLM takes ~20 s on one core; the maths does not depend on the size)."""
    root = tmp_path_factory.mktemp("vocab")
    paths = []
    for name, step in (("long_form", 40), ("short_tags", 6)):
        entries = read_vocabulary(name).entries[::step]
        (root / f"{name}.txt").write_text("\n".join(entries) + "\n")
        paths.append(str(root / f"{name}.txt"))
    return paths


def test_cli_pseudolabel_writes_sidecars_and_manifest(corpus, small_vocab, tmp_path, capsys):
    folder = tmp_path / "audio"
    shutil.copytree(corpus / "audio", folder)
    side = sorted(folder.glob("*.json"))
    before = {p.name: json.loads(p.read_text()) for p in side}
    # an unlabelled clip without sidecar, a corrupt file and a non-audio file
    bare = folder / "sub" / "bare.wav"
    bare.parent.mkdir()
    shutil.copy(sorted(folder.glob("*.wav"))[0], bare)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    (folder / "notes.txt").write_text("not audio")
    manifest = tmp_path / "labels.jsonl"
    with pytest.warns(UserWarning, match="corrupt.wav"):
        rc = main(["data", "pseudolabel", str(folder), "--vocab", *small_vocab, "--k", "5",
                   "--k-prime", "2,3", "--seed", "7", "-o", str(manifest)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "pseudo-labelled 7 of 8 clip(s)" in out and "skipped 1" in out
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    assert len(lines) == 7 and all(set(x) >= {"path", "duration", "sample_rate", "info_path"} for x in lines)
    for line in lines:
        info = json.loads((manifest.parent / line["info_path"]).read_text())
        pl = info["pseudo_labels"]
        assert pl["k"] == 5 and pl["k_prime"] == {"long_form": 2, "short_tags": 3} and pl["seed"] == 7
        for name, n in (("long_form", 2), ("short_tags", 3)):
            v = pl["vocabularies"][name]
            scores = [x["score"] for x in v["top_k"]]
            assert len(scores) == 5 and scores == sorted(scores, reverse=True)
            assert len(v["sampled"]) == n and set(v["sampled"]) <= {x["caption"] for x in v["top_k"]}
    # existing sidecars keep every field they had
    for p in side:
        now = json.loads(p.read_text())
        assert {k: v for k, v in now.items() if k != "pseudo_labels"} == before[p.name]
    bare_info = json.loads(bare.with_suffix(".json").read_text())
    assert bare_info["captions"] == [c for name in ("long_form", "short_tags")
                                     for c in bare_info["pseudo_labels"]["vocabularies"][name]["sampled"]]
    assert bare_info["description"] == bare_info["captions"][0]
    # same seed, same labels (the file is rewritten identically)
    first = bare.with_suffix(".json").read_text()
    with pytest.warns(UserWarning, match="corrupt.wav"):
        assert main(["data", "pseudolabel", str(folder), "--vocab", *small_vocab, "--k", "5", "--k-prime", "2,3",
                     "--seed", "7", "-o", str(manifest), "-q"]) == 0
    assert bare.with_suffix(".json").read_text() == first


def test_cli_pseudolabel_sidecar_dir_leaves_input_untouched(corpus, small_vocab, tmp_path):
    from tunecraft.data import AudioDataset, load_info

    before = {p: p.read_bytes() for p in (corpus / "audio").iterdir()}
    out = tmp_path / "labels"
    assert main(["data", "pseudolabel", str(corpus / "data.jsonl"), "--vocab", *small_vocab, "--sidecar-dir",
                 str(out), "-q"]) == 0
    assert {p: p.read_bytes() for p in (corpus / "audio").iterdir()} == before
    ds = AudioDataset(out / "pseudolabels.jsonl", return_info=False)
    assert len(ds.metas) == 6
    info = load_info(ds.metas[0])
    assert info["style"] and "pseudo_labels" in info and info["captions"]  # merged from the original sidecar


@pytest.mark.parametrize("argv", [
    ["--k", "0"],
    ["--k", "3", "--k-prime", "4"],
    ["--k-prime", "x"],
    ["--vocab", "no-such-vocab.txt"],
    ["--k", "400"],  # more than short_tags holds
])
def test_cli_pseudolabel_bad_input_exit_2(argv, corpus, capsys):
    assert main(["data", "pseudolabel", str(corpus / "audio"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err


def test_cli_pseudolabel_empty_folder_exit_2(tmp_path, capsys):
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    assert main(["data", "pseudolabel", str(tmp_path)]) == 2
    assert "no readable audio" in capsys.readouterr().err

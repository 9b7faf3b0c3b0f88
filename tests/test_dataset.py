"""Tests for tunecraft.data.manifest and tunecraft.data.dataset."""

from __future__ import annotations

import gzip
import json
import os
import warnings
import zipfile

import numpy as np
import pytest
import torch

from tunecraft.audio import save_audio
from tunecraft.data import (
    SIDECAR_FIELDS,
    AudioDataset,
    AudioDatasetConfig,
    AudioMeta,
    build_manifest,
    collate_audio,
    load_info,
    read_manifest,
    write_manifest,
)
from tunecraft.errors import InvalidInput, TunecraftError

SR = 8000


def _tone(seconds: float, freq: float, sr: int = SR, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return np.repeat((0.4 * np.sin(2 * np.pi * freq * t))[None], channels, axis=0).astype(np.float32)


def _ramp(seconds: float, sr: int = SR) -> np.ndarray:
    """Float samples that encode their own time, so crops can be located exactly."""
    n = int(round(seconds * sr))
    return (np.arange(n, dtype=np.float64) / n * 0.9)[None].astype(np.float32)


def _write(path, wav, sr=SR, subtype=None):
    return save_audio(path, wav, sr, subtype=subtype)


def _garbled_flac(path, seconds=1.0):
    """A FLAC with an intact header (info works) but garbage audio frames."""
    good = _write(path, _tone(seconds, 330))
    data = bytearray(good.read_bytes())
    data[120:] = np.random.default_rng(1).integers(0, 256, len(data) - 120, dtype=np.uint8).tobytes()
    good.write_bytes(bytes(data))
    return good


@pytest.fixture
def audiocraft_folder(tmp_path):
    """An audiocraft-style dataset: egs/data.jsonl with absolute paths, sidecar .json per file."""
    audio = tmp_path / "audio"
    paths = []
    for i, (dur, freq) in enumerate([(2.0, 220), (1.5, 440), (3.0, 330)]):
        p = _write(audio / f"track{i}.wav", _tone(dur, freq, channels=2))
        side = {
            "title": f"Track {i}",
            "artist": "tester",
            "key": "C major",
            "bpm": "120" if i == 0 else 90,
            "genre": "ambient",
            "moods": "calm, dreamy" if i == 0 else ["happy"],
            "keywords": ["piano"],
            "description": f"calm piano number {i}",
            "instrument": "piano",
            "self_id": f"track{i}",
        }
        (audio / f"track{i}.json").write_text(json.dumps(side))
        paths.append(p)
    egs = tmp_path / "egs" / "train"
    egs.mkdir(parents=True)
    with open(egs / "data.jsonl", "w") as f:
        for p, dur in zip(paths, [2.0, 1.5, 3.0]):
            # audiocraft writes every key, with nulls, absolute paths
            f.write(json.dumps({"path": str(p), "duration": dur, "sample_rate": SR, "amplitude": None,
                                "weight": None, "info_path": None}) + "\n")
    return egs / "data.jsonl"


# ----------------------------------------------------------------------------- manifests


@pytest.mark.parametrize("name", ["data.jsonl", "data.jsonl.gz"])
def test_manifest_round_trip_relative_paths(tmp_path, name):
    root = tmp_path / "ds"
    a = _write(root / "clips" / "a.wav", _tone(1.0, 220))
    b = _write(root / "b.flac", _tone(0.5, 440))
    outside = _write(tmp_path / "elsewhere" / "c.wav", _tone(0.25, 110))
    metas = [
        AudioMeta(str(a), 1.0, SR, weight=2.0, info_path=str(root / "clips" / "a.json")),
        AudioMeta(str(b), 0.5, SR, amplitude=0.4, extra={"split": "train"}),
        AudioMeta(str(outside), 0.25, SR),
    ]
    path = write_manifest(root / name, metas)
    raw = gzip.open(path, "rt").read() if name.endswith(".gz") else path.read_text()
    lines = [json.loads(x) for x in raw.splitlines()]
    assert lines[0]["path"] == "clips/a.wav" and lines[0]["info_path"] == "clips/a.json"
    assert lines[2]["path"] == str(outside)  # outside the folder: stays absolute
    assert list(lines[1])[:6] == ["path", "duration", "sample_rate", "amplitude", "weight", "info_path"]
    assert lines[1]["split"] == "train"
    back = read_manifest(path)
    assert back == metas
    # the folder can be moved: relative entries follow it
    moved = tmp_path / "moved"
    os.rename(root, moved)
    again = read_manifest(moved)  # a folder holding the manifest
    assert again[0].path == str(moved / "clips" / "a.wav") and os.path.exists(again[0].path)
    assert not [p for p in os.listdir(moved) if p.endswith(".tmp")]


def test_read_manifest_errors_name_the_line(tmp_path):
    m = tmp_path / "data.jsonl"
    m.write_text(json.dumps({"path": "a.wav", "duration": 1.0, "sample_rate": SR}) + "\n\n{not json\n")
    with pytest.raises(InvalidInput, match=r"data\.jsonl:3: invalid JSON"):
        read_manifest(m)
    m.write_text(json.dumps({"path": "a.wav", "sample_rate": SR}) + "\n")
    with pytest.raises(InvalidInput, match=r"data\.jsonl:1: missing required key 'duration'"):
        read_manifest(m)
    m.write_text(json.dumps({"path": "a.wav", "duration": 1.0, "sample_rate": "fast"}) + "\n")
    with pytest.raises(InvalidInput, match=r":1: 'sample_rate'"):
        read_manifest(m)
    with pytest.raises(InvalidInput, match="not found"):
        read_manifest(tmp_path / "nope.jsonl")


def test_build_manifest_skips_unreadable_and_finds_sidecars(tmp_path):
    root = tmp_path / "music"
    _write(root / "a.wav", _tone(1.0, 220))
    _write(root / "sub" / "b.flac", _tone(0.5, 440))
    (root / "sub" / "b.json").write_text(json.dumps({"description": "a flac tone"}))
    (root / "broken.wav").write_bytes(b"RIFF" + os.urandom(200))
    (root / "notes.txt").write_text("ignored, not audio")
    with pytest.warns(UserWarning, match="skipped 1 unreadable"):
        result = build_manifest(root, out=root / "data.jsonl")
    assert len(result) == 2 and [s.path for s in result.skipped] == [str(root / "broken.wav")]
    assert "2 audio file(s)" in str(result) and "1 unreadable" in str(result)
    metas = read_manifest(root / "data.jsonl")
    assert [os.path.basename(m.path) for m in metas] == ["a.wav", "b.flac"]
    assert metas[0].info_path is None and metas[1].info_path == str(root / "sub" / "b.json")
    assert metas[1].duration == pytest.approx(0.5) and metas[1].sample_rate == SR
    with pytest.warns(UserWarning, match="broken.wav"):
        flat = build_manifest(root, recursive=False)
    assert [os.path.basename(m.path) for m in flat] == ["a.wav"]


# ----------------------------------------------------------------------------- datasets


def test_audiocraft_manifest_with_sidecars(audiocraft_folder):
    ds = AudioDataset(audiocraft_folder, segment_duration=1.0)
    assert len(ds) == 3 and ds.skipped == []
    item = ds[0]
    assert item["wav"].shape == (2, SR) and item["wav"].dtype == torch.float32
    assert item["sample_rate"] == SR
    assert item["description"] == "calm piano number 0"
    info = item["info"]
    assert set(SIDECAR_FIELDS) <= set(info) and info["self_id"] == "track0"  # extras kept
    assert info["moods"] == ["calm", "dreamy"] and info["bpm"] == 120.0 and info["key"] == "C major"
    assert ds[1]["info"]["moods"] == ["happy"]
    # the folder form finds the manifest too
    assert len(AudioDataset(audiocraft_folder.parent)) == 3


def test_info_path_and_zip_sidecar(tmp_path):
    a = _write(tmp_path / "a.wav", _tone(0.5, 220))
    with zipfile.ZipFile(tmp_path / "meta.zip", "w") as zf:
        zf.writestr("info/a.json", json.dumps({"description": "zipped caption", "genre": "jazz"}))
    meta = AudioMeta(str(a), 0.5, SR, info_path=str(tmp_path / "meta.zip") + ":info/a.json")
    write_manifest(tmp_path / "data.jsonl", [meta])
    (back,) = read_manifest(tmp_path / "data.jsonl")
    assert back.info_path == meta.info_path
    info = load_info(back)
    assert info["description"] == "zipped caption" and info["genre"] == "jazz" and info["moods"] == []


def test_plain_folder_with_txt_captions(tmp_path):
    _write(tmp_path / "one.wav", _tone(1.0, 220))
    (tmp_path / "one.txt").write_text("  a slow sine in A  \n")
    _write(tmp_path / "two.ogg", _tone(1.0, 440))
    _write(tmp_path / "three.flac", _tone(1.0, 330))
    (tmp_path / "three.json").write_text(json.dumps({"genre": "drone"}))  # sidecar without description
    (tmp_path / "three.txt").write_text("drone in E")
    ds = AudioDataset(tmp_path, return_info=True)
    by_name = {os.path.basename(ds[i]["path"]): ds[i] for i in range(len(ds))}
    assert by_name["one.wav"]["description"] == "a slow sine in A"
    assert by_name["two.ogg"]["description"] == ""
    assert by_name["three.flac"]["description"] == "drone in E" and by_name["three.flac"]["info"]["genre"] == "drone"
    assert by_name["one.wav"]["wav"].shape == (1, SR) and by_name["one.wav"]["seek_time"] == 0.0
    quiet = AudioDataset(tmp_path, return_info=False)
    assert quiet[0]["info"] == {} and quiet[0]["description"] == ""


def test_crops_length_and_determinism(tmp_path):
    paths = [_write(tmp_path / f"r{i}.wav", _ramp(3.0), subtype="float") for i in range(3)]
    metas = [AudioMeta(str(p), 3.0, SR) for p in paths]
    ds = AudioDataset(metas, segment_duration=0.5, seed=7)
    ds2 = AudioDataset(metas, segment_duration=0.5, seed=7)
    full = torch.from_numpy(_ramp(3.0))
    starts = []
    for i in range(3):
        a, b = ds[i], ds2[i]
        assert a["wav"].shape == (1, 4000)
        assert torch.equal(a["wav"], b["wav"]) and a["seek_time"] == b["seek_time"]
        s = round(a["seek_time"] * SR)
        assert 0 <= a["seek_time"] <= 2.5 and torch.equal(a["wav"], full[:, s : s + 4000])  # the crop is where it says
        starts.append(a["seek_time"])
    assert len(set(starts)) == 3  # different items crop differently
    ds.set_epoch(1)
    assert ds.epoch == 1 and ds[0]["seek_time"] != starts[0]
    ds.set_epoch(0)
    assert ds[0]["seek_time"] == starts[0]
    assert AudioDataset(metas, segment_duration=0.5, seed=8)[0]["seek_time"] != starts[0]
    assert AudioDataset(metas, segment_duration=0.5, random_crop=False)[0]["seek_time"] == 0.0


def test_resampling_channels_padding_and_collate(tmp_path):
    _write(tmp_path / "long.wav", _tone(2.0, 220, channels=2))
    _write(tmp_path / "short.wav", _tone(0.3, 440))
    ds = AudioDataset(tmp_path, segment_duration=1.0, sample_rate=16000, channels=1)
    for i in range(2):
        item = ds[i]
        assert item["sample_rate"] == 16000 and item["wav"].shape == (1, 16000)
    short = [ds[i] for i in range(2) if "short" in ds[i]["path"]][0]
    assert short["wav"][:, int(0.31 * 16000) :].abs().max() == 0  # zero-padded tail
    nopad = AudioDataset(tmp_path, segment_duration=1.0, sample_rate=16000, channels=2, pad=False)
    batch = collate_audio([nopad[0], nopad[1]])
    lengths = sorted(batch["wav_lengths"].tolist())
    assert batch["wav"].shape == (2, 2, 16000) and lengths == [round(0.3 * 16000), 16000]
    short_row = int(batch["wav_lengths"].argmin())
    assert batch["mask"][short_row].sum() == round(0.3 * 16000) and batch["mask"][1 - short_row].all()
    assert isinstance(batch["description"], list) and len(batch["info"]) == 2 and batch["skipped"] == []
    assert batch["seek_time"].dtype == torch.float64 and batch["sample_rate"] == 16000
    mixed = AudioDataset(tmp_path)  # native channels differ: collate explains what to set
    with pytest.raises(InvalidInput, match="channels="):
        collate_audio([mixed[0], mixed[1]])
    short_only = AudioDataset(tmp_path, min_duration=1.0)
    assert len(short_only) == 1 and "long" in short_only[0]["path"]


def test_weights_and_sampler(tmp_path):
    paths = [_write(tmp_path / f"w{i}.wav", _tone(0.2, 220)) for i in range(3)]
    metas = [AudioMeta(str(paths[0]), 0.2, SR, weight=3.0), AudioMeta(str(paths[1]), 0.2, SR),
             AudioMeta(str(paths[2]), 0.2, SR, weight=0.0)]
    ds = AudioDataset(metas)
    assert ds.sampler_weights().tolist() == [3.0, 1.0, 0.0]
    drawn = list(ds.weighted_sampler(num_samples=400, generator=torch.Generator().manual_seed(0)))
    counts = np.bincount(drawn, minlength=3)
    assert counts[2] == 0 and 2.2 < counts[0] / counts[1] < 4.0
    with pytest.raises(InvalidInput):
        AudioDataset([AudioMeta(str(paths[0]), 0.2, SR, weight=-1.0)])


def test_corrupt_files_are_skipped_and_counted(tmp_path, audiocraft_folder):
    """One corrupt-at-header file, one missing file and one with garbage data in the manifest."""
    good = read_manifest(audiocraft_folder)
    (tmp_path / "header.wav").write_bytes(b"this is not a wav file" * 20)
    garbled = _garbled_flac(tmp_path / "garbled.flac")
    metas = good + [
        AudioMeta(str(tmp_path / "header.wav"), 1.0, SR),
        AudioMeta(str(tmp_path / "missing.wav"), 1.0, SR),
        AudioMeta(str(garbled), 1.0, SR),
    ]
    manifest = write_manifest(tmp_path / "mixed.jsonl", metas)
    with pytest.warns(UserWarning) as rec:
        ds = AudioDataset(manifest, segment_duration=0.5, channels=1)
    assert [os.path.basename(s.path) for s in ds.skipped] == ["header.wav", "missing.wav"]
    assert any("header.wav" in str(w.message) for w in rec)
    assert len(ds) == 4  # the garbled file's header is fine: it fails only when decoded
    bad = [i for i in range(len(ds)) if ds.metas[i].path == str(garbled)][0]
    with pytest.warns(UserWarning, match="garbled.flac"):
        item = ds[bad]
    assert item["path"] != str(garbled) and item["wav"].shape == (1, SR // 2)
    assert item["skipped"] == [{"path": str(garbled), "reason": item["skipped"][0]["reason"]}]
    assert ds.num_load_failures == 1 and os.path.basename(ds.skipped[-1].path) == "garbled.flac"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # known-bad files are not retried
        again = ds[bad]
    assert again["path"] == item["path"] and again["skipped"] == [] and ds.num_load_failures == 1


def test_all_bad_raises(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"junk")
    with pytest.warns(UserWarning):
        with pytest.raises(TunecraftError, match="all 1 file"):
            AudioDataset(tmp_path)
    with pytest.raises(TunecraftError, match="no audio files"):
        AudioDataset([])
    garbled = _garbled_flac(tmp_path / "g.flac")
    ds = AudioDataset([AudioMeta(str(garbled), 1.0, SR)])
    with pytest.warns(UserWarning), pytest.raises(TunecraftError, match="failed to load"):
        ds[0]


def test_dataloader_two_workers_reports_failures(tmp_path, audiocraft_folder):
    metas = read_manifest(audiocraft_folder) + [AudioMeta(str(_garbled_flac(tmp_path / "bad.flac")), 1.0, SR)]
    ds = AudioDataset(metas, segment_duration=0.5, sample_rate=SR, channels=2)
    ds.set_epoch(3)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_audio, shuffle=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batches = list(loader)
    assert [b["wav"].shape for b in batches] == [(2, 2, SR // 2), (2, 2, SR // 2)]
    paths = [p for b in batches for p in b["path"]]
    assert str(tmp_path / "bad.flac") not in paths and len(paths) == 4
    # the same crops as in the main process (seeded by seed, epoch, index)
    assert torch.equal(batches[0]["wav"][1], ds[1]["wav"])
    skipped = [s for b in batches for s in b["skipped"]]
    assert [s["path"] for s in skipped] == [str(tmp_path / "bad.flac")]
    assert ds.num_load_failures == 1  # counted in a worker, visible here
    assert ds.update_skipped(batches[1]) == 1 and ds.skipped[-1].path == str(tmp_path / "bad.flac")


def test_config_round_trip(audiocraft_folder):
    cfg = AudioDatasetConfig(source=str(audiocraft_folder), segment_duration=1.0, sample_rate=SR, channels=1, seed=3)
    cfg2 = AudioDatasetConfig.from_json(cfg.to_json())
    assert cfg2 == cfg
    ds = AudioDataset.from_config(cfg2)
    assert len(ds) == 3 and ds.seed == 3 and ds[0]["wav"].shape == (1, SR)
    with pytest.raises(InvalidInput):
        AudioDataset.from_config(AudioDatasetConfig())

"""Model directories written through tunecraft.pretrained.write_model_dir, and export pruning."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from tunecraft.codecs import MaskedAEConfig, MaskedAutoencoder
from tunecraft.modules.bottlenecks import MaskedBottleneckConfig
from tunecraft.modules.seanet import SEANetConfig
from tunecraft.pretrained import state_for_saving, write_model_dir


def tiny_mae() -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(MaskedAEConfig(
        sample_rate=8000, seanet=SEANetConfig(channels=2, dimension=8, n_filters=4, ratios=[4, 2], lstm=0),
        bottleneck=MaskedBottleneckConfig(latent_dim=6))).eval()


def test_write_model_dir_is_atomic_and_keeps_other_files(tmp_path):
    model = torch.nn.Linear(3, 2)
    meta = {"class": "Linear", "format_version": 1, "config": {"a": 1}}
    d = tmp_path / "m"
    d.mkdir()
    (d / "training.json").write_text("{}\n")
    write_model_dir(d, meta, state_for_saving(model))
    assert (d / "config.json").read_text() == json.dumps(meta, indent=2) + "\n"
    with safe_open(str(d / "model.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pt", "class": "Linear"}
        assert torch.equal(f.get_tensor("weight"), model.weight.detach())
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors", "training.json"]
    assert (d / "model.safetensors").stat().st_mode & 0o044  # readable like any created file
    # a failing write leaves the previous files intact and no temporary behind
    before = (d / "model.safetensors").read_bytes()
    with pytest.raises(Exception):
        write_model_dir(d, meta, {"weight": "not a tensor"})
    assert (d / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in d.iterdir()) == ["config.json", "model.safetensors", "training.json"]


def test_state_for_saving_half_precision_keeps_buffers():
    mae = tiny_mae()
    state = state_for_saving(mae, "float16")
    assert state["encoder.model.0.conv.conv.bias"].dtype == torch.float16
    assert state["whitener.sum_outer"].dtype == torch.float64
    with pytest.raises(Exception, match="storage dtype"):
        state_for_saving(mae, "int8")


def test_shipped_export_prunes_the_whitening_accumulators(tmp_path):
    mae = tiny_mae()
    mae.fit_whitening(0.3 * torch.randn(4, 2, 800))
    x = 0.3 * torch.randn(1, 2, 400)
    d16 = mae.save_pretrained(tmp_path / "fp16", dtype="float16")  # what the export ships
    with safe_open(str(d16 / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert {"whitener.mean", "whitener.whitening", "whitener.unwhitening", "whitener.fitted"} <= keys
    assert not keys & {"whitener.count", "whitener.sum", "whitener.sum_outer"}
    loaded = MaskedAutoencoder.from_pretrained(d16)
    assert loaded.is_whitened and float(loaded.whitener.count) == 0.0
    torch.testing.assert_close(loaded.whitener.whitening, mae.whitener.whitening)
    assert torch.allclose(loaded.encode(x), mae.encode(x), atol=5e-2)
    # a float32 save keeps them, so accumulation can go on after loading
    d32 = mae.save_pretrained(tmp_path / "fp32")
    again = MaskedAutoencoder.from_pretrained(d32)
    assert torch.equal(again.whitener.sum_outer, mae.whitener.sum_outer)
    assert torch.equal(again.encode(x), mae.encode(x))

"""Codec training tasks (codec-rvq, vae-gan, masked-ae): data, warm-up, training, export,
EMA with buffers, and the shipped codec bundles."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file
from torch import nn

from tunecraft.codecs import CompressionModel, MaskedAutoencoder, RVQCodec, VAEGANCodec, load_codec
from tunecraft.pretrained import BUNDLES_DIR
from tunecraft.codecs.tasks import (
    CodecClipDataset,
    CodecDataConfig,
    MaskedAETask,
    MaskedAETaskConfig,
    RVQCodecTask,
    RVQCodecTaskConfig,
    VAEGANTask,
    VAEGANTaskConfig,
    cpu_masked_ae_config,
    cpu_rvq_codec_config,
    cpu_vae_gan_config,
)
from tunecraft.data import resolve_split
from tunecraft.errors import CheckpointError, ConfigError, InvalidInput
from tunecraft.modules.bottlenecks import KLBottleneckConfig, MaskedBottleneckConfig
from tunecraft.modules.losses import CodecLossConfig
from tunecraft.modules.quantization import RVQConfig
from tunecraft.modules.seanet import SEANetConfig
from tunecraft.train import get_task_class, load_recipe, run_recipe
from tunecraft.train.ema import EMA
from tunecraft.train.export import export_checkpoint

SR = 8000
TINY_LOSS = dict(mel_scales=[5, 6, 7], mel_n_mels=16)


pytestmark = pytest.mark.usefixtures("single_thread")


def _clip(rng: np.random.Generator, seconds: float, channels: int) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(110, 880)
    env = np.exp(-rng.uniform(1, 4) * (t % 0.5))
    x = sum(np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6)) / k for k in (1, 2, 3)) * env * 0.3
    x = x + 0.01 * rng.standard_normal(t.shape)
    return np.stack([x * (1 - 0.3 * c) for c in range(channels)], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A corpus directory laid out like ``tunecraft data synth`` output (stereo, 8 kHz)."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "audio").mkdir()
    rng = np.random.default_rng(0)
    lines = {"train": [], "valid": [], "test": []}
    for i in range(10):
        split = "train" if i < 6 else ("valid" if i < 8 else "test")
        path = root / "audio" / f"{i:03d}.wav"
        sf.write(path, _clip(rng, 1.5, 2), SR, subtype="PCM_16")
        lines[split].append(json.dumps({"path": f"audio/{i:03d}.wav", "duration": 1.5, "sample_rate": SR,
                                        "amplitude": None, "weight": None, "info_path": None}))
    for split, ls in lines.items():
        (root / f"{split}.jsonl").write_text("".join(x + "\n" for x in ls))
    (root / "data.jsonl").write_text("".join(x + "\n" for ls in lines.values() for x in ls))
    return root


def tiny_data(corpus: Path, **kw) -> CodecDataConfig:
    base = dict(source=str(corpus), min_segment=0.25, max_segment=0.5, valid_clips=2, sample_clips=1,
                sample_seconds=0.5, fit_clips=4, fit_seconds=0.5)
    base.update(kw)
    return CodecDataConfig(**base)


def tiny_seanet(channels: int = 1, dimension: int = 16) -> SEANetConfig:
    return SEANetConfig(channels=channels, n_filters=4, ratios=[4, 4], dimension=dimension, lstm=0)


def tiny_rvq_task(corpus: Path, **task) -> RVQCodecTask:
    codec = cpu_rvq_codec_config().replace(
        sample_rate=SR, seanet=tiny_seanet(), quantizer=RVQConfig(dimension=16, n_q=2, bins=16, kmeans_iters=10),
        loss=CodecLossConfig(**TINY_LOSS),
    )
    codec.discriminator = codec.discriminator.replace(msstftd_filters=2, msstftd_n_ffts=[128, 64],
                                                      msstftd_hop_lengths=[32, 16], msstftd_win_lengths=[128, 64])
    return RVQCodecTask(RVQCodecTaskConfig(codec=codec, init_clips=4, **task), tiny_data(corpus))


def tiny_vae_task(corpus: Path, **task) -> VAEGANTask:
    codec = cpu_vae_gan_config().replace(
        sample_rate=SR, seanet=tiny_seanet(), bottleneck=KLBottleneckConfig(latent_dim=4),
        loss=CodecLossConfig.melody().replace(mrstft_fft_sizes=[256, 128], mrstft_hop_sizes=[32, 16],
                                              mrstft_win_lengths=[128, 64]),
    )
    codec.discriminator = codec.discriminator.replace(mpd_periods=[2, 3], mpd_channels=[2, 4, 4, 4, 4],
                                                      mrd_resolutions=[[256, 32, 128]], mrd_channels=2)
    return VAEGANTask(VAEGANTaskConfig(codec=codec, **task), tiny_data(corpus))


def tiny_mae_task(corpus: Path, **task) -> MaskedAETask:
    codec = cpu_masked_ae_config().replace(
        sample_rate=SR, seanet=tiny_seanet(channels=2, dimension=8),
        bottleneck=MaskedBottleneckConfig(latent_dim=8, mask_rate=0.05), loss=CodecLossConfig(**TINY_LOSS),
    )
    codec.discriminator = codec.discriminator.replace(msstftd_filters=2, msstftd_n_ffts=[128, 64],
                                                      msstftd_hop_lengths=[32, 16], msstftd_win_lengths=[128, 64])
    return MaskedAETask(MaskedAETaskConfig(codec=codec, **task), tiny_data(corpus))


MAKERS = {"codec-rvq": tiny_rvq_task, "vae-gan": tiny_vae_task, "masked-ae": tiny_mae_task}


# ---- registry, recipes, data ------------------------------------------------------------------


def test_tasks_are_registered_and_recipes_hold_the_cpu_defaults():
    assert get_task_class("codec-rvq") is RVQCodecTask
    assert get_task_class("vae-gan") is VAEGANTask
    assert get_task_class("masked-ae") is MaskedAETask
    for name, default in (("codec-rvq", cpu_rvq_codec_config), ("vae-gan", cpu_vae_gan_config),
                          ("masked-ae", cpu_masked_ae_config)):
        recipe = load_recipe(name)
        assert recipe.task.config.codec == default(), name
        assert recipe.task.data.source == "data/synth"
        assert recipe.task.config.adversarial_start > recipe.train.steps  # CPU: reconstruction only
    rvq = load_recipe("codec-rvq")
    assert rvq.train.ema_decay == 0.0  # codebooks are fitted to the live encoder (see ema.py)
    codec = RVQCodec(rvq.task.config.codec)
    assert codec.frame_rate == 50 and codec.sample_rate == 32000
    assert codec.bandwidth <= 6.0
    vae = VAEGANCodec(load_recipe("vae-gan").task.config.codec)
    assert (vae.sample_rate, vae.hop_length, vae.latent_dim) == (24000, 96, 16)
    mae = MaskedAutoencoder(load_recipe("masked-ae").task.config.codec)
    assert (mae.sample_rate, mae.hop_length, mae.latent_dim) == (48000, 320, 128)
    assert load_recipe("masked-ae").task.config.codec.bottleneck.mask_rate == 0.05
    overridden = load_recipe("codec-rvq", ["data.source=/elsewhere", "task.codec.quantizer.n_q=4"])
    assert overridden.task.data.source == "/elsewhere" and overridden.task.config.codec.quantizer.n_q == 4


def test_config_validation(corpus):
    with pytest.raises(ConfigError):
        CodecDataConfig(min_segment=1.0, max_segment=0.5)
    with pytest.raises(ConfigError):
        CodecDataConfig(source="")
    with pytest.raises(ConfigError):
        RVQCodecTaskConfig(adversarial_start=-1)
    with pytest.raises(ConfigError):  # shorter than one codec frame
        RVQCodecTask(RVQCodecTaskConfig(), tiny_data(corpus, min_segment=0.001))
    task = tiny_rvq_task(corpus)
    missing = RVQCodecTask(task.config, tiny_data(Path("/nonexistent/corpus")))
    with pytest.raises(ConfigError, match="tunecraft data synth"):
        missing.build_train_dataset()


def test_splits_and_clip_datasets(corpus):
    assert resolve_split(corpus, "train") == corpus / "train.jsonl"
    assert resolve_split(corpus, "nope") is None
    task = tiny_rvq_task(corpus)
    train = task.build_train_dataset()
    assert len(train) == 6 and all("audio/00" in m.path for m in train.metas)
    valid = task.build_valid_dataset()
    assert len(valid) == 2
    train_paths = {m.path for m in train.metas}
    assert not train_paths & {m.path for m in valid.metas}  # held out
    a, b = valid[0], valid[0]
    assert a.shape == (1, int(0.5 * SR)) and torch.equal(a, b)  # fixed crops, mono-converted
    torch.manual_seed(0)
    x = train[1]
    torch.manual_seed(0)
    assert torch.equal(x, train[1])  # random crops come from the (harness-seeded) global RNG
    offsets = set()
    for seed in range(5):
        torch.manual_seed(seed)
        offsets.add(round(train.crop_start(1), 6))
    assert len(offsets) > 1
    # a plain folder (no split manifests) trains on everything and has no validation
    folder = CodecDataConfig(source=str(corpus / "audio"), min_segment=0.25, max_segment=0.5)
    plain = RVQCodecTask(task.config, folder)
    assert len(plain.build_train_dataset()) == 10 and plain.build_valid_dataset() is None
    with pytest.raises(InvalidInput):
        CodecClipDataset([], 0.5, SR, 1, True)


def test_crop_window_is_a_hop_multiple_in_range_and_fixed_per_step(corpus):
    task = tiny_rvq_task(corpus)
    hop, length = task.hop_length, int(0.5 * SR)
    sizes = set()
    for step in range(30):
        start, size = task.crop_window(length, step)
        assert size % hop == 0 and 0.25 * SR - hop <= size <= 0.5 * SR and 0 <= start <= length - size
        assert task.crop_window(length, step) == (start, size)
        sizes.add(size)
    assert len(sizes) > 3


# ---- training ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(MAKERS))
def test_reconstruction_training_reduces_the_loss(corpus, name):
    task = MAKERS[name](corpus)
    torch.manual_seed(0)
    model = task.build_model()
    model.train()
    batch = torch.stack([task.build_valid_dataset()[i] for i in range(2)])
    specs = {s.name: s for s in task.configure_optimizers(model, type("T", (), {"weight_decay": 0.0})())}
    assert list(specs) == ["discriminator", "generator"]
    opt = torch.optim.Adam(specs["generator"].params, lr=3e-3)
    losses = []
    for step in range(25):
        d_loss, d_logs = task.training_step(model, batch, step, "discriminator")
        assert float(d_loss.detach()) == 0.0 and not d_logs  # warm-up: the discriminator phase is skipped
        loss, logs = task.training_step(model, batch, step, "generator")
        assert math.isfinite(float(loss.detach())) and "adv_g" not in logs
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in model.discriminator.parameters())
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-5:]) < 0.9 * np.mean(losses[:5]), losses
    with torch.no_grad():
        model.eval()
        logs = task.validation_step(model, batch, 0)
    assert math.isfinite(float(logs["loss"]))


def test_rvq_codebooks_are_initialised_from_many_training_frames(corpus):
    task = tiny_rvq_task(corpus)
    torch.manual_seed(0)
    model = task.build_model().train()
    batch = torch.stack([task.build_valid_dataset()[0]])
    assert not any(bool(layer.codebook.inited) for layer in model.codec.quantizer.layers)
    task.training_step(model, batch, 0, "generator")
    books = [layer.codebook for layer in model.codec.quantizer.layers]
    assert all(bool(b.inited) for b in books)
    # 1 batch clip + init_clips=4 clips of 0.5 s at hop 16: 5 * 250 frames for 16 codewords
    assert all(int((b.cluster_size > 0).sum()) >= 12 for b in books)


def test_dead_codewords_are_revived_and_survive_the_ema_update(corpus):
    task = tiny_rvq_task(corpus)
    torch.manual_seed(0)
    model = task.build_model().train()
    batch = torch.stack([task.build_valid_dataset()[i] for i in range(2)])
    task.training_step(model, batch, 0, "generator")  # k-means initialisation
    book = model.codec.quantizer.layers[0].codebook
    with torch.no_grad():  # kill four codewords the way a collapsed codebook has them
        book.cluster_size[:4] = 0.0
        book.embed_avg[:4] = 0.0
        book.embed[:4] = 0.0
    _, logs = task.training_step(model, batch, 10, "generator")  # a revival step (revive_every=10)
    assert logs["revived_codes"] >= 4
    revived = book.embed[:4].clone()
    assert (revived.abs().sum(1) > 0).all()
    # the codebook's own EMA renormalisation keeps them (the codebook alone would write zeros back)
    with torch.no_grad():
        model.codec(batch[..., :2048])
    unused = book.cluster_size[:4] < 0.01
    assert torch.allclose(book.embed[:4][unused], revived[unused], rtol=0.05, atol=1e-4)
    assert (book.embed[:4].abs().sum(1) > 0).all()
    _, logs = task.training_step(model, batch, 11, "generator")
    assert "revived_codes" not in logs
    # every stage is re-seeded from its residuals under the old codebooks: never from exact zeros
    for layer in model.codec.quantizer.layers:
        with torch.no_grad():
            layer.codebook.cluster_size.zero_()
    task.revive_dead_codes(model.codec, batch)
    for layer in model.codec.quantizer.layers:
        assert (layer.codebook.embed.norm(dim=1) > 1e-6).all()
    with pytest.raises(ConfigError):
        RVQCodecTaskConfig(revive_every=-1)


def test_adversarial_phase_after_warm_up(corpus):
    task = tiny_vae_task(corpus, adversarial_start=1)
    model = task.build_model().train()
    batch = torch.stack([task.build_valid_dataset()[0]])
    loss, logs = task.training_step(model, batch, 0, "generator")
    assert "adv_g" not in logs and "feat" not in logs
    d_loss, d_logs = task.training_step(model, batch, 1, "discriminator")
    assert float(d_loss.detach()) > 0 and "discriminator" in d_logs
    d_loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.discriminator.parameters())
    loss, logs = task.training_step(model, batch, 1, "generator")
    assert "adv_g" in logs and "feat" in logs


# ---- the harness: run, export, resume-export --------------------------------------------------


def _recipe(tmp_path: Path, task) -> Path:
    """A TOML recipe holding ``task``'s configs (tiny) and a 3-step run."""

    def toml_value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(toml_value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items() if x is not None) + " }"
        return repr(v)

    def table(name, d):
        lines = [f"[{name}]"]
        lines += [f"{k} = {toml_value(v)}" for k, v in d.items() if v is not None]
        return "\n".join(lines)

    task_dict = {"name": task.name, **task.config.to_dict()}
    train = dict(steps=3, batch_size=2, lr=1e-3, log_every=1, valid_every=3, valid_batches=1, sample_every=3,
                 ckpt_every=2, keep_checkpoints=2, ema_decay=0.5 if task.name != "codec-rvq" else 0.0)
    path = tmp_path / f"{task.name}.toml"
    path.write_text("\n\n".join([table("task", task_dict), table("data", task.data.to_dict()),
                                 table("train", train)]) + "\n")
    return path


@pytest.mark.parametrize("name", list(MAKERS))
def test_run_exports_a_loadable_float16_bundle(corpus, tmp_path, name):
    task = MAKERS[name](corpus)
    result = run_recipe(str(_recipe(tmp_path, task)), out_dir=tmp_path / "run", quiet=True)
    assert result.finished and result.export_dir is not None
    meta = json.loads((result.export_dir / "config.json").read_text())
    assert meta["dtype"] == "float16" and meta["class"] == task.codec_class.__name__
    stored = load_file(str(result.export_dir / "model.safetensors"))
    codec = load_codec(result.export_dir)
    assert isinstance(codec, task.codec_class)
    params = dict(codec.named_parameters())
    for key, value in stored.items():
        if key in params:
            assert value.dtype == torch.float16
            assert torch.equal(params[key].detach(), value.float())  # fp16 round trip is exact
    x = torch.stack([task.build_valid_dataset()[0]])
    y = codec.reconstruct(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    if name == "vae-gan":
        fit = json.loads((result.export_dir / "fit.json").read_text())
        assert codec.latent_scale == pytest.approx(fit["latent_scale"]) and codec.latent_scale != 1.0
    if name == "masked-ae":
        assert codec.is_whitened
        z = codec.encode(torch.stack(task.fit_batches(batch_size=4)[0].unbind()))
        assert z.mean(dim=(0, 2)).abs().max() < 1e-3  # whitened on these very clips: zero mean
    samples = sorted(p.name for p in (tmp_path / "run" / "samples").rglob("*.wav"))
    assert samples == ["reconstruction.wav", "target.wav"]
    # an unfinished run exports its newest checkpoint the same way
    again = export_checkpoint(tmp_path / "run", tmp_path / "from-ckpt")
    info = json.loads((again / "training.json").read_text())
    assert info["step"] == 3 and info["task"] == name
    reloaded = load_codec(again)
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), codec.state_dict().values()))
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(CheckpointError):
        export_checkpoint(tmp_path / "empty-run", tmp_path / "x")
    with pytest.raises(InvalidInput):
        export_checkpoint(tmp_path / "no-such-run", tmp_path / "x")
    # the same from the command line; bad input is one line and exit 2
    from tunecraft.cli import main as cli_main

    assert cli_main(["export", str(tmp_path / "run"), str(tmp_path / "cli-export"), "-q"]) == 0
    assert json.loads((tmp_path / "cli-export" / "training.json").read_text())["step"] == 3
    assert cli_main(["export", str(tmp_path / "no-such-run"), str(tmp_path / "y")]) == 2


# ---- EMA with buffers -------------------------------------------------------------------------


class _WithBuffers(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))
        self.register_buffer("stat", torch.zeros(3))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.register_buffer("scratch", torch.zeros(2), persistent=False)


def test_ema_averages_parameters_and_copies_buffers():
    m = _WithBuffers()
    ema = EMA(m, decay=0.5)
    assert ema.buffer_names == ["stat", "count"]  # persistent buffers only
    with torch.no_grad():
        m.w.fill_(1.0)
        m.stat.fill_(7.0)
        m.count.fill_(3)
    ema.update(step=1000)  # effective decay 0.5
    state = ema.full_state_dict()
    assert torch.allclose(state["w"], torch.full((3,), 0.5))  # averaged
    assert torch.equal(state["stat"], torch.full((3,), 7.0)) and int(state["count"]) == 3  # copied live
    fresh = _WithBuffers()
    fresh.load_state_dict(state, strict=True)  # a complete state dict
    with ema.swapped_in():
        assert torch.allclose(m.w, torch.full((3,), 0.5)) and torch.equal(m.stat, torch.full((3,), 7.0))
    assert torch.equal(m.w, torch.ones(3))
    # older checkpoints hold averaged parameters only; wrong names or shapes are rejected
    ema.load_full_state_dict({"w": torch.full((3,), 0.25)})
    assert torch.allclose(ema.full_state_dict()["w"], torch.full((3,), 0.25))
    with pytest.raises(CheckpointError):
        ema.load_full_state_dict({"w": torch.zeros(3), "other": torch.zeros(1)})
    with pytest.raises(CheckpointError):
        ema.load_full_state_dict({"w": torch.zeros(3), "stat": torch.zeros(4)})


def test_ema_of_an_rvq_codec_keeps_the_live_codebooks(corpus):
    task = tiny_rvq_task(corpus)
    model = task.build_model().train()
    ema = EMA(model, decay=0.9)
    batch = torch.stack([task.build_valid_dataset()[0]])
    opt = torch.optim.Adam(model.codec.parameters(), lr=1e-2)
    for step in range(3):
        loss, _ = task.training_step(model, batch, step, "generator")
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(step)
    state = ema.full_state_dict()
    live = model.state_dict()
    for layer in range(2):
        for buf in ("embed", "embed_avg", "cluster_size", "inited"):
            key = f"codec.quantizer.layers.{layer}.codebook.{buf}"
            assert torch.equal(state[key], live[key])
    key = "codec.encoder." + next(n for n, _ in model.codec.encoder.named_parameters())
    assert not torch.equal(state[key], live[key])  # parameters are averaged
    fresh = task.build_model()
    fresh.load_state_dict(state, strict=True)


# ---- shipped bundles --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["codec-rvq", "vae-gan", "masked-ae"])
def test_shipped_bundle_loads_by_name_and_round_trips(name):
    if not (BUNDLES_DIR / name / "config.json").is_file():
        pytest.skip(f"bundle {name} is not shipped in this checkout")
    codec = load_codec(name)
    assert isinstance(codec, CompressionModel)
    assert json.loads((BUNDLES_DIR / name / "config.json").read_text())["dtype"] == "float16"
    sr = codec.sample_rate
    t = torch.arange(int(0.5 * sr)) / sr
    x = (0.3 * torch.sin(2 * math.pi * 440 * t))[None, None]
    enc = codec.encode(x, sample_rate=sr)
    assert enc.shape[-1] == codec.num_frames(x.shape[-1])
    y = codec.decode(enc, length=x.shape[-1])
    assert y.shape == (1, codec.channels, x.shape[-1]) and torch.isfinite(y).all()
    if name == "codec-rvq":
        assert codec.is_discrete and codec.bandwidth <= 6.0 and codec.frame_rate == 50
        assert enc.dtype == torch.int64 and enc.shape[1] == codec.num_codebooks
    if name == "vae-gan":
        assert (sr, codec.hop_length, codec.latent_dim) == (24000, 96, 16) and codec.latent_scale != 1.0
    if name == "masked-ae":
        assert (sr, codec.hop_length, codec.latent_dim) == (48000, 320, 128) and codec.is_whitened

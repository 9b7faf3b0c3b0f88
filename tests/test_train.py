"""The shared training harness (tunecraft.train): recipes, registry, checkpoints, exact
resume, logging, and DDP/FSDP runs under torchrun on CPU (gloo)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from tunecraft.config import Config
from tunecraft.errors import CheckpointError, ConfigError, InvalidInput, UnknownRecipe
from tunecraft.train import (
    OptimizerSpec,
    TrainConfig,
    Trainer,
    TrainTask,
    get_task_class,
    list_recipes,
    load_recipe,
    parse_override,
    recipe_from_dict,
    register_task,
    register_task_path,
    run_recipe,
)
from tunecraft.train import checkpoint as ckpt
from tunecraft.train.optim import lr_factor
from tunecraft.train.toy import ToyAudioAETask, ToyAudioAutoencoder
from tunecraft.train.tracking import RunLogger

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parent.parent

# a toy run small enough that one step takes a few milliseconds
TINY = [
    "task.hidden=8", "task.fft_sizes=[64, 128]", "data.clip_seconds=0.05", "data.num_clips=40",
    "data.valid_clips=4", "train.batch_size=4", "train.log_every=1", "train.valid_every=0",
    "train.sample_every=0", "train.ckpt_every=0", "train.warmup_steps=2", "train.ema_decay=0.9",
]


def train(out, *overrides, resume=False):
    return run_recipe("toy-audio-ae", out_dir=out, resume=resume, overrides=TINY + list(overrides), quiet=True)


def metrics(out, split="train"):
    lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == split]


def assert_same(a, b, where="state"):
    """Bitwise equality of nested checkpoint structures."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert set(a) == set(b), f"{where}: keys differ"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_training_state(path_a, path_b):
    a, b = ckpt.load_checkpoint(path_a), ckpt.load_checkpoint(path_b)
    for key in ("step", "epoch", "batch_in_epoch", "model", "ema", "optimizers", "schedulers"):
        assert_same(a[key], b[key], key)


# ---- recipes and overrides --------------------------------------------------------------


def test_override_parsing():
    assert parse_override("train.steps=10") == (["train", "steps"], 10)
    assert parse_override("train.lr=1e-3") == (["train", "lr"], 1e-3)
    assert parse_override("train.compile = true") == (["train", "compile"], True)
    assert parse_override("task.strides=[4, 2]") == (["task", "strides"], [4, 2])
    assert parse_override('train.out_dir="runs/a b"') == (["train", "out_dir"], "runs/a b")
    assert parse_override("train.strategy=fsdp") == (["train", "strategy"], "fsdp")  # bare string
    assert parse_override("train.betas=[0.8, 0.9]") == (["train", "betas"], [0.8, 0.9])
    for bad in ("train.steps", "steps=3", "model.steps=3", "train.=3", "train.steps="):
        with pytest.raises(ConfigError):
            parse_override(bad)


def test_load_recipe_and_overrides():
    assert "toy-audio-ae" in list_recipes()
    recipe = load_recipe("toy-audio-ae", ["train.steps=7", "task.hidden=12", "train.betas=[0.8, 0.95]"])
    assert recipe.task_name == "toy-audio-ae" and isinstance(recipe.task, ToyAudioAETask)
    assert recipe.train.steps == 7 and recipe.train.betas == (0.8, 0.95)
    assert recipe.task.config.hidden == 12
    assert recipe.to_dict()["task"]["name"] == "toy-audio-ae"
    # by path, too
    assert load_recipe(str(REPO / "tunecraft/recipes/toy-audio-ae.toml")).name == "toy-audio-ae"


def test_recipe_errors(tmp_path):
    with pytest.raises(UnknownRecipe, match="available recipes: .*toy-audio-ae"):
        load_recipe("no-such-recipe")
    with pytest.raises(UnknownRecipe, match="does not exist"):
        load_recipe(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"\[train\].*unknown key.*stepz"):
        load_recipe("toy-audio-ae", ["train.stepz=3"])
    with pytest.raises(ConfigError, match=r"\[task\].*unknown key.*hiden"):
        load_recipe("toy-audio-ae", ["task.hiden=3"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_recipe("toy-audio-ae", ["train.steps=ten"])
    with pytest.raises(ConfigError, match="schedule must be one of"):
        load_recipe("toy-audio-ae", ["train.schedule=exponential"])
    bad = tmp_path / "bad.toml"
    bad.write_text('[task]\nname = "toy-audio-ae"\n[optim]\nlr = 1\n')
    with pytest.raises(ConfigError, match="unknown section.*optim"):
        load_recipe(str(bad))
    bad.write_text('[task]\nname = "toy-audio-ae"\n[train\n')
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_recipe(str(bad))
    bad.write_text('[task]\nname = "no-such-task"\n')
    with pytest.raises(ConfigError, match="unknown training task 'no-such-task'.*toy-audio-ae"):
        load_recipe(str(bad))
    bad.write_text("[train]\nsteps = 3\n")
    with pytest.raises(ConfigError, match=r"\[task\] needs a name"):
        load_recipe(str(bad))


def test_task_registry_lazy_paths():
    register_task_path("toy-alias", "tunecraft.train.toy:ToyAudioAETask")
    assert get_task_class("toy-alias") is ToyAudioAETask
    assert get_task_class("tunecraft.train.toy:ToyAudioAETask") is ToyAudioAETask  # a direct target
    register_task_path("not-a-task", "tunecraft.train.toy:ToyAudioAutoencoder")
    with pytest.raises(ConfigError, match="not a TrainTask subclass"):
        get_task_class("not-a-task")
    with pytest.raises(ConfigError, match="cannot import"):
        get_task_class("tunecraft.no_such_module:Task")


def test_lr_schedule():
    f = lambda s, sched="cosine": lr_factor(s, 10, 2, sched, 0.1)  # noqa: E731
    assert f(0) == pytest.approx(0.5) and f(1) == pytest.approx(1.0)
    assert f(2) == pytest.approx(1.0) and f(9) == pytest.approx(0.1)
    assert f(9, "linear") == pytest.approx(0.1) and f(5, "constant") == 1.0
    assert f(2) > f(5) > f(8) > f(9)


# ---- single-process training, resume, checkpoints -----------------------------------------


def test_toy_run_learns_logs_and_exports_ema(tmp_path):
    out = tmp_path / "run"
    result = train(out, "train.steps=40", "train.lr=3e-3", "train.ckpt_every=20", "train.log_every=5",
                   "train.valid_every=20", "train.sample_every=20")
    assert result.finished and result.step == 40 and result.export_dir == out / "model"
    records = metrics(out)
    assert [r["step"] for r in records] == [5, 10, 15, 20, 25, 30, 35, 40]
    for key in ("loss", "lr", "grad_norm", "samples_per_s", "steps_per_s", "l1", "stft"):
        assert key in records[0]
    assert records[-1]["loss"] < records[0]["loss"]
    assert [r["step"] for r in metrics(out, "valid")] == [20, 40]
    assert sorted(p.name for p in (out / "samples").iterdir()) == [
        "step-00000020-reconstruction.wav", "step-00000020-target.wav",
        "step-00000040-reconstruction.wav", "step-00000040-target.wav",
    ]
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert [s for s, _ in ckpt.list_checkpoints(out / "checkpoints")] == [20, 40]
    # the exported model directory holds the EMA weights and loads by itself
    final = ckpt.load_checkpoint(out / "checkpoints" / "step-00000040.pt")
    exported = load_file(str(out / "model" / "model.safetensors"))
    assert_same(exported, final["ema"], "export")
    assert not all(torch.equal(final["ema"][k], final["model"][k]) for k in final["ema"])
    meta = json.loads((out / "model" / "config.json").read_text())
    assert meta["class"] == "ToyAudioAutoencoder" and meta["config"]["hidden"] == 8
    model = ToyAudioAutoencoder.from_pretrained(out / "model")
    clip = torch.zeros(1, 1, 401)
    assert model(clip).shape == clip.shape


def test_resume_is_bitwise_exact(tmp_path):
    # 10 batches per epoch, 2 per step: the interruption at step 5 falls on an epoch boundary
    common = ["train.steps=9", "train.grad_accum=2"]
    full = train(tmp_path / "full", *common)
    part = train(tmp_path / "part", *common, "train.max_steps_this_run=5")
    assert not part.finished and part.step == 5 and part.export_dir is None
    assert not (tmp_path / "part" / "model").exists()
    rest = train(tmp_path / "part", *common, resume=True)
    assert rest.finished and rest.resumed_from == tmp_path / "part" / "checkpoints" / "step-00000005.pt"
    assert_same_training_state(full.checkpoint, rest.checkpoint)
    assert (tmp_path / "full/model/model.safetensors").read_bytes() == (tmp_path / "part/model/model.safetensors").read_bytes()
    # metrics of the resumed run continue where the interrupted one stopped
    assert [r["step"] for r in metrics(tmp_path / "part")] == list(range(1, 10))


def test_resume_is_bitwise_exact_with_dataloader_workers(tmp_path):
    common = ["train.steps=7", "train.num_workers=2"]
    full = train(tmp_path / "full", *common)
    train(tmp_path / "part", *common, "train.max_steps_this_run=3")  # mid-epoch (10 batches per epoch)
    rest = train(tmp_path / "part", *common, resume=True)
    assert_same_training_state(full.checkpoint, rest.checkpoint)
    # workers do not change the data or augmentation: same result as in-process loading
    inproc = train(tmp_path / "inproc", "train.steps=7")
    assert_same_training_state(full.checkpoint, inproc.checkpoint)


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, capsys):
    out = tmp_path / "run"
    train(out, "train.steps=8", "train.ckpt_every=2", "train.max_steps_this_run=6")
    latest = out / "checkpoints" / "step-00000006.pt"
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])  # truncated by a crash
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load_checkpoint(latest)
    result = train(out, "train.steps=8", "train.ckpt_every=2", resume=True)
    assert "step-00000006.pt is corrupt or truncated" in capsys.readouterr().err
    assert result.resumed_from == out / "checkpoints" / "step-00000004.pt" and result.finished
    full = train(tmp_path / "full", "train.steps=8", "train.ckpt_every=2")
    assert_same_training_state(full.checkpoint, result.checkpoint)


def test_bit_flip_is_detected_by_digest(tmp_path):
    out = tmp_path / "run"
    train(out, "train.steps=1")
    path = out / "checkpoints" / "step-00000001.pt"
    state = ckpt.load_checkpoint(path)
    state["model"]["encoder.0.weight"][0, 0, 0] += 1e-3  # content changed, digest kept
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="digest mismatch"):
        ckpt.load_checkpoint(path)


def test_crash_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    train(out, "train.steps=6", "train.ckpt_every=2", "train.max_steps_this_run=2")
    real_save = torch.save

    def crash_mid_write(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        train(out, "train.steps=6", "train.ckpt_every=2", resume=True)
    monkeypatch.setattr(torch, "save", real_save)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step-00000002.pt"]  # no partial step-4 file, no temp file left
    ckpt.load_checkpoint(out / "checkpoints" / "step-00000002.pt")
    # a hard kill (no cleanup) leaves a temp file: it is ignored and removed on the next start
    stale = out / "checkpoints" / ".step-00000004.pt.tmp-99999"
    stale.write_bytes(b"PK\x03\x04 half")
    result = train(out, "train.steps=6", "train.ckpt_every=2", resume=True)
    assert result.resumed_from.name == "step-00000002.pt" and result.finished and not stale.exists()


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "file.bin"
    ckpt.atomic_write(target, lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"new but incomplete")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        ckpt.atomic_write(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_fresh_run_refuses_a_directory_with_checkpoints_and_keeps_last_k(tmp_path):
    out = tmp_path / "run"
    train(out, "train.steps=5", "train.ckpt_every=1", "train.keep_checkpoints=2")
    assert [s for s, _ in ckpt.list_checkpoints(out / "checkpoints")] == [4, 5]
    with pytest.raises(CheckpointError, match="pass --resume"):
        train(out, "train.steps=5")
    again = train(out, "train.steps=5", resume=True)  # already finished: re-exports, no steps
    assert again.finished and again.step == 5


def test_tensorboard_missing_degrades_to_a_warning(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.warns(UserWarning, match="TensorBoard logging disabled"):
        logger = RunLogger(tmp_path, start_step=0, total_steps=1, quiet=True)
    logger.log_metrics(1, "train", {"loss": 1.0})
    logger.log_audio(1, {"x": (torch.zeros(2, 80), 8000)})
    logger.close()
    assert metrics(tmp_path)[0]["loss"] == 1.0 and (tmp_path / "samples/step-00000001-x.wav").is_file()


# ---- a task with two optimisers (the shape of a GAN codec task) ----------------------------


@dataclasses.dataclass
class PairConfig(Config):
    dim: int = 4


class _Pair(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gen = nn.Linear(dim, dim)
        self.disc = nn.Linear(dim, 1)

    def forward(self, real, phase):
        fake = self.gen(real)
        if phase == "disc":
            return F.softplus(self.disc(fake.detach())).mean() + F.softplus(-self.disc(real)).mean()
        return F.softplus(-self.disc(fake)).mean()


class _Noise(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        return torch.randn(4) + 2.0  # the harness seeds the global RNG per (seed, epoch, index)


@register_task("test-two-phase")
class TwoPhaseTask(TrainTask):
    config_class = PairConfig

    def build_model(self):
        return _Pair(self.config.dim)

    def build_train_dataset(self):
        return _Noise()

    def configure_optimizers(self, model, train):
        return [OptimizerSpec("disc", model.disc.parameters()),
                OptimizerSpec("gen", model.gen.parameters(), lr=train.lr / 2)]

    def training_step(self, model, batch, step, phase="main"):
        return model(batch, phase), {}

    def export(self, model, out_dir):
        torch.save(model.gen.state_dict(), Path(out_dir) / "gen.pt")


def test_task_with_two_optimisers(tmp_path):
    raw = {"task": {"name": "test-two-phase"}, "train": {"steps": 3, "batch_size": 4, "lr": 0.01, "log_every": 1,
                                                         "out_dir": str(tmp_path), "schedule": "constant"}}
    recipe = recipe_from_dict(raw, name="two-phase")
    result = Trainer(recipe, quiet=True).fit()
    assert result.finished and (tmp_path / "model" / "gen.pt").is_file()
    rec = metrics(tmp_path)[-1]
    assert rec["lr/disc"] == pytest.approx(0.01) and rec["lr/gen"] == pytest.approx(0.005)
    assert {"loss/disc", "loss/gen", "grad_norm/disc", "grad_norm/gen"} <= set(rec)
    state = ckpt.load_checkpoint(result.checkpoint)
    assert set(state["optimizers"]) == {"disc", "gen"}
    assert set(state["optimizers"]["gen"]["state"]) == {"gen.weight", "gen.bias"}


# ---- torchrun: DDP and FSDP on CPU (gloo) ---------------------------------------------------


def torchrun(nproc, out, *overrides, resume=False, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--standalone",
           "-m", "tunecraft.train", "toy-audio-ae", "--out", str(out), "--quiet"]
    cmd += [a for o in TINY + list(overrides) for a in ("--set", o)]
    if resume:
        cmd.append("--resume")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def rank_weights(out, rank):
    return load_file(str(Path(out) / "debug" / f"rank{rank}.safetensors"))


@pytest.mark.distributed
def test_ddp_two_processes_agree_learn_and_resume_exactly(tmp_path):
    common = ["train.steps=20", "train.lr=5e-3", "train.log_every=5", "train.debug_dump_rank_weights=true",
              "train.ckpt_every=10"]
    full = tmp_path / "full"
    torchrun(2, full, *common)
    w0, w1 = rank_weights(full, 0), rank_weights(full, 1)
    assert set(w0) == set(w1) and any(k.startswith("ema.") for k in w0)
    for k in w0:
        assert torch.equal(w0[k], w1[k]), f"ranks disagree on {k}"
    records = metrics(full)
    assert [r["step"] for r in records] == [5, 10, 15, 20]
    assert records[-1]["loss"] < 0.9 * records[0]["loss"]
    assert records[0]["samples_per_s"] > 0 and (full / "model" / "model.safetensors").is_file()
    state = ckpt.load_checkpoint(full / "checkpoints" / "step-00000020.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2 and state["strategy"] == "ddp"
    # an interrupted 2-process run resumed to the end matches the uninterrupted one bit for bit
    part = tmp_path / "part"
    torchrun(2, part, *common, "train.max_steps_this_run=9")
    torchrun(2, part, *common, resume=True)
    assert_same_training_state(full / "checkpoints/step-00000020.pt", part / "checkpoints/step-00000020.pt")


@pytest.mark.distributed
def test_fsdp_two_processes_then_resume_in_one_plain_process(tmp_path):
    out = tmp_path / "fsdp"
    common = ["train.steps=6", "train.debug_dump_rank_weights=true"]
    torchrun(2, out, *common, "train.strategy=fsdp", "train.max_steps_this_run=4", "train.valid_every=2",
             "train.sample_every=2")
    w0, w1 = rank_weights(out, 0), rank_weights(out, 1)  # gathered full weights on both ranks
    for k in w0:
        assert torch.equal(w0[k], w1[k]), f"ranks disagree on {k}"
    state = ckpt.load_checkpoint(out / "checkpoints" / "step-00000004.pt")
    assert state["strategy"] == "fsdp"
    assert_same({f"model.{k}": v for k, v in state["model"].items()},
                {k: v for k, v in w0.items() if k.startswith("model.")})
    # the FSDP checkpoint holds full state dicts: a plain single process continues from it
    result = train(out, *common, "train.strategy=single", resume=True)
    assert result.finished and result.step == 6
    ToyAudioAutoencoder.from_pretrained(out / "model")


def test_fsdp_in_one_plain_process_and_strategy_checks(tmp_path, monkeypatch):
    import torch.distributed as dist

    from tunecraft.train.distributed import setup_distributed

    result = train(tmp_path / "fsdp1", "train.steps=2", "train.strategy=fsdp")
    assert result.finished and not dist.is_initialized()  # its private process group is gone
    assert ckpt.load_checkpoint(result.checkpoint)["strategy"] == "fsdp"
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="strategy is 'single' but WORLD_SIZE=2"):
        setup_distributed(TrainConfig(strategy="single"))


def test_module_entry_point_reports_errors_on_one_line(tmp_path, capsys):
    from tunecraft.train.__main__ import main

    from tunecraft.train import list_recipes

    assert main(["no-such-recipe"]) == 2
    expected = f"error: unknown recipe 'no-such-recipe'; available recipes: {', '.join(list_recipes())}"
    assert capsys.readouterr().err.strip() == expected and "toy-audio-ae" in expected
    assert main(["--list"]) == 0 and "toy-audio-ae" in capsys.readouterr().out
    out = tmp_path / "cli"
    args = ["toy-audio-ae", "--out", str(out)] + [a for o in TINY + ["train.steps=2"] for a in ("--set", o)]
    assert main(args) == 0
    assert "finished at step 2/2" in capsys.readouterr().err and (out / "model" / "config.json").is_file()


def test_config_changes_names_the_changed_leaves():
    from tunecraft.train.trainer import config_changes

    old = {"codec": {"loss": {"mel": 1.0, "mrstft": 0.0}, "n_q": 8}, "lr": 1e-3}
    new = {"codec": {"loss": {"mel": 1.0, "mrstft": 1.0}, "n_q": 8}, "lr": 1e-3, "extra": True}
    assert config_changes("task", old, new) == ["task.codec.loss.mrstft: 0.0 -> 1.0", "task.extra: None -> True"]
    assert config_changes("task", old, old) == []
    assert config_changes("data.source", "a", {"x": 1}) == ["data.source: 'a' -> {'x': 1}"]


def test_resume_warns_with_the_changed_setting_only(tmp_path, capsys):
    out = tmp_path / "run"
    train(out, "train.steps=4", "train.ckpt_every=2", "train.max_steps_this_run=2")
    capsys.readouterr()
    train(out, "train.steps=4", "train.ckpt_every=2", "task.l1_weight=2.0", resume=True)
    err = capsys.readouterr().err
    assert "resuming with settings that differ from the checkpoint's: task.l1_weight: 1.0 -> 2.0" in err
    assert "task.stft_weight" not in err


def test_resume_applies_a_changed_learning_rate(tmp_path, capsys):
    """A resume with another train.lr (or weight decay) trains with the new value, as the warning
    implies, instead of the one saved in the optimiser state."""
    from tunecraft.train.optim import lr_factor

    out = tmp_path / "run"
    common = ["train.steps=6", "train.ckpt_every=3", "train.log_every=1", "train.warmup_steps=2"]
    train(out, *common, "train.lr=1e-3", "train.max_steps_this_run=3")
    train(out, *common, "train.lr=2e-4", "train.weight_decay=0.5", resume=True)
    assert "train.lr: 0.001 -> 0.0002" in capsys.readouterr().err
    lrs = {r["step"]: r["lr"] for r in metrics(out)}
    cfg = load_recipe("toy-audio-ae", TINY + common).train
    for step in (1, 2, 3):
        assert lrs[step] == pytest.approx(1e-3 * lr_factor(step - 1, 6, 2, cfg.schedule, cfg.min_lr_ratio))
    for step in (4, 5, 6):
        assert lrs[step] == pytest.approx(2e-4 * lr_factor(step - 1, 6, 2, cfg.schedule, cfg.min_lr_ratio))
    state = ckpt.load_checkpoint(out / "checkpoints" / "step-00000006.pt")
    groups = [g for opt in state["optimizers"].values() for g in opt["param_groups"]]
    assert [g["weight_decay"] for g in groups] == [0.5, 0.0]  # the no-decay group (biases, norms) stays at 0


def test_init_from_warm_starts_matching_tensors_only(tmp_path, capsys):
    src = tmp_path / "src"
    train(src, "train.steps=3", "train.ckpt_every=3")
    state = torch.load(next((src / "checkpoints").glob("step-*.pt")), weights_only=False)
    source = dict(state["model"], **(state["ema"] or {}))
    capsys.readouterr()
    # same shapes: every tensor is copied (EMA weights), then training goes on from there
    out = tmp_path / "warm"
    train(out, "train.steps=1", f"train.init_from={src}", "train.lr=1e-9", "train.warmup_steps=0",
                   "train.ema_decay=0")
    assert "keep their fresh values" not in capsys.readouterr().err
    warm = torch.load(next((out / "checkpoints").glob("step-*.pt")), weights_only=False)["model"]
    assert all(torch.allclose(warm[k], source[k], atol=1e-6) for k in source)
    # another width: nothing matches by shape except the shape-free tensors -> the mismatch is reported
    wide = tmp_path / "wide"
    train(wide, "train.steps=1", f"train.init_from={src}", "task.hidden=12")
    err = capsys.readouterr().err
    assert "keep their fresh values" in err and "differ in shape" in err
    with pytest.raises(InvalidInput, match="no such run directory"):
        train(tmp_path / "bad", "train.steps=1", f"train.init_from={tmp_path / 'missing'}")


def test_init_from_an_exported_model_and_grown_input_channels(tmp_path, capsys):
    """An exported model directory (model.safetensors) warm-starts too; a weight with more input
    channels than the source's keeps the source's channels and starts the new ones at zero (or, with
    train.init_grown=fresh, at the fresh model's random values)."""
    from safetensors.torch import load_file

    from tunecraft.train.export import export_checkpoint

    src = tmp_path / "src"
    train(src, "train.steps=3", "train.ckpt_every=3")
    exported = export_checkpoint(src, tmp_path / "exported")
    source = load_file(str(exported / "model.safetensors"))
    capsys.readouterr()
    common = ["train.steps=1", "train.lr=1e-9", "train.warmup_steps=0", "train.ema_decay=0"]
    same = tmp_path / "same"
    train(same, f"train.init_from={exported}", *common)
    assert "keep their fresh values" not in capsys.readouterr().err
    warm = torch.load(next((same / "checkpoints").glob("step-*.pt")), weights_only=False)["model"]
    assert all(torch.allclose(warm[k].float(), source[k].float(), atol=1e-6) for k in source)
    # hidden 8 -> 12: the layers reading the hidden channels grow their inputs
    wide = tmp_path / "wide"
    train(wide, f"train.init_from={exported}", *common, "task.hidden=12")
    assert "with new zero input channels" in capsys.readouterr().err
    grown = torch.load(next((wide / "checkpoints").glob("step-*.pt")), weights_only=False)["model"]
    keys = [k for k in source if grown[k].dim() >= 2 and grown[k].shape[0] == source[k].shape[0]
            and grown[k].shape[1] == 12 and source[k].shape[1] == 8]
    assert keys
    for k in keys:
        torch.testing.assert_close(grown[k][:, :8].float(), source[k].float(), atol=1e-6, rtol=0)
        assert grown[k][:, 8:].abs().max() < 1e-6  # zero before the one step of lr 1e-9
    # train.init_grown=fresh: the new channels keep the fresh model's random initialisation
    fresh = tmp_path / "fresh"
    train(fresh, f"train.init_from={exported}", *common, "task.hidden=12", "train.init_grown=fresh")
    assert "with new fresh input channels" in capsys.readouterr().err
    regrown = torch.load(next((fresh / "checkpoints").glob("step-*.pt")), weights_only=False)["model"]
    for k in keys:
        torch.testing.assert_close(regrown[k][:, :8].float(), source[k].float(), atol=1e-6, rtol=0)
        assert regrown[k][:, 8:].abs().max() > 1e-3
    with pytest.raises(ConfigError, match="init_grown must be one of zero, fresh"):
        train(tmp_path / "bad", f"train.init_from={exported}", *common, "train.init_grown=random")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"train.init_from: .*model.safetensors is unreadable or corrupt"):
        train(tmp_path / "bad", "train.steps=1", f"train.init_from={tmp_path / 'broken'}")


def test_bf16_autocast_on_cpu_learns_and_warns_only_without_native_bf16(tmp_path, monkeypatch, capsys):
    from tunecraft.train import trainer as trainer_mod

    assert trainer_mod.resolve_precision("bf16", torch.device("cpu")) == (torch.bfloat16, False)
    assert trainer_mod.resolve_precision("auto", torch.device("cpu")) == (None, False)
    assert isinstance(trainer_mod.cpu_has_fast_bf16(), bool)
    seen = []
    real_autocast = torch.autocast

    def spy(*args, **kwargs):
        seen.append(kwargs.get("dtype"))
        return real_autocast(*args, **kwargs)

    monkeypatch.setattr(trainer_mod.torch, "autocast", spy)
    monkeypatch.setattr(trainer_mod, "cpu_has_fast_bf16", lambda: True)
    out = tmp_path / "fast"
    run_recipe("toy-audio-ae", out_dir=out, overrides=TINY + ["train.steps=30", "train.lr=3e-3",
               "train.precision=bf16", "train.log_every=5"], quiet=False)
    assert seen and set(seen) == {torch.bfloat16}
    records = metrics(out)
    assert records[-1]["loss"] < records[0]["loss"]
    exported = load_file(str(out / "model" / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in exported.values())  # master weights stay fp32
    assert "no native bfloat16" not in capsys.readouterr().out
    monkeypatch.setattr(trainer_mod, "cpu_has_fast_bf16", lambda: False)
    run_recipe("toy-audio-ae", out_dir=tmp_path / "slow", overrides=TINY + ["train.steps=2",
               "train.precision=bf16"], quiet=False)
    captured = capsys.readouterr()
    assert "no native bfloat16" in captured.out + captured.err

"""Convert official EnCodec weights into :class:`~tunecraft.codecs.rvq_codec.RVQCodec`.

Sources:

* transformers' ``EncodecModel``: an in-memory model or a local directory (``config.json`` +
  ``model.safetensors`` or ``pytorch_model.bin``), e.g. ``facebook/encodec_24khz`` or
  ``facebook/encodec_32khz`` (MusicGen's tokenizer) downloaded beforehand;
* audiocraft's exported compression checkpoints (``compression_state_dict.bin`` or any file
  written by ``audiocraft.utils.export.export_encodec``): a dict with ``'xp.cfg'`` (YAML) and
  ``'best_state'`` (the model's state dict).

Our SEANet keeps audiocraft's module order and names, so keys map one to one::

    audiocraft   encoder.model.0.conv.conv.weight_g         -> ...conv.conv.parametrizations.weight.original0
                 quantizer.vq.layers.0._codebook.embed      -> quantizer.layers.0.codebook.embed
    transformers encoder.layers.0.conv.weight_v / parametrizations.weight.original1
                                                            -> encoder.model.0.conv.conv.parametrizations.weight.original1
                 encoder.layers.1.block.1.conv.*            -> encoder.model.1.block.1.conv.conv.*
                 decoder.layers.3.conv.* (transposed conv)  -> decoder.model.3.convtr.convtr.*
                 quantizer.layers.0.codebook.embed          -> quantizer.layers.0.codebook.embed

Not supported, with a clear :class:`~tunecraft.errors.CheckpointError`: models that renormalise
their input and encode in overlapping chunks (the 48 kHz EnCodec, ``normalize=True`` /
``renormalize: true``), because their per-chunk scale factors do not fit the ``[B, K, T]`` codes
interface. The orthogonal-regularisation settings of audiocraft's RVQ are training-only and are
dropped.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, DependencyError
from ..modules.conv import StreamableConv1d, StreamableConvTranspose1d
from ..modules.quantization import RVQConfig
from ..modules.seanet import SEANetConfig, SEANetResnetBlock, StreamableLSTM
from ..pretrained import load_state_checked
from .rvq_codec import RVQCodec, RVQCodecConfig

_WN = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
_DECODER_ONLY = {"trim_right_ratio", "final_activation", "final_activation_params"}
_RENORM_MSG = ("{src} renormalises its input and encodes overlapping chunks with per-chunk scales (the 48 kHz "
               "EnCodec); that does not fit the [B, K, T] codes interface, so it is not supported: use a 24 kHz or "
               "32 kHz EnCodec")


def _rename_weight_norm(key: str) -> str:
    head, _, last = key.rpartition(".")
    return f"{head}.{_WN[last]}" if last in _WN else key


def _fill_codebook_state(state: dict[str, torch.Tensor], model: RVQCodec) -> None:
    """Add codebook training buffers that inference-only checkpoints may leave out."""
    for k in range(model.total_codebooks):
        prefix = f"quantizer.layers.{k}.codebook."
        if prefix + "embed" not in state:
            continue
        embed = state[prefix + "embed"]
        state.setdefault(prefix + "embed_avg", embed.clone())
        state.setdefault(prefix + "cluster_size", torch.zeros(embed.shape[0], dtype=embed.dtype))
        state.setdefault(prefix + "inited", torch.ones(1, dtype=embed.dtype))


# --------------------------------------------------------------------------------------------
# transformers
# --------------------------------------------------------------------------------------------


def _hf_config_to_ours(cfg: Any, src: str) -> RVQCodecConfig:
    get = (lambda name, default=None: cfg.get(name, default)) if isinstance(cfg, dict) else (
        lambda name, default=None: getattr(cfg, name, default))
    if get("model_type", "encodec") != "encodec":
        raise CheckpointError(f"{src} is a '{get('model_type')}' model, not EnCodec")
    if get("normalize", False) or get("chunk_length_s") is not None:
        raise CheckpointError(_RENORM_MSG.format(src=src))
    hidden = int(get("hidden_size", 128))
    codebook_dim = get("codebook_dim") or hidden
    if int(codebook_dim) != hidden:
        raise CheckpointError(f"{src}: codebook_dim {codebook_dim} differs from hidden_size {hidden}; "
                              "transformers' EnCodec has no projection for that")
    ratios = [int(r) for r in get("upsampling_ratios", [8, 5, 4, 2])]
    sample_rate = int(get("sampling_rate", 24000))
    codebook_size = int(get("codebook_size", 1024))
    bandwidths = list(get("target_bandwidths", [1.5, 3.0, 6.0, 12.0, 24.0]))
    frame_rate = math.ceil(sample_rate / math.prod(ratios))
    nbits = math.ceil(math.log2(codebook_size))
    n_q = int(1000 * bandwidths[-1] // (frame_rate * nbits))
    try:
        seanet = SEANetConfig(
            channels=int(get("audio_channels", 1)), dimension=hidden, n_filters=int(get("num_filters", 32)),
            n_residual_layers=int(get("num_residual_layers", 1)), ratios=ratios, activation="ELU",
            activation_params={"alpha": 1.0}, norm=str(get("norm_type", "weight_norm")), norm_params={},
            kernel_size=int(get("kernel_size", 7)), last_kernel_size=int(get("last_kernel_size", 7)),
            residual_kernel_size=int(get("residual_kernel_size", 3)),
            dilation_base=int(get("dilation_growth_rate", 2)), causal=bool(get("use_causal_conv", True)),
            pad_mode=str(get("pad_mode", "reflect")), true_skip=not bool(get("use_conv_shortcut", True)),
            compress=int(get("compress", 2)), lstm=int(get("num_lstm_layers", 2)),
            trim_right_ratio=float(get("trim_right_ratio", 1.0)),
        )
        quantizer = RVQConfig(dimension=hidden, n_q=max(1, n_q), bins=codebook_size)
        return RVQCodecConfig(sample_rate=sample_rate, seanet=seanet, quantizer=quantizer)
    except ConfigError as e:
        raise CheckpointError(f"{src}: unsupported EnCodec configuration: {e}") from None


def _hf_key_to_ours(key: str, model: RVQCodec) -> str:
    m = re.match(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)$", key)
    if m:
        side, idx, rest = m.group(1), int(m.group(2)), m.group(3)
        layers = getattr(model, side).model
        if idx >= len(layers):
            return key  # reported as unexpected by the loader
        module = layers[idx]
        if isinstance(module, StreamableConvTranspose1d):
            rest = re.sub(r"^conv\.", "convtr.convtr.", rest)
            rest = re.sub(r"^norm\.", "convtr.norm.", rest)
        elif isinstance(module, StreamableConv1d):
            rest = re.sub(r"^(conv|norm)\.", r"conv.\1.", rest)
        elif isinstance(module, SEANetResnetBlock):
            rest = re.sub(r"^(block\.\d+|shortcut)\.(conv|norm)\.", r"\1.conv.\2.", rest)
        elif not isinstance(module, StreamableLSTM):
            return key
        return _rename_weight_norm(f"{side}.model.{idx}.{rest}")
    return _rename_weight_norm(key)


def _load_hf_dir(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    import json

    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} has no config.json (expected a transformers EncodecModel directory)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{cfg_file} is not valid JSON: {e}") from None
    if (path / "model.safetensors").is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path / "model.safetensors"))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path / 'model.safetensors'} is unreadable: {e}") from None
    elif (path / "pytorch_model.bin").is_file():
        try:
            state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for corrupt pickles
            raise CheckpointError(f"{path / 'pytorch_model.bin'} is unreadable: {e}") from None
    else:
        raise CheckpointError(f"{path} has neither model.safetensors nor pytorch_model.bin")
    return cfg, state


def from_transformers(model_or_path: Any) -> RVQCodec:
    """Build an :class:`RVQCodec` from a transformers ``EncodecModel`` or its saved directory.

    All codebooks are active (``num_codebooks`` = the largest bandwidth); use
    :meth:`RVQCodec.set_bandwidth` for a lower one.
    """
    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path).expanduser()
        if not path.is_dir():
            raise CheckpointError(f"{path} is not a directory (expected a transformers EncodecModel directory)")
        cfg, state = _load_hf_dir(path)
        src = str(path)
    elif isinstance(model_or_path, torch.nn.Module) and hasattr(model_or_path, "config"):
        cfg, state = model_or_path.config, model_or_path.state_dict()
        src = "the transformers EncodecModel"
    else:
        raise CheckpointError(f"expected a transformers EncodecModel or a directory, got {type(model_or_path).__name__}")
    model = RVQCodec(_hf_config_to_ours(cfg, src))
    ours = {_hf_key_to_ours(k, model): v.detach().cpu() for k, v in state.items()}
    _fill_codebook_state(ours, model)
    load_state_checked(model, ours, src)
    return model.eval()


# --------------------------------------------------------------------------------------------
# audiocraft
# --------------------------------------------------------------------------------------------


_INTERP = re.compile(r"\$\{([^}]+)\}")


def _lookup(root: dict, dotted: str, src: str) -> Any:
    node: Any = root
    for part in dotted.strip().split("."):
        if not isinstance(node, dict) or part not in node:
            raise CheckpointError(f"{src}: cannot resolve the config interpolation ${{{dotted}}}")
        node = node[part]
    return node


def _resolve(node: Any, root: dict, src: str, depth: int = 0) -> Any:
    """Resolve OmegaConf-style ``${a.b}`` interpolations in a plain YAML tree."""
    if depth > 20:
        raise CheckpointError(f"{src}: config interpolations are nested too deeply (a cycle?)")
    if isinstance(node, dict):
        return {k: _resolve(v, root, src, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, root, src, depth) for v in node]
    if isinstance(node, str):
        full = _INTERP.fullmatch(node.strip())
        if full:
            return _resolve(_lookup(root, full.group(1), src), root, src, depth + 1)
        if _INTERP.search(node):
            return _INTERP.sub(lambda m: str(_resolve(_lookup(root, m.group(1), src), root, src, depth + 1)), node)
    return node


def _audiocraft_config_to_ours(cfg: dict, src: str) -> RVQCodecConfig:
    if cfg.get("compression_model") != "encodec":
        raise CheckpointError(f"{src}: compression_model is {cfg.get('compression_model')!r}, expected 'encodec'")
    enc = dict(cfg.get("encodec") or {})
    if enc.get("autoencoder", "seanet") != "seanet" or enc.get("quantizer", "rvq") != "rvq":
        raise CheckpointError(f"{src}: only SEANet autoencoders with an RVQ quantizer are supported "
                              f"(got {enc.get('autoencoder')!r} / {enc.get('quantizer')!r})")
    if enc.get("renormalize") or enc.get("renorm"):
        raise CheckpointError(_RENORM_MSG.format(src=src))
    seanet = dict(cfg.get("seanet") or {})
    enc_over = dict(seanet.pop("encoder", None) or {})
    dec_over = dict(seanet.pop("decoder", None) or {})
    enc_kwargs = {**seanet, **enc_over}
    dec_kwargs = {**seanet, **dec_over}
    for key in sorted(set(enc_kwargs) | set(dec_kwargs)):
        if key not in _DECODER_ONLY and enc_kwargs.get(key) != dec_kwargs.get(key):
            raise CheckpointError(f"{src}: encoder and decoder differ in seanet.{key} "
                                  f"({enc_kwargs.get(key)!r} vs {dec_kwargs.get(key)!r}), which is not supported")
    merged = {k: v for k, v in dec_kwargs.items()}
    for key in ("activation_params", "norm_params", "final_activation_params"):
        if merged.get(key) is None:
            merged[key] = {} if key != "activation_params" else {"alpha": 1.0}
    rvq = dict(cfg.get("rvq") or {})
    for key in ("orthogonal_reg_weight", "orthogonal_reg_active_codes_only", "orthogonal_reg_max_codes"):
        rvq.pop(key, None)
    try:
        seanet_cfg = SEANetConfig.from_dict(merged)
        quantizer = RVQConfig(dimension=seanet_cfg.dimension, n_q=int(rvq.get("n_q", 8)), bins=int(rvq.get("bins", 1024)),
                              decay=float(rvq.get("decay", 0.99)), kmeans_init=bool(rvq.get("kmeans_init", True)),
                              kmeans_iters=int(rvq.get("kmeans_iters", 10)),
                              threshold_ema_dead_code=float(rvq.get("threshold_ema_dead_code", 2)),
                              q_dropout=bool(rvq.get("q_dropout", False)))
        sample_rate = int(enc.get("sample_rate", cfg.get("sample_rate")))
        channels = int(enc.get("channels", cfg.get("channels", seanet_cfg.channels)))
        if channels != seanet_cfg.channels:
            raise ConfigError(f"encodec.channels {channels} differs from seanet.channels {seanet_cfg.channels}")
        return RVQCodecConfig(sample_rate=sample_rate, seanet=seanet_cfg, quantizer=quantizer)
    except (ConfigError, TypeError, ValueError) as e:
        raise CheckpointError(f"{src}: unsupported EnCodec configuration: {e}") from None


def _audiocraft_key_to_ours(key: str) -> str:
    key = re.sub(r"^quantizer\.vq\.layers\.(\d+)\._codebook\.", r"quantizer.layers.\1.codebook.", key)
    key = re.sub(r"^quantizer\.vq\.layers\.(\d+)\.", r"quantizer.layers.\1.", key)
    return _rename_weight_norm(key)


def from_audiocraft(path_or_package: str | Path | dict) -> RVQCodec:
    """Build an :class:`RVQCodec` from an exported audiocraft EnCodec checkpoint (file or loaded dict)."""
    if isinstance(path_or_package, dict):
        pkg, src = path_or_package, "the audiocraft checkpoint"
    else:
        path = Path(path_or_package).expanduser()
        src = str(path)
        if not path.is_file():
            raise CheckpointError(f"{path} is not a file (expected an audiocraft compression_state_dict.bin)")
        try:
            pkg = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for corrupt or non-exported pickles
            raise CheckpointError(f"{path} is not an exported audiocraft checkpoint "
                                  f"(audiocraft.utils.export.export_encodec writes those): {str(e).splitlines()[0]}") from None
    if not isinstance(pkg, dict):
        raise CheckpointError(f"{src} does not hold a dict")
    if "pretrained" in pkg and "best_state" not in pkg:
        raise CheckpointError(f"{src} only names the pretrained model '{pkg['pretrained']}'; get that transformers "
                              "directory and convert it with from_transformers")
    if "xp.cfg" not in pkg or "best_state" not in pkg:
        raise CheckpointError(f"{src} has no 'xp.cfg' and 'best_state' (not an exported audiocraft checkpoint)")
    raw_cfg = pkg["xp.cfg"]
    if isinstance(raw_cfg, str):
        try:
            import yaml
        except ImportError:
            raise DependencyError("reading audiocraft configs needs PyYAML (pip install pyyaml)") from None
        try:
            raw_cfg = yaml.safe_load(raw_cfg)
        except yaml.YAMLError as e:
            raise CheckpointError(f"{src}: 'xp.cfg' is not valid YAML: {e}") from None
    if not isinstance(raw_cfg, dict):
        raise CheckpointError(f"{src}: 'xp.cfg' is not a mapping")
    cfg = _resolve(raw_cfg, raw_cfg, src)
    state = pkg["best_state"]
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{src}: 'best_state' is not a state dict of tensors")
    model = RVQCodec(_audiocraft_config_to_ours(cfg, src))
    ours = {_audiocraft_key_to_ours(k): v.detach().cpu() for k, v in state.items()}
    _fill_codebook_state(ours, model)
    load_state_checked(model, ours, src)
    return model.eval()


def convert_encodec(source: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Convert a transformers directory or an audiocraft checkpoint file and save it with ``save_pretrained``."""
    path = Path(source).expanduser()
    if path.is_dir():
        model = from_transformers(path)
    elif path.is_file():
        model = from_audiocraft(path)
    else:
        raise CheckpointError(f"{path} does not exist")
    return model.save_pretrained(out_dir, dtype=dtype)

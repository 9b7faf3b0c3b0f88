"""Official MusicGen checkpoints -> :class:`~tunecraft.lm.CodecLM`.

Two sources are supported:

* **transformers** models: ``MusicgenForConditionalGeneration``, ``MusicgenForCausalLM``,
  ``MusicgenMelodyForConditionalGeneration`` and ``MusicgenMelodyForCausalLM`` (or their
  ``state_dict`` plus decoder config). Renames: ``embed_tokens.k -> emb.k``,
  ``q_proj/k_proj/v_proj -> in_proj`` (rows stacked ``q | k | v``), ``encoder_attn ->
  cross_attention``, ``self_attn_layer_norm / encoder_attn_layer_norm / final_layer_norm ->
  norm1 / norm_cross / norm2``, ``fc1/fc2 -> linear1/linear2``, ``layer_norm -> out_norm``,
  ``lm_heads.k -> linears.k``; ``enc_to_dec_proj`` is the text projection and
  ``audio_enc_to_dec_proj`` the melody projection (``chroma_proj``).
* **audiocraft** ``state_dict.bin`` (the exported package ``{"best_state": ..., "xp.cfg": ...}``
  or a bare LM state dict): ``transformer.layers.N.self_attn.in_proj_weight`` etc. map one to one;
  ``condition_provider.conditioners.description.output_proj`` is the text projection and
  ``condition_provider.conditioners.self_wav.output_proj`` the melody projection.

**Special tokens.** transformers' ``pad_token_id``, ``bos_token_id`` and
``decoder_start_token_id`` are all ``vocab_size`` (2048), audiocraft's ``special_token_id`` is
``card`` (2048): all of them are our single special token ``card``, embedding row ``card``.
transformers' ``build_delay_pattern_mask`` with ``max_length = T + K`` lays out exactly our
delay pattern's sequence (``P_0`` = the BOS column, pad where the pattern has no code), so
the same decoder inputs give the same logits.

**Text.** The text projection is returned separately (it belongs to
:class:`~tunecraft.text.TextConditioner`, whose ``proj`` it fits). When the checkpoint has none
(text width equal to the model width) it is the identity. :meth:`ConvertedMusicGen.project_text`
applies it and zeroes padded positions, as transformers does.

**Melody.** transformers' MusicGen-melody prepends ``[chroma (chroma_length frames), text]`` to
the decoder input (no cross-attention); converted melody models use ``text_fuse="prepend"``.
Stereo checkpoints (``audio_channels=2``, 8 codebooks interleaved left/right) use the
``stereo_partial_delay`` pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..errors import CheckpointError, ConfigError
from ..text.states import TextStates
from .model import CodecLM, CodecLMConfig

__all__ = [
    "ConvertedMusicGen",
    "lm_config_from_transformers",
    "convert_transformers_musicgen",
    "transformers_state_to_codec_lm",
    "lm_config_from_audiocraft",
    "convert_audiocraft_state_dict",
    "load_audiocraft_checkpoint",
]

_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu",
                "silu": "silu", "swish": "silu"}


@dataclass
class ConvertedMusicGen:
    """A converted checkpoint: the LM and the text projection ``weight [dim, text_dim]``, ``bias [dim]``."""

    lm: CodecLM
    text_projection: dict[str, torch.Tensor] | None
    text_encoder_dim: int | None
    source: str

    def project_text(self, states: torch.Tensor, mask: torch.Tensor) -> TextStates:
        """Text-encoder states ``[B, L, text_dim]`` + mask ``[B, L]`` -> model-width :class:`TextStates`."""
        if self.text_projection is None:
            raise CheckpointError(f"{self.source} has no text conditioning")
        w, b = self.text_projection["weight"], self.text_projection.get("bias")
        mask = mask.to(torch.bool)
        projected = torch.nn.functional.linear(states.to(w.dtype), w, b)
        return TextStates(projected * mask.unsqueeze(-1).to(projected.dtype), mask)


# ====================================================================== transformers


def _decoder_config(model_or_config: Any):
    cfg = getattr(model_or_config, "config", model_or_config)
    return getattr(cfg, "decoder", cfg)


def lm_config_from_transformers(model_or_config: Any, *, melody: bool | None = None, **overrides) -> CodecLMConfig:
    """A :class:`CodecLMConfig` matching a transformers MusicGen (melody) model or config.

    ``overrides`` replace any resulting field (e.g. ``max_context=1500``).
    """
    top = getattr(model_or_config, "config", model_or_config)
    dec = _decoder_config(model_or_config)
    needed = ("num_codebooks", "vocab_size", "hidden_size", "num_attention_heads", "num_hidden_layers", "ffn_dim")
    missing = [n for n in needed if not hasattr(dec, n)]
    if missing:
        raise CheckpointError(f"not a MusicGen decoder config (missing {', '.join(missing)})")
    model_type = str(getattr(dec, "model_type", ""))
    if melody is None:
        melody = "melody" in model_type or "melody" in str(getattr(top, "model_type", ""))
    activation = _ACTIVATIONS.get(str(getattr(dec, "activation_function", "gelu")))
    if activation is None:
        raise CheckpointError(f"unsupported activation '{dec.activation_function}'")
    channels = int(getattr(dec, "audio_channels", 1))
    if channels == 2:
        pattern, options = "stereo_partial_delay", {}
    else:
        pattern, options = "delay", {"delays": list(range(int(dec.num_codebooks)))}
    values = dict(
        n_q=int(dec.num_codebooks), card=int(dec.vocab_size), dim=int(dec.hidden_size),
        num_heads=int(dec.num_attention_heads), num_layers=int(dec.num_hidden_layers), ffn_dim=int(dec.ffn_dim),
        activation=activation, bias_attn=False, bias_ff=False, bias_proj=False, positional="sin",
        positional_scale=1.0, dropout=float(getattr(dec, "dropout", 0.0)),
        attention_dropout=float(getattr(dec, "attention_dropout", 0.0)),
        layer_drop=float(getattr(dec, "layerdrop", 0.0)), pattern=pattern, pattern_options=options,
        text_fuse="prepend" if melody else "cross",
    )
    if melody:
        values["n_chroma"] = int(getattr(top, "num_chroma", 12))
        values["chroma_length"] = int(getattr(top, "chroma_length", 235))
    values.update(overrides)
    try:
        return CodecLMConfig(**values)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"cannot map the transformers config: {e}") from None


_HF_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_HF_LAYER_MAP = {
    "self_attn.out_proj.weight": "self_attn.out_proj.weight",
    "encoder_attn.out_proj.weight": "cross_attention.out_proj.weight",
    "self_attn_layer_norm.weight": "norm1.weight", "self_attn_layer_norm.bias": "norm1.bias",
    "encoder_attn_layer_norm.weight": "norm_cross.weight", "encoder_attn_layer_norm.bias": "norm_cross.bias",
    "final_layer_norm.weight": "norm2.weight", "final_layer_norm.bias": "norm2.bias",
    "fc1.weight": "linear1.weight", "fc2.weight": "linear2.weight",
}


def _strip_decoder_prefix(state: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """Split a transformers state dict into decoder-relative keys and the rest."""
    decoder, rest = {}, {}
    for key, value in state.items():
        for prefix in ("decoder.model.decoder.", "model.decoder."):
            if key.startswith(prefix):
                decoder[key[len(prefix):]] = value
                break
        else:
            for prefix in ("decoder.lm_heads.", "lm_heads."):
                if key.startswith(prefix):
                    decoder["lm_heads." + key[len(prefix):]] = value
                    break
            else:
                rest[key] = value
    return decoder, rest


def transformers_state_to_codec_lm(state: Mapping[str, torch.Tensor], config: CodecLMConfig) -> tuple[dict, dict]:
    """Rename a transformers MusicGen state dict; returns ``(lm_state, other_tensors)``."""
    decoder, rest = _strip_decoder_prefix(state)
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in decoder.items():
        if key.startswith("embed_positions."):
            continue
        m = re.match(r"^embed_tokens\.(\d+)\.weight$", key)
        if m:
            out[f"emb.{m.group(1)}.weight"] = value
            continue
        m = re.match(r"^lm_heads\.(\d+)\.weight$", key)
        if m:
            out[f"linears.{m.group(1)}.weight"] = value
            continue
        if key in ("layer_norm.weight", "layer_norm.bias"):
            out["out_norm." + key.split(".")[1]] = value
            continue
        m = _HF_LAYER.match(key)
        if m:
            layer, name = int(m.group(1)), m.group(2)
            q = re.match(r"^(self_attn|encoder_attn)\.([qkv])_proj\.weight$", name)
            if q:
                qkv.setdefault((layer, q.group(1)), {})[q.group(2)] = value
                continue
            if name in _HF_LAYER_MAP:
                out[f"transformer.layers.{layer}.{_HF_LAYER_MAP[name]}"] = value
                continue
        raise CheckpointError(f"unexpected transformers MusicGen tensor '{key}'")
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"q", "k", "v"}:
            raise CheckpointError(f"layer {layer} {kind} lacks some of q_proj/k_proj/v_proj")
        ours = "self_attn" if kind == "self_attn" else "cross_attention"
        out[f"transformer.layers.{layer}.{ours}.in_proj.weight"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
    for src, dst in (("audio_enc_to_dec_proj.weight", "chroma_proj.weight"),
                     ("audio_enc_to_dec_proj.bias", "chroma_proj.bias")):
        if src in rest and config.n_chroma > 0:
            out[dst] = rest.pop(src)
    return out, rest


def convert_transformers_musicgen(model: Any, **overrides) -> ConvertedMusicGen:
    """Convert a transformers MusicGen / MusicGen-melody model (conditional or causal-LM) to a :class:`CodecLM`."""
    if not hasattr(model, "state_dict") or not hasattr(model, "config"):
        raise CheckpointError(f"expected a transformers MusicGen model, got {type(model).__name__}")
    name = type(model).__name__
    melody = "Melody" in name
    config = lm_config_from_transformers(model, melody=melody, **overrides)
    lm_state, rest = transformers_state_to_codec_lm(model.state_dict(), config)
    if config.n_chroma > 0 and "chroma_proj.weight" not in lm_state:
        # a melody causal-LM alone carries no chroma projection: nothing to condition on
        raise CheckpointError(f"{name} has no audio_enc_to_dec_proj; convert the ...ForConditionalGeneration model")
    lm = CodecLM(config)
    lm.load_state_checked(lm_state, name)
    lm.eval()
    text_projection, text_dim = None, None
    top = model.config
    if "enc_to_dec_proj.weight" in rest:
        text_projection = {"weight": rest["enc_to_dec_proj.weight"].detach().clone()}
        if "enc_to_dec_proj.bias" in rest:
            text_projection["bias"] = rest["enc_to_dec_proj.bias"].detach().clone()
        text_dim = int(text_projection["weight"].shape[1])
    elif hasattr(top, "text_encoder"):
        text_dim = int(top.text_encoder.hidden_size)
        if text_dim != config.dim:
            raise CheckpointError(f"{name}: text width {text_dim} differs from the model width {config.dim} "
                                  "but there is no enc_to_dec_proj")
        text_projection = {"weight": torch.eye(config.dim), "bias": torch.zeros(config.dim)}
    return ConvertedMusicGen(lm=lm, text_projection=text_projection, text_encoder_dim=text_dim, source=name)


# ====================================================================== audiocraft

_AC_PREFIX_TEXT = "condition_provider.conditioners.description.output_proj."
_AC_PREFIX_CHROMA = "condition_provider.conditioners.self_wav.output_proj."


def _yaml_config(xp_cfg: Any) -> dict:
    if isinstance(xp_cfg, Mapping):
        return dict(xp_cfg)
    if not isinstance(xp_cfg, str):
        return {}
    try:
        import yaml
    except ImportError:  # optional: without it, sizes are inferred from the tensors
        return {}
    try:
        data = yaml.safe_load(xp_cfg)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def lm_config_from_audiocraft(state: Mapping[str, torch.Tensor], xp_cfg: Any = None, **overrides) -> CodecLMConfig:
    """Infer a :class:`CodecLMConfig` from an audiocraft LM state dict (and its ``xp.cfg`` when given).

    Sizes come from the tensors; heads, pattern and positional settings from ``xp.cfg``
    (without it: ``dim // 64`` heads, as all official models, and the delay pattern).
    """
    emb = sorted(int(m.group(1)) for k in state if (m := re.match(r"^emb\.(\d+)\.weight$", k)))
    if not emb:
        raise CheckpointError("not an audiocraft LM state dict (no emb.N.weight)")
    n_q = len(emb)
    rows, dim = state["emb.0.weight"].shape
    layers = {int(m.group(1)) for k in state if (m := re.match(r"^transformer\.layers\.(\d+)\.", k))}
    num_layers = max(layers) + 1 if layers else 0
    if "transformer.layers.0.layer_scale_1.scale" in state:
        raise CheckpointError("audiocraft checkpoints with layer_scale are not supported")
    ffn = state.get("transformer.layers.0.linear1.weight")
    cfg = _yaml_config(xp_cfg)
    tlm = cfg.get("transformer_lm", {}) if isinstance(cfg.get("transformer_lm"), dict) else {}
    pat = cfg.get("codebooks_pattern", {}) if isinstance(cfg.get("codebooks_pattern"), dict) else {}
    modeling = str(pat.get("modeling", "delay"))
    pattern, options = "delay", {"delays": list(range(n_q))}
    if modeling == "delay":
        delays = list((pat.get("delay") or {}).get("delays") or range(n_q))
        pattern, options = "delay", {"delays": [int(d) for d in delays]}
    elif modeling == "parallel":
        pattern, options = "parallel", {}
    elif modeling == "unroll":
        unroll = pat.get("unroll") or {}
        pattern, options = "unroll", {k: [int(v) for v in unroll[k]] for k in ("flattening", "delays") if k in unroll}
    elif modeling == "coarse_first":
        pattern, options = "coarse_first", {"delays": [int(d) for d in (pat.get("coarse_first") or {}).get("delays", [0] * (n_q - 1))]}
    elif modeling == "musiclm":
        pattern, options = "musiclm", {"group_by": int((pat.get("music_lm") or {}).get("group_by", 2))}
    positional = str(tlm.get("positional_embedding", "sin"))
    values = dict(
        n_q=n_q, card=int(rows) - 1, dim=int(dim), num_heads=int(tlm.get("num_heads", max(1, dim // 64))),
        num_layers=num_layers, ffn_dim=int(ffn.shape[0]) if ffn is not None else None,
        activation=str(tlm.get("activation", "gelu")),
        bias_attn="transformer.layers.0.self_attn.in_proj_bias" in state,
        bias_ff="transformer.layers.0.linear1.bias" in state, bias_proj="linears.0.bias" in state,
        positional=positional, positional_scale=float(tlm.get("positional_scale", 1.0)),
        max_period=float(tlm.get("max_period", 10000.0)), pattern=pattern, pattern_options=options,
        text_fuse="cross" if "transformer.layers.0.cross_attention.in_proj_weight" in state else (
            "prepend" if _AC_PREFIX_TEXT + "weight" in state else "none"),
    )
    if _AC_PREFIX_CHROMA + "weight" in state:
        values["n_chroma"] = int(state[_AC_PREFIX_CHROMA + "weight"].shape[1])
    values.update(overrides)
    try:
        return CodecLMConfig(**values)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"cannot map the audiocraft config: {e}") from None


_AC_LAYER_MAP = {
    "self_attn.in_proj_weight": "self_attn.in_proj.weight", "self_attn.in_proj_bias": "self_attn.in_proj.bias",
    "self_attn.out_proj.weight": "self_attn.out_proj.weight", "self_attn.out_proj.bias": "self_attn.out_proj.bias",
    "cross_attention.in_proj_weight": "cross_attention.in_proj.weight",
    "cross_attention.in_proj_bias": "cross_attention.in_proj.bias",
    "cross_attention.out_proj.weight": "cross_attention.out_proj.weight",
    "cross_attention.out_proj.bias": "cross_attention.out_proj.bias",
}
_AC_PASSTHROUGH = re.compile(r"^(norm1|norm2|norm_cross|linear1|linear2)\.(weight|bias)$")
_AC_IGNORED = re.compile(r"^condition_provider\.conditioners\.(self_wav\.chroma\.|description\.t5\.)")


def convert_audiocraft_state_dict(state: Mapping[str, torch.Tensor], config: CodecLMConfig | None = None,
                                  xp_cfg: Any = None, **overrides) -> ConvertedMusicGen:
    """Convert an audiocraft MusicGen LM state dict (``lm.state_dict()`` / ``best_state``)."""
    config = config or lm_config_from_audiocraft(state, xp_cfg, **overrides)
    out: dict[str, torch.Tensor] = {}
    text_projection: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"audiocraft tensor '{key}' is a {type(value).__name__}, not a tensor")
        if re.match(r"^(emb|linears)\.\d+\.(weight|bias)$", key) or key.startswith("out_norm."):
            out[key] = value
        elif key.startswith(_AC_PREFIX_TEXT):
            text_projection[key[len(_AC_PREFIX_TEXT):]] = value.detach().clone()
        elif key.startswith(_AC_PREFIX_CHROMA):
            out["chroma_proj." + key[len(_AC_PREFIX_CHROMA):]] = value
        elif _AC_IGNORED.match(key):
            continue
        elif (m := re.match(r"^transformer\.layers\.(\d+)\.(.+)$", key)):
            layer, name = m.group(1), m.group(2)
            if name in _AC_LAYER_MAP:
                out[f"transformer.layers.{layer}.{_AC_LAYER_MAP[name]}"] = value
            elif _AC_PASSTHROUGH.match(name):
                out[key] = value
            else:
                raise CheckpointError(f"unsupported audiocraft tensor '{key}'")
        else:
            raise CheckpointError(f"unexpected audiocraft tensor '{key}'")
    lm = CodecLM(config)
    lm.load_state_checked(out, "audiocraft state dict")
    lm.eval()
    projection = text_projection or None
    text_dim = int(projection["weight"].shape[1]) if projection else None
    if projection is None and config.text_fuse != "none":
        projection = {"weight": torch.eye(config.dim), "bias": torch.zeros(config.dim)}
        text_dim = config.dim
    return ConvertedMusicGen(lm=lm, text_projection=projection, text_encoder_dim=text_dim, source="audiocraft")


def load_audiocraft_checkpoint(path: str | Path, **overrides) -> ConvertedMusicGen:
    """Load an audiocraft ``state_dict.bin`` (exported package or bare LM state dict) and convert it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"no audiocraft checkpoint at {path}")
    try:
        package = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for corrupt or non-weights pickles
        raise CheckpointError(f"{path} is not a readable audiocraft checkpoint: {e}") from None
    if not isinstance(package, Mapping):
        raise CheckpointError(f"{path} does not hold a state dict")
    if "best_state" in package:
        state, xp_cfg = package["best_state"], package.get("xp.cfg")
        if isinstance(state, Mapping) and "model" in state and isinstance(state["model"], Mapping):
            state = state["model"]
    else:
        state, xp_cfg = package, None
    converted = convert_audiocraft_state_dict(state, xp_cfg=xp_cfg, **overrides)
    converted.source = str(path)
    return converted

"""``tunecraft convert musicgen SRC DST``: official MusicGen checkpoints -> a MusicGen bundle.

Sources:

* a **transformers** directory of ``MusicgenForConditionalGeneration`` or
  ``MusicgenMelodyForConditionalGeneration`` (``config.json`` + weights, as
  ``facebook/musicgen-small`` is laid out). The LM and text projection go through
  :func:`tunecraft.lm.convert.convert_transformers_musicgen`, the EnCodec through
  :func:`tunecraft.codecs.convert.from_transformers`, and the T5 encoder inside the checkpoint is
  saved into the bundle (``text_encoder/``, with the directory's tokenizer), so the bundle is
  self-contained;
* an **audiocraft** directory with ``state_dict.bin`` (LM) and ``compression_state_dict.bin``
  (EnCodec). audiocraft checkpoints do not contain T5 (audiocraft downloads ``t5-base`` at run
  time), so ``--text-encoder t5:/local/t5-base`` is required.

``--text-encoder SPEC`` always overrides the encoder; its width must match the checkpoint's text
projection. Stereo checkpoints (twice as many LM streams as codec codebooks) become stereo
bundles; melody checkpoints keep their chroma input.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import torch

from ..errors import CheckpointError, DependencyError, InvalidInput
from ..text.conditioner import TextConditioner
from ..text.encoders import get_text_encoder
from .musicgen import MusicGen, MusicGenConfig

__all__ = ["convert_musicgen", "add_convert_arguments"]

#: MusicGen's published sampling settings
MUSICGEN_SAMPLING = {"top_k": 250, "temperature": 1.0, "cfg_scale": 3.0}
_TRANSFORMERS_CLASSES = {"musicgen": "MusicgenForConditionalGeneration",
                         "musicgen_melody": "MusicgenMelodyForConditionalGeneration"}


def _load_transformers(src: Path):
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - transformers is a core dependency
        raise DependencyError(f"converting a transformers checkpoint needs transformers: {e}") from None
    try:
        model_type = json.loads((src / "config.json").read_text()).get("model_type")
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {src / 'config.json'}: {e}") from None
    if model_type not in _TRANSFORMERS_CLASSES:
        raise CheckpointError(f"{src} holds a {model_type!r} model, not MusicGen "
                              f"(expected model_type {' or '.join(_TRANSFORMERS_CLASSES)})")
    cls = getattr(transformers, _TRANSFORMERS_CLASSES[model_type])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            model = cls.from_pretrained(str(src), local_files_only=True).eval()
        except (OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"cannot load {src} with transformers: {e}") from None
    return model


def _save_t5(model, src: Path, dst: Path) -> None:
    """The checkpoint's T5 encoder and the directory's tokenizer, as a local encoder directory."""
    import transformers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(src), local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            raise CheckpointError(f"{src} has no usable tokenizer for its T5 encoder ({e}); pass "
                                  "--text-encoder t5:/path/to/t5") from None
    model.text_encoder.save_pretrained(str(dst))
    tokenizer.save_pretrained(str(dst))


def convert_musicgen(source: str | Path, out_dir: str | Path, text_encoder: Optional[str] = None,
                     dtype: str = "float16", description: str = "") -> Path:
    """Convert a transformers or audiocraft MusicGen checkpoint into a bundle at ``out_dir``."""
    from ..codecs.convert import from_audiocraft, from_transformers
    from ..lm.convert import convert_transformers_musicgen, load_audiocraft_checkpoint

    src = Path(source).expanduser()
    if not src.is_dir():
        raise CheckpointError(f"{src} is not a directory (a transformers MusicGen directory, or an audiocraft "
                              "one with state_dict.bin and compression_state_dict.bin)")
    if dtype not in ("float16", "float32"):
        raise InvalidInput(f"dtype must be float16 or float32, got {dtype!r}")
    work = Path(tempfile.mkdtemp(prefix="tunecraft-convert-"))
    try:
        encoder_dir: Optional[Path] = None
        if (src / "state_dict.bin").is_file():
            if not (src / "compression_state_dict.bin").is_file():
                raise CheckpointError(f"{src} has state_dict.bin but no compression_state_dict.bin")
            if text_encoder is None:
                raise InvalidInput("audiocraft checkpoints do not include T5; pass --text-encoder t5:/path/to/t5-base")
            converted = load_audiocraft_checkpoint(src / "state_dict.bin")
            codec = from_audiocraft(src / "compression_state_dict.bin")
            origin = "audiocraft"
        elif (src / "config.json").is_file():
            model = _load_transformers(src)
            converted = convert_transformers_musicgen(model)
            codec = from_transformers(model.audio_encoder)
            if text_encoder is None and converted.text_projection is not None:
                encoder_dir = work / "text_encoder"
                _save_t5(model, src, encoder_dir)
            origin = f"transformers {type(model).__name__}"
            del model
        else:
            raise CheckpointError(f"{src} holds neither a transformers MusicGen (config.json) nor an audiocraft "
                                  "checkpoint (state_dict.bin + compression_state_dict.bin)")
        lm = converted.lm
        # stereo checkpoints interleave left/right streams (the converters give them a stereo pattern)
        stereo = str(lm.config.pattern).startswith("stereo")
        k = lm.n_q // (2 if stereo else 1)
        if k > codec.total_codebooks:
            raise CheckpointError(f"the LM models {lm.n_q} streams but the codec has {codec.total_codebooks} codebooks")
        if converted.text_projection is None:
            raise CheckpointError(f"{src} has no text conditioning to convert")
        proj = converted.text_projection
        spec = text_encoder if encoder_dir is None else f"t5:{encoder_dir}"
        encoder = get_text_encoder(spec)
        if encoder.dim != proj["weight"].shape[1]:
            raise InvalidInput(f"text encoder {text_encoder} gives {encoder.dim}-wide states; the checkpoint's "
                               f"projection expects {proj['weight'].shape[1]}")
        text = TextConditioner(lm.dim, encoder, bias="bias" in proj)
        with torch.no_grad():
            text.proj.weight.copy_(proj["weight"])
            if "bias" in proj:
                text.proj.bias.copy_(proj["bias"])
        text_cfg = text.config
        if encoder_dir is not None:
            text_cfg = text_cfg.replace(encoder="t5:text_encoder")  # resolved against the bundle on load
        cfg = MusicGenConfig(codec="codec", num_codebooks=k, text=text_cfg.to_dict(), stereo=stereo,
                             sampling=dict(MUSICGEN_SAMPLING),
                             description=description or f"MusicGen converted from {origin} ({src.name})")
        system = MusicGen(lm, text, codec, cfg)
        return system.save_pretrained(out_dir, dtype=dtype, extra_dirs={"text_encoder": encoder_dir}
                                      if encoder_dir is not None else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="transformers MusicGen directory, or audiocraft directory with "
                                       "state_dict.bin + compression_state_dict.bin")
    parser.add_argument("output", help="bundle directory to write")
    parser.add_argument("--text-encoder", default=None,
                        help="text encoder spec, e.g. t5:/models/t5-base (required for audiocraft checkpoints)")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16",
                        help="storage precision of the weights (default float16)")
    parser.add_argument("--description", default="", help="one line shown by 'tunecraft systems'")
    parser.add_argument("-q", "--quiet", action="store_true")


def cmd_convert_musicgen(args: argparse.Namespace) -> int:
    out = convert_musicgen(args.source, args.output, text_encoder=args.text_encoder, dtype=args.dtype,
                           description=args.description)
    if not args.quiet:
        print(f"wrote {out}  (load it with: tunecraft generate \"...\" --system {out})")
    return 0

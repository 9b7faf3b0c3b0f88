"""``tunecraft codec encode | decode | reconstruct INPUT -o OUTPUT [--model NAME] [--num-codebooks N]``.

* ``encode``: an audio file -> a codes file (``.npz``, format below). Audio at any sample rate
  and channel count is converted to the codec's (soxr resampling; channels averaged to mono,
  or mono duplicated, see :func:`tunecraft.audio.convert_channels`).
* ``decode``: a codes file -> audio (``.wav``/``.flac``) at the codec's sample rate, trimmed
  to the encoded length. The codec named in the file is used unless ``--model`` is given; its
  weights must be the ones that made the file.
* ``reconstruct``: audio -> audio through the codec (encode, then decode).

Codes file (``.npz``, ``numpy.load(path)`` reads it; ``format = "tunecraft-codes"``,
``format_version = 1``)::

    codes           int16 [K, F]   discrete codecs: K codebooks x F frames, values in [0, cardinality)
    latents         float32 [D, F] continuous codecs (scaled / whitened as ``encode`` returns them)
    model           str            the --model argument (bundle name or directory)
    model_class     str            e.g. "RVQCodec"
    weights_sha256  str            first 16 hex digits of the SHA-256 of model.safetensors
    sample_rate     int            the codec's sample rate (Hz)
    frame_rate      float          frames per second (sample_rate / hop_length)
    hop_length      int            samples per frame
    channels        int            audio channels of the codec
    length          int            samples of the encoded audio at sample_rate (decode trims to it)
    input_sample_rate int          rate of the input file
    cardinality     int            codebook size (discrete codecs; 0 otherwise)
    latent_dim      int            D (continuous codecs; 0 otherwise)

Bad input (missing or corrupt files, NaN/inf or empty audio, codes outside the codebooks, a
wrong number of codebooks, a codes file from another codec) is a :class:`TunecraftError`: one
line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError, InvalidInput, TunecraftError

CODES_FORMAT = "tunecraft-codes"
CODES_FORMAT_VERSION = 1
AUDIO_EXTS = (".wav", ".flac")
DEFAULT_MODEL = "codec-rvq"


class CodesFileError(TunecraftError):
    """A codes file is missing, corrupt, of another format, or does not fit the codec."""


# ---- the codes file ------------------------------------------------------------------------


def weights_fingerprint(model_dir: Path) -> str:
    """First 16 hex digits of the SHA-256 of ``model_dir/model.safetensors``."""
    from ..pretrained import WEIGHTS_NAME

    h = hashlib.sha256()
    try:
        with open(model_dir / WEIGHTS_NAME, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise CheckpointError(f"cannot read {model_dir / WEIGHTS_NAME}: {e}") from None
    return h.hexdigest()[:16]


def write_codes_file(path: str | Path, codec, model: str, fingerprint: str, encoded: torch.Tensor, length: int,
                     input_sample_rate: int) -> Path:
    """Write ``encoded`` (codes ``[1, K, F]`` or latents ``[1, D, F]``) and its metadata to ``path``."""
    path = Path(path)
    discrete = bool(codec.is_discrete)
    fields: dict[str, Any] = {
        "format": np.array(CODES_FORMAT),
        "format_version": np.array(CODES_FORMAT_VERSION),
        "model": np.array(str(model)),
        "model_class": np.array(type(codec).__name__),
        "weights_sha256": np.array(fingerprint),
        "sample_rate": np.array(int(codec.sample_rate)),
        "frame_rate": np.array(float(codec.frame_rate)),
        "hop_length": np.array(int(codec.hop_length)),
        "channels": np.array(int(codec.channels)),
        "length": np.array(int(length)),
        "input_sample_rate": np.array(int(input_sample_rate)),
        "cardinality": np.array(int(codec.cardinality) if discrete else 0),
        "latent_dim": np.array(0 if discrete else int(codec.latent_dim)),
    }
    if discrete:
        if codec.cardinality > np.iinfo(np.int16).max + 1:
            fields["codes"] = encoded[0].cpu().numpy().astype(np.int32)
        else:
            fields["codes"] = encoded[0].cpu().numpy().astype(np.int16)
    else:
        fields["latents"] = encoded[0].cpu().numpy().astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    try:
        np.savez(tmp, **fields)
        tmp.replace(path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_codes_file(path: str | Path) -> dict[str, Any]:
    """The arrays and metadata of a codes file (plain Python scalars and strings, numpy arrays)."""
    path = Path(path)
    if not path.is_file():
        raise CodesFileError(f"no such codes file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise CodesFileError(f"{path} is not a readable .npz codes file: {e}") from None
    if str(raw.get("format", "")) != CODES_FORMAT:
        raise CodesFileError(f"{path} is not a tunecraft codes file (no format={CODES_FORMAT!r} entry)")
    try:
        version = int(raw["format_version"])
    except (KeyError, TypeError, ValueError):
        raise CodesFileError(f"{path} has no valid format_version") from None
    if version > CODES_FORMAT_VERSION:
        raise CodesFileError(f"{path} is codes format version {version}; this tunecraft reads up to "
                             f"{CODES_FORMAT_VERSION} (upgrade tunecraft)")
    out: dict[str, Any] = {}
    try:
        for key in ("model", "model_class", "weights_sha256"):
            out[key] = str(raw[key])
        for key in ("sample_rate", "hop_length", "channels", "length", "input_sample_rate", "cardinality",
                    "latent_dim"):
            out[key] = int(raw[key])
        out["frame_rate"] = float(raw["frame_rate"])
    except (KeyError, TypeError, ValueError) as e:
        raise CodesFileError(f"{path} lacks valid metadata ({e})") from None
    if ("codes" in raw) == ("latents" in raw):
        raise CodesFileError(f"{path} must hold exactly one of 'codes' or 'latents'")
    if "codes" in raw:
        codes = raw["codes"]
        if codes.dtype.kind not in "iu" or codes.ndim != 2:
            raise CodesFileError(f"{path}: codes must be integers shaped [K, F], got {codes.dtype} {codes.shape}")
        out["codes"] = codes
    else:
        latents = raw["latents"]
        if latents.dtype.kind != "f" or latents.ndim != 2:
            raise CodesFileError(f"{path}: latents must be floats shaped [D, F], got {latents.dtype} {latents.shape}")
        out["latents"] = latents
    if out["length"] < 1:
        raise CodesFileError(f"{path}: length must be a positive number of samples, got {out['length']}")
    return out


# ---- commands ------------------------------------------------------------------------------


def _positive_codebooks(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return n


def add_codec_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``encode``/``decode``/``reconstruct`` subcommands of ``tunecraft codec``."""
    parser_class = type(parser)
    sub = parser.add_subparsers(dest="codec_command", metavar="ACTION", parser_class=parser_class)
    helps = {
        "encode": ("audio file -> codes file (.npz)", "input audio (.wav, .flac, .ogg, ...)", "output .npz"),
        "decode": ("codes file (.npz) -> audio", "input codes file (.npz) from 'tunecraft codec encode'",
                   "output .wav or .flac"),
        "reconstruct": ("audio -> codec -> audio (encode, then decode)", "input audio", "output .wav or .flac"),
    }
    for action, (help_text, input_help, output_help) in helps.items():
        p = sub.add_parser(action, help=help_text, description=help_text)
        p.add_argument("input", help=input_help)
        p.add_argument("-o", "--output", required=True, help=output_help)
        p.add_argument("--model", default=None,
                       help=f"codec bundle name or model directory (default: {DEFAULT_MODEL}"
                            + ("; decode: the codec named in the codes file)" if action == "decode" else ")"))
        p.add_argument("--num-codebooks", type=_positive_codebooks, default=None,
                       help="use only the first N codebooks (discrete codecs; lower bitrate)")
        p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
        p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
        p.set_defaults(func=cmd_codec, codec_action=action)
    parser.set_defaults(func=_missing_action, codec_parser=parser)


def _missing_action(args: argparse.Namespace) -> int:
    raise InvalidInput(f"an action is required: encode, decode or reconstruct (see '{args.codec_parser.prog} --help')")


def _load(model: str, device: str):
    from ..pretrained import resolve_model_dir
    from . import load_codec

    try:
        torch_device = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidInput(f"unknown torch device {device!r}") from None
    model_dir = resolve_model_dir(model)
    return load_codec(model_dir, device=torch_device), model_dir


def _set_codebooks(codec, n: int | None) -> None:
    if n is None:
        return
    if not codec.is_discrete:
        raise InvalidInput(f"--num-codebooks applies to discrete codecs; {type(codec).__name__} has continuous latents")
    if n > codec.total_codebooks:
        raise InvalidInput(f"--num-codebooks {n} is more than the {codec.total_codebooks} codebooks of the codec")
    codec.set_num_codebooks(n)


def _check_suffix(path: str, allowed: tuple[str, ...], what: str) -> Path:
    p = Path(path)
    if p.suffix.lower() not in allowed:
        raise InvalidInput(f"{what} must end in {' or '.join(allowed)}, got {path!r}")
    if p.exists() and p.is_dir():
        raise InvalidInput(f"{what} {path!r} is a directory")
    return p


def _read_audio(path: str, codec) -> tuple[torch.Tensor, int]:
    """``([1, C, T] at the codec's rate and channels, the file's sample rate)``."""
    from ..audio.io import load_audio

    wav, sr = load_audio(path)  # AudioFormatError for missing/corrupt/empty/non-finite files
    if wav.shape[0] < 1 or wav.shape[-1] < 1:
        raise InvalidInput(f"{path} holds no audio")
    return codec.prepare_audio(wav[None], sr), sr


def _encode(codec, wav: torch.Tensor) -> torch.Tensor:
    if wav.shape[-1] < codec.hop_length:
        raise InvalidInput(f"audio is shorter than one codec frame ({wav.shape[-1]} < {codec.hop_length} samples "
                           f"at {codec.sample_rate} Hz)")
    return codec.encode(wav)


def _describe(codec) -> str:
    if codec.is_discrete:
        return f"{codec.num_codebooks} x {codec.cardinality} codes, {codec.bandwidth:.2f} kbps"
    return f"{codec.latent_dim}-d latents"


def cmd_codec(args: argparse.Namespace) -> int:
    """Run ``tunecraft codec ACTION``; errors are :class:`TunecraftError` (exit 2 in the CLI)."""
    from ..audio.io import save_audio

    action = args.codec_action
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    if action == "encode":
        out = _check_suffix(args.output, (".npz",), "the codes file (-o)")
        model = args.model or DEFAULT_MODEL
        codec, model_dir = _load(model, args.device)
        _set_codebooks(codec, args.num_codebooks)
        wav, sr = _read_audio(args.input, codec)
        encoded = _encode(codec, wav)
        write_codes_file(out, codec, model, weights_fingerprint(model_dir), encoded, wav.shape[-1], sr)
        say(f"wrote {out}: {encoded.shape[-1]} frames of {_describe(codec)} "
            f"({wav.shape[-1] / codec.sample_rate:.2f} s, {model})")
        return 0

    out = _check_suffix(args.output, AUDIO_EXTS, "the output audio (-o)")
    if action == "reconstruct":
        model = args.model or DEFAULT_MODEL
        codec, _ = _load(model, args.device)
        _set_codebooks(codec, args.num_codebooks)
        wav, _ = _read_audio(args.input, codec)
        recon = codec.decode(_encode(codec, wav), length=wav.shape[-1])
        save_audio(out, recon[0].cpu(), codec.sample_rate)
        say(f"wrote {out}: {wav.shape[-1] / codec.sample_rate:.2f} s at {codec.sample_rate} Hz through {model} "
            f"({_describe(codec)})")
        return 0

    # decode
    data = read_codes_file(args.input)
    model = args.model or data["model"]
    codec, model_dir = _load(model, args.device)
    if type(codec).__name__ != data["model_class"]:
        raise CodesFileError(f"{args.input} was made by a {data['model_class']}, but {model} is a "
                             f"{type(codec).__name__}")
    fingerprint = weights_fingerprint(model_dir)
    if fingerprint != data["weights_sha256"]:
        raise CodesFileError(f"{args.input} was made by {data['model']} with other weights "
                             f"({data['weights_sha256']} != {fingerprint} of {model})")
    for key in ("sample_rate", "hop_length", "channels"):
        if int(getattr(codec, key)) != data[key]:
            raise CodesFileError(f"{args.input}: {key} {data[key]} does not match {model} ({getattr(codec, key)})")
    if codec.is_discrete:
        codes = torch.from_numpy(data["codes"].astype(np.int64))[None]
        if args.num_codebooks is not None:
            if args.num_codebooks > codes.shape[1]:
                raise InvalidInput(f"--num-codebooks {args.num_codebooks} is more than the {codes.shape[1]} "
                                   f"codebooks in {args.input}")
            codes = codes[:, : args.num_codebooks]
        if data["cardinality"] != codec.cardinality:
            raise CodesFileError(f"{args.input}: codebooks of size {data['cardinality']}, {model} has "
                                 f"{codec.cardinality}")
        encoded = codes
    else:
        if args.num_codebooks is not None:
            raise InvalidInput(f"--num-codebooks applies to discrete codecs; {args.input} holds latents")
        encoded = torch.from_numpy(data["latents"].astype(np.float32))[None]
    frames_needed = codec.num_frames(data["length"])
    if encoded.shape[-1] != frames_needed:
        raise CodesFileError(f"{args.input}: {encoded.shape[-1]} frames, but length {data['length']} needs "
                             f"{frames_needed}")
    wav = codec.decode(encoded, length=data["length"])  # InvalidInput: values outside the codebooks, NaN, ...
    save_audio(out, wav[0].cpu(), codec.sample_rate)
    what = (f"{encoded.shape[1]} x {codec.cardinality} codes" if codec.is_discrete
            else f"{encoded.shape[1]}-d latents")
    say(f"wrote {out}: {data['length'] / codec.sample_rate:.2f} s at {codec.sample_rate} Hz from {what} ({model})")
    return 0

"""audiocraft-compatible dataset manifests and metadata sidecars.

A manifest is a JSON-lines file (``data.jsonl``, or gzip-compressed ``data.jsonl.gz``) with one
object per audio file, exactly as audiocraft writes them::

    {"path": "clips/a.wav", "duration": 10.0, "sample_rate": 32000,
     "amplitude": null, "weight": null, "info_path": null}

``amplitude``, ``weight`` and ``info_path`` may be null or absent; other keys are kept in
:attr:`AudioMeta.extra`. Relative ``path``/``info_path`` values are resolved against the
manifest's folder, so a dataset folder can be moved as a whole.

Each audio file may have a same-stem ``.json`` sidecar (or the file ``info_path`` names;
audiocraft's ``archive.zip:member.json`` form is read too) with the fields
:data:`SIDECAR_FIELDS` (extra fields are kept), and, for plain folders, a same-stem ``.txt``
caption that is used as the description when the sidecar has none.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Union

from ..audio.io import READ_FORMATS, atomic_output, audio_info
from ..errors import AudioFormatError, InvalidInput
from ..jsonl import iter_json_lines

PathLike = Union[str, os.PathLike]

#: Extensions that :func:`scan_audio_folder` indexes.
AUDIO_EXTENSIONS: tuple[str, ...] = tuple(sorted(READ_FORMATS))

#: Manifest file names looked for inside a dataset folder, in order.
MANIFEST_NAMES: tuple[str, ...] = ("data.jsonl", "data.jsonl.gz")

#: Metadata fields of a sidecar (DESIGN.md §4). Missing ones are filled by :func:`normalize_info`.
SIDECAR_FIELDS: tuple[str, ...] = (
    "title",
    "artist",
    "key",
    "bpm",
    "genre",
    "moods",
    "keywords",
    "description",
    "instrument",
)

_LIST_FIELDS = ("moods", "keywords")
_CORE_KEYS = ("path", "duration", "sample_rate", "amplitude", "weight", "info_path")


@dataclasses.dataclass
class AudioMeta:
    """One manifest line: an audio file and what the dataset needs to know about it.

    Attributes:
        path: the audio file (absolute once read from a manifest).
        duration: seconds.
        sample_rate: frames per second.
        amplitude: optional peak amplitude (audiocraft leaves it null).
        weight: optional sampling weight (>= 0); null means 1.
        info_path: optional metadata sidecar; null means "same stem, .json, if present".
        extra: any other keys found on the manifest line (written back unchanged).
    """

    path: str
    duration: float
    sample_rate: int
    amplitude: float | None = None
    weight: float | None = None
    info_path: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict:
        """The manifest line as a dict, core keys first (audiocraft order), extras after."""
        d = {k: getattr(self, k) for k in _CORE_KEYS}
        for k, v in self.extra.items():
            d.setdefault(k, v)
        return d

    @classmethod
    def from_dict(cls, data: dict, root: PathLike | None = None) -> AudioMeta:
        """Build from a manifest line; relative paths are resolved against ``root``.

        Raises:
            InvalidInput: a required key is missing or a value has the wrong type.
        """
        if not isinstance(data, dict):
            raise InvalidInput(f"expected a JSON object, got {type(data).__name__}")
        for key in ("path", "duration", "sample_rate"):
            if key not in data or data[key] is None:
                raise InvalidInput(f"missing required key {key!r}")
        path = data["path"]
        if not isinstance(path, str) or not path:
            raise InvalidInput(f"'path' must be a non-empty string, got {path!r}")
        duration = _number(data["duration"], "duration")
        if duration < 0:
            raise InvalidInput(f"'duration' must be >= 0, got {duration}")
        sr = data["sample_rate"]
        if isinstance(sr, bool) or not isinstance(sr, (int, float)) or float(sr) != int(sr) or int(sr) <= 0:
            raise InvalidInput(f"'sample_rate' must be a positive integer, got {sr!r}")
        amplitude = None if data.get("amplitude") is None else _number(data["amplitude"], "amplitude")
        weight = None if data.get("weight") is None else _number(data["weight"], "weight")
        if weight is not None and weight < 0:
            raise InvalidInput(f"'weight' must be >= 0, got {weight}")
        info_path = data.get("info_path")
        if info_path is not None and not isinstance(info_path, str):
            raise InvalidInput(f"'info_path' must be a string or null, got {info_path!r}")
        extra = {k: v for k, v in data.items() if k not in _CORE_KEYS}
        return cls(
            path=_resolve(path, root),
            duration=duration,
            sample_rate=int(sr),
            amplitude=amplitude,
            weight=weight,
            info_path=_resolve(info_path, root) if info_path else None,
            extra=extra,
        )


@dataclasses.dataclass(frozen=True)
class SkippedFile:
    """A file left out of a manifest or dataset, and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclasses.dataclass
class ManifestScan:
    """What :func:`build_manifest` found: the readable files, the skipped ones, and where the
    manifest was written (if it was). Iterates over and indexes into :attr:`metas`."""

    metas: list[AudioMeta]
    skipped: list[SkippedFile]
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.metas)

    def __iter__(self) -> Iterator[AudioMeta]:
        return iter(self.metas)

    def __getitem__(self, i: int) -> AudioMeta:
        return self.metas[i]

    @property
    def total_duration(self) -> float:
        return float(sum(m.duration for m in self.metas))

    def __str__(self) -> str:
        minutes = self.total_duration / 60.0
        s = f"{len(self.metas)} audio file(s), {minutes:.1f} min"
        if self.skipped:
            s += f", {len(self.skipped)} unreadable file(s) skipped"
        return s


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise InvalidInput(f"{name!r} must be a finite number, got {value!r}")
    return float(value)


def _resolve(path: str, root: PathLike | None) -> str:
    # audiocraft's zip form "archive.zip:member" resolves the archive part only.
    archive, sep, member = path.partition(".zip:")
    head = archive + ".zip" if sep else path
    p = Path(os.path.expanduser(head))
    if not p.is_absolute() and root is not None:
        p = Path(root) / p
    out = os.path.normpath(str(p)) if (root is not None or p.is_absolute()) else str(p)
    return out + ":" + member if sep else out


def _open_text(path: Path, mode: str):
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def find_manifest(folder: PathLike) -> Path | None:
    """The manifest inside ``folder`` (``data.jsonl`` or ``data.jsonl.gz``), or ``None``."""
    for name in MANIFEST_NAMES:
        p = Path(folder) / name
        if p.is_file():
            return p
    return None


def read_manifest(path: PathLike) -> list[AudioMeta]:
    """Read a ``.jsonl`` / ``.jsonl.gz`` manifest (or the one inside a folder).

    Blank lines are ignored. Relative paths are resolved against the manifest's folder.

    Raises:
        InvalidInput: the manifest does not exist, or a line is not valid JSON or lacks a
            required key; the message says ``file:line``.
    """
    p = Path(path)
    if p.is_dir():
        found = find_manifest(p)
        if found is None:
            raise InvalidInput(f"no manifest ({' or '.join(MANIFEST_NAMES)}) in folder {p}")
        p = found
    if not p.is_file():
        raise InvalidInput(f"manifest not found: {p}")
    root = p.resolve().parent
    metas: list[AudioMeta] = []
    try:
        with _open_text(p, "r") as f:
            for lineno, data in iter_json_lines(f, p):
                try:
                    metas.append(AudioMeta.from_dict(data, root))
                except InvalidInput as e:
                    raise InvalidInput(f"{p}:{lineno}: {e}") from None
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read manifest {p}: {e}") from None
    return metas


def _relativize(path: str | None, root: Path, relative: bool) -> str | None:
    if path is None:
        return None
    archive, sep, member = path.partition(".zip:")
    head = archive + ".zip" if sep else path
    p = Path(head)
    if relative and p.is_absolute():
        try:
            head = p.resolve().relative_to(root).as_posix()
        except ValueError:
            head = str(p)
    return head + ":" + member if sep else head


def write_manifest(path: PathLike, metas: Iterable[AudioMeta], relative: bool = True) -> Path:
    """Write ``metas`` as a manifest at ``path`` (gzip when it ends in ``.gz``), atomically.

    Args:
        path: destination ``.jsonl`` or ``.jsonl.gz``; parent folders are created.
        metas: the entries.
        relative: write paths inside the manifest's folder relative to it (portable datasets);
            paths elsewhere stay absolute. ``False`` writes paths as they are.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    root = p.parent.resolve()
    with atomic_output(p) as tmp:
        opener = gzip.open(tmp, "wt", encoding="utf-8") if p.suffix == ".gz" else open(tmp, "w", encoding="utf-8")
        with opener as f:
            for meta in metas:
                d = meta.to_dict()
                d["path"] = _relativize(meta.path, root, relative)
                d["info_path"] = _relativize(meta.info_path, root, relative)
                f.write(json.dumps(d, ensure_ascii=False) + "\n")
    return p


def iter_audio_files(folder: PathLike, recursive: bool = True) -> list[Path]:
    """Audio files (by extension, :data:`AUDIO_EXTENSIONS`) under ``folder``, sorted; hidden
    files and folders are ignored."""
    root = Path(folder)
    if not root.is_dir():
        raise InvalidInput(f"not a directory: {root}")
    found: list[Path] = []
    if recursive:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS:
                    found.append(Path(dirpath) / name)
    else:
        found = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_EXTENSIONS]
    return sorted(found)


def sidecar_path(audio_path: PathLike) -> Path:
    """The same-stem ``.json`` sidecar of an audio file (it may not exist)."""
    return Path(audio_path).with_suffix(".json")


def caption_path(audio_path: PathLike) -> Path:
    """The same-stem ``.txt`` caption of an audio file (it may not exist)."""
    return Path(audio_path).with_suffix(".txt")


def scan_audio_folder(folder: PathLike, recursive: bool = True) -> tuple[list[AudioMeta], list[SkippedFile]]:
    """Index the audio files under ``folder`` reading only their headers.

    Unreadable files (corrupt header, empty, unsupported codec) are returned in the second list
    instead of raising. ``info_path`` points at a same-stem ``.json`` sidecar when one exists.
    """
    metas: list[AudioMeta] = []
    skipped: list[SkippedFile] = []
    for path in iter_audio_files(folder, recursive=recursive):
        try:
            info = audio_info(path)
        except AudioFormatError as e:
            skipped.append(SkippedFile(str(path), str(e)))
            continue
        side = sidecar_path(path)
        metas.append(
            AudioMeta(
                path=os.path.normpath(str(path.resolve())),
                duration=info.duration,
                sample_rate=info.sample_rate,
                info_path=os.path.normpath(str(side.resolve())) if side.is_file() else None,
            )
        )
    return metas, skipped


def build_manifest(
    folder: PathLike, out: PathLike | None = None, recursive: bool = True, relative: bool = True
) -> ManifestScan:
    """Scan ``folder`` for audio (headers only) and optionally write the manifest to ``out``.

    Unreadable files are skipped, counted in :attr:`ManifestScan.skipped` and reported in one
    warning. ``str(result)`` is a one-line summary.

    Raises:
        InvalidInput: ``folder`` is not a directory.
    """
    metas, skipped = scan_audio_folder(folder, recursive=recursive)
    if skipped:
        shown = "; ".join(str(s) for s in skipped[:3])
        more = f" (and {len(skipped) - 3} more)" if len(skipped) > 3 else ""
        warnings.warn(f"build_manifest: skipped {len(skipped)} unreadable audio file(s): {shown}{more}", stacklevel=2)
    written = write_manifest(out, metas, relative=relative) if out is not None else None
    return ManifestScan(metas=metas, skipped=skipped, path=written)


def _read_json_sidecar(path: str) -> dict:
    archive, sep, member = path.partition(".zip:")
    try:
        if sep:
            with zipfile.ZipFile(archive + ".zip") as zf:
                text = zf.read(member).decode("utf-8")
        else:
            text = Path(path).read_text(encoding="utf-8")
    except (OSError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise InvalidInput(f"cannot read metadata sidecar {path}: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"metadata sidecar {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"metadata sidecar {path} must hold a JSON object, got {type(data).__name__}")
    return data


def normalize_info(raw: dict) -> dict:
    """Return a copy of a sidecar dict with every :data:`SIDECAR_FIELDS` key present.

    ``moods`` and ``keywords`` become lists of strings (a comma-separated string is split, as
    audiocraft's ``MusicInfo`` accepts both); a numeric-string ``bpm`` becomes a float; a blank
    ``description`` becomes ``None``. Other keys are kept unchanged.
    """
    info = dict(raw)
    for field in SIDECAR_FIELDS:
        info.setdefault(field, [] if field in _LIST_FIELDS else None)
    for field in _LIST_FIELDS:
        value = info[field]
        if value is None:
            info[field] = []
        elif isinstance(value, str):
            info[field] = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, (list, tuple)):
            info[field] = [str(v).strip() for v in value if str(v).strip()]
        else:
            info[field] = [str(value)]
    bpm = info["bpm"]
    if isinstance(bpm, str):
        try:
            info["bpm"] = float(bpm)
        except ValueError:
            pass
    desc = info["description"]
    if desc is not None and not isinstance(desc, str):
        desc = str(desc)
    info["description"] = desc.strip() if desc and desc.strip() else None
    return info


def load_info(meta: AudioMeta | PathLike) -> dict:
    """The metadata of one audio file, normalised by :func:`normalize_info`.

    Sources, in order: the sidecar ``meta.info_path`` names (plain path or audiocraft's
    ``archive.zip:member.json``), else the same-stem ``.json`` if present; then, when no
    description was found, the same-stem ``.txt`` caption (audiocraft's plain-folder convention).

    Raises:
        InvalidInput: the sidecar exists but is unreadable or not a JSON object.
    """
    audio_path = meta.path if isinstance(meta, AudioMeta) else os.fspath(meta)
    info_path = meta.info_path if isinstance(meta, AudioMeta) else None
    raw: dict = {}
    if info_path:
        raw = _read_json_sidecar(info_path)
    else:
        side = sidecar_path(audio_path)
        if side.is_file():
            raw = _read_json_sidecar(str(side))
    info = normalize_info(raw)
    if info["description"] is None:
        cap = caption_path(audio_path)
        if cap.is_file():
            try:
                text = cap.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as e:
                raise InvalidInput(f"cannot read caption file {cap}: {e}") from None
            info["description"] = text or None
    return info


def resolve_split(source: str | Path, split: str) -> Path | None:
    """The manifest of ``split`` in a corpus directory (``<source>/<split>.jsonl[.gz]``), or
    ``None`` when ``source`` has no such manifest or it lists no clip."""
    root = Path(source)
    if not root.is_dir():
        return None
    for name in (f"{split}.jsonl", f"{split}.jsonl.gz"):
        path = root / name
        if path.is_file():
            if path.stat().st_size == 0:
                return None
            return path
    return None


def split_source(source: Any, split: str, train_split: str) -> Any:
    """Where the clips of ``split`` come from: its manifest in the corpus directory ``source``
    (:func:`resolve_split`); failing that, ``source`` itself for the training split (no split
    manifests: the whole source is the training set), else ``None``."""
    manifest = resolve_split(source, split)
    if manifest is not None:
        return manifest
    return source if split == train_split else None

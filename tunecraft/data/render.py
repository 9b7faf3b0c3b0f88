"""SoundFont renderer for MIDI: tinysoundfont, our own event scheduler, float32 stereo.

:func:`render` turns a :class:`~tunecraft.data.composer.Composition`, a
:class:`pretty_midi.PrettyMIDI` or a ``.mid`` path into audio ``[C, T]`` float32.
Events (program selection, control changes, pitch bends, note on/off) are scheduled
on the sample grid by this module; between two event times the TinySoundFont voice
renderer fills the output buffer directly (no Python per sample). A 10 s clip of the
composer renders in 20-40 ms on one idle core (250-500x real time).

SoundFonts: the default is ``TimGM6mb.sf2``, the 6 MB General MIDI bank shipped
inside the ``pretty_midi`` package; pass ``soundfont=`` any ``.sf2``/``.sf3`` path
(e.g. Debian's ``/usr/share/sounds/sf2/FluidR3_GM.sf2``). A loaded SoundFont is
cached per process and cloned for each render, so each render starts from a clean
synthesizer state (cloning shares the sample data and costs microseconds).

Output is peak-normalised to ``peak_db`` dBFS (default -1 dB) unless
``normalize=False``; silence stays silence.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DependencyError, InvalidInput

__all__ = ["render", "default_soundfont", "load_soundfont", "midi_events", "DEFAULT_SAMPLE_RATE"]

DEFAULT_SAMPLE_RATE = 32000
_CACHE: dict[str, Any] = {}
_LOCK = threading.Lock()

# event kinds, in the order they are applied at equal times
_EV_PROGRAM, _EV_CC, _EV_BEND, _EV_OFF, _EV_ON = 0, 1, 2, 3, 4


def _tsf():
    try:
        from tinysoundfont import _tinysoundfont
    except ImportError as e:
        raise DependencyError(
            "tinysoundfont is required to render MIDI: pip install 'tinysoundfont>=0.3.7' "
            "(or pip install 'tunecraft[data]')"
        ) from e
    return _tinysoundfont


def default_soundfont() -> Path:
    """Path of the General MIDI SoundFont that ships with ``pretty_midi`` (TimGM6mb.sf2)."""
    try:
        import pretty_midi
    except ImportError as e:
        raise DependencyError(
            "no soundfont given and pretty_midi (which ships TimGM6mb.sf2) is not installed: "
            "pip install pretty_midi, or pass soundfont=PATH"
        ) from e
    path = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
    if not path.is_file():
        raise DependencyError(f"pretty_midi's TimGM6mb.sf2 is missing at {path}; pass soundfont=PATH")
    return path


def load_soundfont(soundfont: str | os.PathLike | None = None):
    """Load (once per process) and return the TinySoundFont object for ``soundfont``."""
    path = Path(soundfont).expanduser() if soundfont is not None else default_soundfont()
    if not path.is_file():
        raise DependencyError(f"soundfont not found: {path}")
    key = str(path.resolve())
    with _LOCK:
        sf = _CACHE.get(key)
        if sf is None:
            tsf = _tsf()
            try:
                sf = tsf.SoundFont(key)
            except Exception as e:  # tinysoundfont raises a bare Exception on a bad file
                raise DependencyError(f"cannot load soundfont {path}: {e}") from None
            _CACHE[key] = sf
    return sf


def _as_events(source) -> tuple[list[tuple[int, int, bool, int]], list[tuple], float]:
    """Normalise a source to (channel programs, events, end time in seconds).

    channel programs: (channel, program, is_drum, bank) initial program selections.
    events: (time_s, kind, channel, a, b) tuples.
    """
    from .composer import Composition

    if isinstance(source, Composition):
        programs, events = [], []
        end = 0.0
        for p in source.parts:
            programs.append((p.channel, p.program, p.is_drum, 128 if p.is_drum else 0))
            events.append((0.0, _EV_CC, p.channel, 7, p.volume))
            events.append((0.0, _EV_CC, p.channel, 10, p.pan))
            for n in p.notes:
                events.append((n.start, _EV_ON, p.channel, n.pitch, n.velocity))
                events.append((n.end, _EV_OFF, p.channel, n.pitch, 0))
                end = max(end, n.end)
        return programs, events, end
    return midi_events(source)


def midi_events(midi) -> tuple[list[tuple[int, int, bool, int]], list[tuple], float]:
    """Events of a :class:`pretty_midi.PrettyMIDI` (or a path to a MIDI file).

    Drum instruments go to channel 10 (index 9). Melodic instruments get their own
    channel while there are free ones; beyond 15 they share channels by program.
    """
    try:
        import pretty_midi
    except ImportError as e:
        raise DependencyError("pretty_midi is required to render MIDI files: pip install pretty_midi") from e
    if isinstance(midi, (str, os.PathLike)):
        path = Path(midi)
        if not path.is_file():
            raise InvalidInput(f"MIDI file not found: {path}")
        try:
            midi = pretty_midi.PrettyMIDI(str(path))
        except Exception as e:
            raise InvalidInput(f"cannot read MIDI file {path}: {e}") from None
    if not isinstance(midi, pretty_midi.PrettyMIDI):
        raise InvalidInput(f"cannot render an object of type {type(midi).__name__}; expected a Composition, "
                           "a pretty_midi.PrettyMIDI or a MIDI file path")
    free = [c for c in range(16) if c != 9]
    by_program: dict[int, int] = {}
    programs, events = [], []
    end = 0.0
    for k, inst in enumerate(midi.instruments):
        if inst.is_drum:
            ch = 9
            if not any(p[0] == 9 for p in programs):  # the first drum track's program picks the kit
                programs.append((9, int(inst.program), True, 128))
        elif inst.program in by_program:
            ch = by_program[inst.program]
        elif free:
            ch = free.pop(0)
            by_program[inst.program] = ch
            programs.append((ch, int(inst.program), False, 0))
        else:  # out of channels: share the channel of the closest program family
            ch = min(by_program.items(), key=lambda kv: abs(kv[0] - inst.program))[1]
        for cc in inst.control_changes:
            events.append((float(cc.time), _EV_CC, ch, int(cc.number), int(cc.value)))
        for pb in inst.pitch_bends:
            events.append((float(pb.time), _EV_BEND, ch, int(pb.pitch) + 8192, 0))
        for n in inst.notes:
            if n.end <= n.start:
                continue
            events.append((float(n.start), _EV_ON, ch, int(n.pitch), int(n.velocity)))
            events.append((float(n.end), _EV_OFF, ch, int(n.pitch), 0))
            end = max(end, float(n.end))
    return programs, events, end


def render(
    source,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    soundfont: str | os.PathLike | None = None,
    *,
    duration: float | None = None,
    channels: int = 2,
    tail: float = 1.0,
    normalize: bool = True,
    peak_db: float = -1.0,
    gain_db: float = 0.0,
    max_voices: int = 256,
    fade_out: float = 0.05,
) -> np.ndarray:
    """Render MIDI to audio.

    Args:
        source: a :class:`~tunecraft.data.composer.Composition`, a
            :class:`pretty_midi.PrettyMIDI`, or a path to a ``.mid`` file.
        sample_rate: output sample rate in Hz.
        soundfont: ``.sf2``/``.sf3`` path; default: pretty_midi's TimGM6mb.sf2.
        duration: output length in seconds (cropped or zero-padded; a short fade-out
            is applied when the music is cut). Default: last note end + ``tail``.
        channels: 2 (stereo) or 1 (mono downmix).
        tail: seconds of release after the last note when ``duration`` is None.
        normalize: peak-normalise to ``peak_db`` dBFS.
        gain_db: synthesizer gain before normalisation.
        max_voices: polyphony limit of the synthesizer.
        fade_out: seconds of fade applied at the end when the audio is cropped.

    Returns:
        float32 array ``[channels, T]`` in [-1, 1].
    """
    if not isinstance(sample_rate, (int, np.integer)) or not 4000 <= int(sample_rate) <= 192000:
        raise InvalidInput(f"sample_rate must be an integer between 4000 and 192000, got {sample_rate!r}")
    if channels not in (1, 2):
        raise InvalidInput(f"channels must be 1 or 2, got {channels!r}")
    if duration is not None and not duration > 0:
        raise InvalidInput(f"duration must be positive, got {duration!r}")
    sr = int(sample_rate)
    programs, events, end = _as_events(source)
    total_s = float(duration) if duration is not None else end + max(0.0, float(tail))
    total = max(1, int(round(total_s * sr)))

    tsf = _tsf()
    base = load_soundfont(soundfont)
    synth = tsf.SoundFont(base)  # independent playback state, shared samples
    synth.set_output(tsf.OutputMode.StereoInterleaved, sr, float(gain_db))
    synth.set_max_voices(int(max_voices))
    for ch, prog, drum, bank in programs:
        _select(synth, ch, prog, drum, bank)

    out = np.zeros((total, 2), dtype=np.float32)
    view = memoryview(out).cast("B")
    frame_bytes = 8  # 2 channels x float32
    order = sorted(events, key=lambda e: (e[0], e[1]))
    pos = 0
    for t, kind, ch, a, b in order:
        at = min(total, int(round(t * sr)))
        if at > pos:
            synth.render(view[pos * frame_bytes: at * frame_bytes], False)
            pos = at
        if pos >= total:
            break
        if kind == _EV_ON:
            synth.channel_note_on(ch, a, b / 127.0)
        elif kind == _EV_OFF:
            synth.channel_note_off(ch, a)
        elif kind == _EV_CC:
            synth.channel_midi_control(ch, a, b)
        elif kind == _EV_BEND:
            synth.channel_set_pitch_wheel(ch, int(np.clip(a, 0, 16383)))
    if pos < total:
        synth.render(view[pos * frame_bytes:], False)

    audio = out.T.copy()  # [2, T]
    if duration is not None and end > total_s and fade_out > 0:
        n = min(total, int(fade_out * sr))
        audio[:, total - n:] *= np.linspace(1.0, 0.0, n, dtype=np.float32)
    if channels == 1:
        audio = audio.mean(axis=0, keepdims=True)
    if normalize:
        peak = float(np.abs(audio).max())
        if peak > 1e-9:
            audio *= np.float32(10 ** (peak_db / 20.0) / peak)
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def _select(synth, ch: int, program: int, drum: bool, bank: int) -> None:
    """Select ``program`` on ``ch``, falling back to bank 0 / program 0 when the font lacks it."""
    if drum:
        for num in (program, 0):
            if synth.get_preset_index(128, num) >= 0:
                synth.channel_set_bank(ch, 128)
                synth.channel_set_preset_number(ch, num, True)
                return
        idx = synth.get_preset_index(0, 0)
        if idx >= 0:
            synth.channel_set_preset_index(ch, idx)
        return
    for bk, num in ((bank, program), (0, program), (0, 0)):
        if synth.get_preset_index(bk, num) >= 0:
            synth.channel_set_bank(ch, bk)
            synth.channel_set_preset_number(ch, num, False)
            return
    if synth.get_preset_count() > 0:
        synth.channel_set_preset_index(ch, 0)

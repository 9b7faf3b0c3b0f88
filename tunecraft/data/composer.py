"""Procedural music composer: seeded, style-aware MIDI with full metadata.

:func:`compose` writes a short piece of instrumental music in one of twelve style
families (see :data:`STYLES`) and returns a :class:`Composition`: the notes of every
part (lead, chords, bass, pad, arpeggio, drums on GM channel 10) plus a metadata
dict that describes the piece (key, tempo, meter, genre, moods, instruments,
sections, chords, dynamics...). Captions are derived from that metadata only
(:mod:`tunecraft.data.captions`); audio comes from :mod:`tunecraft.data.render`.

Musical structure
-----------------
* **Harmony.** Each style has chord progressions written in roman numerals for
  major and minor keys (``"I V vi IV"``, ``"i VI III VII"``, ``"Imaj7 vi7 ii7 V7"``,
  12-bar blues...). In minor keys numerals are relative to the natural minor scale,
  so ``VI`` is the chord on the flat sixth and ``V`` is the major (harmonic-minor)
  dominant. Pieces start on I/i and end with a cadence onto I/i.
* **Sections.** intro / verse / chorus / bridge / outro, sized to the requested
  duration, with arrangement changes (no lead in the intro, pad and crash in the
  chorus, lighter drums in intro/outro, a held final tonic chord).
* **Bass** per style: roots, root-fifth, pumping eighths, walking bass (jazz),
  octaves (disco/house), boogie shuffle (blues), bossa pattern...
* **Melody** on the key's scale from one-bar rhythmic motifs and a contour that
  repeat and vary across the bars of a phrase; strong beats land on chord tones
  and phrases cadence on the tonic (last phrase) or on the fifth/third (half
  cadences). A repeated section (second chorus) reuses its theme.
* **Drums** per style on a 16th (4/4) or 12-step (3/4) grid with accents, swing,
  fills at phrase ends and crashes at section starts.
* **Dynamics.** Per-section energy, a per-piece dynamic profile (steady,
  crescendo, arch, terraced), beat accents and small velocity/timing humanisation.

The tempo and the key are meant to be *audible*: drum styles keep kick/snare/hats
on the beat; drumless styles keep a bass or arpeggio pulse on every beat; the bass
plays chord roots and the tonic chord opens and closes every piece.

Everything is deterministic given ``seed`` (one :class:`numpy.random.Generator`,
no global random state).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..config import Config
from ..errors import DependencyError, InvalidInput

__all__ = [
    "ARTIST",
    "STYLES",
    "NOTE_NAMES",
    "Note",
    "Part",
    "Composition",
    "ComposerConfig",
    "Style",
    "compose",
    "harmony_plan",
    "style_in_text",
    "list_styles",
    "parse_key",
    "gm_name",
    "GM_DRUM_KITS",
]

ARTIST = "tunecraft composer"

NOTE_NAMES = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_NAME_TO_PC = {
    "C": 0, "B#": 0, "C#": 1, "DB": 1, "D": 2, "D#": 3, "EB": 3, "E": 4, "FB": 4, "F": 5, "E#": 5,
    "F#": 6, "GB": 6, "G": 7, "G#": 8, "AB": 8, "A": 9, "A#": 10, "BB": 10, "B": 11, "CB": 11,
}
SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
}

# --------------------------------------------------------------------------------------
# General MIDI names (friendly, lower case) for the programs the styles use.
# --------------------------------------------------------------------------------------
_GM_FRIENDLY = {
    0: "grand piano", 1: "bright piano", 4: "electric piano", 5: "electric piano",
    6: "harpsichord", 8: "celesta", 9: "glockenspiel", 10: "music box", 11: "vibraphone",
    12: "marimba", 16: "organ", 17: "percussive organ", 18: "rock organ", 21: "accordion",
    22: "harmonica", 24: "nylon guitar", 25: "acoustic guitar", 26: "jazz guitar",
    27: "clean electric guitar", 29: "overdriven guitar", 30: "distorted guitar",
    32: "upright bass", 33: "electric bass", 34: "picked bass", 35: "fretless bass",
    38: "synth bass", 39: "synth bass", 40: "violin", 41: "viola", 42: "cello",
    43: "contrabass", 45: "pizzicato strings", 46: "harp", 48: "strings", 49: "slow strings",
    50: "synth strings", 52: "choir", 56: "trumpet", 57: "trombone", 60: "french horn",
    61: "brass section", 62: "synth brass", 64: "soprano sax", 65: "alto sax", 66: "tenor sax", 68: "oboe",
    71: "clarinet", 73: "flute", 75: "pan flute", 80: "square lead", 81: "saw lead",
    84: "charang lead", 87: "bass and lead synth", 88: "new age pad", 89: "warm pad",
    90: "polysynth", 91: "choir pad", 92: "bowed pad", 94: "halo pad", 95: "sweep pad",
    98: "crystal", 105: "banjo", 108: "kalimba",
}
_GM_FAMILY = {
    0: "piano", 1: "chromatic percussion", 2: "organ", 3: "guitar", 4: "bass", 5: "strings",
    6: "ensemble", 7: "brass", 8: "reed", 9: "pipe", 10: "synth lead", 11: "synth pad",
    12: "synth effects", 13: "ethnic", 14: "percussive", 15: "sound effects",
}
GM_DRUM_KITS = {0: "standard kit", 8: "room kit", 16: "power kit", 24: "electronic kit",
                25: "TR-808 kit", 32: "jazz kit", 40: "brush kit", 48: "orchestra kit"}

# GM percussion keys
KICK, KICK2, STICK, SNARE, CLAP, SNARE2 = 36, 35, 37, 38, 39, 40
HAT, PEDAL_HAT, OPEN_HAT, CRASH, RIDE, RIDE_BELL = 42, 44, 46, 49, 51, 53
TOM_LOW, TOM_MID, TOM_HI, TOM_HI2 = 45, 47, 48, 50
TAMB, COWBELL, SHAKER, MARACAS, CLAVES, CONGA_HI, CONGA_LO = 54, 56, 82, 70, 75, 63, 64


def gm_name(program: int) -> str:
    """A friendly lower-case name for a General MIDI program number (0-127)."""
    if program in _GM_FRIENDLY:
        return _GM_FRIENDLY[program]
    try:
        import pretty_midi

        return pretty_midi.program_to_instrument_name(int(program)).lower()
    except Exception:  # pretty_midi missing or out of range: fall back to the family
        return _GM_FAMILY.get(int(program) // 8, "instrument")


# --------------------------------------------------------------------------------------
# Style families
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Style:
    """Everything that distinguishes one style family."""

    name: str
    genres: tuple[str, ...]
    bpm: tuple[int, int]
    p_minor: float
    meters: tuple[tuple[int, float], ...]  # (beats per bar, probability)
    major: tuple[str, ...]  # verse/chorus progressions, major key
    minor: tuple[str, ...]
    bridge_major: tuple[str, ...]
    bridge_minor: tuple[str, ...]
    lead: tuple[int, ...]
    chords: tuple[int, ...]
    bass: tuple[int, ...]
    pad: tuple[int, ...]
    p_pad: float
    p_drums: float
    kits: tuple[int, ...]
    bass_styles: tuple[str, ...]
    comp_styles: tuple[str, ...]
    drum_style: str
    swing: tuple[float, float] = (0.5, 0.5)  # offbeat position within a pair (0.5 = straight)
    swing_level: str = "8th"
    density: float = 0.5  # melody note density 0..1
    lead_register: tuple[int, int] = (62, 84)
    moods_major: tuple[str, ...] = ()
    moods_minor: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    energy: float = 0.6
    arp: tuple[int, ...] = ()
    p_arp: float = 0.0
    cadence: str = "authentic"  # authentic (V-I), plagal (IV-I), rock (bVII-I), blues (V7-I7)
    humanize_ms: float = 6.0
    title_words: tuple[tuple[str, ...], tuple[str, ...]] = ((), ())


def _s(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


STYLES: dict[str, Style] = {}


def _add(style: Style) -> None:
    STYLES[style.name] = style


_add(Style(
    name="pop", genres=("pop", "pop", "indie pop", "synth-pop"), bpm=(90, 130), p_minor=0.3,
    meters=((4, 1.0),),
    major=_s("I V vi IV, I vi IV V, I IV vi V, I IV I V, I iii IV V, I V IV V"),
    minor=_s("i VI III VII, i iv VI V, i VII VI VII, i VI iv V, i III VII iv"),
    bridge_major=_s("IV V iii vi, vi IV I V, ii IV V V"), bridge_minor=_s("VI VII i i, iv VI VII V, VI III VII V"),
    lead=(0, 27, 80, 81, 73, 11, 25), chords=(0, 4, 5, 25, 27, 90), bass=(33, 34, 38), pad=(48, 89, 50, 91),
    p_pad=0.6, p_drums=1.0, kits=(0, 8, 24), bass_styles=("pump8", "root_fifth", "syncopated"),
    comp_styles=("quarters", "strum", "offbeat_stabs"), drum_style="pop", density=0.55,
    moods_major=_s("upbeat, happy, catchy, bright, uplifting, feel-good, cheerful, sunny"),
    moods_minor=_s("bittersweet, wistful, moody, emotional, catchy, nostalgic"),
    keywords=_s("catchy hook, radio-friendly, verse-chorus structure, backbeat"), energy=0.65,
    title_words=(_s("Golden, Summer, Neon, Electric, Paper, Endless, Little, Bright, Silver, Crazy"),
                 _s("Heart, Lights, Days, Hearts, Waves, Dreams, Sky, Love, Parade, Weekend")),
))
_add(Style(
    name="rock", genres=("rock", "rock", "hard rock", "indie rock", "classic rock"), bpm=(100, 168), p_minor=0.4,
    meters=((4, 1.0),),
    major=_s("I bVII IV I, I IV V IV, I V IV I, I IV I V, I bVII I IV, I vi IV V"),
    minor=_s("i VII VI VII, i VI VII i, i iv VII i, i VII iv i, i VI III VII"),
    bridge_major=_s("IV V IV V, vi IV V V, IV I V V"), bridge_minor=_s("VI VII VI VII, iv VI VII V, VI III VII V"),
    lead=(29, 30, 27, 81), chords=(30, 27, 18, 30), bass=(33, 34), pad=(18, 48, 61),
    p_pad=0.6, p_drums=1.0, kits=(0, 8, 16), bass_styles=("pump8", "root_fifth"),
    comp_styles=("power8", "power_quarters", "strum"), drum_style="rock", density=0.5,
    moods_major=_s("energetic, driving, gritty, powerful, confident, anthemic"),
    moods_minor=_s("gritty, driving, dark, rebellious, intense, brooding"),
    keywords=_s("guitar-driven, power chords, live band, backbeat"), energy=0.8, cadence="rock",
    title_words=(_s("Broken, Wild, Highway, Burning, Loud, Iron, Restless, Midnight, Rolling"),
                 _s("Road, Fire, Engine, Thunder, Streets, Machine, Run, Rebels, Stone")),
))
_add(Style(
    name="metal", genres=("metal", "heavy metal", "thrash metal", "metal"), bpm=(110, 180), p_minor=0.95,
    meters=((4, 1.0),),
    major=_s("I bVII IV I, I IV bVII I"),
    minor=_s("i VI VII i, i VII VI VII, i iv VI V, i VI iv V, i i VI VII, i v VI VII"),
    bridge_major=_s("bVI bVII I I"), bridge_minor=_s("VI VII VI V, iv v VI VII, VI iv VII V"),
    lead=(30, 29, 81), chords=(30,), bass=(34, 33), pad=(48, 52, 19, 50),
    p_pad=1.0, p_drums=1.0, kits=(16, 0, 8), bass_styles=("pump8",), comp_styles=("chug", "power8"),
    drum_style="metal", density=0.6, lead_register=(60, 84),
    moods_major=_s("heavy, aggressive, powerful, intense"),
    moods_minor=_s("aggressive, heavy, dark, intense, menacing, furious, epic"),
    keywords=_s("distorted guitars, palm-muted riffs, double kick, headbanging"), energy=0.95,
    title_words=(_s("Iron, Black, Steel, Savage, Eternal, Frozen, Blood, Dead"),
                 _s("Storm, Throne, Abyss, Wrath, Legion, Serpent, Hammer, Fury")),
))
_add(Style(
    name="jazz", genres=("jazz", "swing", "jazz", "bebop", "cool jazz"), bpm=(100, 180), p_minor=0.3,
    meters=((4, 0.85), (3, 0.15)),
    major=_s("Imaj7 vi7 ii7 V7, Imaj7 IVmaj7 iii7-vi7 ii7-V7, Imaj7-vi7 ii7-V7 iii7-vi7 ii7-V7, "
             "Imaj7 ii7-V7 Imaj7 ii7-V7, Imaj7 I7 IVmaj7 iv7"),
    minor=_s("i7 iv7 iiø7 V7, i7 VImaj7 iiø7 V7, i7 i7 iv7 V7, i7 iv7 VII7 IIImaj7"),
    bridge_major=_s("iii7 VI7 ii7 V7, IVmaj7 iv7 iii7 VI7, ii7 V7 iii7 VI7"),
    bridge_minor=_s("iv7 VII7 IIImaj7 VImaj7, VImaj7 iiø7 V7 V7"),
    lead=(66, 64, 56, 11, 0, 26, 73, 57), chords=(0, 4, 26), bass=(32,), pad=(48, 61),
    p_pad=0.15, p_drums=1.0, kits=(32, 40, 0), bass_styles=("walking",), comp_styles=("charleston", "comp_jazz"),
    drum_style="jazz", swing=(0.62, 0.67), density=0.65, lead_register=(58, 82),
    moods_major=_s("smooth, sophisticated, swinging, playful, relaxed, classy, laid-back"),
    moods_minor=_s("smoky, moody, sophisticated, mysterious, nocturnal, cool"),
    keywords=_s("swing feel, walking bass, ride cymbal, seventh chords, jazz combo, ii-V-I"), energy=0.55,
    humanize_ms=10.0,
    title_words=(_s("Blue, Late, Velvet, Smoky, Uptown, Autumn, Midnight, Lazy"),
                 _s("Avenue, Groove, Lounge, Steps, Corner, Serenade, Shuffle, Hour")),
))
_add(Style(
    name="blues", genres=("blues", "blues", "chicago blues", "boogie-woogie"), bpm=(70, 126), p_minor=0.3,
    meters=((4, 1.0),),
    major=_s("I7 IV7 I7 I7 IV7 IV7 I7 I7 V7 IV7 I7 V7, I7 I7 I7 I7 IV7 IV7 I7 I7 V7 IV7 I7 V7"),
    minor=_s("i7 iv7 i7 i7 iv7 iv7 i7 i7 VI7 V7 i7 V7, i7 i7 i7 i7 iv7 iv7 i7 i7 V7 iv7 i7 V7"),
    bridge_major=_s("IV7 IV7 I7 I7"), bridge_minor=_s("iv7 iv7 i7 i7"),
    lead=(26, 22, 66, 64, 0, 27), chords=(0, 16, 17, 27), bass=(32, 33), pad=(16,),
    p_pad=0.2, p_drums=0.95, kits=(0, 8, 40), bass_styles=("boogie", "root_fifth"),
    comp_styles=("shuffle_comp", "quarters"), drum_style="shuffle", swing=(0.64, 0.67), density=0.5,
    moods_major=_s("soulful, groovy, gritty, laid-back, swaggering, warm"),
    moods_minor=_s("melancholic, soulful, gritty, brooding, lonesome, smoky"),
    keywords=_s("12-bar blues, shuffle rhythm, dominant seventh chords, blue notes"), energy=0.6,
    cadence="blues", humanize_ms=9.0,
    title_words=(_s("Muddy, Lonesome, Crossroad, Whiskey, Rainy, Back Porch, Delta, Low Down"),
                 _s("Blues, Shuffle, Train, River, Boogie, Stomp, Walk, Moan")),
))
_add(Style(
    name="ballad", genres=("piano ballad", "ballad", "solo piano", "piano ballad"), bpm=(60, 84), p_minor=0.4,
    meters=((4, 0.6), (3, 0.4)),
    major=_s("I V vi IV, I vi IV V, I IV I V, I IV ii V, I V IV I, I vi ii V"),
    minor=_s("i iv VII III, i VI iv V, i iv V i, i VI III VII, i iv VI V"),
    bridge_major=_s("IV V iii vi, vi IV ii V, IV iv I V"), bridge_minor=_s("VI VII III VI, iv V VI V"),
    lead=(0, 40, 73, 71, 68), chords=(0, 1, 4), bass=(0, 32, 42), pad=(48, 49, 89),
    p_pad=0.5, p_drums=0.35, kits=(40, 0, 8), bass_styles=("piano_lh",),
    comp_styles=("piano_arp", "piano_blocks"), drum_style="ballad", density=0.35, lead_register=(62, 84),
    moods_major=_s("tender, romantic, hopeful, warm, reflective, gentle, heartfelt"),
    moods_minor=_s("melancholic, sad, emotional, reflective, yearning, somber"),
    keywords=_s("expressive piano, slow tempo, arpeggiated accompaniment, emotional melody"), energy=0.35,
    humanize_ms=8.0,
    title_words=(_s("Quiet, Falling, Last, Distant, Fading, Tender, Silent, Morning"),
                 _s("Rain, Letter, Goodbye, Memory, Promise, Light, Snow, Embrace")),
))
_add(Style(
    name="electronic", genres=("electronic", "house", "dance", "techno", "synthwave"), bpm=(118, 140), p_minor=0.6,
    meters=((4, 1.0),),
    major=_s("I V vi IV, I IV vi V, I vi IV V, I IV I V"),
    minor=_s("i VI III VII, i VI VII i, i iv VI V, i VII VI VII, i iv VII III"),
    bridge_major=_s("IV V vi vi, vi IV V V"), bridge_minor=_s("VI VII VI VII, iv VI VII V"),
    lead=(80, 81, 84, 90, 8), chords=(90, 81, 62, 50), bass=(38, 39, 87), pad=(88, 89, 94, 95, 50),
    p_pad=0.8, p_drums=1.0, kits=(24, 0), bass_styles=("offbeat", "octave", "pump8"),
    comp_styles=("offbeat_stabs", "sidechain_pad", "quarters"), drum_style="house", density=0.6,
    lead_register=(64, 86),
    moods_major=_s("euphoric, energetic, uplifting, danceable, bright, feel-good"),
    moods_minor=_s("hypnotic, driving, dark, energetic, danceable, futuristic"),
    keywords=_s("four-on-the-floor, synthesizers, club, electronic beat, sidechain pump"), energy=0.8,
    arp=(81, 80, 90), p_arp=0.5, humanize_ms=0.0,
    title_words=(_s("Neon, Digital, Cosmic, Laser, Night, Hyper, Crystal, Future"),
                 _s("Pulse, Drive, Signal, Rush, Circuit, Horizon, Motion, Voltage")),
))
_add(Style(
    name="hiphop", genres=("hip-hop", "lo-fi hip-hop", "boom bap", "lo-fi"), bpm=(70, 96), p_minor=0.5,
    meters=((4, 1.0),),
    major=_s("Imaj7 vi7 ii7 V7, Imaj7 IVmaj7 iii7 vi7, Imaj7 ii7 iii7 IVmaj7, Imaj7 IVmaj7 Imaj7 V7"),
    minor=_s("i7 iv7 VImaj7 V7, i7 VImaj7 iv7 V7, i7 iv7 i7 V7, i7 VII7 VImaj7 V7"),
    bridge_major=_s("IVmaj7 iii7 ii7 V7"), bridge_minor=_s("VImaj7 VII7 IIImaj7 V7"),
    lead=(4, 11, 73, 0, 66, 80), chords=(4, 5, 0), bass=(38, 33, 39, 32), pad=(89, 48, 92),
    p_pad=0.45, p_drums=1.0, kits=(0, 24, 8), bass_styles=("hiphop",), comp_styles=("lofi_chords",),
    drum_style="boombap", swing=(0.56, 0.62), swing_level="16th", density=0.4,
    moods_major=_s("chill, relaxed, mellow, laid-back, warm, dreamy, cozy"),
    moods_minor=_s("chill, nostalgic, melancholic, mellow, moody, late-night"),
    keywords=_s("boom bap beat, jazzy chords, head-nodding groove, study beats, swung hi-hats"), energy=0.45,
    humanize_ms=10.0,
    title_words=(_s("Rainy, Late Night, Dusty, Sleepy, Coffee, Sunday, Faded, Vinyl"),
                 _s("Window, Tapes, Study, Afternoon, Streets, Polaroid, Clouds, Loop")),
))
_add(Style(
    name="folk", genres=("folk", "acoustic folk", "country", "americana"), bpm=(80, 140), p_minor=0.3,
    meters=((4, 0.6), (3, 0.4)),
    major=_s("I IV I V, I IV V I, I V IV I, I vi IV V, I IV vi V, I I IV V"),
    minor=_s("i VII i VII, i VII VI VII, i iv i V, i III VII i, i VI III VII"),
    bridge_major=_s("IV I IV V, vi IV I V, IV V I vi"), bridge_minor=_s("III VII iv V, VI VII III V"),
    lead=(73, 40, 22, 71, 24, 25, 21), chords=(25, 24, 21), bass=(32, 33), pad=(21, 48, 49),
    p_pad=0.3, p_drums=0.6, kits=(40, 0, 8), bass_styles=("root_fifth", "folk_walk"),
    comp_styles=("strum", "fingerpick", "boom_chick"), drum_style="folk", density=0.5,
    moods_major=_s("warm, cheerful, pastoral, gentle, homely, carefree, nostalgic"),
    moods_minor=_s("wistful, haunting, earthy, melancholic, lonesome, nostalgic"),
    keywords=_s("acoustic instruments, strummed guitar, organic, campfire, storytelling"), energy=0.5,
    humanize_ms=9.0,
    title_words=(_s("Old, Green, Wandering, Harvest, Mountain, Little, Morning, Wooden"),
                 _s("Valley, Creek, Fields, Road, Home, Meadow, Cabin, River")),
))
_add(Style(
    name="classical", genres=("classical", "baroque", "chamber music", "orchestral", "classical"), bpm=(60, 150),
    p_minor=0.4, meters=((4, 0.55), (3, 0.45)),
    major=_s("I IV V I, I ii V I, I vi ii V, I IV ii V, I-V vi-iii IV-I IV-V, I V vi IV"),
    minor=_s("i iv V i, i VI iv V, i iiø7 V i, i iv VII III, i VI iiø7 V"),
    bridge_major=_s("vi iii IV V, ii V iii vi, IV V vi V"), bridge_minor=_s("III VII VI V, VI iv V V, iv i V V"),
    lead=(40, 73, 68, 71, 60, 0, 6), chords=(48, 6, 0, 46, 45), bass=(42, 43, 0), pad=(48, 49, 52),
    p_pad=0.35, p_drums=0.0, kits=(48,), bass_styles=("cello_quarters", "alberti_bass"),
    comp_styles=("alberti", "strings_pulse", "arpeggio8"), drum_style="none", density=0.55,
    lead_register=(64, 88),
    moods_major=_s("elegant, graceful, majestic, serene, stately, joyful, noble"),
    moods_minor=_s("dramatic, solemn, tragic, stormy, mysterious, stately"),
    keywords=_s("orchestral, strings, classical harmony, cadences, counterpoint, no drums"), energy=0.5,
    humanize_ms=7.0,
    title_words=(_s("Sonatina, Minuet, Prelude, Rondo, Serenade, Étude, Aria, Pastorale"),
                 _s("No. 1, No. 2, No. 3, No. 4, No. 5, No. 6, No. 7, No. 8")),
))
_add(Style(
    name="latin", genres=("bossa nova", "latin", "latin jazz", "samba"), bpm=(100, 140), p_minor=0.4,
    meters=((4, 1.0),),
    major=_s("Imaj7 ii7 V7 Imaj7, Imaj7 II7 ii7 V7, Imaj7 vi7 ii7 V7, Imaj7 IVmaj7 iii7 V7"),
    minor=_s("i7 iv7 V7 i7, i7 iv7 VII7 IIImaj7, i7 VImaj7 iiø7 V7, i7 i7 iv7 V7"),
    bridge_major=_s("IVmaj7 iv7 iii7 VI7, ii7 V7 IVmaj7 V7"), bridge_minor=_s("VImaj7 V7 i7 V7"),
    lead=(73, 64, 56, 11, 24, 0, 66), chords=(24, 0, 4), bass=(32, 33), pad=(48, 89),
    p_pad=0.3, p_drums=1.0, kits=(0, 8, 40), bass_styles=("bossa",), comp_styles=("bossa_comp",),
    drum_style="bossa", density=0.5,
    moods_major=_s("breezy, sunny, relaxed, romantic, sensual, carefree, warm"),
    moods_minor=_s("sensual, wistful, smoky, romantic, mysterious, nocturnal"),
    keywords=_s("bossa nova rhythm, nylon-string guitar, syncopation, clave, shaker"), energy=0.5,
    humanize_ms=7.0,
    title_words=(_s("Copacabana, Blue, Island, Sunset, Coastal, Tropical, Rio, Samba"),
                 _s("Breeze, Dance, Waves, Carnival, Beach, Moon, Garden, Night")),
))
_add(Style(
    name="ambient", genres=("ambient", "ambient", "new age", "downtempo"), bpm=(60, 90), p_minor=0.4,
    meters=((4, 0.7), (3, 0.3)),
    major=_s("I IV I IV, Imaj7 IVmaj7 Imaj7 IVmaj7, I vi IV I, I V IV I, Iadd9 IVadd9 vi IV"),
    minor=_s("i VI i VI, i iv VI i, i VI III VII, i7 iv7 i7 VI"),
    bridge_major=_s("IV vi IV V, vi IV V IV"), bridge_minor=_s("VI III VII VI, iv VI VII V"),
    lead=(8, 10, 11, 46, 108, 12), chords=(89, 88, 91, 94, 95, 49), bass=(42, 38, 89), pad=(92, 91, 52, 49),
    p_pad=0.7, p_drums=0.0, kits=(0,), bass_styles=("pedal_pulse",), comp_styles=("pad",),
    drum_style="none", density=0.25, lead_register=(67, 91),
    moods_major=_s("calm, dreamy, ethereal, peaceful, serene, spacious, meditative"),
    moods_minor=_s("ethereal, dreamy, mysterious, melancholic, meditative, spacious"),
    keywords=_s("atmospheric pads, slow evolving textures, soft bells, relaxation, no drums"), energy=0.25,
    arp=(8, 46, 10, 108, 11, 12), p_arp=1.0, cadence="plagal", humanize_ms=0.0,
    title_words=(_s("Drifting, Floating, Northern, Still, Glass, Deep, Endless, Slow"),
                 _s("Horizon, Light, Ocean, Clouds, Tides, Aurora, Skies, Garden")),
))


def list_styles() -> list[str]:
    """Names of the style families, in a stable order."""
    return list(STYLES)


# --------------------------------------------------------------------------------------
# Harmony
# --------------------------------------------------------------------------------------
_ROMAN_RE = re.compile(r"^(b|#)?(VII|VI|V|IV|III|II|I|vii|vi|v|iv|iii|ii|i)(°|ø|\+)?(maj7|add9|sus4|sus2|7|6|9)?$")
_ROMAN_DEGREE = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7}


@dataclass(frozen=True)
class Chord:
    symbol: str  # roman numeral
    root: int  # pitch class
    intervals: tuple[int, ...]  # semitones above the root

    @property
    def pcs(self) -> frozenset[int]:
        return frozenset((self.root + i) % 12 for i in self.intervals)

    def name(self) -> str:
        """Absolute chord name, e.g. ``Am7``, ``Cmaj7``, ``F#dim``."""
        iv = set(self.intervals)
        root = NOTE_NAMES[self.root]
        if 3 in iv and 6 in iv:
            return root + ("m7b5" if 10 in iv else "dim7" if 9 in iv else "dim")
        if 4 in iv and 8 in iv:
            return root + "aug"
        minor = 3 in iv
        if 5 in iv and 4 not in iv and 3 not in iv:
            return root + "sus4"
        if 2 in iv and 4 not in iv and 3 not in iv:
            return root + "sus2"
        if 11 in iv:
            return root + ("m(maj7)" if minor else "maj7")
        if 10 in iv:
            return root + ("m" if minor else "") + ("9" if 14 in iv else "7")
        if 9 in iv:
            return root + ("m6" if minor else "6")
        if 14 in iv:
            return root + ("m(add9)" if minor else "add9")
        return root + ("m" if minor else "")


def parse_roman(symbol: str, tonic: int, mode: str) -> Chord:
    """Parse a roman numeral (``"V7"``, ``"bVII"``, ``"iiø7"``, ``"Imaj7"``) in a key."""
    m = _ROMAN_RE.match(symbol)
    if not m:
        raise InvalidInput(f"cannot parse roman numeral {symbol!r}")
    acc, numeral, quality, ext = m.groups()
    degree = _ROMAN_DEGREE[numeral.lower()]
    upper = numeral.isupper()
    scale = SCALES[mode]
    root = scale[degree - 1] + (-1 if acc == "b" else 1 if acc == "#" else 0)
    if quality == "°":
        ivs = [0, 3, 6] + ([9] if ext == "7" else [])
    elif quality == "ø":
        ivs = [0, 3, 6, 10]
    elif quality == "+":
        ivs = [0, 4, 8]
    else:
        ivs = [0, 4, 7] if upper else [0, 3, 7]
        if ext == "7":
            ivs.append(10)
        elif ext == "maj7":
            ivs.append(11)
        elif ext == "6":
            ivs.append(9)
        elif ext == "9":
            ivs += [10, 14]
        elif ext == "add9":
            ivs.append(14)
        elif ext == "sus4":
            ivs = [0, 5, 7]
        elif ext == "sus2":
            ivs = [0, 2, 7]
    return Chord(symbol, (tonic + root) % 12, tuple(ivs))


def parse_progression(text: str) -> list[list[str]]:
    """``"I-V vi IV"`` -> ``[["I", "V"], ["vi"], ["IV"]]`` (bars of chords)."""
    return [bar.split("-") for bar in text.split()]


def parse_key(text: str) -> tuple[int, str]:
    """``"F# minor"`` / ``"Bb"`` / ``"a minor"`` -> (pitch class, mode)."""
    parts = text.strip().replace("-", " ").split()
    if not parts:
        raise InvalidInput("empty key name")
    name = parts[0].upper()
    mode = parts[1].lower() if len(parts) > 1 else "major"
    if mode in ("maj",):
        mode = "major"
    if mode in ("min", "m"):
        mode = "minor"
    if name not in _NAME_TO_PC or mode not in SCALES:
        raise InvalidInput(f"unknown key {text!r} (expected e.g. 'G major' or 'F# minor')")
    return _NAME_TO_PC[name], mode


def key_name(tonic: int, mode: str) -> str:
    return f"{NOTE_NAMES[tonic % 12]} {mode}"


def _voice(chord: Chord, prev: list[int] | None, low: int, high: int, n_max: int = 4) -> list[int]:
    """Close-position voicing of ``chord`` inside [low, high], nearest to ``prev``."""
    ivs = list(chord.intervals)
    if len(ivs) > n_max:  # drop the fifth of extended chords
        ivs = [i for i in ivs if i != 7][:n_max]
    pcs = [(chord.root + i) % 12 for i in ivs]
    best, best_cost = None, math.inf
    center = (low + high) / 2
    for inv in range(len(pcs)):
        order = pcs[inv:] + pcs[:inv]
        for base in range(low, low + 12):
            if base % 12 != order[0]:
                continue
            notes = [base]
            for pc in order[1:]:
                p = notes[-1] + 1
                while p % 12 != pc:
                    p += 1
                notes.append(p)
            if notes[-1] > high:
                continue
            if prev:
                cost = sum(min(abs(n - q) for q in prev) for n in notes) + 0.5 * abs(np.mean(notes) - np.mean(prev))
            else:
                cost = abs(np.mean(notes) - center)
            if cost < best_cost:
                best, best_cost = notes, cost
    if best is None:  # range too small: stack from low
        best = sorted(low + ((pc - low) % 12) for pc in pcs)
    return best


# --------------------------------------------------------------------------------------
# Output containers
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Note:
    """One note; ``start``/``duration`` in seconds."""

    pitch: int
    start: float
    duration: float
    velocity: int

    @property
    def end(self) -> float:
        return self.start + self.duration


@dataclass
class Part:
    """One instrument part on one MIDI channel."""

    role: str  # lead / chords / bass / pad / arp / drums
    program: int  # GM program (0-127); for drums, the GM drum-kit number
    is_drum: bool
    channel: int
    name: str
    pan: int = 64
    volume: int = 100
    notes: list[Note] = field(default_factory=list)


@dataclass
class Composition:
    """A composed piece: parts with notes in seconds, plus metadata."""

    parts: list[Part]
    bpm: float
    beats_per_bar: int
    duration: float
    metadata: dict

    def notes(self) -> list[tuple[int, Note]]:
        return [(p.channel, n) for p in self.parts for n in p.notes]

    def to_pretty_midi(self):
        """Convert to a :class:`pretty_midi.PrettyMIDI` (tempo, time signature, key, parts)."""
        try:
            import pretty_midi
        except ImportError as e:
            raise DependencyError("pretty_midi is required for MIDI export: pip install 'tunecraft[data]'") from e
        pm = pretty_midi.PrettyMIDI(initial_tempo=float(self.bpm))
        pm.time_signature_changes.append(pretty_midi.TimeSignature(self.beats_per_bar, 4, 0.0))
        tonic, mode = parse_key(self.metadata["key"])
        pm.key_signature_changes.append(pretty_midi.KeySignature(tonic + (12 if mode == "minor" else 0), 0.0))
        for p in self.parts:
            # on the drum channel the program number selects the kit (GS/GM2 convention)
            inst = pretty_midi.Instrument(program=p.program, is_drum=p.is_drum, name=p.name)
            inst.control_changes.append(pretty_midi.ControlChange(7, p.volume, 0.0))
            inst.control_changes.append(pretty_midi.ControlChange(10, p.pan, 0.0))
            for n in p.notes:
                inst.notes.append(pretty_midi.Note(n.velocity, n.pitch, n.start, n.end))
            pm.instruments.append(inst)
        return pm

    def write_midi(self, path: str | Path) -> Path:
        path = Path(path)
        self.to_pretty_midi().write(str(path))
        return path


@dataclass
class ComposerConfig(Config):
    """Restrictions on what :func:`compose` draws from the seed."""

    styles: list[str] | None = None  # restrict the style draw
    min_bpm: int = 60
    max_bpm: int = 180


# --------------------------------------------------------------------------------------
# The composer
# --------------------------------------------------------------------------------------
_SECTION_ENERGY = {"intro": 0.55, "verse": 0.7, "chorus": 0.92, "bridge": 0.78, "outro": 0.6}
_DYNAMIC_PROFILES = ("steady", "crescendo", "arch", "terraced")
_ROLE_CHANNEL = {"lead": 0, "chords": 1, "bass": 2, "pad": 3, "arp": 4, "drums": 9}


@dataclass
class _Bar:
    index: int
    section: str
    section_index: int  # which occurrence of this section name
    bar_in_section: int
    bars_in_section: int
    phrase_pos: int  # bar within its phrase
    phrase_len: int
    chords: list[tuple[float, Chord]]  # (beat offset, chord)
    energy: float
    last_bar: bool = False
    beats: float = 0.0  # length; 0 = a full bar
    fill: bool = False
    crash: bool = False


class _Writer:
    """Accumulates notes in beats and converts them to seconds."""

    def __init__(self, rng: np.random.Generator, bpm: float, beats_per_bar: int, swing: float,
                 swing_level: str, humanize_ms: float):
        self.rng = rng
        self.spb = 60.0 / bpm
        self.bpb = beats_per_bar
        self.swing = swing
        self.swing_unit = 0.5 if swing_level == "8th" else 0.25
        self.human = humanize_ms / 1000.0
        self.limit = math.inf  # no note sounds past this time (the clip length), seconds
        self.parts: dict[str, list[Note]] = {}

    def swung(self, beat: float) -> float:
        if self.swing == 0.5:
            return beat
        u = self.swing_unit
        pair = 2 * u
        k, r = divmod(beat, pair)
        if abs(r - u) < 1e-6:
            r = self.swing * pair
        return k * pair + r

    def add(self, role: str, pitch: int, beat: float, dur: float, vel: float, swing: bool = True,
            jitter: bool = True) -> None:
        if not 0 <= pitch <= 127:
            return
        b0 = self.swung(beat) if swing else beat
        b1 = self.swung(beat + dur) if swing else beat + dur
        start = b0 * self.spb
        if jitter and self.human > 0 and beat > 0:
            start += float(self.rng.uniform(-self.human, self.human))
        end = min(b1 * self.spb, self.limit)
        if start >= self.limit - 0.03:
            return
        length = max(0.03, end - start - 0.01)
        v = int(np.clip(round(vel), 1, 127))
        self.parts.setdefault(role, []).append(Note(int(pitch), round(max(0.0, start), 6), round(length, 6), v))


def _weighted(rng: np.random.Generator, items: Sequence[Any], weights: Sequence[float]) -> Any:
    w = np.asarray(weights, dtype=float)
    return items[int(rng.choice(len(items), p=w / w.sum()))]


def _pick(rng: np.random.Generator, items: Sequence[Any]) -> Any:
    return items[int(rng.integers(len(items)))]


def _plan_sections(rng: np.random.Generator, n_bars: int, progression_len: int) -> list[tuple[str, int]]:
    """Split ``n_bars`` into named sections."""
    if progression_len >= 12:  # 12-bar blues: sections follow the form
        phrase = 4
    elif n_bars >= 14:
        phrase = 4
    elif n_bars >= 4:
        phrase = 2
    else:
        return [("verse", n_bars)]
    n_phr = math.ceil(n_bars / phrase)
    if n_phr == 1:
        names = ["verse"]
    elif n_phr == 2:
        names = ["verse", "chorus"]
    elif n_phr == 3:
        names = _pick(rng, (["intro", "verse", "chorus"], ["verse", "verse", "chorus"], ["verse", "chorus", "chorus"]))
    elif n_phr == 4:
        names = _pick(rng, (["intro", "verse", "chorus", "outro"], ["verse", "verse", "chorus", "chorus"],
                            ["intro", "verse", "chorus", "chorus"]))
    else:
        body = ["verse", "verse", "chorus", "chorus"]
        while len(body) + 2 < n_phr:
            extra = ["verse", "chorus", "chorus"] if len(body) < 8 else ["bridge", "chorus", "chorus"]
            if len(body) >= 8 and "bridge" in body:
                extra = ["verse", "chorus"]
            body += extra
        names = (["intro"] + body)[: n_phr - 1] + ["outro"]
    # merge consecutive equal names into sections, then trim the total to n_bars
    sections: list[list] = []
    for nm in names:
        if sections and sections[-1][0] == nm:
            sections[-1][1] += phrase
        else:
            sections.append([nm, phrase])
    excess = sum(s[1] for s in sections) - n_bars
    while excess > 0:
        take = min(excess, sections[-1][1] - 1) if sections[-1][1] > 1 else 0
        if take == 0:
            excess -= sections[-1][1]
            sections.pop()
            continue
        sections[-1][1] -= take
        excess -= take
    return [(n, b) for n, b in sections]


def compose(
    seed: int,
    duration: float = 10.0,
    style: str | None = None,
    *,
    key: str | None = None,
    bpm: float | None = None,
    meter: int | str | None = None,
    config: ComposerConfig | None = None,
) -> Composition:
    """Compose a piece of about ``duration`` seconds.

    Args:
        seed: any non-negative integer; the same seed (and arguments) gives the
            identical composition.
        duration: target length in seconds (the last note ends at about ``duration``
            minus a short release tail).
        style: one of :func:`list_styles`; drawn from the seed when None.
        key: force a key (``"G major"``, ``"F# minor"``); drawn when None.
        bpm: force a tempo (60-180 recommended); drawn from the style's range when None.
        meter: force 3 or 4 beats per bar (``"3/4"`` / ``"4/4"`` also accepted).
        config: :class:`ComposerConfig` (style restriction, tempo limits).

    Returns:
        A :class:`Composition` whose ``metadata`` describes the piece.
    """
    cfg = config or ComposerConfig()
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise InvalidInput(f"seed must be a non-negative integer, got {seed!r}")
    if not (isinstance(duration, (int, float)) and 1.0 <= float(duration) <= 600.0):
        raise InvalidInput(f"duration must be between 1 and 600 seconds, got {duration!r}")
    rng = np.random.default_rng(int(seed))

    # ---- global choices (always drawn, then overridden, so forcing one attribute
    # leaves the others as the seed would have them) ---------------------------------------
    if cfg.min_bpm > cfg.max_bpm:
        raise InvalidInput(f"min_bpm ({cfg.min_bpm}) is above max_bpm ({cfg.max_bpm})")
    pool = list(cfg.styles) if cfg.styles else list(STYLES)
    for s in pool + ([style] if style else []):
        if s not in STYLES:
            raise InvalidInput(f"unknown style {s!r}; choose from {', '.join(STYLES)}")
    fits = [s for s in pool if STYLES[s].bpm[0] <= cfg.max_bpm and STYLES[s].bpm[1] >= cfg.min_bpm]
    if not fits and bpm is None:
        raise InvalidInput(f"no style plays between {cfg.min_bpm} and {cfg.max_bpm} BPM")
    st = STYLES[_pick(rng, fits or pool)]
    if style:
        st = STYLES[style]
        if bpm is None and not (st.bpm[0] <= cfg.max_bpm and st.bpm[1] >= cfg.min_bpm):
            raise InvalidInput(f"style {style!r} plays at {st.bpm[0]}-{st.bpm[1]} BPM, outside "
                               f"{cfg.min_bpm}-{cfg.max_bpm}")

    tonic = int(rng.integers(12))
    mode = "minor" if rng.random() < st.p_minor else "major"
    if key is not None:
        tonic, mode = parse_key(key)

    lo, hi = max(st.bpm[0], cfg.min_bpm), min(st.bpm[1], cfg.max_bpm)
    tempo: float = int(rng.integers(lo, hi + 1)) if lo <= hi else st.bpm[0]
    if bpm is not None:
        if not isinstance(bpm, (int, float)) or not 30 <= float(bpm) <= 300:
            raise InvalidInput(f"bpm must be between 30 and 300, got {bpm!r}")
        tempo = int(bpm) if float(bpm).is_integer() else float(bpm)
    bpb = _weighted(rng, [m for m, _ in st.meters], [p for _, p in st.meters])
    if meter is not None:
        try:
            bpb = int(str(meter).split("/")[0])
        except ValueError:
            bpb = 0
        if bpb not in (3, 4):
            raise InvalidInput(f"meter must be 3/4 or 4/4, got {meter!r}")

    swing = float(rng.uniform(*st.swing)) if st.swing[1] > 0.5 else 0.5
    spb = 60.0 / tempo
    bar_s = spb * bpb
    n_bars, final_beats = _bar_grid(float(duration), spb, bpb)

    # ---- instrumentation --------------------------------------------------------------
    lead = _pick(rng, st.lead)
    chords_prog = _pick(rng, st.chords)
    bass_prog = _pick(rng, st.bass)
    if st.name == "ballad" and rng.random() < 0.55:
        chords_prog, bass_prog, lead = 0, 0, (0 if rng.random() < 0.6 else lead)  # solo piano
    has_pad = rng.random() < st.p_pad
    pad_prog = _pick(rng, st.pad)
    has_arp = rng.random() < st.p_arp
    arp_prog = _pick(rng, st.arp) if st.arp else 0
    has_drums = rng.random() < st.p_drums
    kit = _pick(rng, st.kits)
    bass_style = _pick(rng, st.bass_styles)
    comp_style = _pick(rng, st.comp_styles)
    if st.name == "jazz" and chords_prog == 26:
        comp_style = "four_to_bar"  # a jazz guitar comps four to the bar
    if bpb == 3 and comp_style in ("charleston", "offbeat_stabs", "bossa_comp", "power8", "chug"):
        comp_style = "quarters"
    if st.name == "ballad" and bass_prog != 0:
        bass_style = "root_fifth"
    dyn_profile = _pick(rng, _DYNAMIC_PROFILES)
    genre = _pick(rng, st.genres)
    if st.name == "ballad" and bpb == 3:
        genre = _pick(rng, ("ballad", "piano waltz", "waltz"))

    verse_prog, sections, bars = _plan_harmony(rng, st, tonic, mode, bpb, bar_s, n_bars, final_beats)

    # ---- dynamics ---------------------------------------------------------------------
    for b in bars:
        pos = b.index / max(1, len(bars) - 1)
        e = _SECTION_ENERGY[b.section]
        if dyn_profile == "crescendo":
            e = 0.5 + 0.5 * pos * 0.9 + 0.1 * (e - 0.7)
        elif dyn_profile == "arch":
            e = e * (0.8 + 0.3 * math.sin(math.pi * pos))
        elif dyn_profile == "terraced":
            e = e
        else:  # steady
            e = 0.7 + 0.3 * (e - 0.7)
        if b.section == "verse" and b.bar_in_section == b.bars_in_section - 1:
            e += 0.05  # lift into the next section
        if b.section == "outro":
            e *= 1.0 - 0.3 * (b.bar_in_section / max(1, b.bars_in_section))
        b.energy = float(np.clip(e, 0.3, 1.0))
    for i, b in enumerate(bars):
        nxt = bars[i + 1] if i + 1 < len(bars) else None
        b.fill = nxt is not None and (nxt.section != b.section or b.phrase_pos == b.phrase_len - 1) \
            and b.phrase_len >= 2 and rng.random() < 0.75
        b.crash = b.bar_in_section == 0 and (b.section in ("chorus", "bridge") or (b.index > 0 and rng.random() < 0.5))

    w = _Writer(rng, tempo, bpb, swing, st.swing_level, st.humanize_ms)
    w.limit = float(duration)
    style_energy = st.energy

    # ---- parts ------------------------------------------------------------------------
    _write_bass(w, rng, st, bars, bass_style, bpb, tonic)
    _write_comp(w, rng, bars, comp_style, bpb)
    if has_pad:
        _write_pad(w, st, bars, bpb)
    if has_arp:
        _write_arp(w, st, bars, bpb)
    lead_sections = _write_melody(w, rng, st, bars, bpb, tonic, mode)
    if has_drums:
        _write_drums(w, rng, st, bars, bpb, tempo)

    # ---- parts & metadata -------------------------------------------------------------
    role_prog = {"lead": lead, "chords": chords_prog, "bass": bass_prog, "pad": pad_prog, "arp": arp_prog,
                 "drums": kit}
    pans = {"lead": 64 + int(rng.integers(-12, 13)), "chords": _pick(rng, (40, 88, 50, 78)), "bass": 64,
            "pad": 64, "arp": _pick(rng, (34, 94)), "drums": 64}
    volumes = {"lead": 104, "chords": 96, "bass": 100, "pad": 80, "arp": 84, "drums": 106}
    if st.name in ("metal", "rock"):
        volumes.update(pad=100, chords=88)  # the pad carries the chord thirds over the power chords
    if st.name in ("ambient", "classical", "ballad"):
        volumes.update(bass=112, arp=96)
    parts = []
    for role in ("drums", "bass", "chords", "pad", "arp", "lead"):
        notes = w.parts.get(role)
        if not notes:
            continue
        notes.sort(key=lambda n: (n.start, n.pitch))
        is_drum = role == "drums"
        prog = role_prog[role]
        name = GM_DRUM_KITS.get(prog, "drum kit") if is_drum else gm_name(prog)
        parts.append(Part(role, prog, is_drum, _ROLE_CHANNEL[role], name, pans[role], volumes[role], notes))

    sec_meta, t = [], 0.0
    for name, length in sections:
        end = float(duration) if t + length >= len(bars) else (t + length) * bar_s
        sec_meta.append({"name": name, "start": round(t * bar_s, 3), "end": round(end, 3), "bars": length})
        t += length
    moods = _pick_moods(rng, st, mode, tempo)
    instruments = []
    for p in parts:
        if p.is_drum:
            continue
        if p.name not in instruments:
            instruments.append(p.name)
    if has_drums:
        instruments.append("drums")
    featured = gm_name(lead) if lead_sections else gm_name(chords_prog)
    energy_value = round(float(np.mean([b.energy for b in bars]) * (0.55 + 0.5 * style_energy)), 3)
    feel = "swing" if st.swing[1] > 0.5 and st.swing_level == "8th" else \
        ("swung 16ths" if st.swing[1] > 0.5 else "straight")
    if st.name == "blues":
        feel = "shuffle"
    keywords = list(st.keywords)
    keywords += [f"{tempo_word(tempo)} tempo", "instrumental"]
    if bpb == 3:
        keywords.append("waltz time" if st.name != "jazz" else "jazz waltz")
    if not has_drums:
        keywords.append("no drums")
    if bass_style == "walking":
        keywords.append("walking bass")
    if bass_style == "octave":
        keywords.append("octave bass")
    if has_arp:
        keywords.append("arpeggios")
    keywords = list(dict.fromkeys(keywords))
    title = _make_title(rng, st)
    meta = {
        "title": title,
        "artist": ARTIST,
        "key": key_name(tonic, mode),
        "tonic": NOTE_NAMES[tonic],
        "mode": mode,
        "bpm": tempo,
        "meter": f"{bpb}/4",
        "beats_per_bar": bpb,
        "genre": genre,
        "style": st.name,
        "moods": moods,
        "instrument": featured,
        "instruments": instruments,
        "instrumentation": [{"role": p.role, "program": p.program, "name": p.name, "drum": p.is_drum}
                            for p in parts],
        "drums": has_drums,
        "drum_kit": GM_DRUM_KITS.get(kit) if has_drums else None,
        "keywords": keywords,
        "sections": sec_meta,
        "bars": len(bars),
        "progression": " ".join("-".join(b) for b in verse_prog),
        "chords": _timed_chords(bars, bpb, spb),
        "feel": feel,
        "energy": energy_value,
        "energy_level": "high" if energy_value >= 0.62 else "medium" if energy_value >= 0.4 else "low",
        "dynamics": dyn_profile,
        "duration": float(duration),
        "seed": int(seed),
    }
    return Composition(parts, tempo, bpb, float(duration), meta)



def _bar_grid(duration: float, spb: float, bpb: int) -> tuple[int, float]:
    """``(n_bars, final_beats)`` of a piece of ``duration`` seconds: full bars of music, then the
    final tonic chord in a (possibly partial) last bar of ``final_beats`` beats."""
    bar_s = spb * bpb
    n_full = max(0, int(math.floor((duration - 0.05) / bar_s)))
    final_beats = (duration - n_full * bar_s) / spb
    if n_full == 0:
        return 1, duration / spb
    if final_beats >= 1.0:
        return n_full + 1, min(float(bpb), final_beats)
    # less than a beat left: the last full bar holds the final chord, ringing to the end
    return n_full, (duration - (n_full - 1) * bar_s) / spb


def _timed_chords(bars: list["_Bar"], bpb: int, spb: float) -> list[list]:
    """``[[start_seconds, chord_name], ...]`` of the bars' chords (the sidecars' ``chords``)."""
    return [[round((b.index * bpb + off) * spb, 3), ch.name()] for b in bars for off, ch in b.chords]


def _plan_harmony(rng: np.random.Generator, st: "Style", tonic: int, mode: str, bpb: int, bar_s: float, n_bars: int,
                  final_beats: float) -> tuple[list[list[str]], list[tuple[str, int]], list["_Bar"]]:
    """The harmony plan of a piece: ``(verse progression, sections, bars with their chords)``;
    progressions drawn from the style's, phrases and sections laid out, the cadence written
    (the tonic chord opens and closes every piece)."""
    progs = st.minor if mode == "minor" else st.major
    bridge_progs = st.bridge_minor if mode == "minor" else st.bridge_major
    verse_prog = parse_progression(_pick(rng, progs))
    chorus_prog = parse_progression(_pick(rng, progs)) if len(progs) > 1 else verse_prog
    bridge_prog = parse_progression(_pick(rng, bridge_progs))
    if st.name in ("jazz", "latin") and mode == "major" and rng.random() < 0.5:
        # the tonic as a sixth chord (C6), as common in swing and bossa nova as Cmaj7
        verse_prog, chorus_prog = ([[("I6" if c == "Imaj7" else c) for c in bar] for bar in prog]
                                   for prog in (verse_prog, chorus_prog))
    sections = _plan_sections(rng, n_bars, len(verse_prog))
    if len(verse_prog) >= 12:
        chorus_prog = verse_prog  # the blues form runs through every section
    elif bpb == 4 and bar_s >= 3.2:
        # slow 4/4: two chords per bar, so that a short clip still hears the whole progression
        verse_prog, chorus_prog, bridge_prog = (_double_time_harmony(p) for p in (verse_prog, chorus_prog, bridge_prog))

    cadence_pre = {"authentic": "V", "plagal": "IV", "rock": "bVII" if mode == "major" else "VII",
                   "blues": "V7"}[st.cadence]
    if mode == "minor":
        cadence_pre = {"authentic": "V", "plagal": "iv", "rock": "VII", "blues": "V7"}[st.cadence]
    tonic_sym = "i" if mode == "minor" else "I"
    if st.cadence == "blues":
        tonic_sym += "7"
    elif verse_prog[0][0] in ("I6", "Imaj7", "i7") and st.name in ("jazz", "hiphop", "latin"):
        tonic_sym = verse_prog[0][0]

    bars: list[_Bar] = []
    seen: dict[str, int] = {}
    blues_pos = 0
    for name, length in sections:
        occ = seen.get(name, 0)
        seen[name] = occ + 1
        prog = {"chorus": chorus_prog, "bridge": bridge_prog}.get(name, verse_prog)
        phrase_len = 4 if length >= 4 and (length % 4 == 0 or length > 6) else min(length, 2 if length < 4 else 4)
        for j in range(length):
            if len(prog) >= 12:
                syms = prog[blues_pos % len(prog)]
                blues_pos += 1
            else:
                syms = prog[j % len(prog)]
            bars.append(_Bar(len(bars), name, occ, j, length, j % phrase_len, phrase_len, [], 0.0))
            bars[-1].chords = [(k * bpb / len(syms), parse_roman(s, tonic, mode)) for k, s in enumerate(syms)]
    # cadence: last bar tonic, bar before it the pre-cadence chord
    bars[-1].chords = [(0.0, parse_roman(tonic_sym, tonic, mode))]
    bars[-1].last_bar = True
    bars[-1].beats = final_beats
    if len(bars) >= 3:
        pre = bars[-2]
        sevenths = any("7" in c for bar in verse_prog for c in bar)
        dom = "V7" if sevenths else "V"
        if st.cadence == "authentic" and bpb == 4:
            # subdominant then dominant (IV-V-I, or ii7-V7-I): the cadence that spells out the key
            sub = ("iiø7" if mode == "minor" else "ii7") if sevenths else ("iv" if mode == "minor" else "IV")
            pre.chords = [(0.0, parse_roman(sub, tonic, mode)), (2.0, parse_roman(dom, tonic, mode))]
        elif len(pre.chords) == 1 or st.cadence != "authentic":
            pre.chords = [(0.0, parse_roman(cadence_pre if st.cadence != "authentic" else dom, tonic, mode))]
        else:
            pre.chords[-1] = (pre.chords[-1][0], parse_roman(dom, tonic, mode))
    bars[0].chords[0] = (0.0, parse_roman(verse_prog[0][0], tonic, mode))
    return verse_prog, sections, bars


def style_in_text(text: str | None) -> str | None:
    """The composer style a prompt names (``"a smoky bossa nova in A minor"`` -> ``"latin"``): the
    style whose name or genre words appear in it, longest phrase first; ``None`` when none does."""
    if not text:
        return None
    low = " " + re.sub(r"[^a-z0-9&+-]+", " ", text.lower()) + " "
    phrases = sorted({(g, name) for name, st in STYLES.items() for g in (name, *st.genres)},
                     key=lambda gn: (-len(gn[0]), gn[0]))
    for phrase, name in phrases:
        if f" {phrase} " in low:
            return name
    return None


def harmony_plan(tonic: int, mode: str, bpm: float, duration: float, *, style: str | None = None,
                 beats_per_bar: int = 4, rng: np.random.Generator | int | None = None) -> list[list]:
    """A chord plan for ``duration`` seconds in a key, drawn as :func:`compose` draws a piece's
    harmony (the style's progressions, sections, the cadence; default style ``"pop"``):
    ``[[start_seconds, chord_name], ...]`` like the ``chords`` of a corpus sidecar
    (``[[0.0, "Am7"], [1.791, "Dm7"], ...]``; names of :meth:`Chord.name`). ``rng`` is a numpy
    generator or a seed (default: fresh entropy)."""
    if isinstance(tonic, bool) or not isinstance(tonic, (int, np.integer)) or not 0 <= int(tonic) < 12:
        raise InvalidInput(f"tonic must be a pitch class 0-11, got {tonic!r}")
    if mode not in SCALES:
        raise InvalidInput(f"mode must be one of {sorted(SCALES)}, got {mode!r}")
    if not isinstance(bpm, (int, float, np.number)) or not 20 <= float(bpm) <= 400:
        raise InvalidInput(f"bpm must be between 20 and 400, got {bpm!r}")
    if not isinstance(duration, (int, float, np.number)) or not 0 < float(duration) <= 3600:
        raise InvalidInput(f"duration must be in (0, 3600] seconds, got {duration!r}")
    if beats_per_bar not in (3, 4):
        raise InvalidInput(f"beats_per_bar must be 3 or 4, got {beats_per_bar!r}")
    if style is not None and style not in STYLES:
        raise InvalidInput(f"unknown style {style!r}; choose from {', '.join(STYLES)}")
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    st = STYLES[style or "pop"]
    spb = 60.0 / float(bpm)
    n_bars, final_beats = _bar_grid(float(duration), spb, beats_per_bar)
    _, _, bars = _plan_harmony(rng, st, int(tonic), mode, beats_per_bar, spb * beats_per_bar, n_bars, final_beats)
    return _timed_chords(bars, beats_per_bar, spb)

def _double_time_harmony(prog: list[list[str]]) -> list[list[str]]:
    """``[[I], [V], [vi], [IV]]`` -> ``[[I, V], [vi, IV]]`` (bars of one chord only)."""
    if any(len(bar) != 1 for bar in prog) or len(prog) % 2:
        return prog
    return [[prog[i][0], prog[i + 1][0]] for i in range(0, len(prog), 2)]


def tempo_word(bpm: float) -> str:
    if bpm < 76:
        return "slow"
    if bpm < 108:
        return "moderate"
    if bpm < 140:
        return "upbeat"
    return "fast"


def _pick_moods(rng: np.random.Generator, st: Style, mode: str, bpm: float) -> list[str]:
    pool = list(st.moods_minor if mode == "minor" else st.moods_major)
    k = int(rng.integers(2, 4))
    idx = rng.permutation(len(pool))[:k]
    moods = [pool[i] for i in sorted(idx)]
    if bpm >= 140 and "energetic" not in moods and st.name not in ("ambient", "ballad"):
        moods.append("energetic")
    if bpm <= 72 and "calm" not in moods and st.energy < 0.5:
        moods.append("calm")
    return moods


def _make_title(rng: np.random.Generator, st: Style) -> str:
    a, b = st.title_words
    if st.name == "classical":
        return f"{_pick(rng, a)} {_pick(rng, b)}"
    form = int(rng.integers(3))
    if form == 0:
        return f"{_pick(rng, a)} {_pick(rng, b)}"
    if form == 1:
        return f"The {_pick(rng, a)} {_pick(rng, b)}"
    return f"{_pick(rng, b)} of the {_pick(rng, a)} {_pick(rng, b)}".replace("  ", " ")


# --------------------------------------------------------------------------------------
# Part writers (all positions in beats; ``w.add`` converts to seconds)
# --------------------------------------------------------------------------------------
def _vel(base: float, energy: float, accent: float = 0.0) -> float:
    return base * (0.62 + 0.45 * energy) + accent


def _chord_at(bar: _Bar, beat: float) -> Chord:
    cur = bar.chords[0][1]
    for off, ch in bar.chords:
        if beat + 1e-6 >= off:
            cur = ch
    return cur


def _next_chord(bars: list[_Bar], bar: _Bar, beat: float) -> Chord:
    later = [ch for off, ch in bar.chords if off > beat + 1e-6]
    if later:
        return later[0]
    if bar.index + 1 < len(bars):
        return bars[bar.index + 1].chords[0][1]
    return bar.chords[0][1]


def _bass_root(pc: int, low: int = 36) -> int:
    return low + (pc - low) % 12


def _write_bass(w: _Writer, rng, st: Style, bars: list[_Bar], kind: str, bpb: int, tonic: int) -> None:
    low = 33 if st.name in ("metal", "rock") else 36
    if st.name in ("ambient", "classical"):
        low = 36
    for bar in bars:
        b0 = bar.index * bpb
        e = bar.energy
        acc = [14 if i == 0 else (6 if i == 2 and bpb == 4 else 0) for i in range(bpb)]
        if bar.last_bar:
            ch = bar.chords[0][1]
            w.add("bass", _bass_root(ch.root, low), b0, bar.beats, _vel(92, e, 10), swing=False, jitter=False)
            continue
        for off, ch in bar.chords:
            span = (bar.chords[[o for o, _ in bar.chords].index(off) + 1][0]
                    if off != bar.chords[-1][0] else bpb) - off
            r = _bass_root(ch.root, low)
            fifth = r + 7 if r + 7 <= low + 16 else r - 5
            beats = [off + i for i in range(int(round(span)))]
            if kind == "pump8" or (kind == "syncopated" and bar.section == "chorus"):
                for bt in beats:
                    for h in (0.0, 0.5):
                        w.add("bass", r, b0 + bt + h, 0.45, _vel(80, e, acc[int(bt) % bpb] + (8 if h == 0 else 0)))
            elif kind == "syncopated":
                pat = [(0, 0.75, r), (0.75, 0.75, r), (1.5, 0.5, r + 12 if r + 12 < 60 else r), (2, 1, r),
                       (3, 0.5, fifth), (3.5, 0.5, r)]
                for o, d, p in pat:
                    if off <= o < off + span:
                        w.add("bass", p, b0 + o, d * 0.9, _vel(84, e, 10 if o in (0, 2) else 0))
            elif kind == "root_fifth":
                for bt in beats:
                    k = int(bt) % bpb
                    if bpb == 3:
                        if k == 0:
                            w.add("bass", r, b0 + bt, 0.95, _vel(90, e, 12))
                        elif k == 2 and rng.random() < 0.4:
                            w.add("bass", fifth, b0 + bt, 0.9, _vel(70, e))
                    elif k in (0, 2):
                        w.add("bass", r if k == 0 else fifth, b0 + bt, 0.95, _vel(88, e, acc[k]))
                    elif st.name in ("pop", "rock", "folk") or rng.random() < 0.5:
                        w.add("bass", r, b0 + bt, 0.9, _vel(74, e))
            elif kind == "folk_walk":
                for bt in beats:
                    k = int(bt) % bpb
                    p = r if k == 0 else fifth if k == 2 % bpb else r
                    w.add("bass", p, b0 + bt, 0.9, _vel(86, e, acc[k]))
            elif kind == "walking":
                nxt = _next_chord(bars, bar, off + span - 0.01)
                target = _bass_root(nxt.root, low)
                n = len(beats)
                line = [r]
                chord_tones = sorted({_bass_root(pc, low) for pc in ch.pcs} | {_bass_root(pc, low) + 12 for pc in ch.pcs})
                for i in range(1, n):
                    if i == n - 1:  # chromatic or scale approach into the next root
                        line.append(target + (1 if rng.random() < 0.5 else -1) if target != line[-1] else target + 2)
                    else:
                        cands = [p for p in chord_tones if 0 < abs(p - line[-1]) <= 7 and low - 4 <= p <= low + 19]
                        line.append(_pick(rng, cands) if cands else r + 7)
                for i, (bt, p) in enumerate(zip(beats, line)):
                    w.add("bass", p, b0 + bt, 0.92, _vel(86, e, 10 if i == 0 else 2), swing=False)
            elif kind == "octave":
                for bt in beats:
                    for h in (0.0, 0.5):
                        w.add("bass", r + (12 if h else 0), b0 + bt + h, 0.4,
                              _vel(84, e, (acc[int(bt) % bpb] + 6) if h == 0 else 0))
            elif kind == "offbeat":
                for bt in beats:
                    w.add("bass", r, b0 + bt, 0.22, _vel(76, e, 8 + acc[int(bt) % bpb]), jitter=False)
                    w.add("bass", r + (12 if rng.random() < 0.2 else 0), b0 + bt + 0.5, 0.4, _vel(88, e), jitter=False)
            elif kind == "boogie":
                third = r + (3 if 3 in ch.intervals else 4)
                seq = [r, third, r + 7, r + 9, r + 10, r + 9, r + 7, third]
                for i, bt in enumerate(beats):
                    for h in (0, 1):
                        p = seq[(2 * (int(bt) % 4) + h) % 8]
                        w.add("bass", p, b0 + bt + 0.5 * h, 0.45, _vel(82, e, (acc[int(bt) % bpb] + 4) if h == 0 else 0))
            elif kind == "hiphop":
                # long roots following the kick: 1, the "and" of 2 and 3
                pat = [(0.0, 1.8, r, 8), (2.0, 1.4, r + (12 if rng.random() < 0.15 else 0), 8)]
                if rng.random() < 0.5:
                    pat.append((3.5, 0.45, fifth, -14))
                for o, d, p, a in pat:
                    if off <= o < off + span:
                        w.add("bass", p, b0 + o, d, _vel(90, e, a))
            elif kind == "bossa":
                pat = [(0.0, 1.4, r), (1.5, 0.45, fifth), (2.0, 1.4, fifth), (3.5, 0.45, r)]
                for o, d, p in pat:
                    if off <= o < off + span:
                        w.add("bass", p, b0 + o, d, _vel(86, e, 10 if o in (0.0, 2.0) else 0))
            elif kind == "piano_lh":
                # left-hand pulse: root on 1, fifth/octave on the other beats (quarter notes)
                for bt in beats:
                    k = int(bt) % bpb
                    p = r if k == 0 else (r + 7 if k % 2 == 1 else r + 12)
                    w.add("bass", p, b0 + bt, 0.98, _vel(82, e, 14 if k == 0 else 0))
            elif kind == "cello_quarters":
                # repeated roots with an octave leap: the bass spells the harmony, not its fifth
                for bt in beats:
                    k = int(bt) % bpb
                    p = r + 12 if k == bpb - 1 and rng.random() < 0.5 else r
                    w.add("bass", p, b0 + bt, 0.8, _vel(84, e, 14 if k == 0 else 0))
            elif kind == "alberti_bass":
                third = r + (3 if 3 in ch.intervals else 4)
                for bt in beats:
                    k = int(bt) % bpb
                    p = r if k == 0 else (third + 12 if k % 2 else r + 12)
                    w.add("bass", p, b0 + bt, 0.85, _vel(80, e, 14 if k == 0 else 0))
            elif kind == "pedal_pulse":
                # pedal point: the tonic pulses on every beat under the changing pads
                ped = _bass_root(tonic, low)
                for bt in beats:
                    k = int(bt) % bpb
                    p = ped if k != bpb - 1 or ch.root == tonic else r
                    w.add("bass", p, b0 + bt, 0.95, _vel(78, e, 16 if k == 0 else 0), jitter=False)
            else:  # pragma: no cover - guarded by the style table
                raise InvalidInput(f"unknown bass style {kind!r}")


def _write_comp(w: _Writer, rng, bars: list[_Bar], kind: str, bpb: int) -> None:
    prev: list[int] | None = None
    low, high = (52, 76) if kind not in ("power8", "power_quarters", "chug") else (40, 64)
    if kind in ("alberti", "arpeggio8", "piano_arp"):
        low, high = 55, 79
    for bar in bars:
        b0 = bar.index * bpb
        e = bar.energy
        if bar.section == "intro" and kind in ("power8", "chug"):
            e *= 0.85
        for ci, (off, ch) in enumerate(bar.chords):
            end = bar.chords[ci + 1][0] if ci + 1 < len(bar.chords) else bpb
            span = end - off
            v = _voice(ch, prev, low, high)
            prev = v
            if bar.last_bar:
                for i, p in enumerate(v):
                    w.add("chords", p, b0 + i * 0.02 * (kind in ("strum", "fingerpick")), bar.beats, _vel(78, e, 6),
                          swing=False, jitter=False)
                continue
            beats = [off + i for i in range(int(round(span)))]
            if kind == "quarters":
                for bt in beats:
                    k = int(bt) % bpb
                    for p in v:
                        w.add("chords", p, b0 + bt, 0.8, _vel(68, e, 12 if k == 0 else (6 if k == 2 else 0)))
            elif kind == "strum":
                pattern = [(0, "D", 1.0), (1, "D", 0.5), (1.5, "U", 0.5), (2.5, "U", 0.5), (3, "D", 0.5), (3.5, "U", 0.5)] \
                    if bpb == 4 else [(0, "D", 1.0), (1, "D", 0.5), (1.5, "U", 0.5), (2, "D", 1.0)]
                gtr = sorted(set(v + [v[0] - 12 + (7 if (v[0] - 12 + 7) % 12 in ch.pcs else 0)]))
                for o, d, ln in pattern:
                    if not off <= o < off + span:
                        continue
                    order = gtr if d == "D" else gtr[::-1]
                    acc = 14 if o == 0 else (8 if o == int(o) else -8)
                    for j, p in enumerate(order):
                        w.add("chords", p, b0 + o + j * 0.025, ln * 0.95, _vel(66, e, acc))
            elif kind == "fingerpick":
                root = v[0] - 12
                upper = _arp_cycle(v, 4)  # thumb on the beats, fingers on the off-beats
                for i in range(int(round(span * 2))):
                    o = off + 0.5 * i
                    p = upper[(i // 2) % 4] if i % 2 else (root if (i // 2) % 2 == 0 else root + 7)
                    w.add("chords", p, b0 + o, 0.9, _vel(62, e, 14 if i == 0 else (8 if i % 2 == 0 else 0)))
            elif kind == "boom_chick":
                for bt in beats:
                    k = int(bt) % bpb
                    if k != 0:
                        for p in v:
                            w.add("chords", p, b0 + bt, 0.45, _vel(66, e, 4 if bpb == 4 and k in (1, 3) else 0))
            elif kind == "offbeat_stabs":
                for bt in beats:
                    for p in v:
                        w.add("chords", p, b0 + bt + 0.5, 0.3, _vel(70, e, 4), jitter=False)
            elif kind == "sidechain_pad":
                for bt in beats:
                    for p in v:
                        w.add("chords", p, b0 + bt + 0.25, 0.7, _vel(60, e), jitter=False)
            elif kind in ("power8", "power_quarters", "chug"):
                r = v[0] if v[0] % 12 == ch.root else _bass_root(ch.root, 40)
                power = [r, r + 7, r + 12]
                step = 0.5 if kind != "power_quarters" else 1.0
                for i in range(int(round(span / step))):
                    o = off + i * step
                    on_beat = abs(o - round(o)) < 1e-6
                    if kind == "chug":
                        notes = power if on_beat else power[:1]  # palm-muted root between the beats
                        dur = 0.22 if not on_beat else 0.45
                    else:
                        notes, dur = power, step * 0.9
                    for p in notes:
                        w.add("chords", p, b0 + o, dur,
                              _vel(80, e, (14 if int(o) % bpb == 0 else 8) if on_beat else -4), jitter=False)
            elif kind == "four_to_bar":
                # swing rhythm guitar: short chords on every beat, 2 and 4 slightly leaned on
                for bt in beats:
                    k = int(bt) % bpb
                    for p in v:
                        w.add("chords", p, b0 + bt, 0.55, _vel(62, e, 6 if k % 2 == 1 else 2))
            elif kind == "charleston":
                for o, ln, a in ((0.0, 1.2, 10), (1.5, 0.5, 4)) if bpb == 4 else ((0.0, 1.0, 10), (1.5, 0.5, 2)):
                    for ohalf in (0.0, 2.0) if span >= 4 else (0.0,):
                        oo = off + o + ohalf
                        if off <= oo < off + span and rng.random() < 0.9:
                            for p in v:
                                w.add("chords", p, b0 + oo, ln, _vel(62, e, a))
            elif kind == "comp_jazz":
                for bt in beats:
                    if rng.random() < 0.55:
                        o = bt + (0.5 if rng.random() < 0.4 else 0.0)
                        for p in v:
                            w.add("chords", p, b0 + o, 0.4, _vel(58, e, 6 if o == int(o) else 0))
            elif kind == "shuffle_comp":
                for bt in beats:
                    for h in (0.0, 0.5):
                        for p in v:
                            w.add("chords", p, b0 + bt + h, 0.35,
                                  _vel(58, e, (10 if int(bt) % 2 == 1 else 4) if h == 0 else -6))
            elif kind == "lofi_chords":
                for o, ln in ((0.0, 1.9), (2.0, 1.9)):
                    if off <= o < off + span:
                        for j, p in enumerate(v):
                            w.add("chords", p, b0 + o + 0.03 * j, ln, _vel(62, e, 8 if o == 0.0 else 2))
            elif kind == "bossa_comp":
                # bass thumb on 1/3, chord jabs on a syncopated 16th pattern
                for o, a in ((0.0, 10), (1.0, 4), (1.5, -4), (2.5, -4), (3.0, 4)):
                    if off <= o < off + span:
                        for p in v:
                            w.add("chords", p, b0 + o, 0.4, _vel(62, e, a))
            elif kind == "piano_arp":
                step = 1.0 if 60.0 / w.spb < 70 else 0.5  # quarter-note arpeggios at very slow tempi
                seq = _arp_cycle(v + [v[0] + 12], int(round(bpb / step)))
                for i in range(int(round(span / step))):
                    o = off + step * i
                    on_beat = abs(o - round(o)) < 1e-6
                    w.add("chords", seq[i % len(seq)], b0 + o, 2 * step,
                          _vel(56, e, (10 if int(o) % bpb == 0 else 5) if on_beat else -16))
            elif kind == "piano_blocks":
                for bt in beats:
                    k = int(bt) % bpb
                    for p in v:
                        w.add("chords", p, b0 + bt, 0.95, _vel(58, e, 12 if k == 0 else 0))
            elif kind == "alberti":
                lo_, mid, hi_ = v[0], v[1] if len(v) > 1 else v[0] + 7, v[-1]
                seq = [lo_, hi_, mid, hi_]
                for i in range(int(round(span * 2))):
                    o = off + 0.5 * i
                    w.add("chords", seq[i % 4], b0 + o, 0.45, _vel(56, e, 10 if i % 2 == 0 else -4))
            elif kind == "strings_pulse":
                for bt in beats:
                    k = int(bt) % bpb
                    for p in v:
                        w.add("chords", p, b0 + bt, 0.85, _vel(58, e, 14 if k == 0 else 2))
            elif kind == "arpeggio8":
                seq = _arp_cycle(v + [v[0] + 12], 2 * bpb)
                for i in range(int(round(span * 2))):
                    o = off + 0.5 * i
                    w.add("chords", seq[i % len(seq)], b0 + o, 0.5, _vel(54, e, 10 if i % 2 == 0 else -8))
            elif kind == "pad":
                for p in v:
                    w.add("chords", p, b0 + off, span, _vel(62, e, 0), swing=False, jitter=False)
            else:  # pragma: no cover
                raise InvalidInput(f"unknown accompaniment style {kind!r}")


def _arp_cycle(tones: list[int], n: int) -> list[int]:
    """``n`` notes (one bar) going up and down ``tones``; the cycle restarts every bar."""
    k = len(tones)
    order = list(range(k)) + list(range(k - 2, 0, -1)) if k > 1 else [0]
    return [tones[order[i % len(order)]] for i in range(n)]


def _write_pad(w: _Writer, st: Style, bars: list[_Bar], bpb: int) -> None:
    """Sustained chords. They enter after the first verse, except in styles whose
    guitars play power chords (rock, metal): there the pad carries the chord thirds
    from the start."""
    prev = None
    always = st.name in ("rock", "metal", "ambient")
    for bar in bars:
        if not always and bar.section == "verse" and bar.section_index == 0:
            continue
        b0 = bar.index * bpb
        for ci, (off, ch) in enumerate(bar.chords):
            end = bar.chords[ci + 1][0] if ci + 1 < len(bar.chords) else (bar.beats if bar.last_bar else bpb)
            v = _voice(ch, prev, 60, 84)
            prev = v
            for p in v:
                w.add("pad", p, b0 + off, end - off, _vel(58, bar.energy), swing=False, jitter=False)


def _write_arp(w: _Writer, st: Style, bars: list[_Bar], bpb: int) -> None:
    """Arpeggio: quarter notes in ambient (the pulse), 16ths in electronic."""
    prev = None
    sixteenth = st.name == "electronic"
    for bar in bars:
        if sixteenth and bar.section == "intro":
            continue
        b0 = bar.index * bpb
        for ci, (off, ch) in enumerate(bar.chords):
            end = bar.chords[ci + 1][0] if ci + 1 < len(bar.chords) else (bar.beats if bar.last_bar else bpb)
            v = _voice(ch, prev, 64 if sixteenth else 67, 88 if sixteenth else 91)
            prev = v
            seq = v + [v[0] + 12] if not sixteenth else v + [v[0] + 12, v[1] + 12 if len(v) > 1 else v[0] + 12]
            step = 0.25 if sixteenth else 1.0
            n = int(round((end - off) / step))
            if bar.last_bar:
                n = 1
            for i in range(n):
                o = off + i * step
                on_beat = abs(o - round(o)) < 1e-6
                k = int(o) % bpb
                w.add("arp", seq[i % len(seq)], b0 + o, (step * 0.9 if sixteenth else 1.6) if not bar.last_bar else bar.beats,
                      _vel(64, bar.energy, (16 if k == 0 else 8) if on_beat else -12), swing=False, jitter=False)


# ---------------------------------------------------------------- melody
def _rhythm_motif(rng: np.random.Generator, bpb: int, density: float, swing: bool,
                  bpm: float = 120.0) -> list[tuple[float, float]]:
    """One bar of (onset, duration) pairs in beats.

    Slow tempi get a lyrical rhythm: fewer eighths under 80 BPM, none under 68 BPM.
    """
    short = 0.0 if bpm < 68 else (0.4 if bpm < 80 else 1.0)
    cells = {
        "hold": 1.4 - density, "q": 1.0, "ee": (0.4 + density) * short, "e_e": (0.25 + 0.3 * density) * short,
        "de": (0.15 + 0.25 * density) * short, "ssss": 0.25 * density * short if not swing and bpm >= 80 else 0.0,
        "rest": 0.3, "h": 0.8 - 0.5 * density,
    }
    names = list(cells)
    weights = [max(1e-3, cells[n]) for n in names]
    out: list[tuple[float, float]] = []
    beat = 0
    while beat < bpb:
        c = _weighted(rng, names, weights)
        if beat == 0 and c in ("hold", "rest"):
            c = "q"
        if c == "h" and beat + 2 <= bpb:
            out.append((beat, 2.0))
            beat += 2
            continue
        if c == "h":
            c = "q"
        if c == "hold" and out:
            o, d = out[-1]
            out[-1] = (o, d + 1.0)
        elif c == "q":
            out.append((beat, 1.0))
        elif c == "ee":
            out += [(beat, 0.5), (beat + 0.5, 0.5)]
        elif c == "e_e":
            if out:
                o, d = out[-1]
                out[-1] = (o, d + 0.5)
            out.append((beat + 0.5, 0.5))
        elif c == "de":
            out += [(beat, 0.75), (beat + 0.75, 0.25)]
        elif c == "ssss":
            out += [(beat + 0.25 * i, 0.25) for i in range(4)]
        beat += 1
    return out


def _vary_rhythm(rng: np.random.Generator, motif: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Change one beat of a motif (split a note or merge two)."""
    m = list(motif)
    if len(m) >= 2 and rng.random() < 0.5:
        i = int(rng.integers(len(m) - 1))
        (o1, d1), (o2, d2) = m[i], m[i + 1]
        if o1 + d1 == o2 and d1 + d2 <= 2.0:
            m[i:i + 2] = [(o1, d1 + d2)]
            return m
    i = int(rng.integers(len(m)))
    o, d = m[i]
    if d >= 1.0:
        m[i:i + 1] = [(o, d / 2), (o + d / 2, d / 2)]
    return m


def _cadence_rhythm(motif: list[tuple[float, float]], bpb: int) -> list[tuple[float, float]]:
    """Keep the motif's first beat, then a long final note from the middle of the bar."""
    keep = [(o, d) for o, d in motif if o < (2 if bpb == 4 else 1)]
    if not keep:
        keep = [(0.0, 1.0)]
    last_end = max(o + d for o, d in keep)
    start = max(last_end, 2.0 if bpb == 4 else 1.0)
    keep = [(o, min(d, start - o)) for o, d in keep]
    return keep + [(start, bpb - start)]


class _Theme:
    def __init__(self, rhythms: list[list[tuple[float, float]]], contour: list[int], anchor: int):
        self.rhythms = rhythms
        self.contour = contour
        self.anchor = anchor


def _make_theme(rng: np.random.Generator, st: Style, bpb: int, phrase_len: int, anchor: int,
                bpm: float) -> _Theme:
    swing = st.swing[1] > 0.5
    a = _rhythm_motif(rng, bpb, st.density, swing, bpm)
    b = _rhythm_motif(rng, bpb, st.density, swing, bpm)
    shapes = [[a, _vary_rhythm(rng, a), a, b], [a, b, a, b], [a, a, b, a], [a, _vary_rhythm(rng, a), b, a]]
    seq = _pick(rng, shapes)
    rhythms = [seq[i % 4] for i in range(phrase_len)]
    rhythms[-1] = _cadence_rhythm(rhythms[-1], bpb)
    n = max(len(r) for r in rhythms) + 2
    steps = []
    direction = 1 if rng.random() < 0.5 else -1
    for i in range(n):
        if rng.random() < 0.25:
            direction = -direction
        s = _weighted(rng, [0, 1, 2, 3], [0.15, 0.55, 0.22, 0.08]) * direction
        steps.append(int(s))
    return _Theme(rhythms, steps, anchor)


def _write_melody(w: _Writer, rng, st: Style, bars: list[_Bar], bpb: int, tonic: int, mode: str) -> list[str]:
    scale = SCALES[mode]
    lo, hi = st.lead_register
    base = lo - (lo - tonic) % 12  # tonic at or below the register floor
    if base + 12 < lo:
        base += 12

    def deg_to_pitch(d: int, chord: Chord) -> int:
        pc_off = scale[d % 7]
        if mode == "minor" and d % 7 == 6 and (tonic + 11) % 12 in chord.pcs:
            pc_off = 11  # raised leading tone over V
        return base + 12 * (d // 7) + pc_off

    def nearest_chord_degree(d: int, chord: Chord, direction: int) -> int:
        best, best_cost = d, 99.0
        for cand in range(d - 3, d + 4):
            if deg_to_pitch(cand, chord) % 12 in chord.pcs:
                cost = abs(cand - d) + (0.1 if (cand - d) * direction < 0 else 0)
                if cost < best_cost:
                    best, best_cost = cand, cost
        return best

    def clamp(d: int) -> int:
        while deg_to_pitch(d, bars[0].chords[0][1]) > hi:
            d -= 7
        while deg_to_pitch(d, bars[0].chords[0][1]) < lo:
            d += 7
        return d

    themes: dict[str, _Theme] = {}
    sections_with_lead = []
    d_lo = 0
    while base + 12 * (d_lo // 7) + scale[d_lo % 7] < lo:
        d_lo += 1
    center = d_lo + 4
    i = 0
    while i < len(bars):
        bar = bars[i]
        plen = min(bar.phrase_len, len(bars) - i)
        phrase = bars[i:i + plen]
        i += plen
        if bar.section == "intro" or (bar.section == "outro" and rng.random() < 0.5):
            continue
        if bar.section not in sections_with_lead:
            sections_with_lead.append(bar.section)
        key = f"{bar.section}:{plen}"
        if key not in themes:
            anchor = center + {"chorus": 2, "bridge": -1}.get(bar.section, 0) + int(rng.integers(-1, 2))
            themes[key] = _make_theme(rng, st, bpb, plen, anchor, 60.0 / w.spb)
        th = themes[key]
        final = phrase[-1].last_bar
        d = clamp(th.anchor)
        si = 0
        for pb, pbar in enumerate(phrase):
            rhythm = th.rhythms[pb] if pb < len(th.rhythms) else th.rhythms[-1]
            if pbar.last_bar:
                rhythm = [(0.0, pbar.beats)]
            b0 = pbar.index * bpb
            for ni, (o, dur) in enumerate(rhythm):
                chord = _chord_at(pbar, o)
                step = th.contour[si % len(th.contour)]
                si += 1
                if ni == 0 and pb == 0:
                    d = nearest_chord_degree(th.anchor, chord, 0)
                elif ni > 0 or pb > 0:
                    d = d + step
                    if abs(d - center) > 5:  # pull back towards the centre
                        d = d - 2 * step
                strong = abs(o - round(o)) < 1e-6 and (int(o) % 2 == 0 or bpb == 3)
                is_last = pb == len(phrase) - 1 and ni == len(rhythm) - 1
                if is_last:
                    targets = [0] if final else ([4, 2, 0] if pbar.section != "chorus" else [0, 4, 2])
                    tgt = targets[0] if final else _pick(rng, targets)
                    cands = [k * 7 + tgt for k in range(-1, 4)]
                    d = min(cands, key=lambda c: (abs(c - d), abs(c - center)))
                elif strong:
                    d = nearest_chord_degree(d, chord, step)
                d = clamp(d)
                pitch = deg_to_pitch(d, chord)
                if st.name == "blues" and not strong and rng.random() < 0.15 and mode == "major":
                    pitch += -1 if pitch % 12 in ((tonic + 4) % 12, (tonic + 11) % 12) else 0  # blue note
                accent = 10 if o == 0 else (5 if strong else 0)
                phrase_shape = 6 * math.sin(math.pi * (pb + o / bpb) / max(1, len(phrase)))
                w.add("lead", pitch, b0 + o, dur * (0.92 if dur < 2 else 0.97),
                      _vel(86, pbar.energy, accent + phrase_shape + float(rng.integers(-4, 5))))
    return sections_with_lead


# ---------------------------------------------------------------- drums
def _grid(pattern: str, vel: dict[str, int] | None = None) -> list[tuple[int, int]]:
    v = vel or {"X": 112, "x": 92, "o": 66, "g": 38}
    return [(i, v[c]) for i, c in enumerate(pattern.replace(" ", "")) if c != "."]


# (main, light) patterns per style and meter; 16 steps per 4/4 bar, 12 per 3/4 bar.
_DRUMS: dict[tuple[str, int], dict[str, dict[int, str]]] = {
    ("pop", 4): {
        "main": {KICK: "X... .... X.x. ....", SNARE: ".... X... .... X...", HAT: "x.o. x.o. x.o. x.o."},
        "light": {KICK: "X... .... X... ....", HAT: "x.o. x.o. x.o. x.o."},
    },
    ("rock", 4): {
        "main": {KICK: "X... ..x. X.x. ....", SNARE: ".... X... .... X...", HAT: "x.o. x.o. x.o. x.o."},
        "light": {KICK: "X... .... X... ....", HAT: "x.o. x.o. x.o. x.o.", SNARE: ".... o... .... o..."},
    },
    ("metal", 4): {
        "main": {KICK: "X.x. X.x. X.x. X.x.", SNARE: ".... X... .... X...", CRASH: "x... .... .... ....",
                 HAT: "x... x... x... x..."},
        "light": {KICK: "X... X... X... X...", HAT: "x.o. x.o. x.o. x.o."},
    },
    ("house", 4): {
        "main": {KICK: "X... X... X... X...", CLAP: ".... X... .... X...", OPEN_HAT: "..x. ..x. ..x. ..x.",
                 HAT: "g.g. g.g. g.g. g.g."},
        "light": {KICK: "X... X... X... X...", HAT: "..x. ..x. ..x. ..x."},
    },
    ("boombap", 4): {
        "main": {KICK: "X... ...g X.o. ....", SNARE: ".... X... .... X...", HAT: "x.o. x.o. x.o. x.og"},
        "light": {KICK: "X... ...g X.o. ....", HAT: "x.o. x.o. x.o. x.o."},
    },
    ("jazz", 4): {
        "main": {RIDE: "x... x.o. x... x.o.", PEDAL_HAT: ".... x... .... x...", KICK: "g... g... g... g..."},
        "light": {RIDE: "x... x.o. x... x.o.", PEDAL_HAT: ".... x... .... x..."},
    },
    ("jazz", 3): {
        "main": {RIDE: "x... x.o. x.o.", PEDAL_HAT: ".... x... x...", KICK: "o... .... ...."},
        "light": {RIDE: "x... x.o. x.o.", PEDAL_HAT: ".... x... x..."},
    },
    ("shuffle", 4): {
        "main": {KICK: "X... .... X... ....", SNARE: ".... X... .... X...", HAT: "x.o. x.o. x.o. x.o."},
        "light": {KICK: "X... .... X... ....", HAT: "x.o. x.o. x.o. x.o."},
    },
    ("ballad", 4): {
        "main": {KICK: "X... .... o... ....", STICK: ".... x... .... x...", HAT: "o.g. o.g. o.g. o.g."},
        "light": {HAT: "o.g. o.g. o.g. o.g.", KICK: "o... .... .... ...."},
    },
    ("ballad", 3): {
        "main": {KICK: "X... .... ....", STICK: ".... x... x...", HAT: "o.g. o.g. o.g."},
        "light": {KICK: "o... .... ....", HAT: "o.g. o.g. o.g."},
    },
    ("folk", 4): {
        "main": {KICK: "X... .... X... ....", SNARE: ".... o... .... o...", TAMB: ".... x... .... x...",
                 SHAKER: "x.o. x.o. x.o. x.o."},
        "light": {KICK: "X... .... X... ....", SHAKER: "x.o. x.o. x.o. x.o."},
    },
    ("folk", 3): {
        "main": {KICK: "X... .... ....", SNARE: ".... o... o...", SHAKER: "x.o. x.o. x.o."},
        "light": {KICK: "X... .... ....", SHAKER: "x.o. x.o. x.o."},
    },
    ("bossa", 4): {
        "main": {KICK: "X..o X... X..o X...", STICK: "o..o ..o. ..o. .o..", SHAKER: "xgog xgog xgog xgog",
                 HAT: ".... x... .... x..."},
        "light": {KICK: "X..o X... X..o X...", SHAKER: "xgog xgog xgog xgog"},
    },
}
# 3/4 versions of 4/4-only patterns are built by dropping the last beat (not used by the style table).


def _write_drums(w: _Writer, rng, st: Style, bars: list[_Bar], bpb: int, bpm: float) -> None:
    style = st.drum_style
    pats = _DRUMS.get((style, bpb)) or _DRUMS.get((style, 4))
    if pats is None:
        return
    steps = 4 * bpb
    slow, fast = bpm < 90, bpm >= 150
    for bar in bars:
        b0 = bar.index * bpb
        e = bar.energy
        variant = "light" if bar.section in ("intro", "outro") else "main"
        pattern = pats[variant]
        if fast and variant == "main" and bpb == 4:
            pattern = dict(pattern)
            if style in ("rock", "metal", "pop", "folk", "shuffle"):
                pattern[KICK] = "X... x... X... x..."  # driving kick on every beat at fast tempi
            elif style == "jazz":
                pattern[KICK] = "o... o... o... o..."  # audible feathered bass drum
        fill_from = steps if not bar.fill else steps - (4 if rng.random() < 0.6 or bpb == 3 else 8)
        if bar.last_bar:
            w.add("drums", KICK, b0, 1.0, _vel(100, e, 10), swing=False, jitter=False)
            w.add("drums", CRASH, b0, 2.0, _vel(90, e), swing=False, jitter=False)
            continue
        for note, grid in pattern.items():
            for step, v in _grid(grid):
                if step >= steps:
                    continue
                on_beat = step % 4 == 0
                if not on_beat and note in (HAT, SHAKER, RIDE, OPEN_HAT, PEDAL_HAT):
                    if fast and style != "house":
                        continue  # quarter-note cymbals at fast tempi
                    if slow:
                        v *= 0.55  # keep the off-beats well under the beat
                if fast and style == "metal" and note == KICK and not on_beat:
                    continue
                if step >= fill_from and note in (SNARE, STICK, CLAP, HAT, OPEN_HAT, RIDE, SHAKER):
                    continue
                vv = v + float(rng.integers(-5, 6)) * (st.humanize_ms > 0)
                # hats and shakers are quieter than kick/snare
                if note in (HAT, SHAKER, PEDAL_HAT, OPEN_HAT):
                    vv *= 0.85
                w.add("drums", note, b0 + step / 4, 0.25, _vel(vv, e), jitter=note not in (KICK,))
        if bar.crash and style not in ("jazz", "ballad", "folk", "bossa") and not (bar.section == "intro"):
            w.add("drums", CRASH, b0, 2.0, _vel(96, e), swing=False)
        elif bar.crash and style == "jazz":
            w.add("drums", CRASH, b0, 2.0, _vel(70, e), swing=False)
        if bar.fill:
            n = steps - fill_from
            toms = [TOM_HI2, TOM_HI, TOM_MID, TOM_LOW]
            kind = "toms" if (n >= 8 or rng.random() < 0.5) and style not in ("jazz", "bossa", "folk", "ballad") else "snare"
            for k in range(n):
                o = (fill_from + k) / 4
                if style in ("jazz", "ballad", "folk", "bossa") and k % 2 == 1:
                    continue  # eighth-note fills in quiet styles
                if kind == "toms":
                    note = toms[min(3, k * 4 // n)]
                else:
                    note = SNARE if style != "bossa" else STICK
                v = 70 + 40 * (k / max(1, n - 1))  # crescendo into the next bar
                w.add("drums", note, b0 + o, 0.25, _vel(v, e, 8 if k % 4 == 0 else 0), jitter=False)
            # keep the beat audible under the fill
            kick_steps = {step for step, _ in _grid(pattern.get(KICK, ""))}
            for k in range(fill_from // 4, bpb):
                if style != "jazz" and 4 * k not in kick_steps:
                    w.add("drums", KICK, b0 + k, 0.25, _vel(84, e), jitter=False)

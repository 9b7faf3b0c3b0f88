"""Text layer: frozen text encoders behind one interface, conditioning, caption augmentation.

* :func:`get_text_encoder` - ``"minilm"`` (default, all-MiniLM-L6-v2, 384-d), ``"t5:/dir"``,
  ``"flan-t5:/dir"``, ``"clap:/dir"`` or a bare local directory; loaded once per process.
* :class:`TextStates` - ``states [B, L, D]`` + ``mask [B, L]``; the empty prompt is an
  all-False row (the classifier-free-guidance null condition).
* :class:`TextConditioner` - encoder + learned projection + CFG dropout, for generators.
* :class:`CaptionAugmenter` - MusicGen's metadata merge, description and word dropout.
"""

from .augment import (
    DEFAULT_FIELDS,
    CaptionAugmentConfig,
    CaptionAugmenter,
    format_metadata_value,
    join_description,
    metadata_phrases,
    word_dropout,
)
from .cache import CacheInfo, EncodingCache
from .conditioner import TextConditioner, TextConditionerConfig
from .encoders import (
    ClapTextEncoder,
    HFTextEncoder,
    MiniLMEncoder,
    TextEncoder,
    clear_text_encoder_cache,
    get_text_encoder,
    parse_text_encoder_spec,
)
from .states import TextStates, null_condition

__all__ = [
    "CacheInfo",
    "CaptionAugmentConfig",
    "CaptionAugmenter",
    "ClapTextEncoder",
    "DEFAULT_FIELDS",
    "EncodingCache",
    "HFTextEncoder",
    "MiniLMEncoder",
    "TextConditioner",
    "TextConditionerConfig",
    "TextEncoder",
    "TextStates",
    "clear_text_encoder_cache",
    "format_metadata_value",
    "get_text_encoder",
    "join_description",
    "metadata_phrases",
    "null_condition",
    "parse_text_encoder_spec",
    "word_dropout",
]

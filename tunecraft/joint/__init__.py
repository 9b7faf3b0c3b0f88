"""tunecraft.joint: the music-text joint embedding (MuLan-like) and its RVQ tokenizer.

    from tunecraft.joint import JointEmbeddingModel
    model = JointEmbeddingModel.from_pretrained("joint-tiny")
    a = model.embed_audio(wav, sr)                 # [B, d], unit-norm, mean over 10 s windows
    t = model.embed_text(["calm piano ballad"])    # [B, d]
    tokens = model.text_tokens(["calm piano"])     # MuLan tokens [B, K] (fitted tokenizer ships)

The training task ``joint`` lives in :mod:`tunecraft.joint.task` (recipe ``joint-tiny``).
"""

from .model import (
    AudioTower,
    AudioTowerConfig,
    JointConfig,
    JointEmbeddingModel,
    TextProjection,
    TextTowerConfig,
    clip_loss,
)
from .tokenizer import MuLanTokenizer, MuLanTokenizerConfig

__all__ = [
    "AudioTower",
    "AudioTowerConfig",
    "JointConfig",
    "JointEmbeddingModel",
    "MuLanTokenizer",
    "MuLanTokenizerConfig",
    "TextProjection",
    "TextTowerConfig",
    "clip_loss",
]

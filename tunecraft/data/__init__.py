"""tunecraft.data"""

# --- manifests and datasets (tunecraft/data/manifest.py, tunecraft/data/dataset.py) ---
from .dataset import AudioDataset, AudioDatasetConfig, collate_audio, source_metas  # noqa: E402,F401
from .manifest import (  # noqa: E402,F401
    SIDECAR_FIELDS,
    AudioMeta,
    ManifestScan,
    SkippedFile,
    build_manifest,
    load_info,
    read_manifest,
    resolve_split,
    split_source,
    scan_audio_folder,
    write_manifest,
)

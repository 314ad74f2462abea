"""Few-shot audio evaluation on MetaAudio's sets: dataset readers, class splits, decoded clips cut into chunks,
the chunk-vote hook of the few-shot routes (:mod:`audio.fewshot.vote`), and ``python -m audio.fewshot``
(:mod:`audio.fewshot.evaluate`). Episodes, classifiers and routes are core's (:mod:`core.downstream.fewshot`)."""

from audio.data.chunks import LAST_CHUNK_MODES, ChunkIndex, chunk_positions, chunk_waveform, chunks_per_clip
from audio.fewshot.readers import (
    READERS,
    read_dataset,
    read_esc50,
    read_folder,
    read_fsdkaggle18,
    read_nsynth,
    read_voxceleb1,
)
from audio.fewshot.splits import (
    METAAUDIO_SPLIT_FILES,
    StringArrayUnpickler,
    UnsafePickleError,
    load_npy_strings,
    load_splits,
    metaaudio_splits,
)
from audio.fewshot.store import DecodedClips, decode_clips
from audio.fewshot.table import ClipTable
from audio.fewshot.vote import ChunkVote, chunk_vote, query_chunks, support_chunks

__all__ = [
    "LAST_CHUNK_MODES",
    "METAAUDIO_SPLIT_FILES",
    "READERS",
    "ChunkIndex",
    "ChunkVote",
    "ClipTable",
    "DecodedClips",
    "StringArrayUnpickler",
    "UnsafePickleError",
    "chunk_positions",
    "chunk_vote",
    "chunk_waveform",
    "chunks_per_clip",
    "decode_clips",
    "load_npy_strings",
    "load_splits",
    "metaaudio_splits",
    "query_chunks",
    "read_dataset",
    "read_esc50",
    "read_folder",
    "read_fsdkaggle18",
    "read_nsynth",
    "read_voxceleb1",
    "support_chunks",
]

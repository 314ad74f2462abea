"""Few-shot audio evaluation on MetaAudio's sets (SPEC §7): dataset readers, class splits, chunked clips, seeded
episodes with recording-disjoint queries, the chunk vote, and ``python -m audio.fewshot``
(:mod:`audio.fewshot.evaluate`)."""

from audio.fewshot.chunks import ChunkIndex, chunk_positions, chunk_waveform, chunks_per_clip
from audio.fewshot.episodes import AudioEpisodeSampler, ClipEpisodes, QueryChunks, query_chunks, support_chunks
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
from audio.fewshot.vote import chunk_vote

__all__ = [
    "METAAUDIO_SPLIT_FILES",
    "READERS",
    "AudioEpisodeSampler",
    "ChunkIndex",
    "ClipEpisodes",
    "ClipTable",
    "DecodedClips",
    "QueryChunks",
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

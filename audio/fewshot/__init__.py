"""Few-shot audio evaluation on MetaAudio's sets: the clips of an evaluation (:mod:`audio.fewshot.episode_clips`),
decoded once and cut into chunks (:mod:`audio.fewshot.store`), the chunk-vote hook of the few-shot routes
(:mod:`audio.fewshot.vote`), and ``python -m audio.fewshot`` (:mod:`audio.fewshot.evaluate`).

The datasets' readers and class splits are in :mod:`audio.data` (:mod:`audio.data.metaaudio`,
:mod:`audio.data.class_splits`); episodes, classifiers and routes are core's (:mod:`core.downstream.fewshot`)."""

from audio.data.chunks import LAST_CHUNK_MODES, ChunkIndex, chunk_positions, chunk_waveform, chunks_per_clip
from audio.fewshot.store import DecodedClips, decode_clips
from audio.fewshot.vote import ChunkVote, chunk_vote, query_chunks, support_chunks

__all__ = [
    "LAST_CHUNK_MODES",
    "ChunkIndex",
    "ChunkVote",
    "DecodedClips",
    "chunk_positions",
    "chunk_vote",
    "chunk_waveform",
    "chunks_per_clip",
    "decode_clips",
    "query_chunks",
    "support_chunks",
]

"""MetaAudio's evaluation sets read from fake trees in their real public layouts: classes, clip ids,
recordings, decoded lengths at 16 kHz."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from audio.data import (
    read_dataset,
    read_esc50,
    read_folder,
    read_fsdkaggle18,
    read_nsynth,
    read_voxceleb1,
)
from audio.fewshot import decode_clips
from audio.frontend import decode, z_normalise

SR = 16_000


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])


def test_esc50_layout_classes_and_lengths(tmp_path, write_wav):
    rows = [["1-100-A-0.wav", "1", "0", "dog", "True", "100", "A"],
            ["2-101-A-0.wav", "2", "0", "dog", "True", "101", "A"],
            ["1-200-A-1.wav", "1", "1", "rooster", "True", "200", "A"]]
    _csv(tmp_path / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"], rows)
    write_wav(tmp_path / "audio" / "1-100-A-0.wav", 5 * SR)
    write_wav(tmp_path / "audio" / "2-101-A-0.wav", 5 * 8000, rate=8000)  # resampled to 16 kHz on decode
    write_wav(tmp_path / "audio" / "1-200-A-1.wav", 5 * SR, seed=1)
    table = read_esc50(tmp_path)
    assert table.classes == ("dog", "dog", "rooster") and table.class_names == ("dog", "rooster")
    assert table.clip_ids == ("1-100-A-0", "2-101-A-0", "1-200-A-1") and table.videos is None
    clips = decode_clips(table)
    assert clips.index.lengths.tolist() == [5 * SR] * 3  # 5 s at 16 kHz, whatever the file's rate
    assert clips.index.counts.tolist() == [1, 1, 1] and clips.index.chunk_samples == 5 * SR
    first = clips.chunks(torch.tensor([0]))[0].numpy()
    reference = z_normalise(decode(table.paths[0]))  # stored as float16: an 11-bit mantissa
    np.testing.assert_allclose(first, reference, rtol=2**-10, atol=1e-4)
    assert abs(float(first.mean())) < 1e-4 and abs(float(first.std()) - 1) < 1e-3


def test_esc50_missing_layout_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"meta/esc50.csv.*audio/"):
        read_esc50(tmp_path)
    _csv(tmp_path / "meta" / "esc50.csv", ["filename", "category"], [["x.wav", "dog"]])
    (tmp_path / "audio").mkdir()
    with pytest.raises(FileNotFoundError, match="x.wav is listed"):
        read_esc50(tmp_path)


def test_nsynth_pools_three_parts_native_4s(tmp_path, write_wav):
    notes = {"nsynth-train": {"bass_synthetic_033-022-050": "bass_synthetic_033"},
             "nsynth-valid": {"bass_synthetic_033-030-100": "bass_synthetic_033"},
             "nsynth-test": {"flute_acoustic_002-067-025": "flute_acoustic_002"}}
    for part, entries in notes.items():
        (tmp_path / part).mkdir()
        meta = {note: {"note_str": note, "instrument_str": inst, "pitch": 22} for note, inst in entries.items()}
        (tmp_path / part / "examples.json").write_text(json.dumps(meta))
        for i, note in enumerate(entries):
            write_wav(tmp_path / part / "audio" / f"{note}.wav", 4 * SR, seed=i)
    table = read_nsynth(tmp_path)
    assert table.class_names == ("bass_synthetic_033", "flute_acoustic_002")
    assert sorted(table.clip_ids) == sorted(n for e in notes.values() for n in e)
    clips = decode_clips(table)
    assert table.chunk_seconds == 4.0 and clips.index.counts.tolist() == [1, 1, 1]
    assert clips.chunks(torch.arange(3)).shape == (3, 4 * SR)  # 4 s, no padding to 5 s
    (tmp_path / "nsynth-valid" / "examples.json").unlink()
    with pytest.raises(FileNotFoundError, match="nsynth-valid/examples.json"):
        read_nsynth(tmp_path)


def test_voxceleb1_speakers_videos_clip_ids_and_chunks(tmp_path, write_wav):
    layout = {("vox1_dev_wav", "id10001", "vidA", "00001"): 7 * SR,
              ("vox1_dev_wav", "id10001", "vidA", "00002"): 3 * SR,
              ("vox1_dev_wav", "id10001", "vidB", "00001"): 11 * SR,
              ("vox1_test_wav", "id10270", "vidC", "00001"): 5 * SR}
    for (part, spk, vid, n), samples in layout.items():
        write_wav(tmp_path / part / "wav" / spk / vid / f"{n}.wav", samples)
    table = read_voxceleb1(tmp_path)
    assert table.classes == ("id10001", "id10001", "id10001", "id10270")
    assert table.clip_ids == ("vidA_00001", "vidA_00002", "vidB_00001", "vidC_00001")
    assert table.videos == ("vidA", "vidA", "vidB", "vidC")
    assert table.groups().tolist() == [0, 0, 1, 2]
    clips = decode_clips(table)
    assert clips.index.counts.tolist() == [2, 1, 3, 1]  # ceil(7/5), ceil(3/5), ceil(11/5), 5/5
    assert read_voxceleb1(tmp_path / "vox1_test_wav").class_names == ("id10270",)  # a root holding wav/ directly
    with pytest.raises(FileNotFoundError, match=r"wav/<speaker"):
        read_voxceleb1(tmp_path / "vox1_dev_wav" / "wav" / "id10001")


def test_fsdkaggle18_pools_train_and_scored_test(tmp_path, write_wav):
    meta = tmp_path / "FSDKaggle2018.meta"
    _csv(meta / "train_post_competition.csv", ["fname", "label", "manually_verified", "freesound_id", "license"],
         [["00044347.wav", "Hi-hat", "0", "28739", "CC0"], ["001ca53d.wav", "Saxophone", "1", "358827", "CC-BY"]])
    _csv(meta / "test_post_competition_scoring_clips.csv", ["fname", "label", "usage", "freesound_id", "license"],
         [["00326aa9.wav", "Oboe", "Private", "355125", "CC-BY"]])
    write_wav(tmp_path / "FSDKaggle2018.audio_train" / "00044347.wav", int(0.3 * 44_100), rate=44_100)
    write_wav(tmp_path / "FSDKaggle2018.audio_train" / "001ca53d.wav", 11 * SR)
    write_wav(tmp_path / "FSDKaggle2018.audio_test" / "00326aa9.wav", 5 * SR)
    table = read_fsdkaggle18(tmp_path)
    assert table.classes == ("Hi-hat", "Saxophone", "Oboe")
    assert table.clip_ids == ("train/00044347", "train/001ca53d", "test/00326aa9")
    clips = decode_clips(table)
    assert clips.index.lengths.tolist() == [int(0.3 * SR), 11 * SR, 5 * SR]
    assert clips.index.counts.tolist() == [1, 3, 1]  # 0.3 s tiled to one 5-s chunk
    (meta / "test_post_competition_scoring_clips.csv").unlink()
    with pytest.raises(FileNotFoundError, match="test_post_competition_scoring_clips.csv"):
        read_fsdkaggle18(tmp_path)


def test_folder_tree_and_silent_clip_skipped(tmp_path, write_wav):
    write_wav(tmp_path / "cat" / "a.wav", SR)
    write_wav(tmp_path / "dog" / "sub" / "b.wav", 2 * SR, seed=2)
    soundfile.write(str(tmp_path / "dog" / "silent.flac"), np.zeros(SR, dtype=np.float32), SR)
    (tmp_path / "dog" / "notes.txt").write_text("not audio")
    table = read_dataset("folder", tmp_path)
    assert table.classes == ("cat", "dog", "dog") and table.clip_ids == ("a", "silent", "sub/b")
    with pytest.warns(UserWarning, match="skipping audio file"):
        clips = decode_clips(table)
    assert clips.table.clip_ids == ("a", "sub/b") and list(clips.skipped) == [table.paths[1]]
    assert read_folder(tmp_path, chunk_seconds=1.0).chunk_seconds == 1.0


def test_decoded_store_is_reused_and_rebuilt(tmp_path, write_wav, monkeypatch):
    write_wav(tmp_path / "data" / "c" / "a.wav", 7 * SR)
    table = read_folder(tmp_path / "data")
    first = decode_clips(table, cache_dir=tmp_path / "cache")
    assert first.index.counts.tolist() == [2] and first.clips.folder.parent == tmp_path / "cache"

    import audio.data.store as store_module

    decoded = []
    real_decode = store_module.decode
    monkeypatch.setattr(store_module, "decode", lambda *a, **k: decoded.append(a) or real_decode(*a, **k))
    second = decode_clips(table, cache_dir=tmp_path / "cache")
    assert decoded == []  # reused
    torch.testing.assert_close(second.chunks(torch.arange(2)), first.chunks(torch.arange(2)))
    write_wav(tmp_path / "data" / "c" / "a.wav", 6 * SR, seed=3)  # changed source: the store is rebuilt
    third = decode_clips(table, cache_dir=tmp_path / "cache")
    assert len(decoded) == 1 and third.index.counts.tolist() == [2] and third.clips.folder != first.clips.folder


def test_select_lists_absent_classes(tmp_path, write_wav):
    write_wav(tmp_path / "cat" / "a.wav", SR)
    table = read_folder(tmp_path)
    assert table.select(["cat"]).classes == ("cat",)
    with pytest.raises(ValueError, match=r"2 of the 3 classes of test.*'unicorn', 'yeti'"):
        table.select(["cat", "yeti", "unicorn"], split_name="test")

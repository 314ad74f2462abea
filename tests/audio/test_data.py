"""Audio data: synthetic tones, fake FSD50K in the official layout, the decoded-clip store, folders, bad files."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile

import audio.data.store as store_module
from audio.data.folder import AudioFolder
from audio.data.fsd50k import FSD50K
from audio.data.pretrain_clips import build_clip_source
from audio.data.synthetic import TIMBRES, SyntheticTones
from audio.frontend.waveform import decode, z_normalise
from tests.audio.fake_audio import FSD_RATE, make_fsd50k, tone


def test_synthetic_tones_are_seeded_and_order_free() -> None:
    a = SyntheticTones(size=32, seconds=0.5, seed=3)
    b = SyntheticTones(size=32, seconds=0.5, seed=3)
    assert np.array_equal(a[7], b[7]) and np.array_equal(a[7], a[7]) and not np.array_equal(a[7], a[8])
    assert a[0].shape == (8000,) and a[0].dtype == np.float32
    assert abs(a[5].mean()) < 1e-5 and abs(a[5].std() - 1) < 1e-4  # z-normalised per clip
    assert not np.array_equal(a[3], SyntheticTones(size=32, seconds=0.5, seed=4)[3])
    assert set(a.targets("timbre")) <= set(range(len(TIMBRES))) and a.targets("onset").max() <= 0.25
    with pytest.raises(ValueError, match="task"):
        a.targets("loudness_bins")


def test_synthetic_factors_are_audible() -> None:
    """The labelled pitch is the strongest partial of a flute note, and nothing sounds before the onset."""
    tones = SyntheticTones(size=64, seconds=1.0, seed=0)
    flute = [i for i in range(64) if tones.factors["timbre"][i] == 0]
    for i in flute[:3]:
        clip = tones[i]
        f0 = 440 * 2 ** ((tones.factors["pitch"][i] - 69) / 12)
        start = int(tones.factors["onset"][i] * 16_000)
        spectrum = np.abs(np.fft.rfft(clip[start:start + 8000]))
        assert abs(spectrum.argmax() * 2 - f0) < 6  # 2-Hz bins of half a second
        before = clip[:start].std() if start > 100 else 0.0
        assert before < 0.5 * clip[start:].std()


def test_fake_fsd50k_loads_clips_labels_splits_and_rate(tmp_path: Path) -> None:
    root = make_fsd50k(tmp_path / "fsd")
    train = FSD50K(root, "train", cache_dir=tmp_path / "cache", progress=False)
    assert train.fnames == ["1001", "1002", "1004"] and train.sample_rate == 16_000
    assert train.labels[1] == ["Piano", "Keyboard_(musical)", "Music"]  # quoted, comma-separated labels
    assert [len(train[i]) for i in range(3)] == [11_200, 20_800, 14_400]  # 0.7, 1.3, 0.9 s at 16 kHz
    clip = train[0]
    assert clip.dtype == np.float32 and abs(clip.mean()) < 1e-2 and abs(clip.std() - 1) < 1e-2
    peak = np.abs(np.fft.rfft(clip)).argmax() * 16_000 / len(clip)
    assert abs(peak - 220) < 3  # the 44.1-kHz tone survived resampling
    val = FSD50K(root, "val", cache_dir=tmp_path / "cache", progress=False)
    assert val.fnames == ["1003"] and val.labels == [["Speech", "Human_voice"]]
    assert FSD50K(root, "dev", cache_dir=tmp_path / "cache", progress=False).fnames == ["1001", "1002", "1003", "1004"]
    evaluation = FSD50K(root, "eval", cache_dir=tmp_path / "cache", progress=False)
    assert evaluation.fnames == ["2001"] and evaluation.vocabulary == ["Bark", "Dog", "Rain"]


def test_missing_layout_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="FSD50K.dev_audio"):
        FSD50K(tmp_path / "nowhere")
    root = make_fsd50k(tmp_path / "fsd")
    (root / "FSD50K.ground_truth" / "dev.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"dev\.csv"):
        FSD50K(root, cache_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="data-root"):
        build_clip_source("fsd50k")
    with pytest.raises(FileNotFoundError, match="no audio files"):
        (tmp_path / "empty").mkdir()
        AudioFolder(tmp_path / "empty")


def test_store_is_reused_and_rebuilt_when_a_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_fsd50k(tmp_path / "fsd")
    decoded: list[str] = []
    real_decode = store_module.decode

    def counting_decode(path, rate):
        decoded.append(Path(path).name)
        return real_decode(path, rate)

    monkeypatch.setattr(store_module, "decode", counting_decode)
    first = FSD50K(root, "train", cache_dir=tmp_path / "cache", progress=False)
    assert len(decoded) == 3
    again = FSD50K(root, "train", cache_dir=tmp_path / "cache", progress=False)
    assert len(decoded) == 3 and again.store.folder == first.store.folder  # reused, nothing decoded
    soundfile.write(root / "FSD50K.dev_audio" / "1004.wav", tone(0.5, 880.0), FSD_RATE, subtype="PCM_16")
    changed = FSD50K(root, "train", cache_dir=tmp_path / "cache", progress=False)
    assert len(decoded) == 6 and changed.store.folder != first.store.folder and len(changed[2]) == 8000
    assert not first.store.folder.exists()  # the stale cache is removed
    caches = [p for p in (tmp_path / "cache").iterdir() if p.name.startswith("fsd50k-train")]
    assert caches == [changed.store.folder]


def test_interrupted_store_build_leaves_no_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_fsd50k(tmp_path / "fsd")
    real_decode = store_module.decode
    calls = []

    def dying_decode(path, rate):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the build is killed half-way
        return real_decode(path, rate)

    monkeypatch.setattr(store_module, "decode", dying_decode)
    with pytest.raises(KeyboardInterrupt):
        FSD50K(root, "train", cache_dir=tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []
    monkeypatch.setattr(store_module, "decode", real_decode)
    assert len(FSD50K(root, "train", cache_dir=tmp_path / "cache", progress=False)) == 3


def test_corrupt_empty_and_silent_files_are_skipped_and_counted(tmp_path: Path) -> None:
    root = make_fsd50k(tmp_path / "fsd")
    audio = root / "FSD50K.dev_audio"
    (audio / "1001.wav").write_bytes(b"RIFF....WAVEnot really audio")  # corrupt
    soundfile.write(audio / "1002.wav", np.zeros(0, np.float32), FSD_RATE)  # empty
    soundfile.write(audio / "1003.wav", np.zeros(4410, np.float32), FSD_RATE)  # digital silence
    with pytest.warns(UserWarning, match="skipping audio file"):
        dev = FSD50K(root, "dev", cache_dir=tmp_path / "cache", progress=False)
    assert dev.fnames == ["1004"]
    assert sorted(Path(f).name for f, _ in dev.skipped) == ["1001.wav", "1002.wav", "1003.wav"]
    assert any("silent" in reason for _, reason in dev.skipped)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a reused cache does not warn again, but keeps the count
        assert len(FSD50K(root, "dev", cache_dir=tmp_path / "cache", progress=False).skipped) == 3


def test_audio_folder_is_recursive_and_reads_soundfile_formats(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    soundfile.write(tmp_path / "a" / "x.wav", tone(0.3, 300, 22_050), 22_050)
    soundfile.write(tmp_path / "a" / "b" / "y.flac", tone(0.2, 300, 16_000), 16_000)
    soundfile.write(tmp_path / "a" / "b" / "z.ogg", tone(0.2, 300, 48_000), 48_000)
    (tmp_path / "a" / "notes.txt").write_text("not audio")
    folder = AudioFolder(tmp_path / "a", cache_dir=tmp_path / "cache", progress=False)
    assert folder.files == ["b/y.flac", "b/z.ogg", "x.wav"]
    assert [len(folder[i]) for i in range(3)] == [3200, 3200, 4800]
    index = json.loads((folder.store.folder / "index.json").read_text())
    assert index["sample_rate"] == 16_000 and index["skipped"] == []


def test_store_reads_pieces_without_a_memory_map(tmp_path: Path) -> None:
    """Reads are pieces of one clip, equal to the decoded clip, in float16 storage; no mapping stays open."""
    from audio.data.store import ClipStore

    root = make_fsd50k(tmp_path / "fsd")
    dev = FSD50K(root, "dev", cache_dir=tmp_path / "cache", progress=False)
    store: ClipStore = dev.store
    assert store.dtype == np.float16 and store.nbytes == int(store.lengths.sum()) * 2
    whole = store[1]
    np.testing.assert_array_equal(store.read(1, 100, 250), whole[100:250])
    assert whole.dtype == np.float32 and len(whole) == store.lengths[1]
    reference = z_normalise(decode(root / "FSD50K.dev_audio" / f"{dev.fnames[1]}.wav", 16_000))
    np.testing.assert_allclose(whole, reference, atol=2e-3 * np.abs(reference).max())  # float16 storage
    with pytest.raises(IndexError):
        store.read(1, 0, int(store.lengths[1]) + 1)
    assert store.files[0].startswith("FSD50K.dev_audio/")  # POSIX keys, as the reader builds them


def test_default_store_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from audio.data.store import CACHE_ENV, default_cache_dir

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "elsewhere"))
    assert default_cache_dir() == tmp_path / "elsewhere" / "audio"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir().name == "audio" and "amortised-invariance" in str(default_cache_dir())


def test_fsd50k_csv_with_a_byte_order_mark(tmp_path: Path) -> None:
    root = make_fsd50k(tmp_path / "fsd")
    csv_path = root / "FSD50K.ground_truth" / "dev.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())  # a spreadsheet's UTF-8 BOM
    assert len(FSD50K(root, "train", cache_dir=tmp_path / "cache", progress=False)) == 3

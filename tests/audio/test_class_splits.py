"""Class splits: the shipped MetaAudio ones, JSON, MetaAudio-style .npy read by the allow-list unpickler."""

import json
import os
import pickle
import posix
from fractions import Fraction

import numpy as np
import pytest

from audio.data import UnsafePickleError, load_npy_strings, load_splits, metaaudio_splits


def test_shipped_splits_match_metaaudio_counts():
    splits = metaaudio_splits()
    counts = {name: tuple(len(splits[name][s]) for s in ("train", "val", "test")) for name in splits}
    assert counts["ESC_paper_splits.npy"] == (35, 5, 10)  # MetaAudio's 7/1/2 class split
    assert counts["NSYNTH_norm_split.npy"] == (705, 101, 200)
    assert counts["Kaggle18_norm_split.npy"] == (29, 5, 7)
    assert counts["VoxCeleb_norm_split.npy"] == (876, 126, 249)
    assert counts["BirdClef_norm_split_PRUNED.npy"] == (501, 72, 142)
    esc = load_splits("esc50")
    assert set(esc["test"]) == {"airplane", "church_bells", "cow", "crow", "dog", "engine", "glass_breaking",
                                "sneezing", "thunderstorm", "vacuum_cleaner"}
    assert load_splits("Kaggle18_norm_split.npy") == load_splits("fsdkaggle18")


def test_shipped_splits_record_their_source_and_are_checked(monkeypatch):
    from audio.data import class_splits as module

    source = module.metaaudio_source()
    assert source["repository"].endswith("MetaAudio-A-Few-Shot-Audio-Classification-Benchmark")
    assert source["commit"] and "licence" in source
    assert source["files"]["ESC_paper_splits.npy"] == "Dataset Splits/Baseline/ESC_paper_splits.npy"
    shipped = module._shipped()
    assert set(shipped["sha256"]) == set(shipped["splits"])
    damaged = {**shipped, "splits": {**shipped["splits"], "ESC_paper_splits.npy": {
        **shipped["splits"]["ESC_paper_splits.npy"], "test": ["dog"]}}}
    monkeypatch.setattr(module, "_shipped", lambda: damaged)
    with pytest.raises(ValueError, match="does not match its recorded SHA-256"):
        module.metaaudio_splits()


def test_json_split_file(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"train": ["a", "b"], "val": ["c"], "test": ["d", "e"]}))
    assert load_splits(path) == {"train": ["a", "b"], "val": ["c"], "test": ["d", "e"]}
    path.write_text(json.dumps({"train": ["a"], "test": ["d"]}))
    with pytest.raises(ValueError, match=r"no \['val'\]"):
        load_splits(path)


def test_metaaudio_style_npy_loads(tmp_path):
    # As MetaAudio's files: an object array (3,) whose items are a <U array, an object array and a list.
    split = np.empty(3, dtype=object)
    split[0] = np.array(["dog", "rooster", "pig"])
    split[1] = np.array(["cow", np.str_("crow")], dtype=object)
    split[2] = ["airplane", "engine"]
    path = tmp_path / "ESC_like.npy"
    np.save(path, split, allow_pickle=True)
    assert load_splits(path) == {"train": ["dog", "rooster", "pig"], "val": ["cow", "crow"],
                                 "test": ["airplane", "engine"]}
    plain = tmp_path / "plain.npy"
    np.save(plain, np.array(["x", "y"]))  # no objects: read with allow_pickle=False
    assert load_npy_strings(plain).tolist() == ["x", "y"]


def _npy_with_pickle(path, payload: bytes) -> None:
    """A .npy file with an object-dtype header followed by ``payload`` as its pickle stream."""
    np.save(path, np.array([None], dtype=object), allow_pickle=True)
    raw = path.read_bytes()
    header_end = raw.index(b"\n") + 1
    path.write_bytes(raw[:header_end] + payload)


@pytest.mark.parametrize("module", [b"posix", b"os", b"builtins"])
def test_npy_refuses_code_execution(tmp_path, monkeypatch, module):
    ran = []
    monkeypatch.setattr(os, "system", lambda cmd: ran.append(cmd))  # even a broken loader could not run a shell
    monkeypatch.setattr(posix, "system", lambda cmd: ran.append(cmd))
    name = b"eval" if module == b"builtins" else b"system"
    # Hand-written pickle: GLOBAL module.name, MARK, the argument, TUPLE, REDUCE, STOP = module.name("echo ...").
    payload = b"c" + module + b"\n" + name + b"\n(Vecho should-never-run\ntR."
    path = tmp_path / "evil.npy"
    _npy_with_pickle(path, payload)
    with pytest.raises(UnsafePickleError, match=f"refusing to load {module.decode()}.{name.decode()}"):
        load_npy_strings(path)
    with pytest.raises(UnsafePickleError):
        load_splits(path)
    assert ran == []
    if module != b"builtins":  # the payload is real: a plain unpickler calls (the patched, harmless) system
        pickle.loads(payload)
        assert ran == ["echo should-never-run"]


def test_npy_refuses_other_objects(tmp_path):
    other = np.empty(3, dtype=object)
    other[:] = [["a"], ["b"], [Fraction(1, 3)]]
    path = tmp_path / "fraction.npy"
    np.save(path, other, allow_pickle=True)
    with pytest.raises(UnsafePickleError, match="fractions.Fraction"):
        load_npy_strings(path)
    numbers = np.empty(3, dtype=object)
    numbers[:] = [np.array([1, 2]), ["b"], ["c"]]  # allowed globals, but not strings
    np.save(path, numbers, allow_pickle=True)
    with pytest.raises(UnsafePickleError, match=r"\[0\]: expected strings, found a int64 array"):
        load_npy_strings(path)

"""Every public audio dataset's reader checks its layout first and names the part that is missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from audio.data import read_dataset
from audio.data.fsd50k import FSD50K

#: Each dataset's minimal layout (a part ending in "/" is a folder, any other an empty file) and how it is read.
_LAYOUTS = {
    "esc50": ["meta/esc50.csv", "audio/"],
    "nsynth": [p for part in ("nsynth-train", "nsynth-valid", "nsynth-test")
               for p in (f"{part}/examples.json", f"{part}/audio/")],
    "voxceleb1": ["wav/"],
    "fsdkaggle18": ["FSDKaggle2018.meta/train_post_competition.csv",
                    "FSDKaggle2018.meta/test_post_competition_scoring_clips.csv",
                    "FSDKaggle2018.audio_train/", "FSDKaggle2018.audio_test/"],
    "fsd50k:train": ["FSD50K.ground_truth/dev.csv", "FSD50K.dev_audio/"],
    "fsd50k:eval": ["FSD50K.ground_truth/eval.csv", "FSD50K.eval_audio/"],
}


def _read(name: str, root: Path) -> object:
    if name.startswith("fsd50k:"):
        return FSD50K(root, split=name.split(":")[1], cache_dir=root / "cache", progress=False)
    return read_dataset(name, root)


@pytest.mark.parametrize(("name", "part"), [(name, part) for name, parts in _LAYOUTS.items() for part in parts])
def test_a_reader_names_the_missing_part_of_its_layout(tmp_path, name, part):
    for p in _LAYOUTS[name]:
        path = tmp_path / p
        if p.endswith("/"):
            path.mkdir(parents=True, exist_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
    removed = tmp_path / part
    shutil.rmtree(removed) if part.endswith("/") else removed.unlink()
    with pytest.raises(FileNotFoundError) as info:
        _read(name, tmp_path)
    dataset, _, listed = str(info.value).partition(": missing ")
    assert dataset == name.split(":")[0]
    assert listed.split(". Expected layout")[0].split(", ") == [f"{removed}/" if part.endswith("/") else str(removed)]

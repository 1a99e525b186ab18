"""data.yaml (ultralytics layout) and YOLO folders: splits as folders, lists of folders and .txt lists, names as a
list or a map, labels found by replacing ``images`` with ``labels``, and errors that name the file and the key."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from yolox_fast.data.dataset_spec import read_data_yaml, yolo_folder_spec


def write_image(path: Path, size=(40, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), 114, dtype=np.uint8))


def write_labels(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture
def ultralytics_dataset(tmp_path) -> Path:
    """``ds/images/{train,extra,val}/*.png`` with labels in ``ds/labels/...``; the yaml lives elsewhere."""
    ds = tmp_path / "ds"
    for split, stems in (("train", ["a", "b"]), ("extra", ["c"]), ("val", ["d"])):
        for k, stem in enumerate(stems):
            write_image(ds / "images" / split / f"{stem}.png")
            write_labels(ds / "labels" / split / f"{stem}.txt", [f"{k % 2} 0.5 0.5 0.25 0.5"])
    return ds


def test_names_map_and_a_list_of_folders(ultralytics_dataset, tmp_path):
    (tmp_path / "cfg").mkdir()
    yaml_path = tmp_path / "cfg" / "data.yaml"
    yaml_path.write_text("path: ../ds\ntrain: [images/train, images/extra]\nval: images/val\n"
                         "names:\n  0: cat\n  1: dog\n")  # path relative to the yaml's folder
    spec = read_data_yaml(yaml_path)
    assert spec.root == ultralytics_dataset.resolve() and spec.names == ["cat", "dog"]
    assert not spec.has_split("test")
    train = spec.dataset("train")
    assert len(train) == 3 and train.class_names == ["cat", "dog"]
    assert [Path(train.image_path(i)).stem for i in range(3)] == ["c", "a", "b"]  # sorted paths: extra/ < train/
    # boxes from labels/<split>/<stem>.txt, in pixels of the 60 x 40 image
    np.testing.assert_allclose(train.load_targets(1), [[22.5, 10, 37.5, 30, 0]])
    val = spec.dataset("val")
    assert len(val) == 1 and val.class_names == ["cat", "dog"]


def test_txt_list_of_images_and_names_list(ultralytics_dataset):
    (ultralytics_dataset / "train.txt").write_text("./images/train/b.png\nimages/extra/c.png\n\n")
    yaml_path = ultralytics_dataset / "data.yaml"
    yaml_path.write_text("train: train.txt\nval: images/val\nnames: [cat, dog]\n")  # no path: the yaml's folder
    train = read_data_yaml(yaml_path).dataset("train")
    assert [Path(train.image_path(i)).name for i in range(len(train))] == ["c.png", "b.png"]
    assert train.report["label_file_missing"] == 0 and train.num_targets(0) == 1
    (ultralytics_dataset / "elsewhere").mkdir()
    write_image(ultralytics_dataset / "elsewhere" / "e.png")
    (ultralytics_dataset / "lost.txt").write_text("elsewhere/e.png\n")
    yaml_path.write_text("train: lost.txt\nnames: [cat, dog]\n")
    with pytest.raises(ValueError, match="no label files found .* looked in .*elsewhere .*replaced by labels/"):
        read_data_yaml(yaml_path).dataset("train")


@pytest.mark.parametrize(("text", "problem"), [
    ("train: images/train\n", "no 'names'"),
    ("train: images/train\nnames: {0: cat, 2: dog}\n", "must map every index 0..1 once"),
    ("train: images/train\nnames: [cat, dog]\nnc: 3\n", "nc is 3 but 'names' has 2"),
    ("names: [cat]\n", "neither 'train' nor 'val'"),
    ("- just\n- a list\n", "expected a mapping"),
    ("train: [images/train\n", "not a valid YAML file"),
])
def test_bad_yaml_is_named(ultralytics_dataset, text, problem):
    yaml_path = ultralytics_dataset / "data.yaml"
    yaml_path.write_text(text)
    with pytest.raises(ValueError, match=problem) as info:
        read_data_yaml(yaml_path)
    assert str(yaml_path) in str(info.value)


def test_missing_sources_are_named(ultralytics_dataset):
    yaml_path = ultralytics_dataset / "data.yaml"
    yaml_path.write_text("train: images/nowhere\nval: images/val\nnames: [cat, dog]\n")
    spec = read_data_yaml(yaml_path)
    with pytest.raises(FileNotFoundError, match="train: .*images/nowhere not found"):
        spec.image_files("train")
    with pytest.raises(ValueError, match="no 'test' split"):
        spec.image_files("test")
    (ultralytics_dataset / "list.txt").write_text("images/train/zzz.png\n")
    yaml_path.write_text("train: list.txt\nnames: [cat, dog]\n")
    with pytest.raises(FileNotFoundError, match=r"list.txt:1: image not found"):
        read_data_yaml(yaml_path).image_files("train")
    yaml_path.write_text("path: /no/such/root\ntrain: images/train\nnames: [cat]\n")
    with pytest.raises(FileNotFoundError, match="dataset root"):
        read_data_yaml(yaml_path)


def test_yolo_folder_split_and_flat_layouts(ultralytics_dataset, tmp_path):
    spec = yolo_folder_spec(ultralytics_dataset)
    assert spec.has_split("train") and spec.has_split("val") and spec.names is None
    flat = tmp_path / "flat"
    write_image(flat / "images" / "x.png")
    write_labels(flat / "labels" / "x.txt", ["0 0.5 0.5 0.5 0.5"])
    spec = yolo_folder_spec(flat)
    assert spec.has_split("train") and not spec.has_split("val")
    assert spec.dataset("train", class_names=["thing"]).num_targets(0) == 1
    with pytest.raises(FileNotFoundError, match="no training images; expected one of images/train, train/images, "
                                                "images"):
        yolo_folder_spec(ultralytics_dataset / "labels")  # label files only

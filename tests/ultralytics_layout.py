"""Test helper: a COCO subset written as a dataset in the ultralytics layout (data.yaml, images/<split>,
labels/<split>/*.txt), and the same labels as a COCO json, so that both routes can be compared."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def coco_subset_as_ultralytics(image_dir: Path, ann_file: Path, root: Path, num_images: int,
                               split: str = "val2017") -> tuple[Path, Path, Path]:
    """The first ``num_images`` images of ``ann_file``, written twice under ``root``:

    - ``root/data.yaml`` (``names`` as an ``{index: name}`` map, ``train`` and ``val`` both ``images/<split>``),
      ``root/images/<split>/*.jpg`` and ``root/labels/<split>/*.txt`` (``class cx cy w h``, fractions);
    - ``root/labels.json``: the same boxes as a COCO json (crowd boxes left out of both: YOLO has none).

    Class ``k`` is the ``k``-th category id in ascending order (the evaluator's rule). Returns
    ``(data.yaml, labels.json, images folder)``.
    """
    data = json.loads(Path(ann_file).read_text())
    images = data["images"][:num_images]
    ids = {img["id"] for img in images}
    annotations = [a for a in data["annotations"] if a["image_id"] in ids and not a.get("iscrowd", 0)]
    cat_ids = sorted(c["id"] for c in data["categories"])
    names = {c["id"]: c["name"] for c in data["categories"]}
    class_of = {c: k for k, c in enumerate(cat_ids)}
    image_out, label_out = root / "images" / split, root / "labels" / split
    image_out.mkdir(parents=True)
    label_out.mkdir(parents=True)
    for img in images:
        shutil.copy(Path(image_dir) / img["file_name"], image_out / img["file_name"])
        w, h = img["width"], img["height"]
        lines = [f"{class_of[a['category_id']]} {(a['bbox'][0] + a['bbox'][2] / 2) / w!r} "
                 f"{(a['bbox'][1] + a['bbox'][3] / 2) / h!r} {a['bbox'][2] / w!r} {a['bbox'][3] / h!r}"
                 for a in annotations if a["image_id"] == img["id"]]
        (label_out / Path(img["file_name"]).with_suffix(".txt").name).write_text("\n".join(lines) + "\n")
    names_map = "\n".join(f"  {k}: {names[c]}" for k, c in enumerate(cat_ids))
    yaml_path = root / "data.yaml"
    yaml_path.write_text(f"path: {root}\ntrain: images/{split}\nval: images/{split}\nnames:\n{names_map}\n")
    labels = root / "labels.json"
    labels.write_text(json.dumps({**data, "images": images, "annotations": annotations}))
    return yaml_path, labels, image_out

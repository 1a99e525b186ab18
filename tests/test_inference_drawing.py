"""Drawing detections (yolox_fast.inference.drawing)."""

from __future__ import annotations

import numpy as np

from yolox_fast import Detector
from yolox_fast.inference.drawing import (
    class_color,
    draw_detections,
    draw_label,
    label_scale,
    label_size,
    label_text,
    place_labels,
)


def test_the_most_confident_label_is_drawn_on_top():
    """Two boxes with the same corner (a dog also scored as a cat): the dog's label must stay readable,
    whatever order the detections come in."""
    for order in ([0, 1], [1, 0]):
        img = np.zeros((200, 200, 3), np.uint8)
        xyxy = np.array([[50, 60, 150, 180], [50, 60, 150, 180]], np.float32)[order]
        scores = np.array([0.86, 0.26], np.float32)[order]
        class_ids = np.array([16, 15])[order]
        draw_detections(img, xyxy, scores, class_ids, [str(i) for i in range(80)])
        pixel = img[60 - 3, 50 + 1].astype(int)  # inside the filled label background, just above the box
        dog, cat = (np.abs(pixel - np.array(class_color(c))).sum() for c in (16, 15))
        assert dog < cat, (order, pixel.tolist())  # anti-aliased text may shade it a little


def _labels(result, img_shape):
    """Each detection's label text and the rectangle draw_detections places it in."""
    scale = label_scale(img_shape)
    texts = [label_text(n, s) for n, s in zip(result.names, result.scores.tolist(), strict=True)]
    return texts, place_labels(result.xyxy, [label_size(t, scale)[:2] for t in texts], result.scores, img_shape[:2])


def test_no_label_covers_another_on_person_jpg(nano_weights, shared_data):
    """person.jpg at 320, conf 0.1: the horse (0.71) and a sheep (0.29) on the same animal, the dog (0.85)
    and another sheep (0.14) on the dog share their top-left corners. Every label keeps its own spot,
    and each is drawn whole: its pixels are those of the label drawn by itself."""
    result = Detector(nano_weights, img_size=320, conf=0.1, device="cpu")(str(shared_data / "images" / "person.jpg"))
    assert {"horse", "sheep", "dog", "person"} <= set(result.names) and len(result) >= 5
    shape = result.image.shape
    texts, rects = _labels(result, shape)
    for i, a in enumerate(rects):
        assert 0 <= a[0] and 0 <= a[1] and a[2] <= shape[1] and a[3] <= shape[0]
        for b in rects[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    drawn = result.plot()
    boxes_only = result.plot(labels=False)
    for text, rect, cid in zip(texts, rects, result.class_ids.tolist(), strict=True):
        alone = boxes_only.copy()
        draw_label(alone, rect, text, class_color(cid), label_scale(shape))
        x1, y1, x2, y2 = rect
        np.testing.assert_array_equal(drawn[y1:y2, x1:x2], alone[y1:y2, x1:x2], err_msg=text)
    # each animal's more confident label sits just above its box, where the official demo puts it
    for name in ("horse", "dog"):
        k = result.names.index(name)
        assert rects[k][3] == int(round(result.xyxy[k][1])), name


def test_drawing_options():
    img = np.zeros((200, 200, 3), np.uint8)
    xyxy, scores, ids = np.array([[50, 60, 150, 180]], np.float32), np.array([0.86], np.float32), np.array([16])
    names = [str(i) for i in range(80)]
    boxes_only = draw_detections(img.copy(), xyxy, scores, ids, names, labels=False, line_width=1)
    assert (boxes_only.any(2)).sum() == 2 * (100 + 120)  # a one-pixel rectangle outline, nothing else
    thick = draw_detections(img.copy(), xyxy, scores, ids, names, labels=False, line_width=5)
    assert thick.any(2).sum() > 4 * boxes_only.any(2).sum()
    with_conf = draw_detections(img.copy(), xyxy, scores, ids, names)
    without = draw_detections(img.copy(), xyxy, scores, ids, names, conf=False)
    assert without.any(2).sum() < with_conf.any(2).sum()
    assert label_text("dog", 0.861) == "dog 0.86" and label_text("dog", 0.861, conf=False) == "dog"

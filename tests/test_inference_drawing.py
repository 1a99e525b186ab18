"""Drawing detections (yolox_fast.inference.drawing)."""

from __future__ import annotations

import numpy as np

from yolox_fast.inference.drawing import class_color, draw_detections


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

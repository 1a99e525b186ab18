"""The training loop: exact resume, phases, multiscale, evaluation, checkpoints and records (tiny CPU runs)."""

import csv
import random

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from yolox_fast.engine.train_state import read_train_state
from yolox_fast.engine.config import TrainConfig
from yolox_fast.engine.ema import unwrap
from yolox_fast.engine.trainer import Trainer, resize_batch

SIZE = 64


@pytest.fixture(autouse=True)
def one_thread():
    """These tiny models gain nothing from a second thread; on a shared 2-core machine a second OpenMP
    thread waiting on a busy core made these tests 5-10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class TinyBoxes(Dataset):
    """Stand-in for TrainAugmentDataset: coloured boxes on grey, positions drawn from the global RNGs.

    Items are ``(image [3, 64, 64] float32 BGR 0-255, labels [10, 5] (cls, cx, cy, w, h) zero-padded, id)``.
    Using Python's, NumPy's and torch's generators makes an exact resume depend on restoring all three.
    """

    def __init__(self, n=8, max_labels=10):
        self.n, self.max_labels = n, max_labels
        self.mosaic_closed_at_epoch, self.epoch = None, None

    def __len__(self):
        return self.n

    def set_epoch(self, epoch):
        self.epoch = epoch

    def close_mosaic(self):
        if self.mosaic_closed_at_epoch is None:
            self.mosaic_closed_at_epoch = self.epoch

    def __getitem__(self, i):
        img = torch.full((3, SIZE, SIZE), 114.0)
        labels = torch.zeros(self.max_labels, 5)
        for k in range(2):
            w, h = random.randint(10, 24), int(np.random.randint(10, 24))
            x, y = torch.randint(0, SIZE - 24, (2,)).tolist()
            cls = (i + k) % 2
            img[cls * 2, y : y + h, x : x + w] = 255.0
            labels[k] = torch.tensor([cls, x + w / 2, y + h / 2, w, h])
        return img, labels, i


def tiny_config(tmp_path, **kw):
    values = dict(
        model="yolox-nano",
        img_size=SIZE,
        epochs=2,
        batch_size=4,
        warmup_epochs=1,
        no_aug_epochs=0,
        multiscale=True,
        random_size=(1, 3),
        multiscale_interval=1,
        workers=0,
        device="cpu",
        output_dir=str(tmp_path),
        progress=False,
        tensorboard=False,
        log_interval=1,
        eval_interval=1,
        lr_per_image=0.01,
    )
    values.update(kw)
    return TrainConfig(**values).resolved()


def weight_checksum_ap(model):
    """A fake evaluator: a deterministic 'AP' from the weights, so best.pt logic and eval calls are testable."""
    assert not model.training
    total = sum(float(p.double().abs().sum()) for p in model.parameters())
    return {"AP": (total * 1000) % 1.0, "AP50": 0.5, "AP75": 0.25, "table": "per-class table"}


def run(cfg, stop_after=None, resume_from=None, evaluate=weight_checksum_ap):
    trainer = Trainer(cfg, TinyBoxes(), ["red", "blue"], evaluate=evaluate, resume_from=resume_from)
    try:
        return trainer, trainer.fit(stop_after_epoch=stop_after)
    finally:
        trainer.close()


def assert_same_state(a: dict, b: dict, where=""):
    assert a.keys() == b.keys(), where
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), f"{where}{k}"
        elif isinstance(a[k], dict):
            assert_same_state(a[k], b[k], f"{where}{k}.")
        elif isinstance(a[k], list) and a[k] and isinstance(a[k][0], dict):
            for i, (x, y) in enumerate(zip(a[k], b[k], strict=False)):
                assert_same_state(x, y, f"{where}{k}[{i}].")
        else:
            assert a[k] == b[k], f"{where}{k}"


def test_stopped_and_resumed_run_ends_with_the_same_weights(tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        _, full = run(tiny_config(tmp_path / "full"))
        _, first = run(tiny_config(tmp_path / "split"), stop_after=1)
        assert first["epochs_done"] == 1 and read_train_state(tmp_path / "split" / "latest.pt")["epoch"] == 1
        _, resumed = run(tiny_config(tmp_path / "split"), resume_from=tmp_path / "split" / "latest.pt")
    finally:
        torch.use_deterministic_algorithms(False)
    a, b = read_train_state(full["checkpoint"]), read_train_state(resumed["checkpoint"])
    assert (a["epoch"], a["iteration"]) == (b["epoch"], b["iteration"]) == (2, 4)
    for key in ("model", "ema", "optimizer"):
        assert_same_state(a[key], b[key], f"{key}.")
    assert a["ema_updates"] == b["ema_updates"] == 4
    assert a["input_size"] == b["input_size"] and a["best_ap"] == b["best_ap"]
    # the records agree too: the resumed run rewrote row 2 after row 1 of the first part
    rows_a = list(csv.DictReader(open(tmp_path / "full" / "results.csv")))
    rows_b = list(csv.DictReader(open(tmp_path / "split" / "results.csv")))
    assert [r["epoch"] for r in rows_b] == ["1", "2"]
    assert [r["total_loss"] for r in rows_a] == [r["total_loss"] for r in rows_b]


def test_phases_evaluation_best_and_records(tmp_path):
    cfg = tiny_config(
        tmp_path, epochs=4, no_aug_epochs=1, eval_interval=3, save_interval=2, tensorboard=True, multiscale=False
    )
    seen_sizes, eval_epochs = [], []

    def evaluate(model):
        eval_epochs.append(len(eval_epochs))
        return {"AP": [0.1, 0.3, 0.2][len(eval_epochs) - 1], "AP50": 0.5, "AP75": 0.2}

    trainer = Trainer(cfg, TinyBoxes(), ["red", "blue"], evaluate=evaluate)
    trainer.model.register_forward_pre_hook(lambda m, args: seen_sizes.append(tuple(args[0].shape[-2:])))
    try:
        assert trainer.no_aug_start_epoch == 2  # official: closes at epoch + 1 == epochs - no_aug_epochs
        result = trainer.fit()
    finally:
        trainer.close()
    assert trainer.train_set.mosaic_closed_at_epoch == 2 and trainer.model.head.use_l1
    assert set(seen_sizes) == {(SIZE, SIZE)}
    rows = list(csv.DictReader(open(result["results_csv"])))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    # evaluated at epoch 3 (interval) and 3, 4 (no-aug phase): epochs 3 and 4
    assert [r["AP"] for r in rows] == ["", "", "0.1", "0.3"]
    assert float(rows[2]["l1_loss"]) > 0 and float(rows[0]["l1_loss"]) == 0
    assert result["best_ap"] == 0.3 and read_train_state(result["best_checkpoint"])["epoch"] == 4
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "best.pt",
        "config.yaml",
        "epoch_2.pt",
        "epoch_4.pt",
        "last_mosaic_epoch.pt",
        "latest.pt",
        "results.csv",
        "results.png",
        "tensorboard",
        "train.log",
        "train_batch0.jpg",  # the first batches as the model got them (2 per epoch here)
        "train_batch1.jpg",
    ]
    assert read_train_state(tmp_path / "last_mosaic_epoch.pt")["epoch"] == 2
    assert any((tmp_path / "tensorboard").iterdir())
    ckpt = read_train_state(result["checkpoint"])
    assert ckpt["class_names"] == ["red", "blue"] and ckpt["config"]["epochs"] == 4 and ckpt["ap"] == 0.3
    assert "epoch 3: AP 0.1000" in (tmp_path / "train.log").read_text()


def fit_recording_input_sizes(cfg, dataset=None, **trainer_kwargs) -> list[int]:
    """Train ``cfg`` on ``dataset`` (default ``TinyBoxes(n=10)``) and return the input size of every forward pass."""
    trainer = Trainer(cfg, dataset if dataset is not None else TinyBoxes(n=10), ["red", "blue"], **trainer_kwargs)
    sizes = []
    trainer.model.register_forward_pre_hook(lambda m, args: sizes.append(args[0].shape[-1]))
    try:
        trainer.fit()
    finally:
        trainer.close()
    return sizes


def test_multiscale_sizes_are_drawn_every_interval(tmp_path):
    cfg = tiny_config(
        tmp_path, epochs=1, batch_size=2, multiscale_interval=1, random_size=(2, 4), ema=False, warmup_epochs=0, seed=3
    )
    sizes = fit_recording_input_sizes(cfg)
    assert len(sizes) == 5 and sizes[0] == SIZE  # the first draw happens after `interval` iterations
    assert set(sizes) <= {64, 96, 128} and len(set(sizes)) > 1
    rng = __import__("random").Random(3)  # the draws: 32 * randint(2, 4) from a Random(seed)
    assert sizes[1:] == [32 * rng.randint(2, 4) for _ in range(4)]


def test_multiscale_range_follows_img_size(tmp_path):
    """Issue 9.5: nano's official 320-640 range belongs to its 416 input; at 64 the sizes are 64 +- 5 * 32,
    at least 32, and the header says so (the old code trained at 320-640 under a header saying 64)."""
    cfg = tiny_config(tmp_path, epochs=1, batch_size=2, multiscale_interval=1, random_size=None, ema=False,
                      warmup_epochs=0)
    assert cfg.random_size is None and cfg.multiscale_sizes() == (32, 224)
    sizes = fit_recording_input_sizes(cfg)
    assert len(sizes) == 5 and set(sizes) <= set(range(32, 225, 32))
    assert "input 32-224 (multiscale around 64" in (tmp_path / "train.log").read_text()


def test_one_epoch_clamps_the_no_aug_phase(tmp_path):
    """Issue 9.10: ``--epochs 1`` with the default 15 no-aug epochs runs (all of it without mosaic) and says so."""
    cfg = tiny_config(tmp_path, epochs=1, no_aug_epochs=15, multiscale=False)
    trainer, result = run(cfg, evaluate=None)
    assert result["epochs_done"] == 1 and trainer.no_aug_start_epoch == 0 and trainer.model.head.use_l1
    assert trainer.schedule.no_aug_epochs == 1
    assert "no_aug_epochs 15 is more than the run's 1 epochs; clamped to 1" in (tmp_path / "train.log").read_text()


def test_resume_with_more_epochs_recomputes_the_schedule(tmp_path):
    """Issue 9.6: ``--resume --epochs N`` with a larger N: cosine and no-aug phase for N epochs, logged once."""
    run(tiny_config(tmp_path, epochs=2, no_aug_epochs=1, multiscale=False), evaluate=None)
    cfg = tiny_config(tmp_path, epochs=4, no_aug_epochs=1, multiscale=False)
    trainer = Trainer(cfg, TinyBoxes(), ["red", "blue"], resume_from=tmp_path / "latest.pt")
    lrs = []
    trainer.model.register_forward_pre_hook(lambda m, args: lrs.append(trainer.optimizer.param_groups[0]["lr"]))
    try:
        assert trainer.start_epoch == 2 and trainer.schedule.epochs == 4 and trainer.no_aug_start_epoch == 2
        trainer.fit()
    finally:
        trainer.close()
    assert lrs[0] == trainer.schedule(4) and trainer.schedule(4) > trainer.schedule.min_lr  # still on the cosine
    log = (tmp_path / "train.log").read_text()
    assert log.count("schedule changed from 2 to 4 epochs") == 1
    assert "no mosaic/mixup, L1 loss from epoch 3 to 4" in log


def test_resume_without_multiscale_trains_at_the_requested_size(tmp_path):
    """Issue 9.6: the stopped run had drawn another size; ``--no-multiscale`` on resume trains at img_size."""
    run(tiny_config(tmp_path, epochs=2, random_size=(3, 5)), stop_after=1, evaluate=None)
    assert read_train_state(tmp_path / "latest.pt")["input_size"][0] in (96, 128, 160)
    sizes = fit_recording_input_sizes(tiny_config(tmp_path, epochs=2, multiscale=False), TinyBoxes(),
                                      resume_from=tmp_path / "latest.pt")
    assert sizes and set(sizes) == {SIZE}
    assert f"input {SIZE}, AMP off" in (tmp_path / "train.log").read_text()  # the header of the resumed run


def test_resize_batch_scales_boxes_like_the_official_preprocess():
    images = torch.rand(2, 3, 64, 32) * 255
    labels = torch.tensor([[[1, 10, 20, 4, 8], [0, 0, 0, 0, 0]]] * 2, dtype=torch.float32)
    out_images, out_labels = resize_batch(images, labels, (128, 96))
    assert out_images.shape == (2, 3, 128, 96)
    assert out_labels[0, 0].tolist() == [1, 30, 40, 12, 16] and out_labels[0, 1].abs().sum() == 0
    assert labels[0, 0, 1] == 10  # inputs untouched
    same_images, same_labels = resize_batch(images, labels, (64, 32))
    assert same_images is images and same_labels is labels


def test_weights_with_another_class_count_keep_all_but_the_class_head(tmp_path, capsys):
    from yolox_fast.models import build_yolox

    source = build_yolox("yolox-nano", num_classes=80)
    torch.save({"model": source.state_dict()}, tmp_path / "official.pth")
    cfg = tiny_config(tmp_path / "run", weights=str(tmp_path / "official.pth"), epochs=1)
    trainer = Trainer(cfg, TinyBoxes(), ["red", "blue"])
    trainer.close()
    assert "trained for 80 classes, this dataset has 2" in capsys.readouterr().out
    ours, theirs = trainer.model.state_dict(), source.state_dict()
    assert torch.equal(
        ours["backbone.backbone.stem.conv.conv.weight"], theirs["backbone.backbone.stem.conv.conv.weight"]
    )
    assert ours["head.cls_preds.0.weight"].shape[0] == 2
    torch.save({"model": build_yolox("yolox-tiny", num_classes=2).state_dict()}, tmp_path / "tiny.pth")
    with pytest.raises(ValueError, match="cannot start yolox-nano from .*tiny.pth"):
        Trainer(tiny_config(tmp_path / "run2", weights=str(tmp_path / "tiny.pth")), TinyBoxes(), ["red", "blue"])


def test_resume_errors(tmp_path):
    run(tiny_config(tmp_path, epochs=1), evaluate=None)
    with pytest.raises(ValueError, match="resume needs the same classes"):
        Trainer(tiny_config(tmp_path), TinyBoxes(), ["a", "b", "c"], resume_from=tmp_path / "latest.pt")
    (tmp_path / "broken.pt").write_bytes((tmp_path / "latest.pt").read_bytes()[:1000])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        Trainer(tiny_config(tmp_path), TinyBoxes(), ["red", "blue"], resume_from=tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="fewer than one batch"):
        Trainer(tiny_config(tmp_path, batch_size=16), TinyBoxes(), ["red", "blue"])


def test_frozen_parameters_stay_fixed(tmp_path):
    from yolox_fast.engine.trainer import seed_everything
    from yolox_fast.models import build_yolox

    cfg = tiny_config(tmp_path, epochs=1, freeze=["backbone.backbone.stem", "head.cls_preds"], multiscale=False)
    run(cfg, evaluate=None)
    seed_everything(cfg.seed)  # the trainer's initial weights
    initial = build_yolox("yolox-nano", num_classes=2).state_dict()
    trained = read_train_state(tmp_path / "latest.pt")["model"]
    assert torch.equal(
        trained["backbone.backbone.stem.conv.conv.weight"], initial["backbone.backbone.stem.conv.conv.weight"]
    )
    assert torch.equal(trained["head.cls_preds.1.bias"], initial["head.cls_preds.1.bias"])
    assert not torch.equal(trained["head.reg_preds.0.weight"], initial["head.reg_preds.0.weight"])
    assert "frozen: backbone.backbone.stem, head.cls_preds" in (tmp_path / "train.log").read_text()
    with pytest.raises(ValueError, match="freeze: no parameter name starts with 'stem'"):
        Trainer(tiny_config(tmp_path / "b", freeze=["stem"]), TinyBoxes(), ["red", "blue"])


def test_training_step_assigns_without_value_checks(tmp_path):
    """The labels are checked by the data layer; the step's assigner skips its value checks (a host
    sync per step on a GPU)."""
    trainer = Trainer(tiny_config(tmp_path), TinyBoxes(), ["red", "blue"])
    try:
        assigner = unwrap(trainer.model).head.loss.assigner
        assert assigner.check_values is False
    finally:
        trainer.close()


def test_seed_worker_runs_opencv_sequentially():
    """In a DataLoader worker OpenCV gets one thread (the workers are the parallelism), as in the official trainer."""
    import cv2

    from yolox_fast.engine.trainer import seed_worker

    before = cv2.getNumThreads()
    try:
        cv2.setNumThreads(2)
        seed_worker(0)
        assert cv2.getNumThreads() == 1
    finally:
        cv2.setNumThreads(before)


def test_start_line_gives_parameters_and_gflops(tmp_path):
    """The run's first line says the model's size at the evaluation input size, as the official trainer does."""
    from yolox_fast.models.summary import model_summary

    cfg = tiny_config(tmp_path, epochs=1, multiscale=False, test_size=96)
    trainer, _ = run(cfg, evaluate=None)
    want = model_summary(unwrap(trainer.model), 96)
    log = (tmp_path / "train.log").read_text()
    assert f"yolox-nano ({want.describe()}, 2 classes)" in log and "GFLOPs at 96x96" in log


def test_patience_stops_when_the_ap_has_not_improved_and_keeps_the_best(tmp_path):
    """--patience 2: the 2nd evaluation in a row without a better AP ends the run; best.pt is the best epoch's,
    and the count survives a resume (it is in the checkpoint). (Without --patience the other tests run every epoch
    whatever the AP does.)"""
    aps = [0.3, 0.2, 0.25, 0.5]

    def scripted(model):  # the AP after each epoch; the trainer only compares them
        scripted.calls += 1
        return {"AP": aps[scripted.calls - 1], "AP50": 0.5, "AP75": 0.2}

    def config(name, **kw):  # one step per epoch
        return tiny_config(tmp_path / name, epochs=4, batch_size=8, multiscale=False, **kw)

    scripted.calls = 0
    _, result = run(config("run", patience=2), evaluate=scripted)
    assert result["stopped_early"] == 3 and result["epochs_done"] == 3 and scripted.calls == 3
    assert read_train_state(result["best_checkpoint"])["epoch"] == 1 and result["best_ap"] == 0.3
    assert read_train_state(result["checkpoint"])["evals_without_improvement"] == 2
    log = (tmp_path / "run" / "train.log").read_text()
    assert "early stopping after epoch 3: the AP has not improved for 2 evaluations" in log

    scripted.calls = 0  # stopped after epoch 2 (one evaluation without improvement), resumed: stops after 3
    run(config("resumed", patience=2), stop_after=2, evaluate=scripted)
    _, result = run(config("resumed", patience=2), resume_from=tmp_path / "resumed" / "latest.pt", evaluate=scripted)
    assert result["stopped_early"] == 3 and scripted.calls == 3

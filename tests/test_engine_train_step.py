"""The training step's speed settings keep the results: memory layout, batches in that layout, AMP dtype, compile."""

from __future__ import annotations

import pytest
import torch

from tests.test_engine_trainer import TinyBoxes, one_thread, tiny_config  # noqa: F401 (one_thread: autouse fixture)
from yolox_fast.engine.trainer import Trainer, choose_amp_dtype, trim_label_padding
from yolox_fast.models.layout import use_channels_last

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _trainer(tmp_path, **kw):
    cfg = tiny_config(tmp_path, multiscale=False, ema=False, **kw)
    return Trainer(cfg, TinyBoxes(n=8), ["red", "blue"])


def _first_param(model):
    return model.backbone.backbone.stem.conv.conv.weight


def test_trainer_runs_and_batches_in_the_chosen_layout(tmp_path):
    losses = {}
    for mode in ("on", "off"):
        trainer = _trainer(tmp_path / mode, channels_last=mode)
        try:
            assert trainer.channels_last == (mode == "on") == trainer.model.channels_last
            assert _first_param(trainer.model).is_contiguous(memory_format=torch.channels_last) == (mode == "on")
            trainer.loader.sampler.set_epoch(0)
            images, labels, _ = next(iter(trainer.loader))
            layout = torch.channels_last if mode == "on" else torch.contiguous_format
            assert images.is_contiguous(memory_format=layout), "batches are not in the model's layout"
            assert mode == "off" or not images.is_contiguous()
            losses[mode] = float(trainer.train_step(images, labels)["total_loss"].detach())
        finally:
            trainer.close()
    # A random-init net on 64x64 inputs: train-mode BatchNorm over 2x2 maps amplifies the rounding differences.
    assert losses["on"] == pytest.approx(losses["off"], rel=2e-4)


def test_channels_last_gives_the_same_loss_and_gradients(shared_data):
    """The official YOLOX-Nano in train mode on a real mosaic batch: same loss terms, same gradients.

    Measured against a float64 run of the same step (1 thread): the forward activations of both layouts are
    equally close to float64 (the loss terms within 3e-5 relative); the parameter gradients are not: NCHW is
    within 1e-5 (median over tensors, relative L2) and 5e-4 (worst), NHWC within 2e-3 and 1.5e-2, because
    oneDNN's channels_last backward kernels reduce in another order (BatchNorm's backward alone: 1e-6
    against 6e-8). That is well inside what SGD tolerates (bf16 AMP rounds to 4e-3); the bounds below
    are those figures with a margin.
    """
    from yolox_fast.data import COCODetection, TrainAugmentDataset, collate
    from yolox_fast.models import build_yolox, load_official_weights

    root, weights = shared_data / "coco128", shared_data / "weights" / "yolox_nano_calib.pth"
    if not weights.is_file() or not (root / "annotations" / "instances_train2017.json").is_file():
        pytest.skip("needs coco128 and weights/yolox_nano_calib.pth in the shared data")
    base = COCODetection(root / "train2017", root / "annotations" / "instances_train2017.json")
    augmented = TrainAugmentDataset(base, input_size=256, mixup_prob=0.0, mosaic_scale=(0.5, 1.5), seed=0)
    images, labels, _ = collate([augmented[i] for i in range(4)])
    results = {}
    for channels_last in (False, True):
        model = build_yolox("yolox-nano")
        load_official_weights(model, weights, strict=True)
        model.train().set_channels_last(channels_last)
        losses = model(images.float(), labels)
        losses["total_loss"].backward()
        results[channels_last] = losses, {n: p.grad for n, p in model.named_parameters()}
    (l_nchw, g_nchw), (l_nhwc, g_nhwc) = results[False], results[True]
    assert l_nchw["num_fg"] > 1
    for key in l_nchw:
        torch.testing.assert_close(l_nhwc[key], l_nchw[key], rtol=1e-4, atol=1e-6, msg=key)
    errors = sorted(float((g_nhwc[n] - g_nchw[n]).norm() / g_nchw[n].norm()) for n in g_nchw)
    assert errors[len(errors) // 2] < 5e-3 and errors[-1] < 5e-2, (errors[len(errors) // 2], errors[-1])


def test_layout_rule_and_forcing():
    assert use_channels_last("auto", "cpu") is True  # measured faster here (models/layout.py)
    assert use_channels_last("off", "cpu") is False and use_channels_last("on", "cpu") is True
    with pytest.raises(ValueError, match="channels_last must be one of auto, on, off"):
        use_channels_last("nhwc", "cpu")


def test_bad_speed_settings_name_themselves(tmp_path):
    with pytest.raises(ValueError, match="channels_last must be one of"):
        tiny_config(tmp_path, channels_last="yes")
    with pytest.raises(ValueError, match="amp_dtype must be auto, bf16 or fp16"):
        tiny_config(tmp_path, amp_dtype="fp8")


def test_amp_dtype_choice_on_the_cpu():
    with pytest.raises(ValueError, match="bf16 only"):
        choose_amp_dtype("fp16", torch.device("cpu"))
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert choose_amp_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    else:
        with pytest.raises(ValueError, match="no bfloat16 instructions"):
            choose_amp_dtype("bf16", torch.device("cpu"))


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="this CPU has no bf16 instructions")
def test_cpu_bf16_amp_is_opt_in_and_trains(tmp_path):
    default = _trainer(tmp_path / "fp32")
    bf16 = _trainer(tmp_path / "bf16", amp_dtype="bf16")
    try:
        assert not default.use_amp and bf16.use_amp and bf16.amp_dtype == torch.bfloat16
        assert not bf16.scaler.is_enabled()  # bf16 needs no loss scaling
        images, labels, _ = next(iter(default.loader))
        want = float(default.train_step(images, labels)["total_loss"].detach())
        got = float(bf16.train_step(images, labels)["total_loss"].detach())
        assert got == pytest.approx(want, rel=0.05)  # bf16 keeps 8 bits of mantissa: close, not equal
    finally:
        default.close()
        bf16.close()


@pytest.mark.gpu
@needs_cuda
def test_auto_amp_is_bf16_where_the_gpu_has_it():
    device = torch.device("cuda")
    want = torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    assert choose_amp_dtype("auto", device) == want


@pytest.mark.gpu
@needs_cuda
def test_gpu_step_has_no_host_sync(tmp_path):
    """The whole bf16 step (loss, assignment, backward, SGD, EMA) queues without a host sync.

    Syncs that stay, outside ``train_step``: the log-interval read of the loss means. With fp16 the grad
    scaler's inf check (``GradScaler.step``) is one more, unavoidable there.
    """
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("needs a GPU with bfloat16 (the fp16 grad scaler syncs by design)")
    cfg = tiny_config(tmp_path, multiscale=False, device="cuda", amp=True, amp_dtype="bf16")
    trainer = Trainer(cfg, TinyBoxes(n=8), ["red", "blue"])
    try:
        batches = [(b[0].pin_memory(), b[1].pin_memory()) for b in trainer.loader]
        trainer.train_step(*batches[0])  # warm-up: cuDNN autotuning and first allocations may sync
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            trainer.train_step(*batches[1])
        finally:
            torch.cuda.set_sync_debug_mode("default")
    finally:
        trainer.close()


def test_compile_flag_compiles_the_model_in_place(tmp_path):
    trainer = _trainer(tmp_path, compile=True)
    try:
        assert trainer.model._compiled_call_impl is not None
        assert "backbone.backbone.stem.conv.conv.weight" in trainer.model.state_dict()  # names unchanged
    finally:
        trainer.close()


def test_trim_label_padding_keeps_every_real_row():
    labels = torch.zeros(3, 120, 5)
    labels[0, :5] = 1.0
    labels[2, 37] = torch.tensor([0.0, 10.0, 10.0, 4.0, 4.0])  # class 0 and a gap before it: still kept
    trimmed = trim_label_padding(labels)
    assert trimmed.shape == (3, 48, 5) and torch.equal(trimmed, labels[:, :48])
    assert trim_label_padding(torch.zeros(2, 120, 5)).shape == (2, 16, 5)
    small = torch.ones(2, 10, 5)
    assert trim_label_padding(small) is small

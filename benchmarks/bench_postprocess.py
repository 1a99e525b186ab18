"""Postprocess and NMS benchmarks: every provider side by side, in one run.

    python -m pytest benchmarks/bench_postprocess.py --benchmark-only            # CPU groups (2 threads)
    python -m pytest benchmarks/bench_postprocess.py --benchmark-only -m gpu     # GPU groups only
    BENCH_THREADS=1 python -m pytest benchmarks/bench_postprocess.py --benchmark-only   # one thread

Groups (pytest-benchmark ``group``):

* ``postprocess-cpu-conf0.001`` / ``-conf0.25``: B=8, A=8400 (640 x 640), C=80. Predictions are real
  YOLOX-Nano outputs on the demo images when ``../shared/data`` has the weights, else a synthetic batch
  with the same shape of distribution (most scores tiny, a few hundred boxes above 0.25 per image).
  Providers: ``reference`` (the official per-image loop with the reference's Python NMS),
  ``official+torchvision`` (the official loop with torchvision.ops.batched_nms, what YOLOX ships),
  this project's ``cpu`` (C++), ``torch`` (batched PyTorch), and ``cpu-raw`` (C++ on the raw head
  output with the decode fused in; the model's own decode is then skipped, so it does less work).
* ``nms-cpu-{1000,5000,20000}``: batched NMS with 80 classes: ``cpu`` vs ``torchvision`` (+ ``torch``).
* ``postprocess-gpu-b16-conf0.25``: B=16 on the GPU: ``cuda``, ``triton``, ``torch``,
  ``official+torchvision``; ``test_gpu_target`` asserts the 0.5 ms target on compute capability 9.0 and
  newer (H100, H200). ``YOLOX_FAST_BENCH_GPU_ONLY=1`` leaves the CPU groups out.

``extra_info`` records the device, threads, data source, detections and peak memory: CUDA's
``max_memory_allocated`` on the GPU, and on the CPU the peak of live tensor bytes that the PyTorch
profiler sees during one call (allocations by the C++ op's own std::vectors are not counted).
"""

from __future__ import annotations

import os
import platform
import resource
from functools import cache
from pathlib import Path

import pytest
import torch

from benchmarks.gpu_targets import GPU_ONLY, gpu_target_applies
from yolox_fast.ops import _extension
from yolox_fast.ops import anchor_grid_for_input, batched_nms, postprocess, reference

try:
    import torchvision
except ImportError:
    torchvision = None

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# 2 intra-op threads as the issue asks; BENCH_THREADS=1 gives steadier numbers on a shared, loaded machine,
# where every 2-thread parallel region (PyTorch's own included) can wait a scheduler tick for its partner.
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
NUM_CLASSES = 80
torch.set_num_threads(THREADS)

needs_ext = pytest.mark.skipif(not _extension.extension_loaded(), reason="yolox_fast._C is not built")
needs_tv = pytest.mark.skipif(torchvision is None, reason="torchvision is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
cpu_group = pytest.mark.skipif(GPU_ONLY, reason="YOLOX_FAST_BENCH_GPU_ONLY=1: GPU groups only")


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


def _synthetic(batch: int, seed: int = 0, raw: bool = False):
    """Head output with a realistic score distribution: objectness ~ sigmoid(N(-6, 1.5)) almost everywhere,
    ~300 anchors per image on objects (obj up to 0.95, one confident class), clustered boxes."""
    g = torch.Generator().manual_seed(seed)
    grids, strides = anchor_grid_for_input(640, 640)
    a = grids.shape[0]
    t = torch.randn(batch, a, 5 + NUM_CLASSES, generator=g)
    t[..., :2] = t[..., :2] * 0.3 + 0.5
    t[..., 2:4] = t[..., 2:4] * 0.5 + 1.0
    t[..., 4] = t[..., 4] * 1.5 - 6.0
    t[..., 5:] = t[..., 5:] * 1.5 - 5.0
    for b in range(batch):
        hot = torch.randperm(a, generator=g)[:300]
        t[b, hot, 4] = torch.rand(300, generator=g) * 4.0 - 1.0
        t[b, hot, 5 + torch.randint(0, NUM_CLASSES, (300,), generator=g)] = torch.rand(300, generator=g) * 4.0
    return t, grids, strides


@cache
def cpu_inputs(batch: int = 8):
    """(decoded [B, 8400, 85], raw [B, 8400, 85], grids, strides, source)."""
    weights = DATA / "weights" / "yolox_nano.pth"
    images = sorted((DATA / "images").glob("*.jpg"))
    if weights.is_file() and images:
        from yolox_fast.data import preprocess, read_image
        from yolox_fast.models import build_yolox, load_official_weights

        model = build_yolox("yolox-nano")
        load_official_weights(model, weights)
        model.eval()
        x = torch.stack([preprocess(read_image(images[i % len(images)]), 640)[0] for i in range(batch)])
        with torch.no_grad():
            raw, sizes = model.head.forward_raw(model.backbone(x))
            grids, strides = model.head.grids(sizes, raw.device)
            decoded = model.head(model.backbone(x))
        return decoded.contiguous(), raw.contiguous(), grids, strides, "yolox-nano on the demo images at 640"
    raw, grids, strides = _synthetic(batch)
    return reference.decode_outputs(raw, grids, strides), raw, grids, strides, "synthetic"


def cluster_boxes(n: int, num_classes: int = NUM_CLASSES, seed: int = 0):
    """``n`` detector-like boxes: jittered copies of n/20 objects (so NMS suppresses), random scores."""
    g = torch.Generator().manual_seed(seed)
    objects = max(1, n // 20)
    xy = torch.rand(objects, 2, generator=g) * 600
    wh = torch.rand(objects, 2, generator=g) * 150 + 10
    cls = torch.randint(0, num_classes, (objects,), generator=g)
    which = torch.randint(0, objects, (n,), generator=g)
    jitter = 1 + 0.15 * torch.randn(n, 4, generator=g)
    cxcywh = torch.cat([xy[which], wh[which]], 1) * jitter
    boxes = reference.box_cxcywh_to_xyxy(cxcywh)
    idxs = torch.where(torch.rand(n, generator=g) < 0.9, cls[which], torch.randint(0, num_classes, (n,), generator=g))
    return boxes, torch.rand(n, generator=g), idxs


# --------------------------------------------------------------------------------------------------
# Providers
# --------------------------------------------------------------------------------------------------


def official_torchvision(prediction, num_classes, conf_thre, nms_thre, class_agnostic=False):
    """The official YOLOX postprocess as shipped (per-image loop, torchvision NMS)."""
    output = [None] * len(prediction)
    box_corner = reference.box_cxcywh_to_xyxy(prediction[..., :4])
    for i, image_pred in enumerate(prediction):
        class_conf, class_pred = torch.max(image_pred[:, 5 : 5 + num_classes], 1, keepdim=True)
        conf_mask = (image_pred[:, 4] * class_conf.squeeze()) >= conf_thre
        detections = torch.cat((box_corner[i], image_pred[:, 4:5], class_conf, class_pred.float()), 1)[conf_mask]
        if not detections.size(0):
            continue
        if class_agnostic:
            keep = torchvision.ops.nms(detections[:, :4], detections[:, 4] * detections[:, 5], nms_thre)
        else:
            keep = torchvision.ops.batched_nms(detections[:, :4], detections[:, 4] * detections[:, 5],
                                               detections[:, 6], nms_thre)
        output[i] = detections[keep]
    return output


def peak_tensor_bytes(fn) -> int:
    """Peak of live tensor bytes during one call of ``fn``, from the PyTorch profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = []
    for e in prof.events():
        if e.name == "[memory]":
            events.append((e.time_range.start, e.cpu_memory_usage))
        elif e.self_cpu_memory_usage > 0:
            events.append((e.time_range.start, e.self_cpu_memory_usage))
    live = peak = 0
    for _, delta in sorted(events):
        live += delta
        peak = max(peak, live)
    return peak


@cache
def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores visible)"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_info(benchmark, fn, **extra):
    benchmark.extra_info.update(
        device=cpu_name(),
        threads=torch.get_num_threads(),
        peak_tensor_mb=round(peak_tensor_bytes(fn) / 2**20, 2),
        process_peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        **extra,
    )


def count(out) -> int:
    return sum(0 if o is None else int(o.shape[0]) for o in out)


# --------------------------------------------------------------------------------------------------
# CPU: full postprocess
# --------------------------------------------------------------------------------------------------

CPU_PROVIDERS = [
    pytest.param("reference"),
    pytest.param("official+torchvision", marks=needs_tv),
    pytest.param("cpu", marks=needs_ext),
    pytest.param("cpu-raw", marks=needs_ext),
    pytest.param("torch"),
]


@cpu_group
@pytest.mark.parametrize("conf", [0.001, 0.25])
@pytest.mark.parametrize("provider", CPU_PROVIDERS)
def test_postprocess_cpu(benchmark, provider, conf):
    decoded, raw, grids, strides, source = cpu_inputs(8)
    nms_thre = 0.65
    if provider == "reference":
        fn = lambda: reference.postprocess(decoded, NUM_CLASSES, conf, nms_thre)  # noqa: E731
    elif provider == "official+torchvision":
        fn = lambda: official_torchvision(decoded, NUM_CLASSES, conf, nms_thre)  # noqa: E731
    elif provider == "cpu-raw":
        fn = lambda: postprocess(raw, NUM_CLASSES, conf, nms_thre, grids=grids, strides=strides,  # noqa: E731
                                 backend="cpu")
    else:
        fn = lambda: postprocess(decoded, NUM_CLASSES, conf, nms_thre, backend=provider)  # noqa: E731
    benchmark.group = f"postprocess-cpu-conf{conf}"
    rounds = 3 if provider == "reference" else 30
    out = benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    cpu_info(benchmark, fn, source=source, batch=decoded.shape[0], anchors=decoded.shape[1], detections=count(out),
             candidates=int(((decoded[..., 4] * decoded[..., 5:].max(-1).values) >= conf).sum()))


# --------------------------------------------------------------------------------------------------
# CPU: NMS alone
# --------------------------------------------------------------------------------------------------


@cpu_group
@pytest.mark.parametrize("n", [1000, 5000, 20000])
@pytest.mark.parametrize("provider", [pytest.param("torchvision", marks=needs_tv), pytest.param("cpu", marks=needs_ext),
                                      "torch"])
def test_batched_nms_cpu(benchmark, provider, n):
    boxes, scores, idxs = cluster_boxes(n)
    if provider == "torchvision":
        fn = lambda: torchvision.ops.batched_nms(boxes, scores, idxs, 0.5)  # noqa: E731
    else:
        fn = lambda: batched_nms(boxes, scores, idxs, 0.5, backend=provider)  # noqa: E731
    benchmark.group = f"nms-cpu-{n}"
    keep = benchmark.pedantic(fn, rounds=5 if provider == "torch" else 50, iterations=1, warmup_rounds=2)
    cpu_info(benchmark, fn, boxes=n, classes=NUM_CLASSES, kept=int(keep.numel()))


# --------------------------------------------------------------------------------------------------
# GPU
# --------------------------------------------------------------------------------------------------

GPU_PROVIDERS = ["cuda", "triton", "torch", pytest.param("official+torchvision", marks=needs_tv)]
GPU_BATCH = 16
GPU_TARGET_S = 0.5e-3  # compute capability >= 9.0 (H100, H200), B=16, conf 0.25


def gpu_fn(provider, pred):
    if provider == "official+torchvision":
        return lambda: (official_torchvision(pred, NUM_CLASSES, 0.25, 0.45), torch.cuda.synchronize())
    return lambda: (postprocess_padded_gpu(pred, provider), torch.cuda.synchronize())


def postprocess_padded_gpu(pred, provider):
    from yolox_fast.ops import postprocess_padded

    return postprocess_padded(pred, NUM_CLASSES, 0.25, 0.45, max_det=100, backend=provider)


@cache
def gpu_inputs():
    decoded, *_rest, source = cpu_inputs(8)
    return torch.cat([decoded, decoded.flip(0)]).cuda(), source


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("provider", GPU_PROVIDERS)
def test_postprocess_gpu(benchmark, provider):
    pred, source = gpu_inputs()
    fn = gpu_fn(provider, pred)
    fn()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    benchmark.group = f"postprocess-gpu-b{GPU_BATCH}-conf0.25"
    benchmark.pedantic(fn, rounds=100, iterations=1, warmup_rounds=10)
    benchmark.extra_info.update(device=torch.cuda.get_device_name(), source=source, batch=GPU_BATCH,
                                peak_extra_mb=round((torch.cuda.max_memory_allocated() - base) / 2**20, 2),
                                note="padded output (max_det=100), timed to the end of the GPU work")


@pytest.mark.gpu
@needs_cuda
@needs_ext
def test_gpu_target(benchmark):
    """The issue's target: B=16 postprocess at conf 0.25 in under 0.5 ms, asserted on compute capability 9.0
    and newer (H100, H200); elsewhere only recorded."""
    pred, source = gpu_inputs()
    fn = gpu_fn("cuda", pred)
    fn()
    benchmark.group = f"postprocess-gpu-b{GPU_BATCH}-conf0.25-target"
    benchmark.pedantic(fn, rounds=200, iterations=1, warmup_rounds=20)
    name = torch.cuda.get_device_name()
    median = benchmark.stats.stats.median
    capability = torch.cuda.get_device_capability()
    applies = gpu_target_applies(capability)
    benchmark.extra_info.update(device=name, capability=list(capability), source=source, target_s=GPU_TARGET_S,
                                median_s=median, target_checked=applies)
    if applies:
        assert median < GPU_TARGET_S, f"B={GPU_BATCH} postprocess took {median * 1e3:.3f} ms on {name} (target 0.5 ms)"

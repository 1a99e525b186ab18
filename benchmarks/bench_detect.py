"""End-to-end detection benchmark: read, preprocess, model, postprocess; providers side by side.

    python -m pytest benchmarks/bench_detect.py --benchmark-only -s     # CPU, prints a summary table
    BENCH_THREADS=1 python -m pytest benchmarks/bench_detect.py --benchmark-only -s

Groups ``detect-<model>-<size>-b<batch>``: YOLOX-Nano at 416 and YOLOX-S at 640, batch 1 and 8; one round
reads ``batch`` photos from disk (the shared demo images, cycled), letterboxes them, runs the model and
the postprocess (deployment settings: conf 0.25, class-aware NMS 0.45, 100 detections) and maps the
boxes back to the images. Providers:

* ``official-style``: PyTorch eager model + the per-image reference postprocess (the official loop,
  :func:`yolox_fast.ops.reference.postprocess`);
* ``pytorch-eager``: PyTorch eager model + the batched pure-PyTorch postprocess (backend ``torch``);
* ``pytorch-fast-post``: PyTorch eager model (channels-last input) + the fast C++ postprocess;
* ``onnxruntime-nms``: the model exported with :mod:`yolox_fast.export`, decode and NMS in the graph,
  in ONNX Runtime (CPU execution provider), postprocess = reading the fixed-size outputs;
* ``onnxruntime-int8``: the same graph with the network quantized to INT8 (``export --int8``: NNCF, calibrated
  on the first 32 coco128 images, stem and head prediction convolutions, decode and NMS in float32);
* ``openvino-fp32``, ``openvino-int8``: those two files converted to OpenVINO IR (``export --format
  openvino``), run by :class:`yolox_fast.deploy.openvino_model.OpenVinoModel` on the CPU (float layers in
  float32).

``BENCH_PROVIDERS=onnxruntime-nms,openvino-int8`` picks providers; the OpenVINO and INT8 rows are skipped
when ``openvino`` / ``nncf`` are not installed.

``extra_info``: per-stage mean milliseconds and shares (read, preprocess, model, postprocess), images per
second, and for the ONNX provider the speed-up over ``pytorch-eager`` measured in the same session and the
time of the in-graph postprocess (its ``pp/`` nodes in an ONNX Runtime profile of one more run; there the
"postprocess" stage only slices the outputs). A table of all means prints at the end of the module.

On a loaded 2-core machine PyTorch's 2-thread parallel regions can stall for whole scheduler ticks (YOLOX-Nano
forward: ~110 ms with 1 thread, 0.7 to 15 s with 2 while other jobs ran); ``BENCH_THREADS=1`` gives figures
that mean something there.
The shared data has official weights for YOLOX-Nano only: YOLOX-S runs with its initial weights, so its
postprocess sees almost no candidates above 0.25 (its model time is what counts there).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from yolox_fast.data import preprocess, read_image
from yolox_fast.models import build_yolox, load_official_weights
from yolox_fast.ops import postprocess_padded, reference

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
THREADS = int(os.environ.get("BENCH_THREADS", "2"))
torch.set_num_threads(THREADS)
CONF, NMS, MAX_DET = 0.25, 0.45, 100
CONFIGS = [("yolox-nano", 416, 1), ("yolox-nano", 416, 8), ("yolox-s", 640, 1), ("yolox-s", 640, 8)]
ALL_PROVIDERS = ["official-style", "pytorch-eager", "pytorch-fast-post", "onnxruntime-nms", "onnxruntime-int8",
                 "openvino-fp32", "openvino-int8"]
PROVIDERS = [p for p in os.environ.get("BENCH_PROVIDERS", ",".join(ALL_PROVIDERS)).split(",") if p]
EXPORTED = ("onnxruntime-nms", "onnxruntime-int8", "openvino-fp32", "openvino-int8")  # read the graph's outputs
CALIB_COUNT = 32
STAGES = ("read", "preprocess", "model", "postprocess")
_MEANS: dict[tuple, float] = {}  # (model, size, batch, provider) -> mean seconds per round, for the summary

pytestmark = pytest.mark.skipif(not (DATA / "images").is_dir(), reason=f"shared images absent: {DATA / 'images'}")


def _photos() -> list[Path]:
    return sorted((DATA / "images").glob("*.jpg"))


_MODELS: dict[str, torch.nn.Module] = {}
_ONNX: dict[tuple, object] = {}


def _model(name: str) -> torch.nn.Module:
    if name not in _MODELS:
        model = build_yolox(name, num_classes=80)
        weights = DATA / "weights" / f"{name.replace('-', '_')}.pth"
        if weights.is_file():
            load_official_weights(model, weights)
        _MODELS[name] = model.eval()
    return _MODELS[name]


def _onnx(name: str, size: int, tmp_dir: Path, provider: str = "onnxruntime-nms"):
    """The exported model of ``provider`` (files written once per model and size, same thresholds)."""
    key = (name, size, provider)
    if key not in _ONNX:
        from functools import partial

        from yolox_fast.deploy.onnx_export import export_onnx
        from yolox_fast.deploy.onnx_runtime import OnnxModel

        int8 = provider.endswith("int8")
        if provider.startswith("openvino"):
            pytest.importorskip("openvino", reason="pip install openvino")
        if int8:
            pytest.importorskip("nncf", reason="pip install nncf")
        path = tmp_dir / f"{name}-{size}{'-int8' if int8 else ''}.onnx"
        if not path.exists():
            network_pass = None
            if int8:
                from yolox_fast.deploy.quantize import calibration_images, quantize_network

                folder = DATA / "coco128" / "train2017"
                calib = calibration_images(folder if folder.is_dir() else DATA / "images", CALIB_COUNT)
                network_pass = partial(quantize_network, calib_images=calib, img_size=(size, size))
            export_onnx(_model(name), path, size, conf=CONF, nms_thre=NMS, max_det=MAX_DET, network_pass=network_pass,
                        extra_meta={"int8": {"calib_images": CALIB_COUNT}} if int8 else None)
        if provider.startswith("openvino"):
            from yolox_fast.deploy.openvino_model import OpenVinoModel, export_openvino

            folder = path.with_suffix("")
            if not folder.exists():
                export_openvino(path, folder)
            _ONNX[key] = OpenVinoModel(folder, threads=THREADS)
        else:
            _ONNX[key] = OnnxModel(path, device="cpu", threads=THREADS)
    return _ONNX[key]


class _Pipeline:
    """One end-to-end round for a provider, with per-stage timers."""

    def __init__(self, provider: str, name: str, size: int, batch: int, tmp_dir: Path):
        self.provider, self.size, self.batch = provider, size, batch
        self.paths = [_photos()[i % len(_photos())] for i in range(batch)]
        self.totals = dict.fromkeys(STAGES, 0.0)
        self.rounds = 0
        if provider in EXPORTED:
            self.onnx = _onnx(name, size, tmp_dir, provider)
        else:
            self.model = _model(name)

    def __call__(self):
        t0 = time.perf_counter()
        images = [read_image(p) for p in self.paths]
        t1 = time.perf_counter()
        tensors, ratios = zip(*(preprocess(img, self.size) for img in images), strict=True)
        batch = torch.stack(tensors)
        if self.provider == "pytorch-fast-post":
            batch = batch.contiguous(memory_format=torch.channels_last)
        t2 = time.perf_counter()
        if self.provider in EXPORTED:
            outputs = self.onnx.run(batch.numpy())
            t3 = time.perf_counter()
            counts, boxes, scores, labels = outputs
            results = [(boxes[b, :n] / r, scores[b, :n], labels[b, :n])
                       for b, (n, r) in enumerate(zip(counts.tolist(), ratios, strict=True))]
        else:
            with torch.inference_mode():
                pred = self.model(batch)
                t3 = time.perf_counter()
                if self.provider == "official-style":
                    dets = reference.postprocess(pred, 80, CONF, NMS)
                    results = [(d[:MAX_DET, :4] / r, d[:MAX_DET, 4] * d[:MAX_DET, 5], d[:MAX_DET, 6]) if d is not None
                               else None for d, r in zip(dets, ratios, strict=True)]
                else:
                    backend = "torch" if self.provider == "pytorch-eager" else None
                    dets, counts = postprocess_padded(pred, 80, CONF, NMS, max_det=MAX_DET, backend=backend)
                    results = [(dets[b, :n, :4] / r, dets[b, :n, 4] * dets[b, :n, 5], dets[b, :n, 6])
                               for b, (n, r) in enumerate(zip(counts.tolist(), ratios, strict=True))]
        t4 = time.perf_counter()
        for stage, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            self.totals[stage] += dt
        self.rounds += 1
        return results


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("name, size, batch", CONFIGS, ids=[f"{n}-{s}-b{b}" for n, s, b in CONFIGS])
def test_detect_end_to_end(benchmark, record_env, tmp_path_factory, name, size, batch, provider):
    benchmark.group = f"detect-{name}-{size}-b{batch}"
    pipeline = _Pipeline(provider, name, size, batch, tmp_path_factory.getbasetemp())
    rounds = 5 if batch == 1 and name == "yolox-nano" else 3
    pipeline()  # warm-up (oneDNN / ORT first-run setup), not counted
    pipeline.totals = dict.fromkeys(STAGES, 0.0)
    pipeline.rounds = 0
    results = benchmark.pedantic(pipeline, rounds=rounds, iterations=1)
    total = sum(pipeline.totals.values())
    mean = total / pipeline.rounds
    _MEANS[(name, size, batch, provider)] = mean
    record_env("cpu", provider=provider, batch=batch, input_size=size,
               weights="official" if (DATA / "weights" / f"{name.replace('-', '_')}.pth").is_file() else "initial",
               detections=int(sum(0 if r is None else len(r[1]) for r in results)),
               images_per_s=round(batch / mean, 2),
               **{f"{s}_ms": round(1000 * pipeline.totals[s] / pipeline.rounds, 2) for s in STAGES},
               **{f"{s}_share": round(pipeline.totals[s] / total, 4) for s in STAGES})
    if provider in EXPORTED:
        eager = _MEANS.get((name, size, batch, "pytorch-eager"))
        if eager:
            benchmark.extra_info["speedup_vs_pytorch_eager"] = round(eager / mean, 2)
        ort_fp32 = _MEANS.get((name, size, batch, "onnxruntime-nms"))
        if ort_fp32 and provider != "onnxruntime-nms":
            benchmark.extra_info["speedup_vs_onnxruntime_fp32"] = round(ort_fp32 / mean, 2)
    if provider == "onnxruntime-nms":
        images = torch.stack([preprocess(read_image(p), size)[0] for p in pipeline.paths]).numpy()
        in_graph = _profile_in_graph_postprocess(pipeline.onnx, images)
        benchmark.extra_info.update(in_graph_postprocess_ms=round(in_graph, 2),
                                    in_graph_postprocess_share=round(in_graph / 1000 / mean, 4))


@pytest.fixture(scope="module", autouse=True)
def _summary_table(request):
    """Print the table of this module's means after its last benchmark."""
    yield
    if not _MEANS:
        return
    lines = [f"{'config':<22} " + " ".join(f"{p:>18}" for p in PROVIDERS) + "   ORT / eager   fastest / ORT fp32"]
    for name, size, batch in CONFIGS:
        row = [_MEANS.get((name, size, batch, p)) for p in PROVIDERS]
        cells = " ".join(f"{1000 * v:>15.1f} ms" if v else f"{'-':>18}" for v in row)
        eager, ort = (_MEANS.get((name, size, batch, p)) for p in ("pytorch-eager", "onnxruntime-nms"))
        ratio = eager / ort if eager and ort else float("nan")
        others = [v for p, v in zip(PROVIDERS, row, strict=True) if v and p in EXPORTED and p != "onnxruntime-nms"]
        best = ort / min(others) if ort and others else float("nan")
        lines.append(f"{name}-{size}-b{batch:<8} {cells}   {ratio:>10.2f}x   {best:>16.2f}x")
    text = (f"\nend-to-end mean per round (read + preprocess + model + postprocess), {THREADS} thread(s)\n"
            + "\n".join(lines))
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(text)


def _profile_in_graph_postprocess(onnx_model, images: np.ndarray) -> float:
    """Milliseconds the graph's postprocess nodes (``pp/...``) take per run: median of 3 profiled ONNX Runtime
    runs after 2 warm-up runs."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.intra_op_num_threads = THREADS
    options.log_severity_level = 3
    options.profile_file_prefix = str(Path(onnx_model.path).with_suffix("")) + "-profile"
    session = ort.InferenceSession(onnx_model.path, options, providers=["CPUExecutionProvider"])
    for _ in range(5):  # 2 warm-up runs (first-run allocations), then 3 measured
        session.run(None, {"images": images})
    trace = json.loads(Path(session.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run")[2:]
    per_run = []
    for k, start in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else float("inf")
        per_run.append(sum(e["dur"] for e in trace if e.get("cat") == "Node" and start <= e["ts"] < end
                           and e.get("name", "").startswith("pp/") and e["name"].endswith("_kernel_time")))
    return float(np.median(per_run)) / 1000.0

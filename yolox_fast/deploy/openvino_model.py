"""OpenVINO: an exported ONNX model converted to OpenVINO IR, and the IR run like an ONNX file.

:func:`export_openvino` converts a file written by :func:`yolox_fast.deploy.onnx_export.export_onnx` (float32,
fp16 or INT8 QDQ; NMS in the graph or not; fixed or dynamic size) with ``openvino.convert_model`` and writes
a folder holding ``model.xml`` (the graph) and ``model.bin`` (the weights, float32 as exported: no fp16
compression). The export settings travel in the IR's runtime info (``<rt_info><yolox_fast><meta>``), the
same JSON as the ONNX metadata.

:class:`OpenVinoModel` opens such a folder (or its ``model.xml``) on the CPU and answers like
:class:`~yolox_fast.deploy.onnx_runtime.OnnxModel` (same attributes, ``run``, ``detect``,
``check_settings``). Float layers run in float32 (``INFERENCE_PRECISION_HINT=f32``: OpenVINO would pick
bf16 on CPUs that have it, which moves boxes by ~0.1 px); an INT8 IR's quantized layers run in int8.

OpenVINO is an optional dependency: ``pip install openvino`` (or ``yolox_fast[openvino]``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .onnx_export import METADATA_KEY
from .onnx_runtime import OnnxModel

#: File names inside an IR folder.
IR_XML, IR_BIN = "model.xml", "model.bin"
#: Where the export settings sit in the IR's runtime info.
RT_INFO_PATH = [METADATA_KEY, "meta"]


def _openvino():
    try:
        import openvino
    except ImportError:
        raise ImportError("OpenVINO is not installed: pip install openvino (or yolox_fast[openvino])") from None
    return openvino


def openvino_available() -> bool:
    """Whether the ``openvino`` package imports."""
    try:
        _openvino()
    except ImportError:
        return False
    return True


def is_openvino_path(path: str | os.PathLike) -> bool:
    """True for an ``.xml`` file or a folder holding :data:`IR_XML` (what :class:`OpenVinoModel` opens)."""
    path = Path(path)
    return path.suffix.lower() == ".xml" or (path.is_dir() and (path / IR_XML).is_file())


def export_openvino(onnx_path: str | os.PathLike, output: str | os.PathLike, overwrite: bool = False) -> dict:
    """Convert the yolox_fast ONNX file ``onnx_path`` to an OpenVINO IR folder ``output``.

    The folder is written beside its final place under a temporary name and renamed when complete: a
    failed export leaves no partial folder, and an existing one untouched unless the rename replaces it
    (``overwrite``).

    Returns:
        The export settings written into the IR (the ONNX file's, plus ``"format": "openvino"``).

    Raises:
        ImportError: OpenVINO is not installed.
        FileExistsError: ``output`` exists and ``overwrite`` is false.
        ValueError: ``output`` is a file, or ``onnx_path`` carries no yolox_fast metadata.
    """
    import onnx

    ov = _openvino()
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ValueError(f"output {output} is a file; an OpenVINO export writes a folder ({IR_XML}, {IR_BIN})")
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output} exists; choose another --output or pass --overwrite")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {output.parent}")
    props = {p.key: p.value for p in onnx.load(os.fspath(onnx_path), load_external_data=False).metadata_props}
    if METADATA_KEY not in props:
        raise ValueError(f"{onnx_path} was not exported by yolox_fast.export (no {METADATA_KEY!r} metadata)")
    meta = {**json.loads(props[METADATA_KEY]), "format": "openvino"}

    model = ov.convert_model(os.fspath(onnx_path))
    model.set_rt_info(json.dumps(meta), RT_INFO_PATH)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    old = None
    try:
        ov.save_model(model, staging / IR_XML, compress_to_fp16=False)
        for name in (IR_XML, IR_BIN):  # durable before the rename makes them visible
            with open(staging / name, "rb") as f:
                os.fsync(f.fileno())
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it 0700; a folder made by the user gets 0777 - umask
        if output.exists():  # overwrite: move the old folder aside first, drop it once the new one is in place
            old = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".old", dir=output.parent))
            os.replace(output, old / output.name)
        os.rename(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old is not None and not output.exists() and (old / output.name).exists():
            os.replace(old / output.name, output)  # put the earlier export back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return meta


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class OpenVinoModel(OnnxModel):
    """An OpenVINO IR written by :func:`export_openvino`, compiled for the CPU.

    Args:
        path: the IR folder or its ``model.xml``.
        device: ``"cpu"`` or None (this runner uses OpenVINO's CPU plugin only).
        threads: inference threads (default: OpenVINO's choice, all cores).

    Raises:
        ImportError: OpenVINO is not installed.
        FileNotFoundError: no such folder or file.
        ValueError: not an IR, or not one written by yolox_fast (no metadata); a device other than the CPU.
    """

    FORMAT = "OpenVINO"

    def __init__(self, path: str | os.PathLike, device: str | None = None, threads: int | None = None):
        ov = _openvino()
        self.path = os.fspath(path)
        xml = Path(self.path) / IR_XML if os.path.isdir(self.path) else Path(self.path)
        if not xml.is_file():
            raise FileNotFoundError(f"OpenVINO model not found: {xml}")
        if device is not None and device.split(":")[0] != "cpu":
            raise ValueError(f"device {device}: OpenVINO models run on the CPU here; use --device cpu")
        core = ov.Core()
        try:
            model = core.read_model(xml)
        except Exception as exc:  # OpenVINO raises RuntimeError with a multi-line report for a bad file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"{xml} is not an OpenVINO IR OpenVINO can read ({first})") from None
        if not model.has_rt_info(RT_INFO_PATH):
            raise ValueError(f"{xml} was not exported by yolox_fast.export (no {METADATA_KEY!r} runtime info); "
                             "export it with python -m yolox_fast.export --format openvino")
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.compiled = core.compile_model(model, "CPU", config)
        # elements of the IR's constants: the network's weights (an INT8 IR counts them once, as int8)
        self._parameter_count = sum(int(np.prod(list(op.get_output_shape(0)))) for op in model.get_ops()
                                    if op.get_type_name() == "Constant")
        self._read_meta(json.loads(model.get_rt_info(RT_INFO_PATH).astype(str)))
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]

    def _infer(self, images: np.ndarray) -> list[np.ndarray]:
        results = self.compiled(images)
        return [results[o] for o in self.compiled.outputs]

    def _runtime(self) -> str:
        return "OpenVINO CPU"

    def parameter_count(self) -> int:
        """Elements of the IR's constants (its weights; :meth:`OnnxModel.parameter_count` reads an ONNX file)."""
        return self._parameter_count


def open_exported(path: str | os.PathLike, device: str | None = None, threads: int | None = None) -> OnnxModel:
    """An exported model: :class:`OpenVinoModel` for an IR folder or ``.xml``, :class:`OnnxModel` otherwise."""
    if is_openvino_path(path):
        return OpenVinoModel(path, device=device, threads=threads)
    return OnnxModel(path, device=device, threads=threads)

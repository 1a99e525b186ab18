"""Deployment: ONNX export with decode and NMS inside the graph (:mod:`.onnx_export`, :mod:`.onnx_postprocess`),
INT8 quantization (:mod:`.quantize`), ONNX Runtime (:mod:`.onnx_runtime`) and OpenVINO (:mod:`.openvino_model`)."""

"""Deployment: ONNX export with decode and NMS inside the graph (:mod:`.onnx_export`, :mod:`.onnx_postprocess`)."""

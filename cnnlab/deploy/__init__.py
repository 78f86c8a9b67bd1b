"""Deploying a trained network: ONNX export checked against PyTorch (`export`), and a local
web server that classifies and explains uploaded images (`server`).

The submodules import their optional dependencies (onnx/onnxruntime, FastAPI/uvicorn) themselves,
so importing this package needs neither extra.
"""

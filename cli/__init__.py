"""The ``hapi-onnx`` command line: thin click commands over the library (installed as ``hapi_onnx_cli``)."""

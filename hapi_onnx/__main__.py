"""``python -m hapi_onnx`` is the ``hapi-onnx`` command."""

from hapi_onnx_cli.main import main

if __name__ == "__main__":
    main()

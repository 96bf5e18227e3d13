"""Device presets shipped with hapi-onnx: one JSON file per device (see README.md here).

Read them with :func:`hapi_onnx.profile.presets.load_preset`; this package only holds the data.
"""

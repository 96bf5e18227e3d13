"""Early exits on a frozen backbone: pooled features (ORT), heads (scipy), temperature, grafting.

Nothing is imported here on purpose: the on-device profiler and the bundle writer import
:mod:`hapi_onnx.exits.layout`, which must not pull in scipy or onnx-graphsurgeon. Import what
you need directly: :mod:`~hapi_onnx.exits.attach` (``attach_exits``, build time only),
:mod:`~hapi_onnx.exits.from_outputs` (``exits_from_outputs``), :mod:`~hapi_onnx.exits.features`,
:mod:`~hapi_onnx.exits.heads`, :mod:`~hapi_onnx.exits.temperature`, :mod:`~hapi_onnx.exits.pooling`.
"""

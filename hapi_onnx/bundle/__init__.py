"""Package a design as a staged early-exit bundle (build time: needs onnx).

The manifest schema lives in :mod:`hapi_onnx.runtime.manifest` so the runtime can read bundles
without onnx; this package writes what that schema describes.
"""

from hapi_onnx.bundle.stages import StageGraph, stage_graphs
from hapi_onnx.bundle.writer import bundle_contents, bundle_from_design, write_bundle

__all__ = ["StageGraph", "bundle_contents", "bundle_from_design", "stage_graphs", "write_bundle"]

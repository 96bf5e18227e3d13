"""hapi_onnx.runtime works with numpy + onnxruntime + the standard library only."""

import json
import subprocess
import sys
import textwrap

from test_bundle_models import make_ee_model, sample_images

from hapi_onnx.bundle import write_bundle
from hapi_onnx.choice import choices_from

BLOCKED = ["onnx", "onnx_graphsurgeon", "scipy", "click", "torch", "PIL", "matplotlib"]

SCRIPT = textwrap.dedent(
    """
    import json, sys

    BLOCKED = set(json.loads(sys.argv[1]))

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"blocked import of {name} (the runtime must not need it)")
            return None

    sys.meta_path.insert(0, Block())
    import numpy as np
    from hapi_onnx.runtime import DataError, EarlyExitModel

    model = EarlyExitModel.load(sys.argv[2])
    x = np.load(sys.argv[3])
    pred = model.predict(x)
    one = model.predict(x[:1])
    steps = list(model.progressive(x[:1]))
    try:
        model.predict(x[0])
    except DataError:
        pass
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    hapi = sorted(m for m in sys.modules if m.startswith("hapi_onnx"))
    print(json.dumps({"classes": pred.classes.tolist(), "one": int(one.classes[0]),
                      "steps": len(steps), "loaded": loaded, "hapi": hapi}))
    """
)


def test_runtime_needs_only_numpy_and_onnxruntime(tmp_path):
    bundle = write_bundle(make_ee_model(), choices_from(["exit1"], [0.9]), tmp_path / "m.hapi.zip")
    x = sample_images(6)
    import numpy as np

    np.save(tmp_path / "x.npy", x)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(BLOCKED), str(bundle), str(tmp_path / "x.npy")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    assert result["steps"] == 2 and len(result["classes"]) == 6
    assert result["one"] == result["classes"][0]
    assert set(result["hapi"]) <= {
        # choice (the threshold rule, numpy), artifact and files (bounded JSON, stdlib) are light too
        "hapi_onnx", "hapi_onnx.errors", "hapi_onnx.checks", "hapi_onnx.choice", "hapi_onnx.artifact",
        "hapi_onnx.files",
        "hapi_onnx.runtime", "hapi_onnx.runtime.archive",
        "hapi_onnx.runtime.manifest", "hapi_onnx.runtime.model", "hapi_onnx.runtime.monitor",
        "hapi_onnx.runtime.preprocess", "hapi_onnx.runtime.session",
    }

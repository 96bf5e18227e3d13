// @ts-check
/**
 * ONNX Runtime (1.29 on) keeps a telemetry store under `~/.cache/Microsoft/DeveloperTools/` and, in
 * onnxruntime-node, leaves an empty `/tmp/mat-debug-<pid>.log` per process. Its opt-out,
 * `ORT_DISABLE_TELEMETRY=1`, is read when the native library starts, so this module is imported
 * before `onnxruntime-node`; a value the environment already sets is kept.
 */
process.env.ORT_DISABLE_TELEMETRY ??= '1';

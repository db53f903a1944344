#!/usr/bin/env bash
# GPU check for the NVML exporter, run on a machine with an NVIDIA GPU (no Ray needed):
# records one NVML reading (the fixture tests/data/nvml-reading-*.json comes from this), then
# serves /metrics while a matmul loads the GPU, and prints the serveops_gpu_* series.
set -euo pipefail
OUT=${OUT:-$(mktemp -d)}
PY=${PY:-python3}
nvidia-smi -L
$PY -m stack.local.gpu_exporter --check
$PY -m stack.local.gpu_exporter --record "$OUT/nvml-reading.json"
$PY -m stack.local.gpu_exporter --port 9401 &
exporter=$!
trap 'kill $exporter 2>/dev/null || true' EXIT
$PY - <<'PY' &
import time, torch
a = torch.randn(8192, 8192, device="cuda")
end = time.time() + 25
while time.time() < end:
    a @ a
torch.cuda.synchronize()
PY
load=$!
sleep 15  # CUDA start-up, then NVML utilization is averaged over its sample period
$PY - "$OUT/metrics.txt" <<'PY'
import sys, urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9401/metrics", timeout=10).read().decode()
lines = [l for l in text.splitlines() if l.startswith("serveops_gpu")]
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
wait $load
cat "$OUT/nvml-reading.json"

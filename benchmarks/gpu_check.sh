#!/usr/bin/env bash
# One device call (issues 3, 12): the GPU, CuPy and NumPy versions, the GPU parity tests, the kernels
# executed on the CPU (tests/kernels, needs g++; skipped with the reason otherwise), then the benchmark
# with its MET / NOT MET table.
#
#   bash benchmarks/gpu_check.sh            # from the repository root or anywhere; under 5 minutes
#
# Needs python3 with CuPy, NumPy, h5py, PyYAML, pytest and hypothesis; no network, no Bokeh. The golden
# sets are used when found ($LSTMVIS_SHARED/golden, ../shared/golden or shared/golden), else those
# tests skip and say so. Figures also go to $OUT/bench_gpu.json when $OUT is set. Exit status: non-zero
# if a test failed or the GPU and NumPy answers differ.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
OUT_DIR=${OUT:-/tmp}
T0=$(date +%s)

echo "== device"
nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.mem \
    --format=csv,noheader 2>/dev/null || echo "nvidia-smi not available"
$PY - <<'EOF'
import numpy
try:
    import cupy
    rt = cupy.cuda.runtime
    props = rt.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    print(f"CuPy {cupy.__version__}, CUDA runtime {rt.runtimeGetVersion()}, driver {rt.driverGetVersion()}, "
          f"{name}, {props['multiProcessorCount']} SMs, NumPy {numpy.__version__}")
except Exception as exc:
    print(f"CuPy unavailable: {type(exc).__name__}: {exc} (NumPy {numpy.__version__})")
EOF
for cand in "${LSTMVIS_SHARED:-}" ../shared shared; do
    if [ -n "$cand" ] && [ -d "$cand/golden" ]; then export LSTMVIS_SHARED=$(cd "$cand" && pwd); break; fi
done
echo "golden sets: ${LSTMVIS_SHARED:-none found}/golden"

echo "== parity tests (tests/gpu: nvcc builds, stand-in, GPU beside NumPy; the conformance module's and the"
echo "   statistics' cupy-gpu entries: golden sets, random scenarios, scales, resident and streamed)"
timeout 100 $PY -m pytest -q -p no:cacheprovider -p no:randomly -rs tests/gpu
TESTS=$?
timeout 80 $PY -m pytest -q -p no:cacheprovider -p no:randomly -rs -k "cupy-gpu" \
    tests/engine/test_conformance.py tests/stats/test_stats_backends.py
CONFORM=$?
[ "$TESTS" -eq 0 ] && TESTS=$CONFORM
echo "tests exit status: $TESTS ($(( $(date +%s) - T0 )) s so far)"

echo "== the kernels executed on the CPU (tests/kernels: per-kernel tests and the executor's checks)"
CUEMU_CACHE=${CUEMU_CACHE:-/tmp/lstmvis-cuemu} timeout 50 $PY -m pytest -q -p no:cacheprovider -p no:randomly \
    -rs tests/kernels/test_kernels.py tests/kernels/test_executor.py
EXECUTED=$?
[ "$TESTS" -eq 0 ] && TESTS=$EXECUTED
echo "executed-kernel tests exit status: $EXECUTED ($(( $(date +%s) - T0 )) s so far)"

echo "== benchmark"
timeout 130 $PY benchmarks/bench_gpu.py --budget-s 115 --out "$OUT_DIR/bench_gpu.json"
BENCH=$?
echo "benchmark exit status: $BENCH; total $(( $(date +%s) - T0 )) s"
[ "$TESTS" -eq 0 ] && [ "$BENCH" -eq 0 ]

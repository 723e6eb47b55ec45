#!/usr/bin/env bash
# The CUDA checks and figures of hamer_ros, in one run on a machine with an NVIDIA GPU and PyTorch (no ROS, no
# MediaPipe needed): the model's CUDA tests (CPU vs CUDA in fp32/fp16/bf16, int8 refused on CUDA), seed-1 fixture
# weights made by the repository's own generator, and the forward benchmark in fp32 (TF32 off), bf16 and fp16,
# with and without torch.compile. Outputs go to $OUT (default /tmp/hamer_cuda): gpu.txt, pytest_cuda.txt,
# bench_hamer_cuda.txt, bench_hamer_cuda_compile.txt. Extra wheels (smplx, yacs) can be given in $WHEELS.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/hamer_cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/hamer_site "$WHEELS"/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/hamer_site"
fi
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
  lscpu | grep -m1 'Model name'; } 2>&1 | tee "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider test/test_hamer_model.py test/test_hamer_runtime.py -k 'cuda or CUDA' -rs \
  2>&1 | tee "$OUT/pytest_cuda.txt"
DATA=/tmp/hamer_fixture/_DATA
[ -f "$DATA/hamer_ckpts/checkpoints/hamer.ckpt" ] || python3 test/fixture_weights.py --seed 1 --out "$DATA" 2>&1 | tail -2
python3 benchmarks/bench_hamer.py --device cuda --data-dir "$DATA" --precisions fp32 bf16 fp16 --batches 1 8 32 \
  --repeats 10 2>&1 | tee "$OUT/bench_hamer_cuda.txt"
timeout 240 python3 benchmarks/bench_hamer.py --device cuda --data-dir "$DATA" --precisions fp32 bf16 --batches 1 8 \
  --repeats 5 --compile 2>&1 | tee "$OUT/bench_hamer_cuda_compile.txt"

#!/usr/bin/env bash
# The GPU checks and benchmarks of one lent CUDA machine, in one command (results under $OUT).
#   OUT=/tmp/gpu CSV=../shared/data/banking77/train.csv bash benchmarks/gpu_session.sh [tests|bench|all]
# tests: the CUDA-only tests (tests/*/test_*_cuda.py) and the bf16 matrix-product ceiling.
# bench: train_throughput A+B in bfloat16 (MFU), a profiled short A+B (op tables, kernel
#        launches per step), then the SmolLM2 full-data Banking77 recipes
#        (LoRA, full, QLoRA; the CPU run's overrides) side by side, evaluated on the GPU.
# Needs tuneforge importable (PYTHONPATH=src) and, for bench, the packaged SmolLM2; and
# transformers >= 5.18 (the H200 image's 5.17 converts Gemma 3's GGUF tokenizer wrongly, and
# tuneforge refuses it for any GGUF): carry transformers==5.18.0 (12.6 MB wheel; needs
# huggingface-hub>=1.31, tokenizers>=0.23.1,<0.24, safetensors>=0.8: compare `pip show` there).
# Session 11 (H200): tests 94 s; throughput A+B ~190 s with the GGUF conversion; the recipes
# ran ~1.3-2.3 steps/s side by side, so 1,500 steps need 11-20 min: set METHODS and
# RECIPE_LIMIT (seconds) to what the lease holds.
set -u
OUT=${OUT:?set OUT to a folder for the results}
CSV=${CSV:-../shared/data/banking77/train.csv}
what=${1:-all}
METHODS=${METHODS:-lora full qlora}
RECIPE_LIMIT=${RECIPE_LIMIT:-360}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if [[ $what == tests || $what == all ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
  python3 - <<'PY'
import torch, transformers, peft, accelerate, bitsandbytes
print("versions", torch.__version__, torch.version.cuda, transformers.__version__, peft.__version__,
      accelerate.__version__, bitsandbytes.__version__)
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
for _ in range(3):
    a @ b
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(10):
    a @ b
end.record()
torch.cuda.synchronize()
print(f"bf16 8192^3 matmul: {10 * 2 * 8192**3 / (start.elapsed_time(end) / 1e3) / 1e12:.0f} TFLOP/s")
PY
  timeout 300 python3 -m pytest -q -p no:cacheprovider -rs tests/train/test_train_cuda.py \
    tests/eval/test_eval_cuda.py 2>&1 | tee "$OUT/tests.log" | tail -25
fi

if [[ $what == bench || $what == all ]]; then
  timeout 300 python3 benchmarks/train_throughput.py --device cuda --csv "$CSV" \
    --workdir /tmp/tt-cuda >"$OUT/throughput.json" 2>"$OUT/throughput.err"
  echo "throughput: $(cat "$OUT/throughput.json")"
  tail -3 "$OUT/throughput.err"
  # Where each variant's step time goes (session 11's open question: B 0.76x A on an H200).
  timeout 240 python3 benchmarks/train_throughput.py --device cuda --csv "$CSV" --max-steps 20 \
    --profile-steps 5 --workdir /tmp/tt-profile >"$OUT/profile.json" 2>"$OUT/profile.err"
  cp /tmp/tt-profile/A-profile.txt /tmp/tt-profile/B-profile.txt "$OUT/" 2>/dev/null
  echo "profile: $(cat "$OUT/profile.json")"
  for method in $METHODS; do
    timeout "$RECIPE_LIMIT" python3 benchmarks/banking77.py --model smollm2-135m --method "$method" \
      --per-class full --csv "$CSV" --out "/tmp/b77-gpu/$method" --eval-split test \
      --baselines none --scoring exact --eval-device cuda \
      train.epochs=3 data.group_by_length=true train.eval_every=250 \
      train.early_stopping_patience=2 train.save_every=1000 \
      >"$OUT/b77-$method.json" 2>"$OUT/b77-$method.err" &
  done
  wait
  for method in $METHODS; do
    echo "b77 $method: $(cut -c1-1500 "$OUT/b77-$method.json")"
    tail -3 "$OUT/b77-$method.err"
  done
fi

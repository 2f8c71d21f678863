#!/usr/bin/env bash
# Banking77 full-data recipes side by side on one CUDA GPU: each job trains once (`tuneforge
# train` through benchmarks/banking77.py), then scores val and test at the same time.
#
#   OUT=/tmp/b77-gpu DEADLINE=$(( $(date +%s) + 600 )) bash benchmarks/gpu_banking77.sh JOB...
#
# JOB is NAME:MODEL:METHOD:SCORING[:key=value,key=value...], e.g.
#   smol-lora:smollm2-135m:lora:exact:train.batch_size=64,train.lr=2e-3
# COMMON holds the overrides every job gets (default: the CPU full-data runs' 3 epochs with
# length grouping). Choose between jobs on result-val.json alone; result-test.json is the
# held-out figure of the chosen one.
# DEADLINE (seconds since the epoch) bounds every command, so the end of a lease leaves logs
# rather than a hang. DEVICE=cpu LIMIT=20 COMMON=train.max_steps=2 is the CPU smoke test.
# Results: OUT/NAME/{result-train,result-val,result-test}.json, log.txt, run/; OUT/NAME.err.
set -u
OUT=${OUT:?set OUT to a folder for the results}
CSV=${CSV:-../shared/data/banking77/train.csv}
DEADLINE=${DEADLINE:-$(($(date +%s) + 3600))}
DEVICE=${DEVICE:-cuda}
COMMON=${COMMON:-train.epochs=3 data.group_by_length=true train.save_every=100000}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}

# Seconds to the deadline, or a failure when fewer than 5 are left (`timeout 0` never stops).
seconds_left() {
  local left=$((DEADLINE - $(date +%s)))
  ((left >= 5)) && echo "$left"
}

run_job() {
  local name model method scoring extra left
  IFS=: read -r name model method scoring extra <<<"$1"
  local args=(--model "$model" --method "$method" --per-class full --csv "$CSV"
    --out "$OUT/$name" --baselines none --scoring "$scoring" --eval-device "$DEVICE")
  [[ -n ${LIMIT:-} ]] && args+=(--limit "$LIMIT")
  # shellcheck disable=SC2206  # word splitting of the override lists is the point
  local overrides=($COMMON ${extra//,/ })
  left=$(seconds_left) || { echo "$name: no time left to train"; return; }
  if ! timeout "$left" python3 benchmarks/banking77.py "${args[@]}" --no-eval "${overrides[@]}" \
    >/dev/null 2>>"$OUT/$name.err"; then
    echo "$name: training failed or ran out of time (see $OUT/$name.err)"
    return
  fi
  for split in val test; do
    left=$(seconds_left) || break
    timeout "$left" python3 benchmarks/banking77.py "${args[@]}" --eval-split "$split" \
      "${overrides[@]}" >/dev/null 2>>"$OUT/$name.err" &
  done
  wait
  echo "$name: finished at $(date +%T)"
}

mkdir -p "$OUT"
for job in "$@"; do run_job "$job" & done
wait

# One line per job: wall times, steps, val/test accuracy with intervals.
python3 - "$OUT" "$@" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for job in sys.argv[2:]:
    name = job.split(":")[0]
    line = {"job": job}
    for split in ("train", "val", "test"):
        path = out / name / f"result-{split}.json"
        if path.is_file():
            r = json.loads(path.read_text())
            line["train_wall_s"] = r.get("train_wall_s")
            tuned = r.get("variants", {}).get("tuned")
            if tuned:
                line[split] = [tuned["accuracy"], tuned["ci95"], r.get("eval_s")]
    metrics = out / name / "run" / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
        line["val_losses"] = [(r["step"], round(r["val/loss"], 4)) for r in rows if "val/loss" in r]
        steps = [r for r in rows if "train/examples_per_s" in r]
        if steps:
            keys = ("step", "train/loss", "train/examples_per_s")
            line["last"] = {k: round(steps[-1][k], 4) for k in keys}
    print(json.dumps(line))
PY

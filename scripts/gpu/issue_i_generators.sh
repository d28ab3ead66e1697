#!/usr/bin/env bash
# Issue I's leak-free generators in one command (scripts/gpu/README.md, docs/benchmarks.md "Scarce labels (I)"):
# the unconditional base (configs/ebhi_denoiser_uncond_base_gpu.yaml: every label and mask dropped), time-boxed,
# then the 10 per-subset fine-tunes (scripts/issue_i_leakfree.py --train-only: `data subset --unlabel-rest` +
# `train denoiser --init BASE` with configs/ebhi_denoiser_subset_finetune.yaml), several at once on the one GPU;
# float16 weights, run records and logs bundled into $OUT (at most 8 files < 16 MiB: 7 tar parts + SHA256SUMS).
#
# On the device, from the repo root, with .gpu carried (staged here by scripts/gpu/stage.sh):
#     bash scripts/gpu/issue_i_generators.sh
# CPU dry run here (local .venv, 24 tiles, 2 seeds, a few steps of tiny batches, a temporary $OUT):
#     HS_DRY_RUN=1 OMP_NUM_THREADS=1 nice -n 19 bash scripts/gpu/issue_i_generators.sh
# Here again:  .venv/bin/python scripts/gpu/issue_i.py receive <files_at> --dest bench_out/issue_i/leakfree_gpu
#
# Timing: everything ends HS_BUDGET_S (480) s after the start. The fine-tunes get the last HS_FT_WINDOW_S (170) s
# before HS_TAIL_S (60, for finalising, shipping and bundling); the base gets what is left before that, its steps
# sized from an assumed rate (HS_BASE_RATE: 6 steps/s of batch 256; the shipped-size denoiser did 7.3 on an
# H100) since its cosine schedule needs a fixed length. A timeout still leaves a model, from the last checkpoint
# (scripts/gpu/issue_h.py finalize): every 100 steps for the base, every 50 for a fine-tune.
# Settings (environment): HS_FRACTIONS (0.05,0.1), HS_SEEDS (5), HS_JOBS (10: fine-tunes at once), HS_FT_THREADS
# (1), HS_THREADS (4, the base), HS_BASE_STEPS / HS_FT_STEPS (fixed step counts), HS_BASE_RATE, HS_BUDGET_S,
# HS_FT_WINDOW_S, HS_TAIL_S, HS_STARTUP_S. A rerun on the same (warm) machine keeps a base that has a model
# (finished or finalised: the fine-tunes start from it) and resumes every unfinished fine-tune from its checkpoints.
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh  # T0, REPO, DRY; hs_paths, now, say, left, fail, hs_python, hs_data
hs_paths issue_i
if [ "$DRY" = 1 ]; then
  BUDGET=${HS_BUDGET_S:-900}; TAIL=${HS_TAIL_S:-120}; STARTUP=${HS_STARTUP_S:-60}; THREADS=${HS_THREADS:-1}
  TILES=${HS_DRY_TILES:-24}; SEEDS=${HS_SEEDS:-2}; JOBS=${HS_JOBS:-2}; FT_WINDOW=${HS_FT_WINDOW_S:-420}; BEAT=20
else
  BUDGET=${HS_BUDGET_S:-480}; TAIL=${HS_TAIL_S:-60}; STARTUP=${HS_STARTUP_S:-30}; THREADS=${HS_THREADS:-4}
  TILES=0; SEEDS=${HS_SEEDS:-5}; JOBS=${HS_JOBS:-10}; FT_WINDOW=${HS_FT_WINDOW_S:-170}; BEAT=30
fi
FRACTIONS=${HS_FRACTIONS:-0.05,0.1}
FT_THREADS=${HS_FT_THREADS:-1}
BASE_RATE=${HS_BASE_RATE:-6}
mkdir -p "$OUT" "$WORK"
LOG=$WORK/issue_i.log  # comes back inside the bundle (and beside it when fewer than 7 parts leave room)
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
say "issue I generators: dry_run=$DRY fractions=$FRACTIONS seeds=$SEEDS jobs=$JOBS budget=${BUDGET}s" \
    "fine-tune window=${FT_WINDOW}s tail=${TAIL}s work=$WORK out=$OUT"

# ---- 1-2. Python (the device's python3 + carried wheels; the local .venv in a dry run) and data -------------
hs_python
hs_data "$TILES"

# ---- 3. Sized configs (kept on a rerun, so the runs resume) -------------------------------------------------
FT_START=$(( T0 + BUDGET - TAIL - FT_WINDOW ))  # the base must be done by then
BASE_WINDOW=$(( FT_START - $(now) - STARTUP ))
[ "$BASE_WINDOW" -gt 20 ] || fail "only ${BASE_WINDOW}s left for the base"
if [ "$DRY" = 1 ]; then  # tiny batches: the paths, not the models
  BASE_STEPS=${HS_BASE_STEPS:-6}; FT_STEPS=${HS_FT_STEPS:-4}
  BASE_EXTRA=(--batch-size 8 --checkpoint-every 2 --log-every 1); FT_EXTRA=(--batch-size 8 --checkpoint-every 2 --log-every 1)
else
  BASE_STEPS=${HS_BASE_STEPS:-$(awk -v r="$BASE_RATE" -v w="$BASE_WINDOW" 'BEGIN {s = int(r * w); print (s < 1 ? 1 : s)}')}
  FT_STEPS=${HS_FT_STEPS:-300}
  BASE_EXTRA=(--checkpoint-every 100 --log-every 25); FT_EXTRA=(--checkpoint-every 50 --log-every 25)
fi
if [ ! -f "$WORK/base.yaml" ]; then
  "$PY" scripts/gpu/issue_h.py config configs/ebhi_denoiser_uncond_base_gpu.yaml --steps "$BASE_STEPS" --scale-warmup \
    "${BASE_EXTRA[@]}" --out "$WORK/base.yaml" || fail "base config"
fi
if [ ! -f "$WORK/finetune.yaml" ]; then
  "$PY" scripts/gpu/issue_h.py config configs/ebhi_denoiser_subset_finetune.yaml --steps "$FT_STEPS" --scale-warmup \
    "${FT_EXTRA[@]}" --out "$WORK/finetune.yaml" || fail "fine-tune config"
fi

heartbeat() {  # a line every BEAT s: the base's last log line, then how many fine-tunes finished
  while sleep "$BEAT"; do
    metrics=$WORK/base/runs/denoiser/metrics.jsonl
    if [ ! -f "$WORK/base/denoiser/histosynth.json" ] && [ -f "$metrics" ]; then
      say "base: $(tail -n 1 "$metrics" | cut -c 1-200)"
    elif [ -d "$WORK/leakfree/train" ]; then
      say "fine-tunes: $(ls -d "$WORK"/leakfree/train/*/denoiser 2>/dev/null | wc -l) finished," \
          "$(ls -d "$WORK"/leakfree/train/*/runs/denoiser/checkpoints 2>/dev/null | wc -l) started"
    fi
    command -v nvidia-smi >/dev/null && say "gpu: $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"
  done
}
heartbeat &
BEAT_PID=$!
REASON="time budget of issue I's GPU run (scripts/gpu/issue_i_generators.sh)"

# ---- 4. The unconditional base, stopped at FT_START (finalised from its last checkpoint if stopped) ---------
if [ ! -f "$WORK/base/denoiser/histosynth.json" ]; then
  LIMIT=$(( FT_START - $(now) ))
  say "base: $BASE_STEPS steps (stopped after ${LIMIT}s)"
  start=$(now)
  timeout -k 15 "$LIMIT" "$PY" -m histosynth.cli.app train denoiser --data "$DATA/manifest.csv" --classes ebhi \
    --out "$WORK/base" --autoencoder src/histosynth/weights/default/autoencoder --config "$WORK/base.yaml" \
    --threads "$THREADS" > "$WORK/base.out" 2>&1
  rc=$?
  echo "$rc $(( $(now) - start ))" > "$WORK/base.rc"
  case "$rc" in 0) state=finished ;; 124|137) state="stopped by the time budget" ;; *) state=FAILED ;; esac
  say "base: exit $rc after $(( $(now) - start ))s ($state)"
  if [ "$state" = FAILED ]; then echo "---- last lines of the base's output"; tail -n 25 "$WORK/base.out" | cut -c 1-300; fi
  if [ "$rc" != 0 ]; then
    timeout 120 "$PY" scripts/gpu/issue_h.py finalize denoiser --out "$WORK/base" --data "$DATA/manifest.csv" \
      --classes ebhi --wall-seconds "$(( $(now) - start ))" --reason "$REASON" || say "base: nothing to finalise"
  fi
fi
[ -f "$WORK/base/denoiser/histosynth.json" ] || { kill "$BEAT_PID" 2>/dev/null; fail "no base denoiser"; }

# ---- 5. The fine-tunes: the driver, JOBS cells at once, stopped at the deadline; stragglers finalised -------
LIMIT=$(left)
say "fine-tunes: $FT_STEPS steps each, $JOBS at once (stopped after ${LIMIT}s)"
start=$(now)
timeout -k 15 "$LIMIT" "$PY" scripts/issue_i_leakfree.py --base "$WORK/base" --data "$DATA/manifest.csv" --classes ebhi \
  --fractions "$FRACTIONS" --seeds "$SEEDS" --out "$WORK/leakfree" --finetune-config "$WORK/finetune.yaml" \
  --jobs "$JOBS" --threads "$FT_THREADS" --train-only
rc=$?
echo "$rc $(( $(now) - start ))" > "$WORK/finetunes.rc"
say "fine-tunes: exit $rc after $(( $(now) - start ))s"
kill "$BEAT_PID" 2>/dev/null; wait "$BEAT_PID" 2>/dev/null
FINAL_PIDS=()
for cell in "$WORK"/leakfree/train/*/; do
  cell=${cell%/}; name=$(basename "$cell")
  [ -f "$cell/denoiser/histosynth.json" ] && continue
  ( timeout 120 "$PY" scripts/gpu/issue_h.py finalize denoiser --out "$cell" --classes ebhi \
      --data "$WORK/leakfree/subsets/$name/manifest.csv" --init "$WORK/base" --reason "$REASON" \
      > "$WORK/finalize_$name.out" 2>&1 && say "$name: finalised from its last checkpoint" \
      || say "$name: nothing to finalise ($(tail -n 1 "$WORK/finalize_$name.out" | cut -c 1-160))" ) &
  FINAL_PIDS+=($!)
done
[ ${#FINAL_PIDS[@]} -gt 0 ] && wait "${FINAL_PIDS[@]}"

# ---- 6. Ship float16, summary, bundle ------------------------------------------------------------------------
BUNDLE=$WORK/bundle/issue_i
rm -rf "$WORK/bundle"; mkdir -p "$BUNDLE/logs"
timeout 150 "$PY" scripts/gpu/issue_i.py ship --work "$WORK" --bundle "$BUNDLE" || say "ship failed"
cp "$WORK/base.out" "$BUNDLE/logs/base.out" 2>/dev/null
"$PY" -m pip list --format=freeze > "$BUNDLE/logs/pip_freeze.txt" 2>/dev/null
command -v nvidia-smi >/dev/null && nvidia-smi > "$BUNDLE/logs/nvidia-smi.txt" 2>&1
"$PY" scripts/gpu/issue_i.py summary --work "$WORK" --bundle "$BUNDLE" --t0 "$T0" --budget "$BUDGET" --dry "$DRY" \
  || say "summary failed"
cp "$LOG" "$BUNDLE/logs/issue_i.log"
if "$PY" scripts/gpu/issue_h.py bundle --root "$BUNDLE" --out "$OUT" --name issue_i --max-parts 7; then
  [ "$(ls "$OUT" | wc -l)" -lt 8 ] && cp "$LOG" "$OUT/issue_i.log"
else
  say "bundle failed: the log alone comes back"; cp "$LOG" "$OUT/issue_i.log"
fi
say "done; files in \$OUT ($(du -sb "$OUT" | cut -f1) bytes):"
ls -l "$OUT"
exec 1>&- 2>&-  # let tee write the log's last lines before the command returns
wait "$TEE_PID" 2>/dev/null

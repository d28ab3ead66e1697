#!/usr/bin/env bash
# Issue H's GPU legs in one command (scripts/gpu/README.md, docs/models.md "Prepared GPU leg (issue H)"):
# the decoder GAN fine-tune and a denoiser run, at once on the one GPU, inside a fixed time budget; then
# float16 weights (scripts/ship_model.py), metrics and logs, bundled into $OUT (at most 8 files < 16 MiB).
#
# On the device, from the repo root, with .gpu carried (staged here by scripts/gpu/stage.sh):
#     bash scripts/gpu/issue_h_legs.sh
# CPU dry run here (local .venv, 24 tiles, a few steps, tiny batches, a temporary $OUT; ~5 min):
#     HS_DRY_RUN=1 OMP_NUM_THREADS=1 nice -n 19 bash scripts/gpu/issue_h_legs.sh
#
# Timing: everything ends HS_BUDGET_S (480) seconds after the start; the legs are stopped (timeout) HS_TAIL_S
# (60) before that, to finalise, ship and bundle. The denoiser's steps are sized to end before the deadline from
# an estimated rate (its cosine schedule needs a fixed length); the decoder (constant learning rate) is
# time-boxed: it gets more steps than it can do and is stopped at the deadline, after which its last checkpoint's
# EMA weights become the model (scripts/gpu/issue_h.py finalize), so stopping early is just a shorter run.
# Settings (environment):
#   HS_DENOISER=v2|leg|none  v2 (default): configs/ebhi_denoiser_gpu_v2.yaml from scratch (15.3 M parameters);
#                            leg: continue the shipped denoiser (--init) with configs/ebhi_denoiser_leg_gpu.yaml
#   HS_DECODER=1|0           run the decoder leg (configs/ebhi_decoder_gan_gpu.yaml, --base the shipped model)
#   HS_DN_RATE, HS_DEC_RATE  steps/s assumed while both run (defaults: v2 2.5, leg 7; decoder 8 = an upper bound)
#   HS_DN_STEPS, HS_DEC_STEPS  fixed step counts instead; HS_BUDGET_S, HS_TAIL_S, HS_STARTUP_S, HS_THREADS
# Rerunning on the same (warm) machine resumes both legs from their checkpoints (same generated configs).
set -uo pipefail
cd "$(dirname "$0")/../.."
source scripts/gpu/common.sh  # T0, REPO, DRY; hs_paths, now, say, left, fail, hs_python, hs_data
hs_paths issue_h
if [ "$DRY" = 1 ]; then
  BUDGET=${HS_BUDGET_S:-420}; TAIL=${HS_TAIL_S:-90}; STARTUP=${HS_STARTUP_S:-60}; THREADS=${HS_THREADS:-1}
  TILES=${HS_DRY_TILES:-24}; BEAT=20; DEC_LIMIT=${HS_DEC_LIMIT_S:-150}
else
  BUDGET=${HS_BUDGET_S:-480}; TAIL=${HS_TAIL_S:-60}; STARTUP=${HS_STARTUP_S:-30}; THREADS=${HS_THREADS:-4}
  TILES=0; BEAT=30; DEC_LIMIT=${HS_DEC_LIMIT_S:-}
fi
mkdir -p "$OUT" "$WORK"
LOG=$OUT/issue_h.log
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!

DENOISER=${HS_DENOISER:-v2}
DECODER=${HS_DECODER:-1}
case "$DENOISER" in
  v2) DN_BASE=configs/ebhi_denoiser_gpu_v2.yaml; DN_RATE=${HS_DN_RATE:-2.5}; DN_INIT=() ;;
  leg) DN_BASE=configs/ebhi_denoiser_leg_gpu.yaml; DN_RATE=${HS_DN_RATE:-7}; DN_INIT=(--init src/histosynth/weights/default) ;;
  none) DN_BASE=; DN_RATE=0; DN_INIT=() ;;
  *) fail "HS_DENOISER must be v2, leg or none" ;;
esac
DEC_RATE=${HS_DEC_RATE:-8}
say "issue H GPU legs: dry_run=$DRY denoiser=$DENOISER decoder=$DECODER budget=${BUDGET}s tail=${TAIL}s work=$WORK out=$OUT"

# ---- 1. Python: the device's python3 + carried wheels; the local .venv in a dry run (common.sh) -----------
hs_python effnet  # the decoder's perceptual loss reads the trimmed EfficientNet (also in a dry run)

# ---- 2. Data: the packed train split -> PNG tiles + manifest the project's reader takes -------------------
hs_data "$TILES"

# ---- 3. Sized configs (kept on a rerun, so the legs resume) -----------------------------------------------
WINDOW=$(( $(left) - STARTUP ))
[ "$WINDOW" -gt 20 ] || fail "only ${WINDOW}s left for training"
steps() { awk -v r="$1" -v w="$WINDOW" 'BEGIN {s = int(r * w); print (s < 1 ? 1 : s)}'; }
DEC_STEPS=${HS_DEC_STEPS:-$(steps "$DEC_RATE")}
DN_STEPS=${HS_DN_STEPS:-$(steps "$DN_RATE")}
DEC_EXTRA=(); DN_EXTRA=()
if [ "$DRY" = 1 ]; then  # tiny batches; the decoder cannot finish, so its timeout and finalise path run
  DEC_STEPS=${HS_DEC_STEPS:-1000}; DN_STEPS=${HS_DN_STEPS:-6}
  DEC_EXTRA=(--batch-size 2 --checkpoint-every 2 --log-every 1); DN_EXTRA=(--batch-size 8 --checkpoint-every 2 --log-every 1)
else
  DEC_EXTRA=(--checkpoint-every 50 --log-every 25); DN_EXTRA=(--checkpoint-every 100 --log-every 25)
fi
if [ "$DECODER" = 1 ] && [ ! -f "$WORK/decoder.yaml" ]; then
  "$PY" scripts/gpu/issue_h.py config configs/ebhi_decoder_gan_gpu.yaml --steps "$DEC_STEPS" --max-perceptual-stages 4 \
    "${DEC_EXTRA[@]}" --out "$WORK/decoder.yaml" || fail "decoder config"
fi
if [ -n "$DN_BASE" ] && [ ! -f "$WORK/denoiser.yaml" ]; then
  "$PY" scripts/gpu/issue_h.py config "$DN_BASE" --steps "$DN_STEPS" --scale-warmup "${DN_EXTRA[@]}" \
    --out "$WORK/denoiser.yaml" || fail "denoiser config"
fi

# ---- 4. The legs, at once, each under timeout ----------------------------------------------------------
CLI=("$PY" -m histosynth.cli.app)
LEG_PIDS=()
launch() {  # name limit_s command...: runs in the background, writes WORK/name.rc = "rc seconds"
  local name=$1 limit=$2; shift 2
  say "start $name (stopped after ${limit}s): ${*:3}"
  ( start=$(now); timeout -k 15 "$limit" "$@" > "$WORK/$name.out" 2>&1; echo "$? $(( $(now) - start ))" > "$WORK/$name.rc" ) &
  LEG_PIDS+=($!)
}
LIMIT_S=$(left)
if [ "$DECODER" = 1 ]; then
  launch decoder "$(( ${DEC_LIMIT:-$LIMIT_S} < LIMIT_S ? ${DEC_LIMIT:-$LIMIT_S} : LIMIT_S ))" "${CLI[@]}" train decoder --data "$DATA/manifest.csv" --classes ebhi \
    --base src/histosynth/weights/default --out "$WORK/decoder" --config "$WORK/decoder.yaml" --threads "$THREADS"
fi
if [ -n "$DN_BASE" ]; then
  launch denoiser "$LIMIT_S" "${CLI[@]}" train denoiser --data "$DATA/manifest.csv" --classes ebhi \
    --autoencoder src/histosynth/weights/default/autoencoder "${DN_INIT[@]}" --out "$WORK/denoiser" \
    --config "$WORK/denoiser.yaml" --threads "$THREADS"
fi
( while sleep "$BEAT"; do
    for name in decoder denoiser; do
      metrics=$WORK/$name/runs/$name/metrics.jsonl
      [ -f "$metrics" ] && say "$name: $(tail -n 1 "$metrics" | cut -c 1-230)"
    done
    command -v nvidia-smi >/dev/null && say "gpu: $(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader)"
  done ) &
BEAT_PID=$!
[ ${#LEG_PIDS[@]} -gt 0 ] && wait "${LEG_PIDS[@]}"
kill "$BEAT_PID" 2>/dev/null; wait "$BEAT_PID" 2>/dev/null
for name in decoder denoiser; do
  [ -f "$WORK/$name.rc" ] || continue
  read -r rc secs < "$WORK/$name.rc"
  case "$rc" in 0) state=finished ;; 124|137) state="stopped by the time budget" ;; *) state=FAILED ;; esac
  say "$name: exit $rc after ${secs}s ($state)"
  [ "$state" = FAILED ] || continue
  echo "---- last lines of $name's output"; tail -n 25 "$WORK/$name.out" | cut -c 1-300
done

# ---- 5. Finalise (a stopped leg: its last checkpoint's EMA), ship float16, bundle -------------------------
BUNDLE=$WORK/bundle/issue_h
rm -rf "$WORK/bundle"; mkdir -p "$BUNDLE/ship" "$BUNDLE/runs" "$BUNDLE/logs"
for name in decoder denoiser; do
  [ -f "$WORK/$name.rc" ] || continue
  read -r rc secs < "$WORK/$name.rc"
  part=$([ "$name" = decoder ] && echo autoencoder || echo denoiser)
  timeout 120 "$PY" scripts/gpu/issue_h.py finalize "$name" --out "$WORK/$name" --data "$DATA/manifest.csv" \
    --classes ebhi --base src/histosynth/weights/default ${DN_INIT[1]:+--init "${DN_INIT[1]}"} --wall-seconds "$secs" \
    || say "$name: nothing to finalise"
  if [ -f "$WORK/$name/$part/histosynth.json" ]; then
    source_dir=$([ "$name" = decoder ] && echo "$WORK/decoder/autoencoder" || echo "$WORK/denoiser")
    timeout 120 "$PY" scripts/ship_model.py "$source_dir" "$BUNDLE/ship/$name" || say "$name: ship_model failed"
  fi
  mkdir -p "$BUNDLE/runs/$name"
  for file in metrics.jsonl run.json; do
    [ -f "$WORK/$name/runs/$name/$file" ] && cp "$WORK/$name/runs/$name/$file" "$BUNDLE/runs/$name/"
  done
  [ -f "$WORK/$name.yaml" ] && cp "$WORK/$name.yaml" "$BUNDLE/runs/$name/config.yaml"
  tail -c 200000 "$WORK/$name.out" > "$BUNDLE/logs/$name.out"
done
"$PY" -m pip list --format=freeze > "$BUNDLE/logs/pip_freeze.txt" 2>/dev/null
command -v nvidia-smi >/dev/null && nvidia-smi > "$BUNDLE/logs/nvidia-smi.txt" 2>&1
"$PY" - "$WORK" "$BUNDLE" "$T0" "$BUDGET" "$DENOISER" "$DRY" <<'EOF' || say "summary failed"
import json, sys, time, zipfile
from pathlib import Path
work, bundle, t0, budget, denoiser, dry = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:]
summary = {"dry_run": dry == "1", "budget_s": int(budget), "elapsed_s_at_summary": round(time.time() - t0),
           "denoiser_variant": denoiser, "legs": {}}
with zipfile.ZipFile(".gpu/ebhi_train.zip") as pack:
    info = json.loads(pack.read("pack.json"))
summary["data"] = {k: info[k] for k in ("rows", "codec", "quality", "psnr_vs_source_mean", "psnr_vs_source_min")}
for name, part in (("decoder", "autoencoder"), ("denoiser", "denoiser")):
    rc_file = work / f"{name}.rc"
    if not rc_file.is_file():
        continue
    rc, secs = rc_file.read_text().split()
    leg = {"exit": int(rc), "wall_s": int(secs), "stopped_by_budget": rc in ("124", "137")}
    run = work / name / "runs" / name
    if (run / "run.json").is_file():
        leg["planned_steps"] = json.loads((run / "run.json").read_text())["train"]["steps"]
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()] \
        if (run / "metrics.jsonl").is_file() else []
    if lines:
        rates = [l["items_per_s"] for l in lines[1:]] or [lines[0]["items_per_s"]]
        leg.update(logged_steps=lines[-1]["step"], last_log=lines[-1], items_per_s_mean=round(sum(rates) / len(rates), 1))
    facts = work / name / part / "histosynth.json"
    if facts.is_file():
        payload = json.loads(facts.read_text())
        leg["model"] = {k: payload.get(k) for k in ("training", "stopped_early") if k in payload}
    leg["shipped"] = (bundle / "ship" / name).is_dir()
    summary["legs"][name] = leg
(bundle / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
EOF
cp "$LOG" "$BUNDLE/logs/issue_h.log" 2>/dev/null
[ -f "$BUNDLE/summary.json" ] && cp "$BUNDLE/summary.json" "$OUT/summary.json"
"$PY" scripts/gpu/issue_h.py bundle --root "$BUNDLE" --out "$OUT" || fail "bundle"
say "done; files in \$OUT:"
ls -l "$OUT"
exec 1>&- 2>&-  # let tee write the log's last lines before the command returns
wait "$TEE_PID" 2>/dev/null

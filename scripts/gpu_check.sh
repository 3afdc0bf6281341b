#!/usr/bin/env bash
# The GPU check of auras (docs/gpu.md): on a machine with CUDA it installs what it needs, runs the
# gpu-marked tests, then measures sequential vs auras for an OpenVLA-scale random-weight tiny-vla in
# bfloat16 (scripts/vla_scale_benchmark.py): on one GPU (local backend) and, when two or more GPUs
# are visible, with perception and generation on a GPU each (Ray actors); compiled and not; and the fleet
# figure (scripts/fleet_capacity.py: robots one engine serves at 30 Hz with p99 staleness under 100 ms). It writes
# one JSON summary and prints it as markdown tables. Sized to finish within --budget-s (default 450 s,
# install included) on one H100/H200: a stage that would not fit is recorded as skipped.
#
#   bash scripts/gpu_check.sh [options]
#
#   --out PATH          the JSON summary (default runs/gpu_check/summary.json)
#   --work DIR          logs and per-stage files (default: beside the summary, <summary stem>.d/)
#   --dry-run           print every command and run none of them
#   --cpu-smoke         the whole path on the CPU at a tiny scale, with the interpreter as it is (no install)
#   --python PY         use this interpreter (installs into it unless --no-install); default: a venv
#   --venv DIR          the venv to create and install into (default .tmp/venv-gpu)
#   --no-install        install nothing: the interpreter must already have a CUDA torch and auras' needs
#   --torch-version V   the CUDA torch to install (default 2.13.0, from the default index)
#   --reuse-torch       keep a CUDA torch the interpreter already sees instead of installing one
#   --wheels DIR        install offline, from the wheels in DIR only (pip --no-index --find-links DIR)
#   --scale S           TinyVLA.large_config(S) (default 0.5: 0.9 B parameters; 1.0 is 7.0 B)
#   --steps N           timed steps per configuration (default 50)
#   --warmup N          untimed steps first, where compilation happens (default 8)
#   --compile LIST      policy.compile settings to compare (default off,reduce-overhead)
#   --pp-generation N   auras generation stages (default 4)
#   --tests PATHS       what the gpu-marked run collects (default tests)
#   --budget-s S        wall-clock budget of the whole check (default 450; --cpu-smoke 170)
#   --skip-tests        do not run the gpu-marked tests
#   -h, --help          this text
#
# Exit status: 0 when every stage that applies here ran and passed, 1 otherwise (the summary says which),
# 2 on bad usage.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/scripts/gpu_check.sh"
BENCH="$ROOT/scripts/vla_scale_benchmark.py"

usage() { sed -n '2,/^set -euo/p' "$SELF" | sed '$d' | sed 's/^# \{0,1\}//'; }

show() {  # a command as it would be typed
    local arg out="+"
    for arg in "$@"; do
        if [[ $arg =~ ^[A-Za-z0-9_./=:,@+%-]+$ ]]; then out+=" $arg"; else out+=" '${arg//\'/\'\\\'\'}'"; fi
    done
    echo "$out"
}

x() { show "$@"; [[ -n ${GC_DRY_RUN:-} ]] || "$@"; }  # show, then run unless this is a dry run

# -- the install step, run by the check itself under a timeout (`gpu_check.sh __setup`) -----------------
if [[ ${1:-} == "__setup" ]]; then
    cd "$ROOT"
    pip_opts=(--quiet)
    if [[ -n ${GC_WHEELS:-} ]]; then pip_opts+=(--no-index --find-links "$GC_WHEELS" --no-build-isolation); fi
    if [[ -z ${GC_PYTHON:-} ]]; then
        if [[ ! -x "$GC_VENV/bin/python" ]]; then
            # System site packages stay visible, so --reuse-torch can keep an image's CUDA torch.
            x "${GC_BASE_PYTHON:-python3}" -m venv --system-site-packages "$GC_VENV"
        fi
        GC_PYTHON="$GC_VENV/bin/python"
    fi
    cuda_torch='import torch; assert torch.cuda.is_available(), "torch " + torch.__version__ + " sees no CUDA"'
    if [[ -n ${GC_REUSE_TORCH:-} && -n ${GC_DRY_RUN:-} ]]; then
        echo "(--reuse-torch: the next command is skipped where $GC_PYTHON already has a CUDA torch)"
    fi
    if [[ -n ${GC_REUSE_TORCH:-} && -z ${GC_DRY_RUN:-} ]] && "$GC_PYTHON" -c "$cuda_torch" 2>/dev/null; then
        echo "keeping the CUDA torch already there: $("$GC_PYTHON" -c 'import torch; print(torch.__version__)')"
    else
        # The default index's Linux wheels of torch are CUDA builds (the CPU pin of `make setup` is not used).
        x "$GC_PYTHON" -m pip install "${pip_opts[@]}" "torch==$GC_TORCH_VERSION"
    fi
    x "$GC_PYTHON" -m pip install "${pip_opts[@]}" -e ".[dev]"
    x "$GC_PYTHON" -c "$cuda_torch; import auras, ray; print('torch', torch.__version__, 'CUDA', torch.version.cuda)"
    exit 0
fi

# -- options ------------------------------------------------------------------------------------------
OUT="runs/gpu_check/summary.json"
WORK=""
DRY_RUN=""
SMOKE=""
PY_GIVEN=""
VENV=".tmp/venv-gpu"
NO_INSTALL=""
TORCH_VERSION="2.13.0"
REUSE_TORCH=""
WHEELS=""
SCALE="" STEPS="" WARMUP="" COMPILE="" PP_GENERATION="4" TESTS="" BUDGET="" SKIP_TESTS=""

need() { [[ $# -ge 2 && -n $2 ]] || { echo "gpu_check.sh: $1 needs a value (see --help)" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --out) need "$@"; OUT=$2; shift ;;
        --work) need "$@"; WORK=$2; shift ;;
        --dry-run) DRY_RUN=1 ;;
        --cpu-smoke) SMOKE=1 ;;
        --python) need "$@"; PY_GIVEN=$2; shift ;;
        --venv) need "$@"; VENV=$2; shift ;;
        --no-install) NO_INSTALL=1 ;;
        --torch-version) need "$@"; TORCH_VERSION=$2; shift ;;
        --reuse-torch) REUSE_TORCH=1 ;;
        --wheels) need "$@"; WHEELS=$(realpath -ms "$2"); shift ;;
        --scale) need "$@"; SCALE=$2; shift ;;
        --steps) need "$@"; STEPS=$2; shift ;;
        --warmup) need "$@"; WARMUP=$2; shift ;;
        --compile) need "$@"; COMPILE=$2; shift ;;
        --pp-generation) need "$@"; PP_GENERATION=$2; shift ;;
        --tests) need "$@"; TESTS=$2; shift ;;
        --budget-s) need "$@"; BUDGET=$2; shift ;;
        --skip-tests) SKIP_TESTS=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for n in "$PP_GENERATION" ${STEPS:+"$STEPS"} ${WARMUP:+"$WARMUP"} ${BUDGET:+"$BUDGET"}; do
    [[ $n =~ ^[0-9]+$ ]] || { echo "gpu_check.sh: expected a whole number, got '$n'" >&2; exit 2; }
done

if [[ -n $SMOKE ]]; then  # tiny and CPU-only: the path, not the numbers
    MODE="cpu-smoke"
    SCALE=${SCALE:-0.05} STEPS=${STEPS:-3} WARMUP=${WARMUP:-2} COMPILE=${COMPILE:-off}
    TESTS=${TESTS:-tests/test_vla_scale.py} BUDGET=${BUDGET:-170}
    if [[ -z $PY_GIVEN ]]; then
        if [[ -x "$ROOT/.venv/bin/python" ]]; then PY_GIVEN="$ROOT/.venv/bin/python"; else PY_GIVEN=python3; fi
    fi
    NO_INSTALL=1
else
    MODE="gpu"
    SCALE=${SCALE:-0.5} STEPS=${STEPS:-50} WARMUP=${WARMUP:-8} COMPILE=${COMPILE:-off,reduce-overhead}
    TESTS=${TESTS:-tests} BUDGET=${BUDGET:-450}
fi
OUT=$(realpath -ms "$OUT")
WORK=$(realpath -ms "${WORK:-${OUT%.json}.d}")
if [[ -n $PY_GIVEN && $PY_GIVEN == */* ]]; then PY_GIVEN=$(realpath -ms "$PY_GIVEN"); fi
VENV=$(realpath -ms "$VENV")
PY=${PY_GIVEN:-$VENV/bin/python}
cd "$ROOT"
export MUJOCO_GL=${MUJOCO_GL:-egl} PYTHONUNBUFFERED=1

START=$(date +%s)
DEADLINE=$((START + BUDGET))
RESERVE=15  # seconds kept for the summary
STAGES="$WORK/stages.tsv"
FAILED=""

record() {  # name status rc elapsed timeout detail
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$5" "$WORK/$1.log" "${6//$'\t'/ }" >>"$STAGES"
}

skip() {  # name reason [status]: skipped (does not apply here) or not-run (should have run: the check is incomplete)
    echo "== $1: ${3:-skipped} ($2)"
    [[ -n $DRY_RUN ]] || record "$1" "${3:-skipped}" "" 0 "" "$2"
}

# stage NAME MAX_SECONDS COMMAND...: run COMMAND under a timeout that fits the budget, log it to
# $WORK/NAME.log and record the outcome; a failing stage never stops the check.
stage() {
    local name=$1 max=$2 left limit rc=0 t0 elapsed status detail=""
    shift 2
    if [[ -n $DRY_RUN ]]; then
        echo "== $name (at most ${max} s)"
        show "$@"
        return 0
    fi
    left=$((DEADLINE - $(date +%s) - RESERVE))
    limit=$((left < max ? left : max))
    if ((limit < 20)); then
        skip "$name" "budget: ${left} s left of ${BUDGET} s" not-run
        return 1
    fi
    echo "== $name (at most ${limit} s, log $WORK/$name.log)"
    show "$@"
    t0=$(date +%s)
    timeout -s INT --kill-after=20 "$limit" "$@" >"$WORK/$name.log" 2>&1 || rc=$?
    elapsed=$(($(date +%s) - t0))
    case $rc in
        0) status=ok ;;
        124 | 137) status=timeout detail="stopped at its ${limit} s limit" ;;
        *) status=failed detail="exit status $rc" ;;
    esac
    if [[ $name == tests && $rc == 5 ]]; then status=ok detail="no gpu-marked tests collected"; fi
    record "$name" "$status" "$rc" "$elapsed" "$limit" "$detail"
    echo "   $status after ${elapsed} s${detail:+: $detail}"
    if [[ $status != ok ]]; then
        FAILED=1
        tail -n 15 "$WORK/$name.log" | sed 's/^/   | /'
        return 1
    fi
}

bench_args=(--dtype bfloat16 --scale "$SCALE" --steps "$STEPS" --warmup "$WARMUP" --compile "$COMPILE"
    --pp-generation "$PP_GENERATION")

echo "auras GPU check ($MODE): summary $OUT, budget ${BUDGET} s"
if [[ -z $DRY_RUN ]]; then
    mkdir -p "$WORK" "$(dirname "$OUT")"
    rm -f "$STAGES" "$WORK"/*.json "$WORK"/*.log "$WORK"/tests.xml
fi

# 1. preflight and install
ready=1
if [[ $MODE == gpu && -z $DRY_RUN ]] && ! command -v nvidia-smi >/dev/null 2>&1 && [[ ! -e /dev/nvidia0 ]]; then
    record preflight failed "" 0 "" "no NVIDIA GPU visible (no nvidia-smi, no /dev/nvidia0): run it on a CUDA machine, or use --cpu-smoke or --dry-run"
    echo "== preflight: failed: no NVIDIA GPU visible; use --cpu-smoke or --dry-run here"
    FAILED=1 ready=""
fi
if [[ -n $ready ]]; then
    if [[ -n $NO_INSTALL ]]; then
        skip setup "installs nothing: uses $PY as it is"
    else
        export GC_PYTHON="$PY_GIVEN" GC_VENV="$VENV" GC_TORCH_VERSION="$TORCH_VERSION" GC_REUSE_TORCH="$REUSE_TORCH"
        export GC_WHEELS="$WHEELS"
        if [[ -n $DRY_RUN ]]; then
            echo "== setup (at most 300 s)"
            GC_DRY_RUN=1 bash "$SELF" __setup
        else
            stage setup 300 bash "$SELF" __setup || ready=""
        fi
    fi
fi

# 2. what torch sees
gpus=0
blocked="an earlier stage failed or did not fit"
if [[ -z $ready ]]; then
    skip probe "$blocked" not-run
else
    stage probe 60 "$PY" "$BENCH" probe --json "$WORK/env.json" || ready=""
    if [[ -n $ready && -z $DRY_RUN ]]; then
        gpus=$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("gpu_count", 0))' "$WORK/env.json")
        if [[ $MODE == gpu && $gpus -lt 1 ]]; then
            record cuda failed "" 0 "" "torch in $PY sees no CUDA device (see env.json)"
            echo "== cuda: failed: torch sees no CUDA device"
            FAILED=1 ready=""
        fi
    fi
fi

# 3. the gpu-marked tests (skipped, not failed, where there is no CUDA)
if [[ -z $ready ]]; then
    skip tests "$blocked" not-run
else
    if [[ -n $SKIP_TESTS ]]; then
        skip tests "--skip-tests"
    else
        # shellcheck disable=SC2086  # TESTS is a list of paths
        stage tests 150 "$PY" -m pytest -m gpu -q -p no:cacheprovider --junitxml="$WORK/tests.xml" $TESTS || true
    fi
fi

# 4. sequential vs auras, compiled and not: one device, then one device per stage
if [[ $MODE == gpu ]]; then
    local_name=bench-1gpu ray_name=bench-2gpu device=cuda ray_modes=sequential,auras
else
    local_name=bench-local ray_name=bench-ray device=cpu ray_modes=auras  # the Ray path, kept short
fi
if [[ -z $ready ]]; then
    skip "$local_name" "$blocked" not-run
    skip "$ray_name" "$blocked" not-run
else
    if [[ $MODE == gpu ]]; then max=240 margin=60; else max=120 margin=15; fi  # margin: start no configuration
    left=$((DEADLINE - $(date +%s) - RESERVE))                                  # with less time left than this
    if ((gpus >= 2 && left < 2 * max)); then max=$((left / 2)); fi  # leave the two-GPU run its share
    stage "$local_name" "$max" "$PY" "$BENCH" --backend local --device "$device" "${bench_args[@]}" \
        --deadline-s $((max - margin)) --json "$WORK/$local_name.json" || true
    if [[ -n $DRY_RUN && $MODE == gpu ]]; then
        echo "   (the next stage runs where two or more GPUs are visible)"
    fi
    if [[ $MODE == cpu-smoke || $gpus -ge 2 || -n $DRY_RUN ]]; then
        left=$((DEADLINE - $(date +%s) - RESERVE))
        stage "$ray_name" "$left" "$PY" "$BENCH" --backend ray --device "$device" --modes "$ray_modes" \
            "${bench_args[@]}" --deadline-s $((left - margin)) --json "$WORK/$ray_name.json" || true
    else
        skip "$ray_name" "$gpus GPU visible: perception and generation on a GPU each needs two"
    fi
fi

# 5. full-size flow VLAs (random weights): SmolVLA (450 M), then π0 (3.5 B); sequential vs auras on one GPU, in
#    what time is left
for vla in smolvla pi0; do
    if [[ $MODE != gpu ]]; then
        skip "$vla" "full size runs on a GPU only (scripts/vla_throughput.py --policy $vla measures it on a CPU)"
    elif [[ -z $ready ]]; then
        skip "$vla" "$blocked" not-run
    else
        left=$((DEADLINE - $(date +%s) - RESERVE))
        if ((left < 60)); then
            skip "$vla" "$left s left of the budget" not-run
        else
            stage "$vla" "$left" "$PY" scripts/vla_throughput.py --policy "$vla" --device cuda --dtype bfloat16 \
                --steps 20 --warmup 3 --pp-perception 2 --pp-generation 2 --fetch-offset -1 \
                --json "$WORK/$vla.json" || true
        fi
    fi
done

# 5b. full-size OpenVLA (7.5 B, random weights, all 32 Llama layers; 15 GB in bfloat16): sequential vs auras on one
#     GPU (scripts/openvla_timing.py), in what time is left
if [[ $MODE != gpu ]]; then
    skip openvla "full size runs on a GPU only (docs/results/openvla.md measures fewer Llama layers on a CPU)"
elif [[ -z $ready ]]; then
    skip openvla "$blocked" not-run
else
    left=$((DEADLINE - $(date +%s) - RESERVE))
    if ((left < 90)); then
        skip openvla "$left s left of the budget" not-run
    else
        stage openvla "$left" "$PY" scripts/openvla_timing.py --llm-layers 32 --device cuda \
            --dtype bfloat16 --skip-split --steps 20 --warmup 3 --pp-perception 2 --pp-generation 2 \
            --json "$WORK/openvla.json" || true
    fi
fi

# 6. the fleet: how many robots one engine on one GPU serves at 30 Hz with p99 staleness under 100 ms
if [[ -z $ready ]]; then
    skip fleet "$blocked" not-run
else
    left=$((DEADLINE - $(date +%s) - RESERVE))
    if ((left < 60)); then
        skip fleet "$left s left of the budget" not-run
    elif [[ $MODE == gpu ]]; then
        stage fleet "$left" "$PY" scripts/fleet_capacity.py --policy tiny-dp --device cuda --dtype bfloat16 \
            --seconds 6 --robots 1 4 16 32 64 128 --json "$WORK/fleet.json" || true
    else
        stage fleet "$left" "$PY" scripts/fleet_capacity.py --policy tiny-dp --seconds 3 --robots 1 2 \
            --json "$WORK/fleet.json" || true
    fi
fi

# 7. one summary
if [[ -n $DRY_RUN ]]; then
    echo "== summary"
    show "$PY" "$BENCH" summarize --out "$OUT" --stages "$STAGES" --env "$WORK/env.json" --tests "$WORK/tests.xml" \
        --bench "$WORK/$local_name.json" "$WORK/$ray_name.json"
    echo "dry run: nothing was run"
    exit 0
fi
SPY=$PY
"$SPY" -c "" 2>/dev/null || SPY=python3  # the summary needs only the standard library
shopt -s nullglob
benches=("$WORK"/bench-*.json)
rc=0
"$SPY" "$BENCH" summarize --out "$OUT" --stages "$STAGES" --env "$WORK/env.json" --tests "$WORK/tests.xml" \
    --bench "${benches[@]}" --meta mode="$MODE" budget_s="$BUDGET" elapsed_s=$(($(date +%s) - START)) \
    python="$PY" work="$WORK" || rc=$?
echo "finished in $(($(date +%s) - START)) s"
if [[ $rc -ne 0 || -n $FAILED ]]; then exit 1; fi

#!/usr/bin/env bash
# One GPU check, for a lent H100/H200 with no network: our training step against
# open_clip_train's (eager, then ours under torch.compile) and the evaluation stage in bf16.
#
#   bash benchmarks/device_check.sh             # on the GPU machine, from the repo root
#   DRY_RUN=1 bash benchmarks/device_check.sh   # (or --dry-run) CPU, tiny model, temp results
#
# Steps, each under `timeout`, all inside CHECK_BUDGET_S (default 360 s; 1200 s in a dry run);
# a failed step is reported and the next one still runs:
#   1. install the carried wheels (.whl/*.whl, --no-deps) into $SITE; numpy<2.4 from
#      .whl/numpy into $SITE_NP, for step 3 only (clip_benchmark's accuracy() fails on
#      numpy >= 2.4, the machine has 2.5; the training step does not need it)
#   2. benchmarks/gpu_throughput.py, eager -> gpu_throughput.json
#   3. benchmarks/eval_throughput.py --device cuda, tiny models -> eval_throughput_gpu.json
#   4. benchmarks/gpu_throughput.py --compile, ViT-L/14 first, each model starting at the
#      batch that fitted in step 2 -> gpu_throughput_compile.json (last: compilation time is
#      the least predictable, it gets what is left)
# Results go to benchmarks/results/ (a temp dir in a dry run) and, with the log, to $OUT.
# Exit status: the number of failed steps.
#
# Environment: OUT (default: a temp dir), WHL (wheel folder, default .whl), SITE, SITE_NP,
# PYTHON (default python3), CHECK_BUDGET_S.
set -u -o pipefail
cd "$(dirname "$0")/.."

DRY=${DRY_RUN:-0}
[[ "${1:-}" == "--dry-run" ]] && DRY=1
OUT=${OUT:-$(mktemp -d)}
WHL=${WHL:-.whl}
SITE=${SITE:-/tmp/site}
SITE_NP=${SITE_NP:-/tmp/site_np}
PY=${PYTHON:-python3}
if [[ "$DRY" == 1 ]]; then
    RES=$(mktemp -d) BUDGET=${CHECK_BUDGET_S:-1200}  # 2 CPU cores: compiling takes a while
else
    RES=benchmarks/results BUDGET=${CHECK_BUDGET_S:-360}
fi
mkdir -p "$OUT" "$RES"
LOG="$OUT/device_check.log"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

deadline=$((SECONDS + BUDGET))
declare -a SUMMARY=()
FAILED=0

# cap WANT RESERVE: seconds for the next step, at most WANT, leaving RESERVE for later steps
cap() {
    local left=$((deadline - SECONDS - $2))
    ((left < $1)) && echo "$left" || echo "$1"
}

# step NAME LIMIT CMD...: run CMD under timeout, note its status and time
step() {
    local name=$1 limit=$2 t0=$SECONDS rc
    shift 2
    echo
    echo "=== $name (limit ${limit}s, $((deadline - SECONDS))s of the budget left)"
    if ((limit < 20)); then
        rc=skipped
    else
        timeout -k 15 "$limit" "$@"
        rc=$?
        ((rc == 124 || rc == 137)) && rc="$rc (timed out)"
    fi
    SUMMARY+=("$(printf '%-28s rc=%-16s %4ds' "$name" "$rc" $((SECONDS - t0)))")
    [[ "$rc" == 0 ]] || FAILED=$((FAILED + 1))
    [[ "$rc" == 0 ]]
}

install_wheels() {
    rm -rf "$SITE" "$SITE_NP"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHL"/*.whl || return
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE_NP" "$WHL"/numpy/*.whl
}

report() {
    "$PY" - "$RES" <<'EOF'
import json, sys
from pathlib import Path

res = Path(sys.argv[1])
for name in ("gpu_throughput", "gpu_throughput_compile"):
    f = res / f"{name}.json"
    if not f.exists():
        print(f"{name}: no result")
        continue
    r = json.loads(f.read_text())
    print(f"{name}: {r['device']}, torch {r['torch']}, compile={r['compile']}")
    for m in r["models"]:
        if "ratio" not in m:
            print(f"  {m['model']}: {m.get('skipped') or m.get('error')}")
            continue
        print(f"  {m['model']} batch {m['batch']}: ours {m['ours_samples_per_s']} samples/s "
              f"MFU {m['ours_mfu']} peak {m['ours_peak_memory_gib']} GiB | open_clip_train "
              f"{m['open_clip_train_samples_per_s']} MFU {m['open_clip_train_mfu']} peak "
              f"{m['open_clip_train_peak_memory_gib']} GiB | ratio {m['ratio']}")
        for key in ("ours_error", "open_clip_train_error"):
            if key in m:
                print(f"    {key}: {m[key][:300]}")
    print(f"  targets: {r.get('targets')}")
f = res / "eval_throughput_gpu.json"
if f.exists():
    r = json.loads(f.read_text())
    print(f"eval_throughput_gpu: {r['images_per_s']} images/s on {r['device_name']} "
          f"({r['precision']}, numpy {r['numpy']}), "
          + ", ".join(f"{k} {v['images_per_s']}" for k, v in r["per_model"].items()))
else:
    print("eval_throughput_gpu: no result")
EOF
}

main() {
    echo "device_check: dry_run=$DRY results=$RES out=$OUT budget=${BUDGET}s $(date -u +%FT%TZ)"
    nvidia-smi -L 2>/dev/null || echo "nvidia-smi: none"
    export -f install_wheels
    export PY WHL SITE SITE_NP
    if step "1 install wheels" 90 bash -c install_wheels; then
        export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "wheels did not install: the steps that need them will fail"
    fi
    "$PY" -c "import sys, torch, numpy; print('python', sys.version.split()[0], '| torch',
torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available(), '| numpy',
numpy.__version__)"

    local gpu=() ev=(--device cuda --models tiny_s tiny_m) limit
    [[ "$DRY" == 1 ]] && gpu=(--dry-run) && ev=(--device cpu --models tiny_s)

    limit=$(cap 150 200)
    step "2 gpu_throughput eager" "$limit" "$PY" benchmarks/gpu_throughput.py "${gpu[@]}" \
        --time-budget-s $((limit - 60)) --out "$RES/gpu_throughput.json"

    step "3 eval_throughput gpu" "$(cap 90 130)" env PYTHONPATH="$SITE_NP:${PYTHONPATH:-}" \
        "$PY" benchmarks/eval_throughput.py "${ev[@]}" --out "$RES/eval_throughput_gpu.json"

    limit=$(cap 300 10)
    step "4 gpu_throughput compile" "$limit" "$PY" benchmarks/gpu_throughput.py "${gpu[@]}" \
        --compile --models vit_l14,vit_b32 --time-budget-s $((limit - 120)) \
        --batch-from "$RES/gpu_throughput.json" --out "$RES/gpu_throughput_compile.json"

    echo
    echo "=== results"
    report
    cp "$RES"/gpu_throughput.json "$RES"/gpu_throughput_compile.json \
        "$RES"/eval_throughput_gpu.json "$OUT"/ 2>/dev/null
    echo
    echo "=== steps (total ${SECONDS}s)"
    printf '%s\n' "${SUMMARY[@]}"
    echo "failed steps: $FAILED; files in $OUT: $(ls "$OUT" | tr '\n' ' ')"
    return "$FAILED"
}

main 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"

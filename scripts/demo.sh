#!/usr/bin/env bash
# The main job on an embedded default: install, build the offline Qwen2.5-Coder pair, and
# compare SSD with plain decoding and vLLM's own speculative decoding (draft_model) on this
# CPU: three engines (plain on both cores, vLLM SD on both cores, SSD with its target on
# CPU 0 and its draft server on CPU 1), batch size 1, greedy, 4 prompts (each dataset's first
# of at most 1,500 characters) x 48 tokens, engines
# without torch.compile (it cost 1.5-2.5 min per engine). 14-17 minutes on 2 AVX2 cores
# once the models are built; shows each engine's progress; ends with one side-by-side table (with
# the plan SSD ran) and where the time went (install, model build, each engine).
# Results go to .scratch/demo/ (the committed results in benchmarks/results/ stay as they are).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
phases=()                                # "name<TAB>seconds" of each finished phase
current="" phase_start=$SECONDS
engines=$(mktemp "${TMPDIR:-/tmp}/demo-engines.XXXXXX")  # bench_offline.py's lines, one an engine

duration() {  # seconds -> "N s" or "M min N s"
    if (( $1 >= 60 )); then echo "$(( $1 / 60 )) min $(( $1 % 60 )) s"; else echo "$1 s"; fi
}

begin_phase() {  # name, what the line says
    echo "[demo] $2"
    current=$1 phase_start=$SECONDS
}

finish_phase() {  # records the phase that just ended and says how long it took
    local seconds=$(( SECONDS - phase_start ))
    phases+=("$current"$'\t'"$seconds")
    echo "[demo] $current took $(duration "$seconds")"
    current=""
}

engine_lines() {  # the engines' lines of bench_offline.py, then the rest of its time
    local bench=$1 name seconds detail total=0
    while IFS=$'\t' read -r name seconds detail; do
        printf '[demo]     %-24s %s (%s)\n' "$name" "$(duration "$seconds")" "$detail"
        total=$(( total + seconds ))
    done < "$engines"
    (( bench <= total )) || printf '[demo]     %-24s %s\n' "the rest (set-up, report)" \
        "$(duration $(( bench - total )))"
}

summary() {  # where the time went; also after a failure (what ran until then)
    local status=$? phase name seconds
    [[ -z $current ]] || phases+=("$current (failed)"$'\t'"$(( SECONDS - phase_start ))")
    echo "[demo] where the time went ($(duration $(( SECONDS - start ))) in all):"
    for phase in "${phases[@]+"${phases[@]}"}"; do
        IFS=$'\t' read -r name seconds <<< "$phase"
        printf '[demo]   %-26s %s\n' "$name" "$(duration "$seconds")"
        [[ $name != engines* ]] || engine_lines "$seconds"
    done
    rm -f "$engines"
    return "$status"
}
trap summary EXIT

begin_phase install "1/3 install into .venv (skipped when up to date)"
bash scripts/install_cpu.sh .venv
finish_phase
source scripts/env.sh
begin_phase "model build" "2/3 models in $VLLM_SSD_MODELS (skipped when built)"
.venv/bin/python benchmarks/models/build_models.py --out "$VLLM_SSD_MODELS" qwen-1.5b qwen-0.5b
finish_phase
begin_phase engines "3/3 plain / vLLM draft_model SD / SSD, one engine each"
.venv/bin/python benchmarks/bench_offline.py --preset demo --timings "$engines" "$@"
finish_phase

#!/usr/bin/env bash
# Run a grid of the paper's experiments on this machine: N runs at a time, one torch thread each, one log per run.
# Re-running the same command after a crash, a failed run or Ctrl-C finishes the grid and loses nothing: complete
# runs (summary.json) are skipped and interrupted ones resume from their last checkpoint (every command carries
# --resume). A run directory whose summary.json comes with other settings than the grid's (a smoke run, a changed
# flag) is named with the differing settings and neither counted as complete nor run. The grids are defined once,
# in grids.py; modal_launch.py runs the same ones on Modal.
#
#   ./benchmark.sh --preset table2                  # Table 2: 4 tasks x 3 arms x 3 seeds of 1M steps (36 runs)
#   ./benchmark.sh --preset paper --workers 16      # Tables 2, 3 and 4, each shared run once (78 runs)
#   ./benchmark.sh --preset table3 --dry-run        # print the commands still to run, run nothing
#   ./benchmark.sh --arms ppo_vanilla,ppo_random_mask --tasks reach-v3 --seeds 1,2 \
#       --total-timesteps 20000 --exp-suffix _smoke -- --eval-interval 0   # custom; flags after -- go to every run
#
# Options of this script; all others choose the grid (--preset, --arms, --tasks, --seeds, --total-timesteps,
# --exp-suffix, --threads, --cuda, flags after --: see `python grids.py commands --help`):
#   --workers N     runs at a time (default: the number of cores)
#   --runs-dir DIR  the directory of run directories (default runs)
#   --logs-dir DIR  one log per run, DIR/<run name>.log, appended to at every attempt (default logs)
#   --dry-run       print the commands of the runs still to do (complete ones, and complete ones with other
#                   settings, as comments) and exit
#   --no-report     do not build the report at the end
# Environment: PYTHON (default python) runs everything; the report tool is report.py beside this script (or
# BENCHMARK_REPORT), run at the end, when it exists, as `$PYTHON report.py --runs-dir DIR --success-definition D`
# from the directory benchmark.sh was started in: it writes reports/report.md there (git-ignored; results/ is for
# curated reports). D is last for a grid in the paper's regime (--no-norm-obs: the paper's numbers match ours only
# with success read at the episode's last step), else any (MetaWorld's protocol).
# Before it starts (and in --dry-run) it prints the estimated wall time, warns once if the scripts have
# uncommitted changes and, for a --cuda grid on a machine with an NVIDIA GPU, says whether MPS is running.
# Exit status: 0 every run complete, 1 a run (or the report) failed or a run directory holds a complete run with
# other settings, 2 bad input, 130 interrupted.

set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PYTHON=${PYTHON:-python}
REPORT_TOOL=${BENCHMARK_REPORT:-$ROOT/report.py}

die() { echo "benchmark.sh: error: $*" >&2; exit 2; }
usage() { sed -n '2,/^$/{s/^# \{0,1\}//;/^$/d;p}' "${BASH_SOURCE[0]}"; }
now() { date -u '+%Y-%m-%dT%H:%M:%SZ'; }

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 3))); then
    die "needs bash 4.3 or newer (for wait -n); this is bash $BASH_VERSION"
fi

# --- options -------------------------------------------------------------------------------------------------
# the cores this process may use; GNU nproc would otherwise report OMP_NUM_THREADS, which one-thread-per-run setups
# export (OMP_NUM_THREADS=1 would mean one worker)
workers=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)
runs_dir=runs
logs_dir=logs
dry_run=0
report=1
grid_args=()
while (($#)); do
    case $1 in
        --workers | --runs-dir | --logs-dir)
            (($# >= 2)) || die "$1 needs a value"
            case $1 in
                --workers) workers=$2 ;;
                --runs-dir) runs_dir=$2 ;;
                --logs-dir) logs_dir=$2 ;;
            esac
            shift 2 ;;
        --workers=*) workers=${1#*=}; shift ;;
        --runs-dir=*) runs_dir=${1#*=}; shift ;;
        --logs-dir=*) logs_dir=${1#*=}; shift ;;
        --dry-run) dry_run=1; shift ;;
        --no-report) report=0; shift ;;
        -h | --help) usage; exit 0 ;;
        --) grid_args+=("$@"); break ;;
        *) grid_args+=("$1"); shift ;;
    esac
done
[[ $workers =~ ^[1-9][0-9]*$ ]] || die "--workers must be a positive integer, got '$workers'"
[[ -n $runs_dir && -n $logs_dir ]] || die "--runs-dir and --logs-dir must not be empty"

# The commands run from the repository root (python ppo_vanilla.py ...): anchor relative paths to where we were.
absolute() { if [[ $1 == /* || $PWD == "$ROOT" ]]; then printf '%s' "$1"; else printf '%s/%s' "$PWD" "$1"; fi; }
runs_dir=$(absolute "$runs_dir")
logs_dir=$(absolute "$logs_dir")
start_dir=$PWD
cd "$ROOT" || die "cannot enter $ROOT"

# --- the grid: one "name<TAB>state<TAB>command[<TAB>differing settings]" line per run, from grids.py -------------
# (state: new, resume, complete, or differs: complete with other settings than the grid's)
jobs_text=$("$PYTHON" grids.py jobs --runs-dir "$runs_dir" --python "$PYTHON" "${grid_args[@]}") || exit 2
names=()
states=()
commands=()
details=()
while IFS=$'\t' read -r name state command detail; do
    [[ -n $name ]] || continue
    [[ $state =~ ^(new|resume|complete|differs)$ && -n $command ]] || die "unexpected line from grids.py jobs: $name"
    names+=("$name") && states+=("$state") && commands+=("$command") && details+=("$detail")
done <<<"$jobs_text"
((${#names[@]})) || die "the grid is empty"

is_complete() { [[ -e $runs_dir/$1/summary.json ]]; }
count() { local n=0 s; for s in "${states[@]}"; do [[ $s == "$1" ]] && ((n += 1)); done; echo $n; }
n_complete=$(count complete)
n_differs=$(count differs)
n_resume=$(count resume)
n_todo=$((${#names[@]} - n_complete - n_differs))
plan="${#names[@]} runs: $n_complete already complete, $n_todo to run ($n_resume resuming from a checkpoint)"
((n_differs)) && plan+=", $n_differs complete with other settings (not counted, not run)"
differs_line() { echo "complete with other settings, not counted and not run: $1 ($2)"; }

# How long the runs still to do take (measured per-run minutes, grids.RUN_MINUTES), and which code they run: a run
# records the clean commit and any uncommitted changes (config.json), but a grid's cells should come from one.
estimate=$("$PYTHON" grids.py estimate --runs-dir "$runs_dir" --workers "$workers" "${grid_args[@]}") || exit 2
# Only what a run's code is made of: changes to tracked sources and untracked scripts at the top level (a virtual
# environment or other untracked folder inside the clone is not the project's code), named up to 5, then counted.
dirty=""
if [[ $(git -C "$ROOT" rev-parse --show-toplevel 2>/dev/null) == "$ROOT" ]]; then
    dirty_files=$({ git -C "$ROOT" diff HEAD --name-only -- '*.py' '*.sh'
                    git -C "$ROOT" ls-files --others --exclude-standard -- ':(glob)*.py'; } 2>/dev/null | sort -u)
    if [[ -n $dirty_files ]]; then
        n_dirty=$(wc -l <<< "$dirty_files")
        dirty=$(head -n 5 <<< "$dirty_files" | tr '\n' ' ')
        ((n_dirty > 5)) && dirty+="and $((n_dirty - 5)) more "
    fi
fi
dirty_line() { echo "warning: uncommitted changes to ${dirty% } (the runs record them as git_changes in config.json; commit first to make every cell's runs come from one revision)"; }
# --cuda runs sharing one NVIDIA GPU need MPS: without it their CUDA work time-slices and loses to the CPU
mps_line=""
if [[ " ${grid_args[*]} " == *" --cuda "* ]] && command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    if pgrep -f nvidia-cuda-mps >/dev/null 2>&1; then
        mps_line="MPS is running: the runs' CUDA work shares the GPU"
    else
        mps_line="MPS is not running: the runs' CUDA work will time-slice the GPU (slower than the CPU); start it first, as root: nvidia-cuda-mps-control -d"
    fi
fi
# no-norm-obs grids are the paper's regime, whose numbers match the paper's only with success read at the last step
success_definition=any
[[ $jobs_text == *--no-norm-obs* ]] && success_definition=last

if ((dry_run)); then
    echo "# $plan; $workers workers; logs in $logs_dir"
    echo "# estimate: $estimate"
    [[ -n $mps_line ]] && echo "# $mps_line"
    [[ -n $dirty ]] && echo "# $(dirty_line)"
    for i in "${!names[@]}"; do
        case ${states[i]} in
            complete) echo "# complete: ${names[i]}" ;;
            differs) echo "# $(differs_line "${names[i]}" "${details[i]}")" ;;
            *) echo "${commands[i]}" ;;
        esac
    done
    exit 0
fi

# --- the runs ---------------------------------------------------------------------------------------------------
mkdir -p "$runs_dir" "$logs_dir" || die "cannot create $runs_dir or $logs_dir"
status_file=$(mktemp "${TMPDIR:-/tmp}/benchmark.XXXXXX") || die "cannot create a temporary file"
trap 'rm -f "$status_file"' EXIT
echo "benchmark.sh: $plan; $workers workers; logs in $logs_dir"
echo "benchmark.sh: estimate: $estimate"
[[ -n $mps_line ]] && echo "benchmark.sh: $mps_line"
[[ -n $dirty ]] && echo "benchmark.sh: $(dirty_line)" >&2
for i in "${!names[@]}"; do
    [[ ${states[i]} == differs ]] && echo "benchmark.sh: $(differs_line "${names[i]}" "${details[i]}")"
done

# One run in a background worker: the log gets a start line, the run's output and an end line with the exit
# status; the status file gets "status name". A TERM (from the main loop on Ctrl-C) is passed on to the run.
run_one() {
    local name=$1 command=$2 log="$logs_dir/$1.log" how=fresh pid="" rc
    trap "" INT  # Ctrl-C reaches the whole process group: the main loop stops the run (TERM below)
    trap '[[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null' TERM
    # A run directory is locked while its run goes on (the run inherits the lock), so two sweeps sharing runs
    # (table2 and table4 share nine) never run one twice at once.
    mkdir -p "$runs_dir/$name"
    if command -v flock >/dev/null && { exec 9<"$runs_dir/$name"; ! flock -n 9; }; then
        echo "=== $(now) skipped: another process is running it" >>"$log"
        echo "$BUSY $name" >>"$status_file"
        return
    fi
    [[ -e $runs_dir/$name/checkpoint.pt ]] && how=resume
    echo "=== $(now) start ($how): $command" >>"$log"
    bash -c "exec $command" >>"$log" 2>&1 </dev/null &
    pid=$!
    wait "$pid"
    rc=$?
    while kill -0 "$pid" 2>/dev/null; do  # a trapped TERM interrupts wait: wait for the run itself
        wait "$pid"
        rc=$?
    done
    echo "=== $(now) end: exit $rc" >>"$log"
    echo "$rc $name" >>"$status_file"
}

BUSY=75  # a status no run returns: its directory is locked by another benchmark.sh
interrupted=0
on_signal() {
    interrupted=1
    echo "benchmark.sh: interrupted; stopping the runs in progress (the same command resumes them)" >&2
    local pid
    for pid in $(jobs -pr); do kill -TERM "$pid" 2>/dev/null; done
}
trap on_signal INT TERM

for i in "${!names[@]}"; do
    [[ ${states[i]} == complete || ${states[i]} == differs ]] && continue
    while ((!interrupted)) && (($(jobs -pr | wc -l) >= workers)); do wait -n; done
    ((interrupted)) && break
    echo "$(now) start ${names[i]}"
    run_one "${names[i]}" "${commands[i]}" &
done
while (($(jobs -pr | wc -l))); do wait; done

# --- summary ------------------------------------------------------------------------------------------------------
ran=0
failed=()
while read -r rc name; do
    ((ran += 1))
    if ((rc == BUSY)); then
        failed+=("$name (another process is running it; run this command again once that one is done)")
    elif ((rc != 0)); then
        failed+=("$name (exit $rc; log $logs_dir/$name.log)")
    elif ! is_complete "$name"; then
        failed+=("$name (exited 0 without summary.json; log $logs_dir/$name.log)")
    fi
done <"$status_file"
echo "benchmark.sh: ${#names[@]} runs in the grid: $n_complete were already complete, $ran ran," \
    "$((ran - ${#failed[@]})) completed, ${#failed[@]} failed"
for line in "${failed[@]}"; do echo "  failed: $line"; done
for i in "${!names[@]}"; do
    [[ ${states[i]} == differs ]] && echo "  not run: ${names[i]} (complete with other settings: ${details[i]})"
done
echo "results: $runs_dir   logs: $logs_dir"
if ((interrupted)); then
    echo "benchmark.sh: interrupted with $((n_todo - ran)) runs not started; run the same command to finish the grid"
    exit 130
fi

status=0
((${#failed[@]} || n_differs)) && status=1
if ((report)); then
    if [[ -f $REPORT_TOOL ]]; then
        echo "benchmark.sh: building the report (into reports/ by default), $success_definition-step success:" \
            "$PYTHON $REPORT_TOOL --runs-dir $runs_dir --success-definition $success_definition"
        (cd "$start_dir" && "$PYTHON" "$REPORT_TOOL" --runs-dir "$runs_dir" --success-definition "$success_definition") ||
            { echo "benchmark.sh: the report failed" >&2; status=1; }
    else
        echo "benchmark.sh: no report tool at $REPORT_TOOL; skipping the report"
    fi
fi
if ((${#failed[@]})); then
    echo "benchmark.sh: ${#failed[@]} runs failed; fix the cause and run the same command again" >&2
fi
if ((n_differs)); then
    echo "benchmark.sh: $n_differs run directories hold complete runs with other settings than this grid's; move" \
        "them away, or give this grid its own --runs-dir or --exp-suffix" >&2
fi
exit $status

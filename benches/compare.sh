#!/usr/bin/env bash
# End-to-end comparison of dot with restic, borg and casync on a PostgreSQL
# data directory.
#
# Flow, identical for every tool, repeated RUNS times on a fresh cluster:
#   initdb; pgbench -i -s SCALE; stop PostgreSQL       -> state A
#   each tool snapshots the data directory (timed)
#   start; pgbench -c 1 -t TRANSACTIONS; stop           -> state B
#   each tool snapshots the same directory again (timed, bytes added measured)
#   restic/borg/casync restore state A into a new directory (timed)
#   dot reset --hard HEAD^ restores state A in place (timed, always last)
#   the data directory is compared with restic's restore of A (content,
#   type, mode, owner, mtime, symlink targets, xattrs); a mismatch fails.
# Before every timed step the data directory and the tool's own store and
# caches are synced and read once (page cache warmed the same way for all),
# and the order of the tools is rotated from run to run.
#
# Figures: wall time of the first and second snapshot, bytes added to the
# tool's store by the second snapshot (du -sb before/after), time to restore
# state A, peak RSS over all the tool's commands (/usr/bin/time %M).
# Medians and ratios to restic are printed by benches/compare_report.py; raw
# results go to benches/results/compare-<date>.txt.
#
# Environment:
#   SCALE=50          pgbench -i scale factor
#   TRANSACTIONS=500  pgbench -t for state B (one client)
#   RUNS=3            repetitions
#   DOT=target/release/dot (relative to the repository root)
#   WORKDIR           scratch directory (default: mktemp -d under /var/tmp)
#   PGBIN=/usr/lib/postgresql/15/bin   PGPORT=54329
#   KEEP_WORKDIR=1    keep the scratch directory (for debugging)
#   DAEMON=1          run dot's commands through a daemon (dot daemon start);
#                     its peak memory (VmHWM) counts in dot's peak RSS
#
# Must run as root (it uses runuser to run PostgreSQL as user postgres).
# PostgreSQL listens only on a unix socket inside the scratch directory.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCALE=${SCALE:-50}
TRANSACTIONS=${TRANSACTIONS:-500}
RUNS=${RUNS:-3}
DOT=${DOT:-$REPO_ROOT/target/release/dot}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PGPORT=${PGPORT:-54329}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
DAEMON=${DAEMON:-0}
GNU_TIME=/usr/bin/time
REPORT=$REPO_ROOT/benches/compare_report.py
TOOLS=(dot restic borg casync)

die() { echo "compare.sh: $*" >&2; exit 1; }
log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# ---------------------------------------------------------------- checks
[[ $(id -u) -eq 0 ]] || die "run as root (PostgreSQL is run through runuser -u postgres)"
id postgres >/dev/null 2>&1 || die "user postgres does not exist"
for n in SCALE TRANSACTIONS RUNS PGPORT; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || die "$n must be a positive integer, got '${!n}'"
done
case $DOT in /*) ;; *) DOT=$PWD/$DOT ;; esac
[[ -x $DOT ]] || die "dot binary not found at $DOT (build it with cargo build --release or set DOT)"
for b in restic borg casync python3 runuser; do
    command -v "$b" >/dev/null || die "$b is not installed"
done
[[ -x $GNU_TIME ]] || die "GNU time not found at $GNU_TIME"
for b in initdb pg_ctl pgbench psql; do
    [[ -x $PGBIN/$b ]] || die "$PGBIN/$b not found (set PGBIN)"
done
[[ -f $REPORT ]] || die "$REPORT not found"

# ---------------------------------------------------------------- scratch
OWN_WORKDIR=0
if [[ -z ${WORKDIR:-} ]]; then
    WORKDIR=$(mktemp -d /var/tmp/dot-compare.XXXXXX)
    OWN_WORKDIR=1
else
    mkdir -p "$WORKDIR"
    WORKDIR=$(cd "$WORKDIR" && pwd)
fi
[[ $WORKDIR =~ ^[A-Za-z0-9_./-]+$ ]] || die "WORKDIR '$WORKDIR' must not contain spaces or special characters"
chmod 755 "$WORKDIR"
runuser -u postgres -- test -x "$WORKDIR" \
    || die "user postgres cannot traverse $WORKDIR (make its parent directories mode 755)"

PG_RUNNING=0
PGDATA= PGROOT= PGSOCK=
RUN_DIRS=()

cleanup() {
    local rc=$?
    set +e
    [[ $DAEMON == 1 && -n ${DOT_HOME:-} ]] && "$DOT" daemon stop --force >/dev/null 2>&1
    if [[ $PG_RUNNING -eq 1 && -n $PGDATA ]]; then
        log "stopping PostgreSQL"
        (cd / && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 120 stop >/dev/null 2>&1 \
            || runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1)
    fi
    if [[ $KEEP_WORKDIR == 1 ]]; then
        log "kept scratch directory $WORKDIR"
    elif [[ $OWN_WORKDIR -eq 1 ]]; then
        rm -rf "$WORKDIR"
    else
        for d in "${RUN_DIRS[@]}"; do rm -rf "$d"; done
        rm -f "$WORKDIR/results.tsv" "$WORKDIR/verify.txt"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

RESULTS=$WORKDIR/results.tsv   # run  tool  metric  value
VERIFY=$WORKDIR/verify.txt
: >"$RESULTS"
: >"$VERIFY"

record() { printf '%s\t%s\t%s\t%s\n' "$RUN" "$1" "$2" "$3" >>"$RESULTS"; }

# ---------------------------------------------------------------- helpers
# Runs a command as postgres from a directory it can read.
as_pg() { (cd "$PGROOT" && runuser -u postgres -- "$@"); }

pg_start() {
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGROOT/postgres.log" -w -t 300 \
        -o "-p $PGPORT -k $PGSOCK -c listen_addresses=''" start >>"$LOGS/postgres-ctl.log" 2>&1 \
        || { tail -n 30 "$PGROOT/postgres.log" >&2; die "PostgreSQL did not start (see above)"; }
    PG_RUNNING=1
}

pg_stop() {
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w -t 300 stop >>"$LOGS/postgres-ctl.log" 2>&1 \
        || die "PostgreSQL did not stop (log: $PGROOT/postgres.log)"
    PG_RUNNING=0
}

pgbench() {
    local name=$1; shift
    as_pg "$PGBIN/pgbench" -h "$PGSOCK" -p "$PGPORT" "$@" postgres >"$LOGS/pgbench-$name.log" 2>&1 \
        || { tail -n 30 "$LOGS/pgbench-$name.log" >&2; die "pgbench $* failed"; }
}

# timed TOOL STEP CMD...: runs CMD under GNU time, records wall seconds
# (nanosecond clock) and max RSS in KiB; output goes to $LOGS/TOOL-STEP.log.
timed() {
    local tool=$1 step=$2; shift 2
    local out=$LOGS/$tool-$step.log tf=$LOGS/$tool-$step.time t0 t1
    t0=$(date +%s%N)
    if ! "$GNU_TIME" -f '%e %M' -o "$tf" "$@" >"$out" 2>&1; then
        echo "---- command failed: $*" >&2
        tail -n 40 "$out" >&2
        echo "---- ($tf: $(tr '\n' ' ' <"$tf"))" >&2
        die "$tool $step failed in run $RUN"
    fi
    t1=$(date +%s%N)
    record "$tool" "${step}_s" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')"
    record "$tool" "${step}_rss_kib" "$(tail -n 1 "$tf" | awk '{ print $2 }')"
}

# The directories each tool keeps its state in (store and caches).
tool_state() {
    case $1 in
        dot) echo "$DOT_HOME" ;;
        restic) echo "$RESTIC_REPOSITORY $RESTIC_CACHE_DIR" ;;
        borg) echo "$BORG_REPO $BORG_BASE_DIR" ;;
        casync) echo "$CADIR" ;;
    esac
}

# The tool's repository, whose size is measured.
tool_store() {
    case $1 in
        dot) echo "$DOT_HOME" ;;
        restic) echo "$RESTIC_REPOSITORY" ;;
        borg) echo "$BORG_REPO" ;;
        casync) echo "$CADIR" ;;
    esac
}

store_bytes() { du -sb "$(tool_store "$1")" | cut -f1; }

# Same for every tool: flush dirty pages, then read the data directory and
# the tool's store and caches once so the timed step starts with a warm cache.
warm() {
    local tool=$1 d
    sync
    # shellcheck disable=SC2046
    for d in "$PGDATA" $(tool_state "$tool"); do
        [[ -e $d ]] && find "$d" -type f -exec cat {} + >/dev/null
    done
    return 0
}

snapshot() {
    local tool=$1 label=$2 step=$3
    case $tool in
        dot) timed dot "$step" "$DOT" --quiet commit -m "state $label" pg ;;
        restic)
            timed restic "$step" restic backup "$PGDATA"
            local id
            id=$(sed -n 's/^snapshot \([0-9a-f]*\) saved.*/\1/p' "$LOGS/restic-$step.log")
            [[ -n $id ]] || die "could not read the snapshot id from $LOGS/restic-$step.log"
            echo "$id" >"$WORK/restic-snapshot-$label"
            ;;
        borg) timed borg "$step" borg create "$BORG_REPO::$label" "$PGDATA" ;;
        casync) timed casync "$step" casync make --store="$CADIR/store" "$CADIR/$label.caidx" "$PGDATA" ;;
    esac
}

restore_a() {
    local tool=$1
    case $tool in
        restic)
            timed restic restore restic restore "$(cat "$WORK/restic-snapshot-A")" --target "$WORK/restore-restic"
            RESTORED[restic]=$WORK/restore-restic$PGDATA
            ;;
        borg)
            mkdir "$WORK/restore-borg"
            (cd "$WORK/restore-borg" && timed borg restore borg extract "$BORG_REPO::A")
            RESTORED[borg]=$WORK/restore-borg$PGDATA
            ;;
        casync)
            timed casync restore casync extract --store="$CADIR/store" "$CADIR/A.caidx" "$WORK/restore-casync"
            RESTORED[casync]=$WORK/restore-casync
            ;;
    esac
}

rotate() {   # rotate N WORDS...: the words rotated left by N
    local n=$1; shift
    local a=("$@") k=${#a[@]} i
    for ((i = 0; i < k; i++)); do echo "${a[$(((i + n) % k))]}"; done
}

# ---------------------------------------------------------------- one run
one_run() {
    WORK=$WORKDIR/run$RUN
    RUN_DIRS+=("$WORK")
    rm -rf "$WORK"
    mkdir -p "$WORK"
    chmod 755 "$WORK"
    LOGS=$WORK/logs
    mkdir "$LOGS"
    PGROOT=$WORK/pg
    PGDATA=$PGROOT/data
    PGSOCK=$PGROOT/sock
    mkdir -p "$PGSOCK"
    chown -R postgres:postgres "$PGROOT"
    chmod 755 "$PGROOT"

    export DOT_HOME=$WORK/dothome
    if [[ $DAEMON == 1 ]]; then
        "$DOT" daemon start >/dev/null || die "dot daemon start failed"
    fi
    export RESTIC_REPOSITORY=$WORK/restic-repo RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$WORK/restic-cache
    export BORG_REPO=$WORK/borg-repo BORG_BASE_DIR=$WORK/borg-base
    export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
    CADIR=$WORK/casync
    declare -gA RESTORED=()

    local order restores tool
    mapfile -t order < <(rotate $((RUN - 1)) "${TOOLS[@]}")
    mapfile -t restores < <(rotate $((RUN - 1)) restic borg casync)
    record all order "${order[*]}"
    log "run $RUN/$RUNS: snapshot order ${order[*]}; restore order ${restores[*]}, then dot reset"

    log "initdb"
    as_pg "$PGBIN/initdb" -D "$PGDATA" -E UTF8 --locale=C --auth=trust -U postgres >"$LOGS/initdb.log" 2>&1 \
        || { tail -n 30 "$LOGS/initdb.log" >&2; die "initdb failed"; }

    # Each tool's repository; dot adopts the data directory right after initdb.
    timed dot init "$DOT" --quiet init pg --path "$PGDATA"
    timed restic init restic init
    record restic repository_version "$(restic cat config 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])' || echo unknown)"
    timed borg init borg init -e none "$BORG_REPO"
    mkdir -p "$CADIR/store"

    log "pgbench -i -s $SCALE"
    pg_start
    pgbench init -i -s "$SCALE"
    pg_stop
    record all pgdata_A_bytes "$(du -sb "$PGDATA" | cut -f1)"
    record all pgdata_A_files "$(find "$PGDATA" -type f | wc -l)"

    for tool in "${order[@]}"; do
        log "$tool: snapshot of state A"
        warm "$tool"
        snapshot "$tool" A snap1
        record "$tool" store_after_A_bytes "$(store_bytes "$tool")"
    done

    log "pgbench -c 1 -t $TRANSACTIONS"
    pg_start
    pgbench run -c 1 -t "$TRANSACTIONS"
    pg_stop
    record all pgdata_B_bytes "$(du -sb "$PGDATA" | cut -f1)"

    local before after
    for tool in "${order[@]}"; do
        log "$tool: snapshot of state B"
        before=$(store_bytes "$tool")
        warm "$tool"
        snapshot "$tool" B snap2
        after=$(store_bytes "$tool")
        record "$tool" store_after_B_bytes "$after"
        record "$tool" added_bytes "$((after - before))"
    done

    for tool in "${restores[@]}"; do
        log "$tool: restore of state A into a new directory"
        warm "$tool"
        restore_a "$tool"
    done

    log "dot: reset --hard HEAD^ (in place)"
    warm dot
    timed dot restore "$DOT" --quiet reset --hard HEAD^ pg

    log "verifying"
    {
        echo "== run $RUN: dot's data directory after reset vs restic's restore of state A"
        if python3 "$REPORT" tree-compare "${RESTORED[restic]}" "$PGDATA"; then
            record dot verify_match 1
        else
            record dot verify_match 0
            echo "!!!!!!!! MISMATCH: dot reset --hard HEAD^ did not reproduce state A (run $RUN) !!!!!!!!"
        fi
        for tool in borg casync; do
            echo "-- run $RUN: $tool's restore of A vs restic's restore of A (informational)"
            if python3 "$REPORT" tree-compare "${RESTORED[restic]}" "${RESTORED[$tool]}"; then
                record "$tool" verify_match 1
            else
                record "$tool" verify_match 0
            fi
        done
        echo "-- run $RUN: dot fsck"
        if "$DOT" --quiet fsck 2>&1; then record dot fsck_ok 1; else record dot fsck_ok 0; echo "!!!!!!!! dot fsck FAILED (run $RUN) !!!!!!!!"; fi
        echo "-- run $RUN: dot log"
        "$DOT" log pg 2>&1 || true
    } 2>&1 | tee -a "$VERIFY" >&2

    # Does PostgreSQL accept the directory dot restored, and is it state A?
    # (pgbench -i leaves pgbench_history empty; the 500 transactions fill it.)
    local rows
    if pg_start; then
        rows=$(as_pg "$PGBIN/psql" -h "$PGSOCK" -p "$PGPORT" -At -c 'select count(*) from pgbench_history' postgres 2>&1) || rows="error: $rows"
        pg_stop
        echo "-- run $RUN: PostgreSQL on dot's restored directory: pgbench_history rows = $rows (state A: 0, state B: $TRANSACTIONS)" | tee -a "$VERIFY" >&2
        record dot pg_history_rows_after_reset "$rows"
    fi

    if [[ $DAEMON == 1 ]]; then
        local pid
        pid=$("$DOT" daemon status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
        record dot daemon_rss_kib "$(awk '/VmHWM/ { print $2 }' "/proc/$pid/status")"
        "$DOT" daemon stop >/dev/null
    fi
    if [[ $KEEP_WORKDIR != 1 ]]; then rm -rf "$WORK"; fi
}

# ---------------------------------------------------------------- main
DATE=$(date +%Y-%m-%d-%H%M%S)
OUTDIR=$REPO_ROOT/benches/results
mkdir -p "$OUTDIR"
OUTFILE=$OUTDIR/compare-$DATE.txt

machine_info() {
    echo "date: $(date -Is)"
    echo "host: $(uname -n)  kernel: $(uname -r)  arch: $(uname -m)"
    echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)"
    echo "nproc: $(nproc)"
    echo "free -g:"
    free -g | sed 's/^/  /'
    echo "scratch filesystem: $(findmnt -n -o SOURCE,FSTYPE -T "$WORKDIR" 2>/dev/null | tr -s ' ')"
    echo "loadavg at start: $(cat /proc/loadavg)"
    echo "versions:"
    echo "  dot: $("$DOT" --version 2>&1) ($DOT, built $(date -r "$DOT" -Is), sha256 $(sha256sum "$DOT" | cut -c1-16))"
    echo "  dot source: $(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$( [[ -n $(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]] && echo ' (working tree has uncommitted changes)')"
    echo "  $(restic version 2>&1)"
    echo "  $(borg --version 2>&1)"
    echo "  casync $(casync --version 2>&1 | head -n 1)"
    echo "  $("$PGBIN/postgres" --version 2>&1)"
    echo "config: SCALE=$SCALE TRANSACTIONS=$TRANSACTIONS RUNS=$RUNS DAEMON=$DAEMON WORKDIR=$WORKDIR"
    echo "tool modes: dot defaults (DOT_HOME per run); restic default repository format and"
    echo "  compression, RESTIC_PASSWORD=bench, cache in the run dir; borg init -e none,"
    echo "  default compression (lz4) and files cache; casync default features and chunk size"
}

log "scratch: $WORKDIR; results: $OUTFILE"
MACHINE_INFO=$(machine_info)
echo "$MACHINE_INFO" >&2

for ((RUN = 1; RUN <= RUNS; RUN++)); do
    one_run
done

{
    echo "# dot end-to-end comparison (benches/compare.sh)"
    echo "$MACHINE_INFO"
    echo "finished: $(date -Is); loadavg at end: $(cat /proc/loadavg)"
    echo
    echo "# raw results: run  tool  metric  value"
    echo "# (times in seconds, wall clock; *_rss_kib = max RSS from /usr/bin/time %M;"
    echo "#  added_bytes = du -sb of the tool's store after minus before the 2nd snapshot;"
    echo "#  restore = restore of state A: dot reset --hard HEAD^ in place, others into a new dir)"
    cat "$RESULTS"
    echo
    echo "# verification"
    cat "$VERIFY"
    echo
    echo "# summary"
    python3 "$REPORT" report "$RESULTS"
} >"$OUTFILE"

echo
python3 "$REPORT" report "$RESULTS"
echo
echo "raw results: $OUTFILE"
if grep -Eq $'\tdot\t(verify_match|fsck_ok)\t0$' "$RESULTS"; then
    echo
    echo "!!!!!!!! FAILED: dot's restored data directory did not match state A, or dot fsck failed; see above and $OUTFILE !!!!!!!!"
    exit 1
fi

#!/usr/bin/env bash
# Memory of `tablelog import` on large JSONL files: is RSS flat in the input size?
#
# For every combination of SIZES_MB x IDS it generates a JSONL file of about
# SIZE MB with lines like
#   {"id":"k0001234","ts":1700000000000,"price":12.5,"pad":"xxxx..."}
# (IDS distinct ids spread over the file, ts increasing by 1 ms per line, each
# line LINE_BYTES long), imports it into a fresh database with
#   /usr/bin/time -v tablelog import DB --stream s --key id --time ts FILE
# and samples /proc/PID/status (VmRSS, RssAnon, RssFile) every INTERVAL seconds.
# RssAnon is heap (parser buffers, frames, the key index built at commit, the
# automatic checkpoint); RssFile is mapped file pages (the segment being indexed
# at commit, sidecars), which the kernel can drop under pressure.
#
# Prints one summary line per run (elapsed, max RSS from time -v, peak RssAnon
# and RssFile, and RSS at 25/50/75/100% of the run to show whether it is flat
# while the input streams in) and leaves the samples in $WORK/*.rss.tsv.
#
# Usage: benches/import_memory.sh          (from the repository root)
# Environment (defaults in brackets):
#   SIZES_MB    input sizes in MB              ["250 1024"]
#   IDS         distinct ids per input          ["1000000"]
#   LINE_BYTES  bytes per JSONL line            [200]
#   INTERVAL    RSS sampling interval, seconds  [0.5]
#   WORK        scratch directory               [/tmp/tablelog-import-bench]
#   BIN         tablelog binary                 [target/release/tablelog]
#   EXTRA       extra arguments to import       [""]
#   KEEP=1      keep the inputs and databases (default: delete them at the end)
#   MIN_FREE_GB refuse to run with less free space in WORK   [20]
set -euo pipefail

SIZES_MB=${SIZES_MB:-"250 1024"}
IDS=${IDS:-1000000}
LINE_BYTES=${LINE_BYTES:-200}
INTERVAL=${INTERVAL:-0.5}
WORK=${WORK:-/tmp/tablelog-import-bench}
BIN=${BIN:-target/release/tablelog}
EXTRA=${EXTRA:-}
MIN_FREE_GB=${MIN_FREE_GB:-20}

if [[ ! -x $BIN ]]; then
    echo "building $BIN" >&2
    cargo build --release --bin tablelog >&2
fi
mkdir -p "$WORK"
free_gb=$(df -Pk "$WORK" | awk 'NR==2 {print int($4 / 1048576)}')
need_gb=0
for s in $SIZES_MB; do need_gb=$((need_gb + 3 * s / 1024 + 1)); done
if ((free_gb - need_gb < MIN_FREE_GB)); then
    echo "only ${free_gb} GB free in $WORK, need ~${need_gb} GB and want ${MIN_FREE_GB} GB left" >&2
    exit 1
fi

# gen FILE SIZE_MB IDS: writes the JSONL input.
gen() {
    local file=$1 mb=$2 ids=$3
    local lines=$((mb * 1024 * 1024 / LINE_BYTES))
    mawk -v n="$lines" -v ids="$ids" -v len="$LINE_BYTES" 'BEGIN {
        x = "x"; while (length(x) < len) x = x x
        for (i = 0; i < n; i++) {
            k = (i * 7919) % ids      # 7919 is prime: every id, spread out
            head = sprintf("{\"id\":\"k%07d\",\"ts\":%.0f,\"price\":%d.5,\"pad\":\"", \
                k, 1700000000000 + i, i % 1000)
            # Pad the line to len bytes, newline included.
            printf "%s%s\"}\n", head, substr(x, 1, len - length(head) - 3)
        }
    }' >"$file"
}

# Samples /proc/PID/status of PID until it exits: t VmRSS RssAnon RssFile (kB).
sample() {
    local pid=$1 out=$2 t0
    t0=$(date +%s.%N)
    printf 't_s\tVmRSS_kB\tRssAnon_kB\tRssFile_kB\n' >"$out"
    while [[ -r /proc/$pid/status ]]; do
        mawk -v t0="$t0" -v now="$(date +%s.%N)" '
            /^VmRSS:/ {r = $2} /^RssAnon:/ {a = $2} /^RssFile:/ {f = $2}
            END {if (r != "") printf "%.1f\t%d\t%d\t%d\n", now - t0, r, a, f}' \
            "/proc/$pid/status" >>"$out" 2>/dev/null || true
        sleep "$INTERVAL"
    done
}

printf '%-8s %-8s %-9s %-9s %-11s %-13s %-13s %s\n' \
    size_MB ids lines elapsed maxRSS_MB peakAnon_MB peakFile_MB "RSS_MB@25/50/75/100%"
for mb in $SIZES_MB; do
    for ids in $IDS; do
        tag="${mb}MB-${ids}ids"
        file="$WORK/$tag.jsonl"
        db="$WORK/$tag.db"
        rm -rf "$db"
        [[ -s $file ]] || gen "$file" "$mb" "$ids"
        lines=$(wc -l <"$file")
        sync
        # shellcheck disable=SC2086 # EXTRA is a list of words
        /usr/bin/time -v -o "$WORK/$tag.time" "$BIN" import "$db" --stream s --key id --time ts \
            $EXTRA "$file" 2>"$WORK/$tag.stderr" &
        tpid=$!
        # The tablelog process is the only child of time(1).
        pid=""
        for _ in $(seq 200); do
            pid=$(cat "/proc/$tpid/task/$tpid/children" 2>/dev/null | tr -d ' ' || true)
            [[ -n $pid ]] && break
            sleep 0.01
        done
        [[ -n $pid ]] && sample "$pid" "$WORK/$tag.rss.tsv"
        wait "$tpid" || { echo "import failed:" >&2; cat "$WORK/$tag.stderr" >&2; exit 1; }
        maxrss=$(mawk -F': ' '/Maximum resident/ {printf "%.0f", $2 / 1024}' "$WORK/$tag.time")
        elapsed=$(mawk -F': ' '/Elapsed \(wall/ {print $2}' "$WORK/$tag.time")
        summary=$(mawk -F'\t' 'NR > 1 {n++; r[n] = $2; if ($3 > a) a = $3; if ($4 > f) f = $4}
            END {
                q = ""
                for (p = 1; p <= 4; p++) { i = int(n * p / 4); if (i < 1) i = 1; q = q sprintf("%.0f%s", r[i] / 1024, p < 4 ? "/" : "") }
                printf "%-13.0f %-13.0f %s", a / 1024, f / 1024, q
            }' "$WORK/$tag.rss.tsv")
        printf '%-8s %-8s %-9s %-9s %-11s %s\n' "$mb" "$ids" "$lines" "$elapsed" "$maxrss" "$summary"
        rm -rf "$db"
    done
done
if [[ -z ${KEEP:-} ]]; then
    rm -f "$WORK"/*.jsonl
    echo "inputs and databases deleted; samples left in $WORK" >&2
fi

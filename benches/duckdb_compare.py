#!/usr/bin/env python3
"""As-of join and window aggregate: tablelog vs DuckDB on the same data.

Generates N events over K keys (default 2,000,000 over 100,000; JSON rows with a
numeric `price`, event times mostly increasing with some late arrivals) and
100,000 requests (random key, random time), then:

  * as-of join: for each request, the key's latest row with ts <= request time
    (DuckDB: ASOF LEFT JOIN; tablelog: `tablelog join`);
  * window: avg(price) over the key's events in (t - 30m, t]
    (DuckDB: the range-join formulation, a LEFT JOIN on key and
    ts > t - 30m AND ts <= t with GROUP BY; tablelog: `tablelog window`),
    first reading the log, then through a field column of `price`
    (`tablelog column`, built once after the import as DuckDB's table is
    loaded once; its build time is printed, not counted).

Both engines' answers are compared before the timings are trusted. DuckDB times
cover the query on tables already loaded in memory; tablelog reports its
query-only time (`--timing`) and the end-to-end CLI time (reading the request
file, printing JSON). Each figure is the median of RUNS runs.

    python3 benches/duckdb_compare.py            # builds tablelog --release if needed
    EVENTS=200000 KEYS=10000 python3 benches/duckdb_compare.py
    STEP_MS=1000 python3 benches/duckdb_compare.py   # events 1 s apart: 23 days

STEP_MS is the event-time step between events (default 1 ms: 2M events span 33
minutes, so a 30-minute window holds nearly all of a key's history; with 1000,
a window holds about one event of the key, as with a long history).

Installs the `duckdb` package with pip if it is missing. The data lives in a
temporary directory, removed at the end (KEEP=1 keeps it and prints where).
"""

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

try:
    import duckdb
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "duckdb"])
    import duckdb

EVENTS = int(os.environ.get("EVENTS", 2_000_000))
KEYS = int(os.environ.get("KEYS", 100_000))
REQUESTS = int(os.environ.get("REQUESTS", 100_000))
RUNS = int(os.environ.get("RUNS", 3))
STEP_MS = int(os.environ.get("STEP_MS", 1))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "tablelog")


def median_time(fn):
    times = []
    out = None
    for _ in range(RUNS):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main():
    if not os.path.exists(BIN):
        subprocess.check_call(["cargo", "build", "--release", "--quiet"], cwd=ROOT)
    work = tempfile.mkdtemp(prefix="tablelog-duckdb-")
    try:
        run(work)
    finally:
        # About 0.5 GB of events, requests and database a run; KEEP=1 keeps it.
        if os.environ.get("KEEP"):
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(work):
    rng = random.Random(7)
    events_path = os.path.join(work, "events.jsonl")
    requests_path = os.path.join(work, "requests.jsonl")
    with open(events_path, "w") as f:
        for i in range(EVENTS):
            k = rng.randrange(KEYS)
            ts = i * STEP_MS
            if rng.randrange(50) == 0:
                ts -= rng.randrange(3_600_000)
            price = i % 1000
            key = f"{k:016d}"
            f.write(json.dumps({"k": key, "ts": ts, "pos": i, "price": price}) + "\n")
    reqs = []
    with open(requests_path, "w") as f:
        for r in range(REQUESTS):
            key = f"{rng.randrange(KEYS):016d}"
            ts = rng.randrange(EVENTS * STEP_MS)
            reqs.append((r, key, ts))
            f.write(json.dumps({"id": r, "k": key, "ts": ts}) + "\n")
    db = os.path.join(work, "db")
    t = time.perf_counter()
    subprocess.check_call([BIN, "import", db, "--stream", "ev", "--key", "k", "--time", "ts", events_path],
                          stderr=subprocess.DEVNULL)
    print(f"data: {EVENTS:,} events over {KEYS:,} keys, {REQUESTS:,} requests; "
          f"tablelog import {time.perf_counter() - t:.2f} s")

    con = duckdb.connect()
    con.execute("CREATE TABLE ev (k VARCHAR, ts BIGINT, pos BIGINT, price DOUBLE)")
    # `pos` is the line number, which is also the position tablelog assigned.
    con.execute(f"INSERT INTO ev SELECT k, ts, pos, price FROM read_json_auto('{events_path}')")
    con.execute("CREATE TABLE req (id BIGINT, k VARCHAR, ts BIGINT)")
    con.execute(f"INSERT INTO req SELECT id, k, ts FROM read_json_auto('{requests_path}')")

    def duck_asof():
        return con.execute(
            "SELECT r.id, e.price FROM req r ASOF LEFT JOIN "
            "(SELECT * FROM ev QUALIFY row_number() OVER (PARTITION BY k, ts ORDER BY pos DESC) = 1) e "
            "ON r.k = e.k AND r.ts >= e.ts ORDER BY r.id").fetchall()

    def duck_window():
        return con.execute(
            "SELECT r.id, avg(e.price) FROM req r LEFT JOIN ev e "
            "ON r.k = e.k AND e.ts > r.ts - 1800000 AND e.ts <= r.ts GROUP BY r.id ORDER BY r.id").fetchall()

    def tl(cmd):
        p = subprocess.run([BIN] + cmd + ["--timing"], capture_output=True, text=True, check=True)
        query_ms = float(p.stderr.split(" in ")[1].split(" ms")[0])
        return query_ms, p.stdout

    join_cmd = ["join", db, "--requests", requests_path, "--key", "k", "--time", "ts", "--feature", "ev"]
    win_cmd = ["window", db, "--stream", "ev", "--field", "price", "--agg", "avg", "--window", "30m",
               "--requests", requests_path, "--key", "k", "--time", "ts"]

    def check_join(out):
        bad = 0
        for line in out.splitlines():
            o = json.loads(line)
            mine = o.get("ev.price")
            theirs = d_join[o["id"]]
            if (mine is None) != (theirs is None) or (mine is not None and abs(mine - theirs) > 1e-9):
                bad += 1
        return bad

    def check_window(out):
        bad = 0
        for line in out.splitlines():
            o = json.loads(line)
            mine = o["avg_price_30m"]
            theirs = d_win[o["id"]]
            if (mine is None) != (theirs is None) or (
                    mine is not None and abs(mine - theirs) > 1e-6 * max(1, abs(theirs))):
                bad += 1
        return bad

    # Same answers first.
    d_join = {i: p for i, p in duck_asof()}
    d_win = {i: a for i, a in duck_window()}
    mismatches = check_join(tl(join_cmd)[1]) + check_window(tl(win_cmd)[1])

    d_join_s, _ = median_time(duck_asof)
    d_win_s, _ = median_time(duck_window)
    tj = [tl(join_cmd)[0] for _ in range(RUNS)]
    tw = [tl(win_cmd)[0] for _ in range(RUNS)]
    e2e_join, _ = median_time(lambda: subprocess.run([BIN] + join_cmd, capture_output=True, check=True))
    e2e_win, _ = median_time(lambda: subprocess.run([BIN] + win_cmd, capture_output=True, check=True))

    # Then with the price kept typed in a field column (`tablelog column`),
    # built once, as DuckDB's table is loaded once; not part of the timings.
    t = time.perf_counter()
    subprocess.check_call([BIN, "column", db, "--stream", "ev", "--field", "price"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    built = time.perf_counter() - t
    mismatches += check_window(tl(win_cmd)[1])
    print(f"answers compared: {3 * REQUESTS:,}, mismatches: {mismatches}")
    if mismatches:
        sys.exit("answers differ; timings not reported")
    # DuckDB again beside it, the machine being noisy.
    d_win2_s, _ = median_time(duck_window)
    twc = [tl(win_cmd)[0] for _ in range(RUNS)]
    e2e_winc, _ = median_time(lambda: subprocess.run([BIN] + win_cmd, capture_output=True, check=True))

    tj_s, tw_s, twc_s = (statistics.median(x) / 1e3 for x in (tj, tw, twc))

    def row(name, duck, query, cli):
        ratio = f"tablelog {duck / query:.1f}x faster" if query < duck else f"tablelog {query / duck:.1f}x slower"
        print(f"{name:<34}{duck:>9.3f}s{query:>15.3f}s{cli:>13.3f}s   {ratio}")

    print(f"{'workload':<34}{'duckdb':>10}{'tablelog query':>16}{'tablelog CLI':>14}   ratio (query)")
    row(f"as-of join, {REQUESTS:,} requests", d_join_s, tj_s, e2e_join)
    row(f"window avg 30m, {REQUESTS:,} req", d_win_s, tw_s, e2e_win)
    row("window, field column", d_win2_s, twc_s, e2e_winc)
    print(f"field column built in {built:.2f} s (tablelog column, end to end)")
    print(f"duckdb {duckdb.__version__}, {os.cpu_count()} cores, runs={RUNS} (median)")


if __name__ == "__main__":
    main()

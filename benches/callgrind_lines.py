#!/usr/bin/env python3
"""Where a function's own instructions come from, per source line.

callgrind_annotate attributes code inlined into a function to the inlined
callee's file (`slice/iter/macros.rs`, `option.rs`...), so a function built
from many small inlined pieces shows no hot line of its own. This maps each
instruction's count, as callgrind recorded it with `--dump-instr=yes`,
through `addr2line -i` to the innermost line of the source file asked for
(the line of that file that the instruction's code was inlined from), and
prints the lines by cost, per call of the function.

    WARM=1 UNIFORM=1 LOOKUPS=100000 DIR=/tmp/pg valgrind --tool=callgrind \\
        --dump-instr=yes --compress-pos=no --compress-strings=no \\
        --callgrind-out-file=/tmp/cg.out \\
        --toggle-collect=profile_get::lookups \\
        target/release/examples/profile_get 2000000
    python3 benches/callgrind_lines.py /tmp/cg.out 'View::newest_visible$' \\
        target/release/examples/profile_get src/storage/view.rs 100000

Arguments: the callgrind output, a regular expression matching the function's
name, the binary it profiled, the source file to attribute to, and the
number of calls to divide by (default 1). Needs `addr2line` (binutils).
"""

import collections
import re
import signal
import subprocess
import sys


def self_costs(out, pattern):
    """Instruction address -> its own count, for functions matching `pattern`.

    A cost line right after a `calls=` line is the inclusive cost of that
    call, not the function's own, and is skipped."""
    costs = collections.Counter()
    fn, after_call = None, False
    with open(out) as f:
        for line in f:
            if line.startswith("fn="):
                fn = line[3:].strip()
                continue
            if line.startswith("calls="):
                after_call = True
                continue
            if not line.startswith("0x"):
                continue
            if after_call:
                after_call = False
                continue
            if fn and re.search(pattern, fn):
                fields = line.split()
                if len(fields) >= 3:
                    costs[int(fields[0], 16)] += int(fields[2])
    return costs


def lines_of(binary, addrs, source):
    """Address -> the innermost `file:line` of `source` in its inline chain."""
    if not addrs:
        return {}
    out = subprocess.run(
        ["addr2line", "-a", "-i", "-e", binary] + [hex(a) for a in addrs],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    name = source.rsplit("/", 1)[-1]
    found, addr, chain = {}, None, []

    def flush():
        if addr is not None:
            mine = [c for c in chain if c.rsplit("/", 1)[-1].startswith(name + ":")]
            found[addr] = mine[0].rsplit(":", 1)[-1] if mine else "?"

    for line in out:
        if line.startswith("0x"):
            flush()
            addr, chain = int(line, 16), []
        elif line:
            chain.append(line.split(" (discriminator")[0])
    flush()
    return found


def main():
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` ends it quietly
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    out, pattern, binary, source = sys.argv[1:5]
    calls = float(sys.argv[5]) if len(sys.argv) > 5 else 1.0
    costs = self_costs(out, pattern)
    if not costs:
        sys.exit(f"no instructions of a function matching {pattern!r} in {out}")
    by_line = collections.Counter()
    for addr, line in lines_of(binary, sorted(costs), source).items():
        by_line[line] += costs[addr]
    try:
        text = open(source).read().splitlines()
    except OSError:
        text = []
    total = sum(costs.values())
    print(f"{total / calls:8.1f}  total, per call")
    for line, cost in by_line.most_common():
        code = text[int(line) - 1].strip() if line.isdigit() and int(line) <= len(text) else ""
        print(f"{cost / calls:8.1f}  {source}:{line}  {code[:80]}")


if __name__ == "__main__":
    main()

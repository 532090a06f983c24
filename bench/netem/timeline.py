#!/usr/bin/env python3
"""A hive round's swarm timeline, from the leechers' logs.

Each hive peer of the harness logs, at RUST_LOG=hive_peer::timeline=debug,
every chunk it verified and whom it came from ("chunk verified from=ADDR
chunk=N"), every chunk a holder declined ("chunk declined"), every
request a holder answered with another chunk it had sent less ("chunk
swapped") and every chunk that came when it was held already, or whose
request failed after bytes came ("chunk wasted": end-game copies). From
those:
which chunks the seeder sent more than once (to different leechers), when
the leechers began to get chunks from each other, and second by second how
many chunks came from the seeder (first copies, duplicates) and from
leechers. End-game copies cancelled part-way are not logged (their bytes still
crossed the link), so the link counters may show a little more than this.

    timeline.py ROUND_DIR T0_EPOCH SEEDER_ADDR [SECONDS]

Writes ROUND_DIR/timeline.csv (second, seeder_first, seeder_dup, leechers,
declined, swapped) and prints a summary.
"""

import csv
import datetime
import glob
import os
import re
import sys
from collections import Counter, defaultdict

LINE = re.compile(
    r"^(\S+)\s+DEBUG\s+(?:\S+\s+)*?hive_peer::timeline: chunk (verified|declined|swapped|wasted) from=(\S+) chunk=(\d+)"
)
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def events(path):
    """(epoch, kind, from, chunk) for each timeline line of one log."""
    with open(path, errors="replace") as f:
        for raw in f:
            m = LINE.match(ANSI.sub("", raw))
            if not m:
                continue
            ts = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp()
            yield ts, m.group(2), m.group(3), int(m.group(4))


def main():
    round_dir, t0, seeder = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    shown = int(sys.argv[4]) if len(sys.argv) > 4 else 40
    per_leecher = {}
    all_events = []
    for log in sorted(glob.glob(os.path.join(round_dir, "l*.log"))):
        node = os.path.basename(log)[:-4]
        evs = [(ts - t0, kind, who, chunk, node) for ts, kind, who, chunk in events(log)]
        all_events += evs
        got = [e for e in evs if e[1] == "verified"]
        per_leecher[node] = (
            sum(1 for e in got if e[2] == seeder),
            sum(1 for e in got if e[2] != seeder),
            sum(1 for e in evs if e[1] == "declined"),
            min((e[0] for e in got if e[2] != seeder), default=None),
        )
    if not all_events:
        print("    timeline: no timeline lines in the leechers' logs (RUST_LOG=hive_peer::timeline=debug)")
        return
    all_events.sort()
    sent = Counter()
    bins = defaultdict(lambda: [0, 0, 0, 0, 0])
    for t, kind, who, chunk, _ in all_events:
        if kind == "wasted":
            continue
        b = bins[max(0, int(t))]
        if kind == "declined":
            b[3] += 1
        elif kind == "swapped":
            b[4] += 1
        elif who == seeder:
            sent[chunk] += 1
            b[0 if sent[chunk] == 1 else 1] += 1
        else:
            b[2] += 1
    total = sum(sent.values())
    distinct = len(sent)
    dups = total - distinct
    print(
        f"    timeline: the seeder's chunks verified by leechers: {total}, {distinct} distinct "
        f"({dups} duplicates, {100 * dups / max(total, 1):.0f} %); "
        f"declined {sum(v[2] for v in per_leecher.values())} requests, "
        f"swapped {sum(b[4] for b in bins.values())}"
    )
    wasted = sum(1 for e in all_events if e[1] == "wasted")
    print(f"    timeline: chunks that came twice or were cut off (end-game copies, failed requests): {wasted}")
    firsts = [v[3] for v in per_leecher.values() if v[3] is not None]
    if firsts:
        print(
            f"    timeline: first chunk from another leecher at {min(firsts):.2f} s "
            f"(each leecher's first: {min(firsts):.2f}-{max(firsts):.2f} s)"
        )
    print(
        "    timeline: per leecher, chunks from the seeder / from leechers: "
        + " ".join(f"{n}={s}/{l}" for n, (s, l, _, _) in per_leecher.items())
    )
    last = max(bins)
    with open(os.path.join(round_dir, "timeline.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["second", "seeder_first", "seeder_dup", "leechers", "declined", "swapped"])
        for s in range(last + 1):
            w.writerow([s, *bins[s]])
    rows = range(min(last + 1, shown))
    print("    timeline, chunks a second (first copies from the seeder, its duplicates, from leechers):")
    print("      first " + " ".join(f"{bins[s][0]:4d}" for s in rows))
    print("      dup   " + " ".join(f"{bins[s][1]:4d}" for s in rows))
    print("      peers " + " ".join(f"{bins[s][2]:4d}" for s in rows))


if __name__ == "__main__":
    main()

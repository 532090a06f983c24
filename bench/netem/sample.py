#!/usr/bin/env python3
"""Samples the byte counters of every link of scripts/netem-swarm.sh's
switch, 4 times a second, until killed.

Run inside the switch namespace: there each node's link is the veth `v-NODE`
on the bridge, so what the switch receives on it is the node's upload and
what it sends on it the node's download. Prints one line per link and
sample: `EPOCH NODE UP_BYTES DOWN_BYTES` (counters since the link was made).
"""
import sys
import time

PERIOD = float(sys.argv[1]) if len(sys.argv) > 1 else 0.25
out = sys.stdout
next_t = time.time()
while True:
    now = time.time()
    with open("/proc/self/net/dev") as f:
        lines = f.readlines()[2:]
    for line in lines:
        name, _, rest = line.partition(":")
        name = name.strip()
        if not name.startswith("v-"):
            continue
        fields = rest.split()
        # receive bytes is field 0, transmit bytes field 8
        out.write("%.3f %s %s %s\n" % (now, name[2:], fields[0], fields[8]))
    out.flush()
    next_t += PERIOD
    time.sleep(max(0.0, next_t - time.time()))

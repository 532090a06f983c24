#!/usr/bin/env python3
"""Which pieces of the file each leecher holds, compared with the source.

    held.py SOURCE PIECE_BYTES NODE=PATH...

A piece counts as held when the leecher's file (hive's part file, aria2c's
preallocated file, transmission's .part) has exactly the source's bytes
there: the source is random data, so an unwritten piece never matches.
Prints `NODE FRACTION` per leecher, then `nobody N` (pieces no leecher holds)
and `pieces N`.
"""
import sys

source, piece = sys.argv[1], int(sys.argv[2])
nodes = [a.split("=", 1) for a in sys.argv[3:]]
with open(source, "rb") as f:
    src = f.read()
count = (len(src) + piece - 1) // piece
anyone = [False] * count
for node, path in nodes:
    held = 0
    try:
        with open(path, "rb") as f:
            for i in range(count):
                block = f.read(piece)
                if block == src[i * piece:(i + 1) * piece]:
                    held += 1
                    anyone[i] = True
    except OSError:
        pass
    print("%s %.4f" % (node, held / count))
print("nobody %d" % anyone.count(False))
print("pieces %d" % count)

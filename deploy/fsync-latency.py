#!/usr/bin/env python3
"""Measures write+fdatasync latency of the disk under a directory, the way a Raft log appends.

Usage: deploy/fsync-latency.py [DIR] [COUNT]. Prints p50/p90/p99/p99.9/max in milliseconds.
keel's default Raft timings (docs/ARCHITECTURE.md, "Raft timings") were chosen from these figures.
"""
import os, sys, tempfile, time

d = sys.argv[1] if len(sys.argv) > 1 else "."
n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
fd, path = tempfile.mkstemp(dir=d, prefix="fsync-probe-")
buf = os.urandom(4096)
lat = []
try:
    for _ in range(n):
        t = time.perf_counter()
        os.write(fd, buf)
        os.fdatasync(fd)
        lat.append((time.perf_counter() - t) * 1000)
finally:
    os.close(fd)
    os.unlink(path)
lat.sort()
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"fsync latency over {n} appends of 4 KiB in {d}: p50 {q(.5):.2f} ms, p90 {q(.9):.2f} ms, "
      f"p99 {q(.99):.2f} ms, p99.9 {q(.999):.2f} ms, max {lat[-1]:.2f} ms")

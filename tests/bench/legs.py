#!/usr/bin/env python3
"""Where each filing's time goes, leg by leg, from the nodes' info logs of a
bench run (`ECOINTEGRA_BENCH_NODE_LOG=info ecointegra-bench --keep ...`).

usage: tests/bench/legs.py ORIGIN.log DESTINATION.log

Per phase of the run (a gap of over a second between filings starts a new
one: warm-up, closed loop, open loop), p50/p90/p99 in ms of: the submission
("Submission traced" to "Filing accepted", origin), the relay ("Filing
accepted" to "Transfer published", origin), Kafka to the destination's
commit ("Filing delivered", destination), the receipt's way back ("Receipt
stored", origin), and the whole.
"""
import collections
import datetime
import re
import sys

EVENTS = ("Submission traced.", "Filing accepted.", "Transfer published.",
          "Filing delivered.", "Receipt stored; filing delivered.")
LINE = re.compile(r"^(\S+Z)\s+INFO\s.*?(" + "|".join(map(re.escape, EVENTS)) +
                  r").*?tracking_code=(\S+)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def events(path):
    seen = collections.defaultdict(dict)
    with open(path, errors="replace") as log:
        for line in log:
            m = LINE.search(ANSI.sub("", line))
            if m:
                at = datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))
                seen[m.group(3)].setdefault(m.group(2), at.timestamp())
    return seen


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main(origin_log, destination_log):
    origin, destination = events(origin_log), events(destination_log)
    rows = []
    for code, at in origin.items():
        times = [at.get(EVENTS[0]), at.get(EVENTS[1]), at.get(EVENTS[2]),
                 destination.get(code, {}).get(EVENTS[3]), at.get(EVENTS[4])]
        if None in times:
            continue
        legs = [(b - a) * 1e3 for a, b in zip(times, times[1:])]
        rows.append((times[1], legs + [(times[-1] - times[0]) * 1e3]))
    rows.sort()
    phases, current = [], []
    for row in rows:
        if current and row[0] - current[-1][0] > 1.0:
            phases.append(current)
            current = []
        current.append(row)
    if current:
        phases.append(current)
    names = ("submission", "relay", "to destination", "receipt back", "all")
    for number, phase in enumerate(phases):
        span = (phase[-1][0] - phase[0][0]) or 1.0
        print(f"phase {number}: {len(phase)} filings, {len(phase) / span:.0f}/s")
        for i, name in enumerate(names):
            values = [legs[i] for _, legs in phase]
            print(f"  {name:15s} p50 {percentile(values, .5):7.1f}"
                  f"  p90 {percentile(values, .9):7.1f}  p99 {percentile(values, .99):7.1f} ms")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

#!/usr/bin/env python3
"""Medians of the rounds scripts/bench-compare.sh ran: one side-by-side table.

Reads DIR/append.N, DIR/command.N and DIR/peer.N (the Markdown tables that
append_bench, command_bench and the peer's run.sh print) for N = 1..ROUNDS.
Ratios are taken within a round (the figures measured minutes apart on the
same machine), then their median across rounds.
"""
import statistics
import sys
from pathlib import Path


def rows(path):
    """The table rows of one output file, as lists of stripped cells."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            out.append([c.strip() for c in line.strip().strip("|").split("|")])
    return out


def num(cell):
    try:
        return float(cell.rstrip("x%"))
    except ValueError:
        return None


def round_figures(directory, n):
    """Figures of round n, keyed by (name, writers)."""
    f = {}
    for r in rows(directory / f"append.{n}"):
        w = num(r[1])
        if r[0] == "new stream per append":
            f[("raw", w)] = num(r[2])
            f[("raw_p99", w)] = num(r[5])
            f[("pgbench_fulcrum", w)] = num(r[7])
        elif r[0] == "one hot stream":
            f[("raw_hot", w)] = num(r[2])
        elif r[0] == "100 events per append":
            f[("bulk_events", w)] = num(r[3])
            if len(r) > 7 and r[7]:
                f[("bulk_ceiling", w)] = num(r[7].split()[0])
    for r in rows(directory / f"command.{n}"):
        w = num(r[1])
        # The last column (CPU µs per command) is missing in older runs.
        cpu = num(r[9]) if len(r) > 9 and r[9] else None
        if r[0] == "PlaceOrder":
            f[("http", w)] = num(r[2])
            f[("http_p99", w)] = num(r[5])
            f[("http_cpu", w)] = cpu
        elif r[0] == "PlaceOrder in-process":
            f[("inproc", w)] = num(r[2])
            f[("inproc_cpu", w)] = cpu
        elif r[0].startswith("stock receipt, one hot SKU"):
            f[("hot_sku", w)] = num(r[2])
            f[("hot_sku_conflicts", w)] = num(r[3])
    for r in rows(directory / f"peer.{n}"):
        w = num(r[1])
        if r[0].startswith("A new stream"):
            f[("peer", w)] = num(r[2])
            f[("pgbench_peer", w)] = num(r[7]) if len(r) > 7 else None
        elif r[0].startswith("B hot stream"):
            f[("peer_hot", w)] = num(r[2])
    return f


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=0):
    return "n/a" if v is None else f"{v:,.{digits}f}"


def spread(values, digits=0):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    return f"{fmt(statistics.median(values), digits)} ({fmt(min(values), digits)}–{fmt(max(values), digits)})"


def main():
    directory, rounds = Path(sys.argv[1]), int(sys.argv[2])
    figs = [round_figures(directory, n) for n in range(1, rounds + 1)]

    def get(key):
        return [f.get(key) for f in figs]

    def ratio(a, b):
        return [x / y if x is not None and y else None for x, y in zip(get(a), get(b))]

    print(f"## Side by side, medians of {rounds} alternating rounds (min–max)\n")
    print("| writers | Fulcrum raw appends/s | commands in-process/s | commands over HTTP/s | HTTP p99 ms "
          "| cqrs-es commands/s | pgbench, Fulcrum's table | pgbench, peer's table "
          "| raw ÷ cqrs-es | raw ÷ pgbench (Fulcrum) | HTTP ÷ cqrs-es |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for w in (1.0, 8.0, 32.0):
        print(f"| {w:.0f} | {spread(get(('raw', w)))} | {spread(get(('inproc', w)))} "
              f"| {spread(get(('http', w)))} | {spread(get(('http_p99', w)), 1)} "
              f"| {spread(get(('peer', w)))} | {spread(get(('pgbench_fulcrum', w)))} "
              f"| {spread(get(('pgbench_peer', w)))} "
              f"| {spread(ratio(('raw', w), ('peer', w)), 2)} "
              f"| {spread(ratio(('raw', w), ('pgbench_fulcrum', w)), 2)} "
              f"| {spread(ratio(('http', w), ('peer', w)), 2)} |")
    print()
    print("| figure | median (min–max) |")
    print("|---|---:|")
    print(f"| events/s, 100 events per append, 8 writers | {spread(get(('bulk_events', 8.0)))} |")
    print(f"| ... pgbench, 100 server-made rows per INSERT into Fulcrum's table, 8 clients, rows/s | {spread(get(('bulk_ceiling', 8.0)))} |")
    print(f"| ... Fulcrum's bulk events/s ÷ that ceiling | {spread(ratio(('bulk_events', 8.0), ('bulk_ceiling', 8.0)), 2)} |")
    print(f"| one hot stream, raw appends, 32 writers, appends/s | {spread(get(('raw_hot', 32.0)))} |")
    print(f"| one hot SKU through the command layer, 32 clients, ok/s | {spread(get(('hot_sku', 32.0)))} |")
    print(f"| ... its conflicts/s | {spread(get(('hot_sku_conflicts', 32.0)), 1)} |")
    print(f"| cqrs-es, one hot stream, 32 writers, commands/s | {spread(get(('peer_hot', 32.0)))} |")
    print(f"| single append, 1 writer, p99 ms | {spread(get(('raw_p99', 1.0)), 2)} |")
    print()
    print("CPU time of the whole machine per successful command, µs (steal excluded):\n")
    print("| writers | in-process | over HTTP |")
    print("|---:|---:|---:|")
    for w in (1.0, 8.0, 32.0):
        print(f"| {w:.0f} | {spread(get(('inproc_cpu', w)))} | {spread(get(('http_cpu', w)))} |")


if __name__ == "__main__":
    main()

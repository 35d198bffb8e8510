#!/usr/bin/env python3
"""Results of bench/run.sh: one JSON line per measurement, and the table of ratios.

Subcommands (run.sh calls them; each but `table` prints one JSON line):
  pgbench     a pgbench run: stdout, per-transaction logs (-l), CPU times
  loadgen     a loadgen run: its JSON line, CPU times, RSS samples
  statements  pg_stat_statements after N GetUser calls
  start       one start-to-SERVING measurement
  table       the Markdown table of medians and ratios, from results.jsonl

Benchmarks are not tests: the table says whether a goal is met; nothing fails on it.
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys


def times_children_seconds(path):
    """CPU seconds (user + system) of the children, from bash's `times` output."""
    with open(path) as handle:
        lines = handle.read().split("\n")
    total = 0.0
    for part in lines[1].split():
        minutes, seconds = re.match(r"(\d+)m([\d.]+)s", part).groups()
        total += int(minutes) * 60 + float(seconds)
    return total


def percentile(sorted_values, quantile):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(quantile * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def cmd_pgbench(args):
    with open(args.stdout) as handle:
        text = handle.read()
    processed = int(re.search(r"number of transactions actually processed: (\d+)", text).group(1))
    failed_match = re.search(r"number of failed transactions: (\d+)", text)
    tps = float(re.search(r"tps = ([\d.]+) \(without initial connection time\)", text).group(1))
    latencies = []
    for path in glob.glob(os.path.join(args.logs, "log*")):
        with open(path) as handle:
            for line in handle:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]))
    latencies.sort()
    ms = lambda value: None if value is None else value / 1000.0
    driver = times_children_seconds(args.times)
    per = lambda seconds: seconds * 1e6 / max(processed, 1)
    print(json.dumps(add_other_cpu({
        "kind": "pgbench",
        "phase": args.phase,
        "round": args.round,
        "server": "postgres",
        "concurrency": args.clients,
        "rps": tps,
        "ok": processed,
        "errors": int(failed_match.group(1)) if failed_match else 0,
        "latency_ms": {
            "p50": ms(percentile(latencies, 0.50)),
            "p90": ms(percentile(latencies, 0.90)),
            "p99": ms(percentile(latencies, 0.99)),
            "max": ms(latencies[-1] if latencies else None),
            "mean": ms(statistics.fmean(latencies)) if latencies else None,
        },
        "cpu_us_per_request": {
            "driver": per(driver),
            "server": 0.0,
            "postgres": per(args.pg_ticks / args.clk_tck),
            "redis": per(args.redis_ticks / args.clk_tck),
        },
    }, args, processed)))


def cmd_loadgen(args):
    with open(args.json) as handle:
        result = json.loads(handle.read().strip().splitlines()[-1])
    requests = result["all_requests"] + result.get("prewarm_requests", 0)
    per = lambda seconds: seconds * 1e6 / max(requests, 1)
    rss = []
    if os.path.exists(args.rss):
        with open(args.rss) as handle:
            rss = [int(line) for line in handle if line.strip().isdigit()]
    print(json.dumps(add_other_cpu({
        "kind": "loadgen",
        "phase": args.phase,
        "round": args.round,
        "server": args.server,
        "concurrency": result["concurrency"],
        "connections": result["connections"],
        "tenants": result["tenants"],
        "rps": result["rps"],
        "ok": result["ok"],
        "errors": result["errors"],
        "errors_by_code": result["errors_by_code"],
        "latency_ms": result["latency_ms"],
        "cpu_us_per_request": {
            "driver": per(times_children_seconds(args.times)),
            "server": per(args.server_ticks / args.clk_tck),
            "postgres": per(args.pg_ticks / args.clk_tck),
            "redis": per(args.redis_ticks / args.clk_tck),
        },
        "rss_kib": {
            "samples": len(rss),
            "median": statistics.median(rss) if rss else None,
            "max": max(rss) if rss else None,
        },
    }, args, requests)))


def cmd_statements(args):
    with open(args.json) as handle:
        result = json.loads(handle.read().strip().splitlines()[-1])
    reads = result["ok"]
    statements = []
    with open(args.tsv) as handle:
        for line in handle:
            if "\t" in line:
                calls, query = line.rstrip("\n").split("\t", 1)
                statements.append({"calls": int(calls), "query": query})
    # The readiness probe runs on its own connection every second; it is not part of a read.
    # The readiness probe (its own connection, every second) and the set-up of a new pooled
    # connection are not part of a call.
    probe = [s for s in statements if "__diesel_schema_migrations" in s["query"]
             or s["query"].startswith(("SET CLIENT_ENCODING", "SET TIME ZONE"))]
    per_read = [s for s in statements if s not in probe]
    pings = [s for s in per_read if re.fullmatch(r"(?i)select \$?1;?", s["query"].strip())]
    print(json.dumps({
        "kind": "statements",
        "phase": "statements",
        "rpc": args.rpc,
        "server": args.server,
        "reads": reads,
        "errors": result["errors"],
        "statements_per_read": sum(s["calls"] for s in per_read) / max(reads, 1),
        "checkout_pings": sum(s["calls"] for s in pings),
        "statements": per_read,
        "probe_statements": probe,
    }))


def cmd_start(args):
    with open(args.json) as handle:
        result = json.loads(handle.read().strip().splitlines()[-1])
    print(json.dumps({
        "kind": "start",
        "phase": "start_" + args.mode,
        "server": args.server,
        "repeat": args.repeat,
        "serving_after_ms": result["serving_after_ms"],
        "first_answer_after_ms": result.get("first_answer_after_ms"),
    }))


# ---- table --------------------------------------------------------------------------


def load(path):
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def median_of(records, getter):
    values = [getter(record) for record in records]
    values = [value for value in values if value is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=2):
    if value is None:
        return "n/a"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def verdict(ok):
    return "n/a" if ok is None else ("**met**" if ok else "**not met**")


def cmd_table(args):
    records = load(args.results)
    runs = {}
    for record in records:
        if record["kind"] in ("pgbench", "loadgen"):
            runs.setdefault((record["phase"], record["server"]), []).append(record)

    def get(phase, server, getter):
        return median_of(runs.get((phase, server), []), getter)

    def paired(anchor_phase, anchor_server, phase, server, getter, combine=lambda a, b: b / a if a else None):
        """Per-round values of combine(anchor, measured), for phases run side by side in each
        round, and their median (robust to a machine whose speed drifts between rounds)."""
        anchors = {r.get("round"): r for r in runs.get((anchor_phase, anchor_server), [])}
        values = []
        for record in sorted(runs.get((phase, server), []), key=lambda r: r.get("round", 0)):
            anchor = anchors.get(record.get("round"))
            if anchor is not None and getter(anchor) is not None and getter(record) is not None:
                values.append(combine(getter(anchor), getter(record)))
        values = [v for v in values if v is not None]
        return (statistics.median(values) if values else None), values

    def rounds_text(values, digits=3):
        return "per round: " + ", ".join(fmt(v, digits) for v in values) if len(values) > 1 else ""

    rps = lambda record: record["rps"]
    p50 = lambda record: record["latency_ms"]["p50"]
    p99 = lambda record: record["latency_ms"]["p99"]
    ratio = lambda a, b: None if a in (None, 0) or b is None else b / a
    pool = args.pool
    out = []
    rounds = max((r.get("round", 1) for r in records if "round" in r), default=0)
    out.append(f"Machine: {args.machine}  ")
    out.append(f"Command: `{args.command}`  ")
    out.append(f"Pool size = pgbench clients = concurrency = {pool}; figures are medians of {rounds} round(s); a"
               " ratio is the median of the per-round ratios (each round runs both sides back to back).")
    out.append("")

    servers = sorted({server for (_, server) in runs if server in ("A", "B")})
    if args.compare == "1" and servers == ["A", "B"]:
        out.append("A/B: the same phase against tenantd A and B in every round, back to back (order alternating"
                   " by round). B/A is the median of the per-round ratios.")
        out.append("")
        out.append("| Phase | A rps | B rps | B/A rps | B/A per round | A p50 ms | B p50 ms | A p99 ms | B p99 ms |"
                   " A CPU us/req (server+pg) | B CPU us/req (server+pg) | A RSS max MiB | B RSS max MiB |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        server_pg = lambda r: r["cpu_us_per_request"]["server"] + r["cpu_us_per_request"]["postgres"]
        rss_max = lambda r: (r["rss_kib"]["max"] or 0) / 1024 if r.get("rss_kib") else None
        for phase in sorted({phase for (phase, server) in runs if server == "A"}):
            ab_ratio, ab_rounds = paired(phase, "A", phase, "B", rps)
            out.append(
                f"| {phase} | {fmt(get(phase, 'A', rps))} | {fmt(get(phase, 'B', rps))} | {fmt(ab_ratio, 3)} | "
                f"{', '.join(fmt(v, 3) for v in ab_rounds)} | "
                f"{fmt(get(phase, 'A', p50), 3)} | {fmt(get(phase, 'B', p50), 3)} | "
                f"{fmt(get(phase, 'A', p99), 3)} | {fmt(get(phase, 'B', p99), 3)} | "
                f"{fmt(get(phase, 'A', server_pg), 0)} | {fmt(get(phase, 'B', server_pg), 0)} | "
                f"{fmt(get(phase, 'A', rss_max), 1)} | {fmt(get(phase, 'B', rss_max), 1)} |"
            )
        out.append("")

    server = "A"
    rows = []
    a_pg, a_td = get("pg_read_cP", "postgres", rps), get("td_get_cP", server, rps)
    a_ratio, a_rounds = paired("pg_read_cP", "postgres", "td_get_cP", server, rps)
    rows.append((f"(a) GetUser throughput, c={pool}", f"pgbench {fmt(a_pg)} tps", f"{fmt(a_td)} rps",
                 f"{fmt(a_ratio, 3)}x {rounds_text(a_rounds)}", ">= 0.80x",
                 verdict(None if a_ratio is None else a_ratio >= 0.8)))
    # What a server with no cost of its own beyond a bare gRPC hop could reach here: the load
    # generator, the server and PostgreSQL share the same cores, so every microsecond of CPU
    # they spend per request is taken from PostgreSQL. Ceiling = pgbench's CPU per
    # transaction / (that + the bare echo's client and server CPU per call).
    ours = lambda r: sum(v for k, v in r["cpu_us_per_request"].items() if k != "other")
    pg_cpu, echo_cpu = get("pg_read_cP", "postgres", ours), get("echo_ping_cP", "echo", ours)
    td_cpu = get("td_get_cP", server, ours)
    if pg_cpu and echo_cpu:
        ceiling = pg_cpu / (pg_cpu + echo_cpu)
        rows.append(("(a) ceiling on this machine", f"pgbench {fmt(pg_cpu, 0)} us CPU/txn",
                     f"+ bare gRPC hop {fmt(echo_cpu, 0)} us CPU/call (tenantd GetUser: {fmt(td_cpu, 0)} us)",
                     f"{fmt(ceiling, 3)}x", "(bound, not a goal)", "n/a"))
    c1_pg, c1_td = get("pg_read_c1", "postgres", p50), get("td_get_c1", server, p50)
    c1_diff, c1_rounds = paired("pg_read_c1", "postgres", "td_get_c1", server, p50, lambda a, b: b - a)
    rows.append(("GetUser p50 at c=1", f"pgbench {fmt(c1_pg, 3)} ms", f"{fmt(c1_td, 3)} ms",
                 f"+{fmt(c1_diff, 3)} ms {rounds_text(c1_rounds)}", "<= +0.25 ms",
                 verdict(None if c1_diff is None else c1_diff <= 0.25)))
    c32_p50, c32_p99 = get("td_get_c32", server, p50), get("td_get_c32", server, p99)
    c32_rounds = [r["latency_ms"]["p99"] for r in sorted(runs.get(("td_get_c32", server), []), key=lambda r: r.get("round", 0))]
    c32_pg99 = get("pg_read_c32", "postgres", p99)
    c32_shape = ratio(c32_p50, c32_p99)
    c32_ok = None if c32_p99 is None else (c32_p99 <= 10.0 and c32_shape is not None and c32_shape <= 5.0)
    rows.append(("GetUser p99 at c=32", f"pgbench p99 {fmt(c32_pg99, 3)} ms", f"p99 {fmt(c32_p99, 3)} ms, p50 {fmt(c32_p50, 3)} ms",
                 f"p99/p50 {fmt(c32_shape, 2)}; p99 {rounds_text(c32_rounds)} ms", "<= 10 ms and <= 5x p50",
                 verdict(c32_ok)))
    b_pg, b_pga, b_td = (get("pg_insert_cP", "postgres", rps), get("pg_insert_audit_cP", "postgres", rps),
                         get("td_create_cP", server, rps))
    b_ratio, b_rounds = paired("pg_insert_cP", "postgres", "td_create_cP", server, rps)
    rows.append((f"(b) CreateUser throughput, c={pool}", f"pgbench insert {fmt(b_pg)} tps", f"{fmt(b_td)} rps",
                 f"{fmt(b_ratio, 3)}x {rounds_text(b_rounds)}", "(no goal)", "n/a"))
    ba_ratio, ba_rounds = paired("pg_insert_audit_cP", "postgres", "td_create_cP", server, rps)
    rows.append(("(b') CreateUser vs insert + audit event", f"pgbench insert+audit {fmt(b_pga)} tps", f"{fmt(b_td)} rps",
                 f"{fmt(ba_ratio, 3)}x {rounds_text(ba_rounds)}", "(no goal)", "n/a"))
    c_echo, c_td = get("echo_ping_cP", "echo", rps), get("td_ping_cP", server, rps)
    c_ratio, c_rounds = paired("echo_ping_cP", "echo", "td_ping_cP", server, rps)
    rows.append((f"(c) Ping through the tenant layer, c={pool}", f"bare tonic echo {fmt(c_echo)} rps", f"{fmt(c_td)} rps",
                 f"{fmt(c_ratio, 3)}x (cost {fmt(None if c_ratio is None else (1 - c_ratio) * 100, 1)}%) "
                 f"{rounds_text(c_rounds)}", "cost <= 15%", verdict(None if c_ratio is None else c_ratio >= 0.85)))
    d10, d10k = get("td_get_10t_long", server, rps), get("td_get_10kt_long", server, rps)
    d_ratio, d_rounds = paired("td_get_10t_long", server, "td_get_10kt_long", server, rps)
    rows.append(("(d) GetUser, 10,000 tenants vs 10", f"10 tenants {fmt(d10)} rps", f"10,000 tenants {fmt(d10k)} rps",
                 f"{fmt(d_ratio, 3)}x {rounds_text(d_rounds)}", ">= 0.90x",
                 verdict(None if d_ratio is None else d_ratio >= 0.9)))
    statements = [r for r in records if r["kind"] == "statements" and r["server"] == server
                  and r.get("rpc", "get-user") == "get-user"]
    if statements:
        s = statements[-1]
        ok = abs(s["statements_per_read"] - 4.0) < 0.01 and s["checkout_pings"] == 0
        rows.append(("(e) Statements per read", "4 (BEGIN, set_config, SELECT, COMMIT)",
                     f"{fmt(s['statements_per_read'], 3)} over {s['reads']} reads",
                     f"checkout pings: {s['checkout_pings']}", "exactly 4, no ping", verdict(ok)))
    rss_runs = [r for r in records if r["kind"] == "loadgen" and r["server"] == server and r["rss_kib"]["max"]]
    if rss_runs:
        rss_max = max(r["rss_kib"]["max"] for r in rss_runs) / 1024
        rss_med = statistics.median(r["rss_kib"]["median"] for r in rss_runs) / 1024
        worst = max(rss_runs, key=lambda r: r["rss_kib"]["max"])["phase"]
        rows.append(("(f) Steady RSS under load", "64 MiB", f"median {fmt(rss_med, 1)} MiB, max {fmt(rss_max, 1)} MiB",
                     f"max in {worst}", "<= 64 MiB", verdict(rss_max <= 64)))
    for mode, label in (("start_serve", "serve"), ("start_serve-migrate", "serve --migrate")):
        starts = [r["serving_after_ms"] for r in records if r["kind"] == "start" and r["phase"] == mode and r["server"] == server]
        if starts:
            median = statistics.median(starts)
            rows.append((f"(g) Start to \"\" SERVING ({label})", "1000 ms",
                         f"median {fmt(median, 1)} ms (n={len(starts)}, max {fmt(max(starts), 1)})", "",
                         "<= 1 s", verdict(median <= 1000)))

    out.append("| Measure | Anchor | tenantd | Ratio | Goal | Met |")
    out.append("|---|---|---|---|---|---|")
    for row in rows:
        out.append("| " + " | ".join(row) + " |")
    out.append("")

    out.append("Every phase (medians over rounds). CPU columns are microseconds of CPU per request, per"
               " process, over the whole run incl. warm-up; 'other' is the rest of the machine's busy time"
               " (other work on a shared machine); 'busy cores' is the machine's load during the run.")
    out.append("")
    out.append("| Phase | Server | rps | p50 ms | p90 ms | p99 ms | max ms | errors | CPU driver | CPU server | CPU postgres | CPU redis | CPU ours | CPU other | busy cores | rps per round |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    order = ["pg_read_cP", "td_get_cP", "pg_read_c1", "td_get_c1", "pg_read_c32", "td_get_c32", "echo_ping_cP",
             "td_ping_cP", "td_get_10t_long", "td_get_10kt_long", "pg_insert_cP", "pg_insert_audit_cP", "td_create_cP"]
    keys = sorted(runs, key=lambda key: (order.index(key[0]) if key[0] in order else 99, key[1]))
    for phase, srv in keys:
        group = runs[(phase, srv)]
        cpu = lambda name: median_of(group, lambda r: r["cpu_us_per_request"][name])
        total = median_of(group, lambda r: sum(v for k, v in r["cpu_us_per_request"].items() if k != "other"))
        busy = median_of(group, lambda r: r.get("machine_busy_cores"))
        errors = sum(r["errors"] for r in group)
        codes = {}
        for r in group:
            for code, count in (r.get("errors_by_code") or {}).items():
                codes[code] = codes.get(code, 0) + count
        error_text = str(errors) + (" " + json.dumps(codes) if codes else "")
        per_round = " ".join(fmt(r["rps"], 0) for r in sorted(group, key=lambda r: r.get("round", 0)))
        out.append(
            f"| {phase} | {srv} | {fmt(median_of(group, rps))} | {fmt(median_of(group, p50), 3)} | "
            f"{fmt(median_of(group, lambda r: r['latency_ms']['p90']), 3)} | {fmt(median_of(group, p99), 3)} | "
            f"{fmt(median_of(group, lambda r: r['latency_ms']['max']), 2)} | {error_text} | {fmt(cpu('driver'), 0)} | "
            f"{fmt(cpu('server'), 0)} | {fmt(cpu('postgres'), 0)} | {fmt(cpu('redis'), 0)} | {fmt(total, 0)} | "
            f"{fmt(cpu('other'), 0)} | {fmt(busy, 2)} | {per_round} |"
        )
    out.append("")
    for s in [r for r in records if r["kind"] == "statements"]:
        name = {"get-user": "GetUser", "create-user": "CreateUser"}.get(s.get("rpc", "get-user"), s.get("rpc"))
        out.append(f"Statements seen for {s['reads']} {name} calls on {s['server']} (pg_stat_statements, app role;"
                   f" {fmt(s['statements_per_read'], 3)} per call):")
        out.append("")
        for statement in s["statements"]:
            out.append(f"- {statement['calls']} x `{statement['query'][:160]}`")
        for statement in s["probe_statements"]:
            out.append(f"- {statement['calls']} x `{statement['query'][:160]}` (readiness probe or connection set-up, not per call)")
        out.append("")
    print("\n".join(out))


def add_machine_arguments(parser):
    parser.add_argument("--machine-busy-ticks", type=float, default=0)
    parser.add_argument("--machine-total-ticks", type=float, default=0)
    parser.add_argument("--cores", type=int, default=1)


def add_other_cpu(record, args, requests):
    """Busy cores of the whole machine during the run, and the CPU per request of every
    process not accounted for above (other work on a shared machine)."""
    cpu = record["cpu_us_per_request"]
    busy_seconds = args.machine_busy_ticks / args.clk_tck
    accounted = sum(cpu.values()) * max(requests, 1) / 1e6
    cpu["other"] = max(0.0, busy_seconds - accounted) * 1e6 / max(requests, 1)
    total = args.machine_total_ticks
    record["machine_busy_cores"] = args.machine_busy_ticks / total * args.cores if total else None
    return record


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pgbench")
    for name in ("--phase", "--stdout", "--logs", "--times"):
        p.add_argument(name, required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--clients", type=int, required=True)
    p.add_argument("--clk-tck", type=float, required=True)
    p.add_argument("--pg-ticks", type=float, required=True)
    p.add_argument("--redis-ticks", type=float, default=0)
    add_machine_arguments(p)
    p.set_defaults(func=cmd_pgbench)
    p = sub.add_parser("loadgen")
    for name in ("--phase", "--server", "--json", "--times", "--rss"):
        p.add_argument(name, required=True)
    p.add_argument("--round", type=int, required=True)
    p.add_argument("--clk-tck", type=float, required=True)
    p.add_argument("--pg-ticks", type=float, required=True)
    p.add_argument("--server-ticks", type=float, required=True)
    p.add_argument("--redis-ticks", type=float, default=0)
    add_machine_arguments(p)
    p.set_defaults(func=cmd_loadgen)
    p = sub.add_parser("statements")
    for name in ("--server", "--json", "--tsv"):
        p.add_argument(name, required=True)
    p.add_argument("--rpc", default="get-user")
    p.set_defaults(func=cmd_statements)
    p = sub.add_parser("start")
    for name in ("--server", "--mode", "--json"):
        p.add_argument(name, required=True)
    p.add_argument("--repeat", type=int, required=True)
    p.set_defaults(func=cmd_start)
    p = sub.add_parser("table")
    for name in ("--results", "--machine", "--command"):
        p.add_argument(name, required=True)
    p.add_argument("--pool", type=int, required=True)
    p.add_argument("--compare", default="0")
    p.set_defaults(func=cmd_table)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The pydnsbl side of `cargo bench --bench blocklist`.

Checks the bench's IPs on the bench's zones with pydnsbl's DNSBLIpChecker against the local
PowerDNS, times it, counts misclassifications against the truth file, and prints one JSON line.

pydnsbl builds its aiodns resolver from the system's resolv.conf and takes no nameserver
argument, and pycares' `servers` setter takes bare addresses (no port). pycares.Channel does
take `udp_port`/`tcp_port`, and aiodns.DNSResolver passes extra keyword arguments through to
it, so the checker's resolver is replaced by one built with nameservers=[HOST] and the port.
A health query checks that the replacement reaches the server before anything is timed.

c-ares (1.23 and later) caches answers in each channel, and pycares offers no option to turn
that off: a second bulk_check on the same checker would be answered from memory. So every timed
run gets a fresh checker (a fresh channel), and each (ip, zone) is asked once per run. With
--api-url and --api-key the server's own udp-queries counter is read around each timed run,
and queries_per_check is reported, to show that the queries really reached the server.

pydnsbl has three outcomes per (ip, provider): detected (any A answer, whatever the code),
failed (a DNS error other than NXDOMAIN), or neither. They are compared with the truth as
listed / unknown / not_listed; an error code (127.255.255.254) reported as detected counts as
a misclassification, as does every other disagreement.

Usage: pydnsbl_compare.py --server 127.0.0.1:PORT --zones a.test,b.test --truth FILE
       [--runs 3] [--concurrency 64,200] [--timeout 2] [--api-url URL --api-key KEY]
Truth file: one `ip<TAB>zone<TAB>listed|error|not_listed` per line.
"""
import argparse
import asyncio
import json
import statistics
import sys
import time
import urllib.request


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--server", required=True, help="HOST:PORT of the DNS server")
    p.add_argument("--zones", required=True, help="comma-separated zone names")
    p.add_argument("--truth", required=True, help="TSV: ip, zone, listed|error|not_listed")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--concurrency", default="64,200", help="pydnsbl concurrency values to try")
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--api-url", help="PowerDNS webserver, for its query counter")
    p.add_argument("--api-key")
    return p.parse_args()


def read_truth(path):
    truth = {}
    ips = []
    for line in open(path, encoding="ascii"):
        ip, zone, status = line.rstrip("\n").split("\t")
        if ip not in truth:
            ips.append(ip)
            truth[ip] = {}
        truth[ip][zone] = status
    return ips, truth


def server_queries(api_url, api_key):
    """The server's udp-queries counter, or None without an API."""
    if not api_url:
        return None
    req = urllib.request.Request(
        f"{api_url}/api/v1/servers/localhost/statistics?statistic=udp-queries",
        headers={"X-API-Key": api_key or ""},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(json.load(resp)[0]["value"])


def make_checker(pydnsbl, aiodns, zones, host, port, concurrency, timeout, loop):
    providers = [pydnsbl.providers.Provider(z) for z in zones]
    checker = pydnsbl.DNSBLIpChecker(
        providers=providers, timeout=timeout, tries=1, concurrency=concurrency, loop=loop
    )
    # The port can only be given when the channel is made: swap in a resolver made so.
    checker._resolver = aiodns.DNSResolver(
        nameservers=[host],
        loop=checker._loop,
        timeout=timeout,
        tries=1,
        udp_port=port,
        tcp_port=port,
    )
    return checker


def classify(results):
    """{ip: {zone: listed|unknown|not_listed}} from pydnsbl's DNSBLResults."""
    out = {}
    for r in results:
        failed = {p.host for p in r.failed_providers}
        out[r.addr] = {}
        for p in r.providers:
            if p.host in failed:
                out[r.addr][p.host] = "unknown"
            elif p.host in r.detected_by:
                out[r.addr][p.host] = "listed"
            else:
                out[r.addr][p.host] = "not_listed"
    return out


def misclassified(seen, truth):
    wrong = 0
    error_as_listed = 0
    for ip, zones in truth.items():
        for zone, want in zones.items():
            got = seen.get(ip, {}).get(zone)
            if got != want:
                wrong += 1
                if want == "error" and got == "listed":
                    error_as_listed += 1
    return wrong, error_as_listed


def main():
    args = parse_args()
    out = {"tool": "pydnsbl"}
    try:
        import aiodns
        import pycares
        import pydnsbl
        from importlib.metadata import version

        out["versions"] = {
            "pydnsbl": version("pydnsbl"),
            "aiodns": version("aiodns"),
            "pycares": version("pycares"),
        }
    except Exception as e:  # noqa: BLE001 - reported, not hidden
        out["error"] = f"import failed: {e}"
        print(json.dumps(out))
        return 1

    host, port = args.server.rsplit(":", 1)
    port = int(port)
    zones = [z for z in args.zones.split(",") if z]
    ips, truth = read_truth(args.truth)
    checks = len(ips) * len(zones)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    out["port_method"] = "aiodns.DNSResolver(nameservers=[host], udp_port=port, tcp_port=port)"

    # The swapped resolver must reach the server: 127.0.0.2 is listed on every bench zone.
    probe = make_checker(pydnsbl, aiodns, zones, host, port, 8, args.timeout, loop)
    health = probe.check("127.0.0.2")
    if len(health.detected_by) != len(zones):
        out["error"] = (
            f"resolver at {args.server} not reached: 127.0.0.2 detected by "
            f"{sorted(health.detected_by)}, failed {[p.host for p in health.failed_providers]}"
        )
        print(json.dumps(out))
        return 1

    per_concurrency = {}
    best = None
    for conc in [int(c) for c in args.concurrency.split(",") if c]:
        # Warm-up: the interpreter's code paths, and the server's packet cache.
        make_checker(pydnsbl, aiodns, zones, host, port, conc, args.timeout, loop).bulk_check(ips)
        rates = []
        queries = []
        wrong = error_as_listed = 0
        for _ in range(args.runs):
            checker = make_checker(pydnsbl, aiodns, zones, host, port, conc, args.timeout, loop)
            before = server_queries(args.api_url, args.api_key)
            started = time.perf_counter()
            results = checker.bulk_check(ips)
            elapsed = time.perf_counter() - started
            after = server_queries(args.api_url, args.api_key)
            rates.append(checks / elapsed)
            if before is not None and after is not None:
                queries.append((after - before) / checks)
            w, e = misclassified(classify(results), truth)
            wrong = max(wrong, w)
            error_as_listed = max(error_as_listed, e)
        entry = {
            "checks_per_s_best": round(max(rates), 1),
            "checks_per_s_min": round(min(rates), 1),
            "checks_per_s_median": round(statistics.median(rates), 1),
            "queries_per_check": round(min(queries), 3) if queries else None,
            "misclassified": wrong,
            "error_as_listed": error_as_listed,
        }
        per_concurrency[str(conc)] = entry
        if best is None or entry["checks_per_s_best"] > best[1]["checks_per_s_best"]:
            best = (conc, entry)

    out.update(
        {
            "ips": len(ips),
            "zones": len(zones),
            "checks": checks,
            "runs": args.runs,
            "best_concurrency": best[0],
            "checks_per_s": best[1]["checks_per_s_best"],
            "checks_per_s_min": best[1]["checks_per_s_min"],
            "checks_per_s_median": best[1]["checks_per_s_median"],
            "queries_per_check": best[1]["queries_per_check"],
            "misclassified": best[1]["misclassified"],
            "error_as_listed": best[1]["error_as_listed"],
            "by_concurrency": per_concurrency,
        }
    )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

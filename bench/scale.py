#!/usr/bin/env python3
"""wanmirror at many partitions: peak memory, file descriptors and the time to the
first byte mirrored, on two local tansu brokers (no emulated link: this measures the
process, not the WAN). The librdkafka baseline copies the same topic in the same run.

    python3 bench/scale.py [--partitions 2000] [--records 5] [--runs 3] [--out DIR]

Needs the release binaries (cargo build --release) and tansu (scripts/setup.sh).
Prints one JSON line per run and a summary: median (min-max) of the runs.
"""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import REL, tansu_bin, Procs  # noqa: E402

TOPIC = "scale"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tansu(procs, cluster):
    port = free_port()
    procs.start([tansu_bin(), "broker", "--cluster-id", cluster, "--listener-url", f"tcp://127.0.0.1:{port}",
                 "--advertised-listener-url", f"tcp://127.0.0.1:{port}", "--storage-engine", f"memory://{cluster}/",
                 "--silent"])
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("tansu did not start")


def ends(bootstrap, topic):
    out = subprocess.run([str(REL / "wanbench"), "ends", "--bootstrap", bootstrap, "--topic", topic, "--no-wire"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["end_offsets"]


def status(pid):
    """Peak RSS (kB) and open file descriptors of a running process, or None."""
    try:
        hwm = next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmHWM:"))
        return hwm, len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None


def watch(p, dst, dest_topic, total, limit):
    """Samples a copying process until it exits: peak RSS, most fds, time to the first
    record at the destination and to the last (to the sampling's resolution: one
    look at the destination's end offsets takes a fraction of a second at 2,000
    partitions)."""
    start = time.time()
    peak_kb = fds = 0
    first = done = None
    while time.time() - start < limit:
        s = status(p.pid)
        if s:
            peak_kb, fds = max(peak_kb, s[0]), max(fds, s[1])
        copied = ends(dst, dest_topic) if first is None or done is None else total
        if first is None and copied > 0:
            first = time.time() - start
        if done is None and copied >= total:
            done = time.time() - start
        if p.poll() is not None or done is not None:
            if done is None and ends(dst, dest_topic) >= total:
                done = time.time() - start
                first = first if first is not None else done
            break
        time.sleep(0.2)
    return peak_kb, fds, first, done


def one_run(args, procs, tmp, contender):
    src, dst = tansu(procs, "dc-a"), tansu(procs, "dc-b")
    # `records` 200-byte records per partition: record i goes to partition i mod N.
    subprocess.run([str(REL / "wanbench"), "latency-produce", "--bootstrap", src, "--topic", TOPIC,
                    "--partitions", str(args.partitions), "--size", "200", "--seconds", "2",
                    "--rate", str(args.partitions * args.records // 2)],
                   check=True, capture_output=True)
    total = ends(src, TOPIC)
    dest_topic = f"dc-a.{TOPIC}"
    if contender == "wanmirror":
        cfg = Path(tmp) / "scale.toml"
        cfg.write_text(f'[source]\nname = "dc-a"\nbootstrap = "{src}"\n[destination]\nname = "dc-b"\n'
                       f'bootstrap = "{dst}"\n[mirror]\ntopics = ["{TOPIC}"]\nreplication_factor = 1\n')
        cmd = [str(REL / "wanmirror"), "run", "--stop-at-end", "--config", str(cfg)]
    else:
        cmd = [str(REL / "wanbench"), "baseline", "--source", src, "--dest", dst, "--topic", TOPIC,
               "--dest-topic", dest_topic, "--records", str(total)]
    p = procs.start(cmd, env={**os.environ, "RUST_LOG": "warn"})
    peak_kb, fds, first, done = watch(p, dst, dest_topic, total, args.cap_secs)
    copied = ends(dst, dest_topic)
    procs.stop_all()
    if copied != total:
        raise RuntimeError(f"{contender}: copied {copied} of {total} records within {args.cap_secs} s")
    return {"contender": contender, "partitions": args.partitions, "records": total,
            "peak_rss_MB": round(peak_kb / 1024, 1), "max_fds": fds,
            "first_byte_s": round(first, 2) if first is not None else None,
            "done_s": round(done, 2) if done is not None else None}


def summary(runs, key):
    xs = [r[key] for r in runs if r[key] is not None]
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)} if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--partitions", type=int, default=2000)
    ap.add_argument("--records", type=int, default=5, help="records per partition (200 random bytes each)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cap-secs", type=int, default=600, help="a run that takes longer fails")
    ap.add_argument("--out", help="write results.json here")
    args = ap.parse_args()
    procs = Procs()
    results = {"wanmirror": [], "baseline": []}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.runs):
                for c in results:
                    r = one_run(args, procs, tmp, c)
                    print(json.dumps(r), flush=True)
                    results[c].append(r)
    finally:
        procs.stop_all()
    table = {c: {k: summary(rs, k) for k in ["peak_rss_MB", "max_fds", "first_byte_s", "done_s"]}
             for c, rs in results.items()}
    ratio = {k: round(table["wanmirror"][k]["median"] / table["baseline"][k]["median"], 2)
             for k in ["peak_rss_MB", "first_byte_s", "done_s"]
             if table["wanmirror"][k] and table["baseline"][k] and table["baseline"][k]["median"]}
    print(json.dumps({"summary": table, "wanmirror_over_baseline": ratio}, indent=2))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps(
            {"args": {k: v for k, v in vars(args).items() if k != "out"}, "runs": results,
             "summary": table, "wanmirror_over_baseline": ratio}, indent=2))


if __name__ == "__main__":
    main()

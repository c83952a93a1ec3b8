#!/usr/bin/env python3
"""wanmirror benchmark: a matrix of WAN link profiles, side by side with a
MirrorMaker-style librdkafka baseline, over the emulated link of netem/.

One command: `python3 bench/run.py` (root). `--smoke` runs one small profile.
`--broker kafka` runs Apache Kafka (KRaft, single node) in both DCs instead of tansu.
Results: bench/results/results.{json,md} and goodput.png.
"""
import argparse, base64, json, os, re, shutil, signal, statistics, subprocess, sys, tempfile, time, uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REL = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "release"
NAME = "wb"
SRC_NS, DST_NS = f"{NAME}-src", f"{NAME}-dst"
SRC_ADDR = "10.201.0.1:9092"
DST_ADDR = "127.0.0.1:9092"
# Run by default (and by --smoke, which CI runs); mm2 is opt-in: --contenders ...,mm2.
CONTENDERS = ["baseline", "wanmirror-1conn", "wanmirror-default", "wanmirror-quic"]
# wanmirror-capped: the default wanmirror with `transport.max_mbit` at --max-mbit
# (half the link by default), to check the cap holds.
# wanmirror-quic-cubic and -newreno: wanmirror-quic with that congestion control on
# both ends (wanmirror-quic itself uses --quic-congestion, BBR by default).
ALL_CONTENDERS = CONTENDERS + ["mm2", "wanmirror-capped", "wanmirror-quic-cubic", "wanmirror-quic-newreno"]
BROKER = "tansu"  # --broker
KAFKA = {}  # "libs", "home": the Apache Kafka jars, found once (kafka_setup)


class Failed(subprocess.CalledProcessError):
    """A command that failed, shown with what it printed (the tools say why there)."""

    def __str__(self):
        return f"{super().__str__()} {((self.stderr or '') + (self.output or ''))[:2000]}"


def sh(cmd, **kw):
    r = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if r.returncode != 0:
        raise Failed(r.returncode, cmd, r.stdout, r.stderr)
    return r.stdout


def ns(n, cmd):
    return ["ip", "netns", "exec", n] + cmd


def tansu_bin():
    for d in [os.environ.get("CARGO_HOME", ""), str(Path.home() / ".cargo")]:
        p = Path(d) / "bin" / "tansu"
        if p.exists():
            return str(p)
    return "tansu"


class Procs:
    """Every process started is stopped again, also on failure."""

    def __init__(self):
        self.ps = []

    def start(self, cmd, **kw):
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)
        self.ps.append(p)
        return p

    def stop_all(self):
        for p in self.ps:
            if p.poll() is None:
                # Children first: a contender runs under /usr/bin/time.
                subprocess.run(["pkill", "-KILL", "-P", str(p.pid)], capture_output=True)
                p.kill()
                p.wait()
        self.ps = []


def link_up(p):
    sh([str(REL / "wanlink"), "up", "--name", NAME, "--engine", "user",
        "--delay", f"{p['rtt_ms'] / 2}ms", "--loss", f"{p['loss_pct']}%",
        "--rate", f"{p['rate_mbit']}mbit", "--queue", p.get("queue", "8MiB")])
    sh(["sysctl", "-qw", "net.ipv4.tcp_allowed_congestion_control=reno bbr cubic"])
    for n in (SRC_NS, DST_NS):
        # Typical broker hosts run CUBIC; the sender's congestion control limits a fetch.
        sh(ns(n, ["sysctl", "-qw", "net.ipv4.tcp_congestion_control=cubic"]))
        sh(ns(n, ["sysctl", "-qw", "net.ipv4.tcp_rmem=4096 131072 33554432"]))
        sh(ns(n, ["sysctl", "-qw", "net.ipv4.tcp_wmem=4096 16384 4194304"]))
    return sh(ns(SRC_NS, ["sysctl", "-n", "net.ipv4.tcp_congestion_control"])).strip()


class LinkSampler:
    """Samples the emulator's delivered-byte counter (source to destination) twice a
    second while a contender runs; `stop` returns 0.8 / (t90 - t10) in 1/s, where
    t10 and t90 are when 10 % and 90 % of the run's bytes had crossed."""

    def __init__(self):
        import threading
        self.points, self.done = [], threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.done.is_set():
            try:
                st = json.loads(sh([str(REL / "wanlink"), "status", "--name", NAME]))
                self.points.append((time.time(), st["src_to_dst"]["delivered_bytes"]))
            except Exception:
                pass
            self.done.wait(0.5)

    def carried(self):
        """Bytes the emulator delivered towards the destination while sampling."""
        return self.points[-1][1] - self.points[0][1] if len(self.points) >= 2 else None

    def stop(self):
        self.done.set()
        self.t.join()
        if len(self.points) < 4:
            return None
        base, total = self.points[0][1], self.points[-1][1] - self.points[0][1]
        if total <= 0:
            return None
        at = lambda share: next(t for t, b in self.points if b - base >= share * total)
        t10, t90 = at(0.1), at(0.9)
        return 0.8 / (t90 - t10) if t90 > t10 else None


def link_down():
    subprocess.run([str(REL / "wanlink"), "down", "--name", NAME], capture_output=True)


def wait_port(nsname, host, port, limit=20):
    t = time.time()
    while time.time() - t < limit:
        r = subprocess.run(ns(nsname, ["python3", "-c", f"import socket; socket.create_connection(('{host}', {port}), 1)"]),
                           capture_output=True)
        if r.returncode == 0:
            return
        time.sleep(0.1)
    raise RuntimeError(f"broker {host}:{port} in {nsname} did not start")


def kafka_setup():
    """The Apache Kafka 4.1.1 jars (brokers and MirrorMaker 2), fetched once into a cache
    outside the clone by scripts/kafka/fetch.sh (which prints the folder of jars last;
    $WANMIRROR_KAFKA_HOME overrides the cache)."""
    if not KAFKA:
        libs = Path(sh([str(ROOT / "scripts" / "kafka" / "fetch.sh")]).strip().splitlines()[-1])
        KAFKA.update(libs=libs, home=libs.parent)
    return KAFKA


def java():
    jh = os.environ.get("JAVA_HOME")
    return str(Path(jh) / "bin" / "java") if jh and (Path(jh) / "bin" / "java").exists() else "java"


def kafka_cmd(main_class, *args, tmp, heap=("-Xms256m", "-Xmx512m"), gc=("-XX:+UseSerialGC",)):
    # `tmp`: the JVM's temporary directory, inside the run's directory (removed after
    # the run): the Kafka clients unpack their compression libraries there, and a
    # killed JVM leaves them behind.
    k = kafka_setup()
    Path(tmp).mkdir(parents=True, exist_ok=True)
    return [java(), *heap, *gc, f"-Djava.io.tmpdir={tmp}",
            f"-Dlog4j2.configurationFile={k['home'] / 'log4j2.yaml'}",
            "-cp", f"{k['libs']}/*", main_class, *args]


def kafka_props(host, logdir):
    # One KRaft node (broker and controller) per DC. Two network and two I/O threads,
    # a 512 MB heap and the serial collector: two brokers, the emulator and the mirror
    # share two cores. Batches of ~1 MB (the preload's) and copies of them must fit.
    return "\n".join([
        "process.roles=broker,controller", "node.id=1",
        f"controller.quorum.bootstrap.servers={host}:9093",
        f"listeners=PLAINTEXT://{host}:9092,CONTROLLER://{host}:9093",
        f"advertised.listeners=PLAINTEXT://{host}:9092",
        "controller.listener.names=CONTROLLER",
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        f"log.dirs={logdir}",
        "offsets.topic.replication.factor=1", "offsets.topic.num.partitions=4",
        "transaction.state.log.replication.factor=1", "transaction.state.log.min.isr=1",
        "transaction.state.log.num.partitions=4",
        "group.initial.rebalance.delay.ms=0",
        "num.network.threads=2", "num.io.threads=2",
        "message.max.bytes=8388608", "replica.fetch.max.bytes=8388608",
        # Topics are created explicitly (preload, the mirrors); a metadata probe must
        # not create one with the default partition count.
        "auto.create.topics.enable=false",
    ]) + "\n"


def kafka_brokers(procs, workdir):
    """Formats a KRaft store for each DC under workdir (removed by the caller after the
    run) and starts the two brokers in their namespaces."""
    nodes = [(SRC_NS, "10.201.0.1", "dc-a"), (DST_NS, "127.0.0.1", "dc-b")]
    formats = []
    for nsname, host, name in nodes:
        d = workdir / name
        (d / "data").mkdir(parents=True)
        (d / "server.properties").write_text(kafka_props(host, d / "data"))
        # Like Kafka's own ids, never starting with '-': the formatter would read it as
        # an option (one format in 64 failed that way).
        cid = "-"
        while cid.startswith("-"):
            cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        formats.append(subprocess.Popen(kafka_cmd("kafka.tools.StorageTool", "format", "--config",
                                                  str(d / "server.properties"), "--cluster-id", cid,
                                                  "--standalone", tmp=d / "tmp", heap=("-Xmx256m",)),
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for f in formats:
        out, _ = f.communicate(timeout=120)
        if f.returncode != 0:
            raise RuntimeError(f"kafka storage format failed: {out[-2000:]}")
    for nsname, host, name in nodes:
        d = workdir / name
        log = open(d / "broker.log", "w")
        procs.ps.append(subprocess.Popen(ns(nsname, kafka_cmd("kafka.Kafka", str(d / "server.properties"), tmp=d / "tmp")),
                                         stdout=log, stderr=subprocess.STDOUT))
    for nsname, host, name in nodes:
        try:
            wait_port(nsname, host, 9092, limit=90)
        except RuntimeError:
            tail = (workdir / name / "broker.log").read_text()[-3000:]
            raise RuntimeError(f"kafka broker {name} on {host}:9092 did not start:\n{tail}")


def brokers(procs, workdir):
    if BROKER == "kafka":
        return kafka_brokers(procs, workdir)
    t = tansu_bin()
    procs.start(ns(SRC_NS, [t, "broker", "--cluster-id", "dc-a", "--listener-url", f"tcp://{SRC_ADDR}",
                            "--advertised-listener-url", f"tcp://{SRC_ADDR}", "--storage-engine", "memory://dc-a/", "--silent"]))
    procs.start(ns(DST_NS, [t, "broker", "--cluster-id", "dc-b", "--listener-url", f"tcp://{DST_ADDR}",
                            "--advertised-listener-url", f"tcp://{DST_ADDR}", "--storage-engine", "memory://dc-b/", "--silent"]))
    wait_port(SRC_NS, "10.201.0.1", 9092)
    wait_port(DST_NS, "127.0.0.1", 9092)


def wb(nsname, args):
    return json.loads(sh(ns(nsname, [str(REL / "wanbench")] + args)).strip().splitlines()[-1])


MIRROR_EXTRA = ""  # --mirror-extra: lines added under [mirror] for both wanmirror contenders
MAX_MBIT = 100  # --max-mbit: the cap of wanmirror-capped
# wanmirror-quic: the mirror reads through `wanmirror serve`, which runs in the source
# namespace next to the broker; they talk QUIC across the emulated link.
PEER_ADDR = "10.201.0.1:7400"
QUIC_CONGESTION = "bbr"  # --quic-congestion
PEER_CONNECTIONS = 8  # --peer-connections


def pki(cfgdir):
    """Certificates for the serve side and the mirror, made once per bench run by
    `wanmirror cert` (the command a first setup uses)."""
    d = cfgdir / "pki"
    if not (d / "ca.pem").exists():
        sh([str(REL / "wanmirror"), "cert", "--out", str(d), "--serve", PEER_ADDR.split(":")[0], "--client", "dc-b"])
    return d


def is_quic(contender):
    """wanmirror-quic, or one of its variants with another congestion control."""
    return contender.startswith("wanmirror-quic")


def quic_cc(contender):
    """The congestion control of a QUIC contender: its suffix, or --quic-congestion."""
    return contender.removeprefix("wanmirror-quic-") if contender != "wanmirror-quic" else QUIC_CONGESTION


def serve_start(procs, cfgdir, congestion, log=None):
    """Starts `wanmirror serve` in the source namespace under /usr/bin/time (its CPU
    counts for the contender) and waits until it listens. Its log goes to `log` (kept
    with --logs) or into the run's temporary directory."""
    d = pki(cfgdir)
    cfg = cfgdir / "serve.toml"
    cfg.write_text(
        f'[serve]\ncluster = "dc-a"\nbootstrap = "{SRC_ADDR}"\nlisten = "{PEER_ADDR}"\n'
        f'cert = "{d / "serve.pem"}"\nkey = "{d / "serve.key"}"\nclient_ca = "{d / "ca.pem"}"\n'
        f'congestion = "{congestion}"\n\n[[serve.client]]\nname = "dc-b"\ntopics = [".*"]\n')
    log = log or cfgdir / "serve.log"
    timefile = cfgdir / "serve-time.txt"
    timefile.unlink(missing_ok=True)
    with open(log, "w") as f:
        p = subprocess.Popen(ns(SRC_NS, ["env", "RUST_LOG=" + os.environ.get("WANBENCH_RUST_LOG", "info"),
                                         "/usr/bin/time", "-o", str(timefile), "-f", "%e %U %S %M",
                                         str(REL / "wanmirror"), "serve", "--config", str(cfg)]),
                             stdout=subprocess.DEVNULL, stderr=f)
    procs.ps.append(p)
    t = time.time()
    while "serving" not in log.read_text():
        if p.poll() is not None or time.time() - t > 20:
            raise RuntimeError(f"wanmirror serve did not start: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    return p, timefile


def serve_log(args, stem):
    """Where the serve side's log is kept with --logs: beside the mirror's."""
    if not args.logs:
        return None
    Path(args.logs).mkdir(parents=True, exist_ok=True)
    return Path(args.logs) / f"{stem}-serve.log"


def serve_stop(p, timefile):
    """Stops the serve side; returns its CPU seconds (user + system)."""
    stop_contender(p, 20)
    fields = timefile.read_text().split()[-4:] if timefile.exists() else []
    return float(fields[1]) + float(fields[2]) if len(fields) == 4 else None


# The mirror's metrics endpoint in the live profiles, on the destination namespace's
# loopback: its replication latency is the part of the end-to-end latency that is the
# mirror's and the brokers' append and acknowledgement, without the reading consumer.
METRICS_PORT = 9464


def mirror_config(path, topics, contender, wait_ms=100, metrics=False):
    extra = ""
    if metrics:
        extra += f'\n[metrics]\nlisten = "127.0.0.1:{METRICS_PORT}"\n'
    if contender == "wanmirror-1conn":
        # Catch-up over a single pooled connection (plus the long-poll one when tailing).
        extra += "\n[transport]\npool_min = 1\npool_max = 1\npool_initial = 1\n"
    elif contender == "wanmirror-capped":
        extra += f"\n[transport]\nmax_mbit = {MAX_MBIT}\n"
    source = f'bootstrap = "{SRC_ADDR}"'
    if is_quic(contender):
        d = path.parent / "pki"
        source = (f'peer = "{PEER_ADDR}"\npeer_connections = {PEER_CONNECTIONS}\npeer_congestion = "{quic_cc(contender)}"\n'
                  f'[source.peer_tls]\nca = "{d / "ca.pem"}"\ncert = "{d / "client-dc-b.pem"}"\nkey = "{d / "client-dc-b.key"}"')
    path.write_text(
        f'[source]\nname = "dc-a"\n{source}\n[destination]\nname = "dc-b"\n'
        f'bootstrap = "{DST_ADDR}"\n[mirror]\ntopics = {json.dumps(topics)}\nreplication_factor = 1\n'
        f'tail_wait_ms = {wait_ms}\nprogress_interval_secs = 2\n{MIRROR_EXTRA}\n{extra}')


def mm2_config(path, topic, partitions, wait_ms=None):
    """MirrorMaker 2 (dedicated mode) as a careful operator sets it up for one lossy
    long link: every setting and why in bench/README.md."""
    fetch = 4 << 20
    path.write_text("\n".join([
        "clusters = dc-a, dc-b",
        f"dc-a.bootstrap.servers = {SRC_ADDR}",
        f"dc-b.bootstrap.servers = {DST_ADDR}",
        "dc-a->dc-b.enabled = true",
        f"dc-a->dc-b.topics = {topic}",
        "dc-b->dc-a.enabled = false",
        # A task (its own consumer, so its own connection to the source) per partition.
        f"tasks.max = {partitions}",
        # Single-node clusters: every topic MM2 creates has one replica.
        "replication.factor = 1",
        "checkpoints.topic.replication.factor = 1",
        "heartbeats.topic.replication.factor = 1",
        "offset-syncs.topic.replication.factor = 1",
        "offset.storage.replication.factor = 1",
        "status.storage.replication.factor = 1",
        "config.storage.replication.factor = 1",
        # Topics and groups picked up within seconds.
        "refresh.topics.interval.seconds = 5",
        "refresh.groups.interval.seconds = 5",
        # Consumer offsets translated and applied to the destination, as for failover.
        "emit.checkpoints.enabled = true",
        "emit.checkpoints.interval.seconds = 10",
        "sync.group.offsets.enabled = true",
        "sync.group.offsets.interval.seconds = 10",
        "emit.heartbeats.enabled = true",
        "emit.heartbeats.interval.seconds = 1",
        "sync.topic.configs.enabled = true",
        # Neither broker runs an authorizer.
        "sync.topic.acls.enabled = false",
        # Source consumers across the link: fetches that a lossy connection carries well
        # within the request timeout, kernel receive autotuning.
        f"dc-a.consumer.fetch.max.bytes = {fetch}",
        f"dc-a.consumer.max.partition.fetch.bytes = {fetch}",
        "dc-a.consumer.receive.buffer.bytes = -1",
        "dc-a.consumer.request.timeout.ms = 120000",
        *([f"dc-a.consumer.fetch.max.wait.ms = {wait_ms}"] if wait_ms else []),
        "dc-a.producer.send.buffer.bytes = -1",
        # Destination producers: batching, lz4 (as the source batches are), acks=all.
        "dc-b.producer.batch.size = 524288",
        "dc-b.producer.linger.ms = 20",
        "dc-b.producer.compression.type = lz4",
        "dc-b.producer.acks = all",
        "dc-b.producer.enable.idempotence = true",
        "dc-b.producer.max.request.size = 2097152",
    ]) + "\n")


def mm2_cmd(cfg):
    # The heap and JVM options of Kafka's connect-mirror-maker.sh / kafka-run-class.sh.
    return kafka_cmd("org.apache.kafka.connect.mirror.MirrorMaker", str(cfg), "--clusters", "dc-b",
                     tmp=Path(cfg).parent / "mm2-tmp", heap=("-Xms256m", "-Xmx2g"),
                     gc=("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:InitiatingHeapOccupancyPercent=35",
                         "-XX:+ExplicitGCInvokesConcurrent", "-Djava.awt.headless=true"))


def contender_cmd(contender, topic, records, tail, cfgdir, partitions=1, wait_ms=None, metrics=False):
    """`wait_ms`: how long a fetch at the source's end waits for new data (the
    mirror's `tail_wait_ms`, the baseline's and MM2's fetch wait); by default 100 ms
    for the mirror and the baseline, and the Java consumer's 500 ms for MM2."""
    if contender == "mm2":
        cfg = cfgdir / f"mm2-{topic.replace('|', '-')}.properties"
        mm2_config(cfg, topic, partitions, wait_ms)
        return mm2_cmd(cfg)
    if contender == "baseline":
        return [str(REL / "wanbench"), "baseline", "--source", SRC_ADDR, "--dest", DST_ADDR,
                "--topic", topic, "--dest-topic", f"dc-a.{topic}", "--records", str(0 if tail else records),
                "--fetch-wait-ms", str(wait_ms or 100)]
    cfg = cfgdir / f"{contender}-{topic}.toml"
    mirror_config(cfg, [topic], contender, wait_ms or 100, metrics)
    return [str(REL / "wanmirror"), "run", "--config", str(cfg)] + ([] if tail else ["--stop-at-end"])


def ends(nsname, addr, topic, wire=True):
    return wb(nsname, ["ends", "--bootstrap", addr, "--topic", topic] + ([] if wire else ["--no-wire"]))


def wait_copied(p, src_ends, deadline):
    """MirrorMaker 2 never exits by itself: poll the destination topic's end offsets
    (only dc-a.bench, none of MM2's internal topics) until every partition holds as many
    records as the source's, MM2 exits, or the deadline passes. True when copied. MM2
    does not keep offsets, so end offsets count the records written (duplicates
    included; they are reported after the run)."""
    while time.time() < deadline:
        if p.poll() is not None:
            return False
        try:
            got = ends(DST_NS, DST_ADDR, "dc-a.bench", wire=False)["partitions"]
        except subprocess.CalledProcessError:
            got = []
        if len(got) == len(src_ends) and all(g >= s for g, s in zip(got, src_ends)):
            return True
        time.sleep(0.5)
    return False


def stop_contender(p, grace):
    # Stop the contender, not /usr/bin/time (which must live to write its report).
    subprocess.run(["pkill", "-TERM", "-P", str(p.pid)], capture_output=True)
    try:
        p.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        subprocess.run(["pkill", "-KILL", "-P", str(p.pid)], capture_output=True)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill(); p.wait()


def one_run(profile, contender, args, cfgdir):
    procs = Procs()
    workdir = Path(tempfile.mkdtemp(prefix="wb-run-"))
    try:
        cc = link_up(profile)
        brokers(procs, workdir)
        pre = wb(SRC_NS, ["preload", "--bootstrap", SRC_ADDR, "--topic", "bench",
                          "--partitions", str(args.partitions), "--bytes", str(args.dataset_mb * 1_000_000)])
        records, payload, wire = pre["records"], pre["bytes"], pre["wire_bytes"]
        src_ends = ends(SRC_NS, SRC_ADDR, "bench", wire=False)["partitions"]
        stem = f"rtt{profile['rtt_ms']}-loss{profile['loss_pct']}-{contender}-{int(time.time())}"
        serve = serve_start(procs, cfgdir, quic_cc(contender), serve_log(args, stem)) if is_quic(contender) else None
        timefile = cfgdir / "time.txt"
        cmd = ["/usr/bin/time", "-o", str(timefile), "-f", "%e %U %S %M"] + \
            contender_cmd(contender, "bench", records, False, cfgdir, args.partitions)
        start = time.time()
        log = subprocess.DEVNULL
        if args.logs:
            Path(args.logs).mkdir(parents=True, exist_ok=True)
            log = open(Path(args.logs) / f"{stem}.log", "w")
        # MM2 logs (log4j2, warnings and errors) to stdout.
        p = subprocess.Popen(ns(DST_NS, ["env", "RUST_LOG=" + os.environ.get("WANBENCH_RUST_LOG", "info")] + cmd),
                             stdout=log if contender == "mm2" else subprocess.DEVNULL, stderr=log)
        procs.ps.append(p)  # stopped with its child also if this run fails
        capped = False
        samples = LinkSampler()
        if contender == "mm2":
            done = wait_copied(p, src_ends, start + args.cap_secs)
            elapsed = time.time() - start
            steady = samples.stop()
            exited = p.poll()
            capped = not done and exited is None
            if exited is not None and not done:
                raise RuntimeError(f"mm2 exited with {exited} before the copy was complete")
            stop_contender(p, 30)
        else:
            try:
                p.wait(timeout=args.cap_secs)
            except subprocess.TimeoutExpired:
                capped = True
                stop_contender(p, 20)
            elapsed = time.time() - start
            steady = samples.stop()
        fields = timefile.read_text().split()[-4:] if timefile.exists() else []
        if len(fields) == 4:
            u, s_, rss_kb = float(fields[1]), float(fields[2]), int(fields[3])
        else:
            u = s_ = rss_kb = None
        timefile.unlink(missing_ok=True)
        dst = ends(DST_NS, DST_ADDR, "dc-a.bench")
        copied = dst["end_offsets"]
        if capped and args.smoke:
            # The smoke copies a small dataset: not finishing within the cap is a hang
            # (at --stop-at-end, say), and the integrity checks below skip capped runs.
            raise RuntimeError(f"{contender} did not finish the smoke's {args.cap_secs} s run: a hang")
        if contender.startswith("wanmirror") and not capped and dst["wire_bytes"] != wire:
            # A byte-for-byte copy stores exactly the source's batch bytes.
            raise RuntimeError(f"{contender}: destination holds {dst['wire_bytes']} batch bytes, source {wire}")
        # Records beyond the source's, per partition (a re-producing mirror can write a
        # record twice), and records still missing.
        got = dst["partitions"] + [0] * max(0, len(src_ends) - len(dst["partitions"]))
        dups = sum(max(0, g - s) for g, s in zip(got, src_ends))
        missing = sum(max(0, s - g) for g, s in zip(got, src_ends))
        # What a capped run copied, counted per partition: the preload puts all the text
        # in the even partitions and all the random bytes in the odd ones, so a record
        # share over the whole topic would overstate the bytes of a copy that moved
        # ahead in the cheap partitions (each partition's records are alike).
        shares = [min(g, s) / s if s else 1.0 for g, s in zip(got, src_ends)]
        copied_bytes = sum(f * b for f, b in zip(shares, pre["partition_bytes"]))
        copied_wire = sum(f * w for f, w in zip(shares, pre["partition_wire"]))
        goodput = copied_bytes / elapsed / 1e6
        wire_mbit = copied_wire * 8 / elapsed / 1e6
        gb = copied_bytes / 1e9
        carried = samples.carried()
        if is_quic(contender):
            cc = f"{quic_cc(contender)} (QUIC)"  # the hosts' TCP setting does not apply to it
        res = {
            "broker": BROKER, "congestion_control": cc, "records": records, "copied_records": copied,
            "duplicates": dups, "capped": capped,
            "copied_pct": round(100 * (records - missing) / records, 2),
            "time_s": round(elapsed, 2), "goodput_MBps": round(goodput, 3),
            # Share of the link: compressed batch bytes as they cross it, not payload.
            "wire_Mbps": round(wire_mbit, 2),
            "link_pct": round(100 * wire_mbit / profile["rate_mbit"], 2),
            # Sustained rate: useful wire bytes over the time the link took to carry the
            # middle 80 % of what it carried in this run (start-up and tail left out).
            "steady_link_pct": round(100 * steady * copied_wire * 8 / 1e6 / profile["rate_mbit"], 2) if steady else None,
            # Everything the emulated link delivered towards the destination meanwhile
            # (headers, retransmissions and answers thrown away included).
            "carried_MB": round(carried / 1e6, 1) if carried is not None else None,
            "carried_link_pct": round(100 * carried * 8 / 1e6 / elapsed / profile["rate_mbit"], 2) if carried else None,
            "cpu_s_per_GB": round((u + s_) / gb, 2) if gb > 0 and u is not None else None,
            "peak_rss_MB": round(rss_kb / 1024, 1) if rss_kb is not None else None,
        }
        if args.diff and contender != "baseline" and not capped:
            res.update(diff_speed(contender, cfgdir))
        if args.latency_secs > 0:
            res.update(latency(contender, args, cfgdir, procs))
        if serve:
            # The serve side's CPU is the contender's too: it reads the source and
            # runs the QUIC sender's congestion control.
            cpu = serve_stop(*serve)
            if cpu is not None and gb > 0:
                res["serve_cpu_s_per_GB"] = round(cpu / gb, 2)
                if res["cpu_s_per_GB"] is not None:
                    res["total_cpu_s_per_GB"] = round(res["cpu_s_per_GB"] + cpu / gb, 2)
        return res
    finally:
        procs.stop_all()
        link_down()
        shutil.rmtree(workdir, ignore_errors=True)


def diff_speed(contender, cfgdir):
    """`wanmirror diff` of the copy just made, run in the destination DC (the source
    side is read across the emulated link). A difference fails the run."""
    cfg = cfgdir / f"{contender}-bench.toml"
    t = time.time()
    out = subprocess.run(ns(DST_NS, [str(REL / "wanmirror"), "diff", "--config", str(cfg), "--json"]),
                         capture_output=True, text=True)
    secs = time.time() - t
    if out.returncode != 0:
        raise RuntimeError(f"diff after {contender} exited {out.returncode}: {out.stdout[-2000:]}{out.stderr[-2000:]}")
    report = json.loads(out.stdout)
    read = sum(p["bytes_read"] for p in report["partitions"])
    res = {"diff_s": round(secs, 2), "diff_read_MBps": round(read / secs / 1e6, 2)}
    if "peer_bytes" in report:
        # Through the peer the source side is hashed there: only hashes cross.
        res["diff_wan_KB"] = round(report["peer_bytes"] / 1e3, 1)
    return res


def latency(contender, args, cfgdir, procs):
    wb(SRC_NS, ["preload", "--bootstrap", SRC_ADDR, "--topic", "lat", "--partitions", "1", "--bytes", "0"])
    if contender == "mm2":
        # MM2 takes seconds to start (JVM, Connect herder, internal topics, tasks): it
        # mirrors a probe topic too, and the measurement starts once a probe is across.
        wb(SRC_NS, ["preload", "--bootstrap", SRC_ADDR, "--topic", "lat-probe", "--partitions", "1", "--bytes", "0"])
        cfg = cfgdir / "mm2-lat.properties"
        mm2_config(cfg, "lat|lat-probe", 1)
        procs.start(ns(DST_NS, mm2_cmd(cfg)))
        wait_mm2_tailing()
    else:
        procs.start(ns(DST_NS, contender_cmd(contender, "lat", 0, True, cfgdir)))
    n = args.latency_rate * args.latency_secs
    cons = subprocess.Popen(ns(DST_NS, [str(REL / "wanbench"), "latency-consume", "--bootstrap", DST_ADDR,
                                        "--topic", "dc-a.lat", "--partitions", "1", "--records", str(n),
                                        "--timeout-secs", str(args.latency_secs + 90)]),
                            stdout=subprocess.PIPE, text=True)
    time.sleep(2)
    sh(ns(SRC_NS, [str(REL / "wanbench"), "latency-produce", "--bootstrap", SRC_ADDR, "--topic", "lat",
                   "--rate", str(args.latency_rate), "--seconds", str(args.latency_secs)]))
    out, _ = cons.communicate(timeout=args.latency_secs + 120)
    r = json.loads(out.strip().splitlines()[-1])
    return {"lat_p50_ms": r["p50_ms"], "lat_p99_ms": r["p99_ms"], "lat_p999_ms": r["p999_ms"],
            "lat_records": r["records"]}


def wait_mm2_tailing(limit=120, probe="lat-probe"):
    sh(ns(SRC_NS, [str(REL / "wanbench"), "latency-produce", "--bootstrap", SRC_ADDR, "--topic", probe,
                   "--rate", "10", "--seconds", "1"]))
    t = time.time()
    while time.time() - t < limit:
        try:
            if ends(DST_NS, DST_ADDR, f"dc-a.{probe}", wire=False)["end_offsets"] >= 10:
                return
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.5)
    raise RuntimeError("mm2 did not start copying the latency topic")


def live_wait_ms():
    """The fetch wait at the source's end in the live profiles. Apache Kafka answers a
    long poll as soon as data arrives, so the usual 500 ms costs nothing. tansu 0.6
    sleeps out most of the wait before it answers (docs/tansu-quirks.md), so every
    contender there waits 20 ms: shorter waits poll the source across the link
    all the time, longer ones are a latency floor that is the broker's, not the
    contender's."""
    return 20 if BROKER == "tansu" else 500


def mirror_latency():
    """The mirror's replication latency quantiles in ms, from its metrics endpoint."""
    try:
        out = subprocess.run(ns(DST_NS, ["curl", "-s", "--max-time", "5", f"http://127.0.0.1:{METRICS_PORT}/metrics"]),
                             capture_output=True, text=True, timeout=15).stdout
    except subprocess.TimeoutExpired:
        return {}
    q = {}
    for line in out.splitlines():
        if line.startswith("wanmirror_replication_latency_seconds{"):
            m = re.search(r'quantile="([^"]+)"[^}]*\}\s+(\S+)', line)
            if m:
                q[m.group(1)] = round(float(m.group(2)) * 1000, 1)
    return q


def live_run(profile, contender, args, cfgdir):
    """A live stream: the contender runs first, tailing an empty topic of
    `--partitions` partitions; then records of `--live-record-bytes` random bytes are
    written at `live_pct` % of the link rate for `--live-secs` s, stamped with their
    send time, and read back in the destination DC as they arrive."""
    procs = Procs()
    workdir = Path(tempfile.mkdtemp(prefix="wb-live-"))
    try:
        cc = link_up(profile)
        brokers(procs, workdir)
        topic, parts, size = "live", args.partitions, args.live_record_bytes
        wb(SRC_NS, ["preload", "--bootstrap", SRC_ADDR, "--topic", topic, "--partitions", str(parts), "--bytes", "0"])
        rate = int(profile["live_pct"] / 100 * profile["rate_mbit"] * 1e6 / 8 / size)
        n = rate * args.live_secs
        wait_ms = live_wait_ms()
        stem = f"live-rtt{profile['rtt_ms']}-loss{profile['loss_pct']}-load{profile['live_pct']}-{contender}-{int(time.time())}"
        serve = serve_start(procs, cfgdir, quic_cc(contender), serve_log(args, stem)) if is_quic(contender) else None
        timefile = cfgdir / "time.txt"
        if contender == "mm2":
            wb(SRC_NS, ["preload", "--bootstrap", SRC_ADDR, "--topic", "live-probe", "--partitions", "1", "--bytes", "0"])
            cmd = contender_cmd(contender, "live|live-probe", 0, True, cfgdir, parts, wait_ms)
        else:
            cmd = contender_cmd(contender, topic, 0, True, cfgdir, parts, wait_ms, metrics=True)
        log = subprocess.DEVNULL
        if args.logs:
            Path(args.logs).mkdir(parents=True, exist_ok=True)
            log = open(Path(args.logs) / f"{stem}.log", "w")
        p = subprocess.Popen(ns(DST_NS, ["env", "RUST_LOG=" + os.environ.get("WANBENCH_RUST_LOG", "info"),
                                         "/usr/bin/time", "-o", str(timefile), "-f", "%e %U %S %M"] + cmd),
                             stdout=log if contender == "mm2" else subprocess.DEVNULL, stderr=log)
        procs.ps.append(p)
        if contender == "mm2":
            wait_mm2_tailing(probe="live-probe")
        load_end = cfgdir / "load_end"
        load_end.unlink(missing_ok=True)
        cons = subprocess.Popen(ns(DST_NS, [str(REL / "wanbench"), "latency-consume", "--bootstrap", DST_ADDR,
                                            "--topic", f"dc-a.{topic}", "--partitions", str(parts), "--records", str(n),
                                            "--timeout-secs", str(args.live_secs + args.live_drain_cap + 120),
                                            "--load-end-file", str(load_end),
                                            "--drain-cap-secs", str(args.live_drain_cap)]),
                                stdout=subprocess.PIPE, text=True)
        procs.ps.append(cons)
        time.sleep(3)  # the contender and the consumer settle on the empty topic
        samples = LinkSampler()
        prod = subprocess.run(ns(SRC_NS, [str(REL / "wanbench"), "latency-produce", "--bootstrap", SRC_ADDR,
                                          "--topic", topic, "--partitions", str(parts), "--rate", str(rate),
                                          "--size", str(size), "--seconds", str(args.live_secs), "--linger-ms", "5"]),
                              capture_output=True, text=True, check=True)
        pace = json.loads(prod.stderr.strip().splitlines()[-1])
        mirror_lat = mirror_latency() if contender.startswith("wanmirror") else {}
        # Written whole, then renamed: the consumer reads it while it runs.
        (cfgdir / "load_end.tmp").write_text(str(pace["end_ms"]))
        (cfgdir / "load_end.tmp").rename(load_end)
        # The load stopped: what is left must arrive within the drain cap.
        try:
            out, _ = cons.communicate(timeout=args.live_drain_cap + 60)
        except subprocess.TimeoutExpired:
            cons.kill()
            out, _ = cons.communicate()
        carried = samples.carried()
        samples.stop()
        stop_contender(p, 20)
        r = json.loads(out.strip().splitlines()[-1])
        fields = timefile.read_text().split()[-4:] if timefile.exists() else []
        timefile.unlink(missing_ok=True)
        cpu = float(fields[1]) + float(fields[2]) if len(fields) == 4 else None
        if serve and cpu is not None:
            serve_cpu = serve_stop(*serve)
            cpu = cpu + serve_cpu if serve_cpu is not None else None
        gb = r["records"] * size / 1e9
        if is_quic(contender):
            cc = f"{quic_cc(contender)} (QUIC)"
        return {
            "broker": BROKER, "congestion_control": cc, "tail_wait_ms": wait_ms,
            "rate_records_s": rate, "records": n, "copied_records": r["records"],
            "copied_pct": round(100 * r["records"] / n, 2) if n else None, "duplicates": r["duplicates"],
            "produce_s": round(pace["seconds"], 2), "produce_max_behind_ms": pace["max_behind_ms"],
            "lat_p50_ms": r["p50_ms"], "lat_p99_ms": r["p99_ms"], "lat_p999_ms": r["p999_ms"], "lat_max_ms": r["max_ms"],
            # The mirror's own view (wanmirror_replication_latency_seconds when the load
            # stopped, over its last 30-60 s): a batch's timestamp (the producer's) to
            # the destination's acknowledgement, so without the reading consumer's polls.
            "mirror_lat_p50_ms": mirror_lat.get("0.5"), "mirror_lat_p99_ms": mirror_lat.get("0.99"),
            # Still to copy when the load stopped, in records and in seconds of load.
            "lag_at_stop_records": r["lag_at_stop_records"],
            "lag_at_stop_s": round(r["lag_at_stop_records"] / rate, 2) if rate else None,
            "drain_s": r["drain_s"],
            "carried_MB": round(carried / 1e6, 1) if carried is not None else None,
            "cpu_s_per_GB": round(cpu / gb, 2) if cpu is not None and gb > 0 else None,
            "peak_rss_MB": round(int(fields[3]) / 1024, 1) if len(fields) == 4 else None,
            "cdf": r["cdf"],
        }
    finally:
        procs.stop_all()
        link_down()
        shutil.rmtree(workdir, ignore_errors=True)


def summarise(runs):
    out = {}
    for k in runs[0]:
        vals = [r[k] for r in runs if isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)]
        if vals:
            out[k] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals)}
    return out


def write_outputs(results, args, outdir):
    outdir.mkdir(parents=True, exist_ok=True)
    # Paths are recorded relative to the project (or by name only): results are shared.
    rec = dict(vars(args))
    for k in ("out", "logs"):
        if rec.get(k):
            p = Path(rec[k]).resolve()
            rec[k] = str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else p.name
    (outdir / "results.json").write_text(json.dumps({"args": rec, "results": results}, indent=2))
    catch = [r for r in results if "live_pct" not in r["profile"]]
    live = [r for r in results if "live_pct" in r["profile"]]
    md = ""
    if catch:
        md += catch_up_table(catch, args)
    if live:
        md += ("\n" if md else "") + live_table(live, args)
    if "," in getattr(args, "merged_from", ""):
        md += (f"\nCombined with `--merge` from bench/results/{{{args.merged_from}}}: the contenders of each profile "
               "were measured in the same run (unless a source's results.json records `resume`: then some were added later), "
               "the profiles in separate runs.\n")
    (outdir / "results.md").write_text(md)
    print(md)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart", file=sys.stderr)
        return
    if catch:
        goodput_chart(plt, catch, args, outdir / "goodput.png")
    if live:
        latency_chart(plt, live, outdir / "latency.png")


FMT = lambda s, k: ("%g (%g–%g)" % (s[k]["median"], s[k]["min"], s[k]["max"])) if k in s else "n/a"


def catch_up_table(results, args):
    lines = ["| RTT ms | loss % | contender | payload MB/s | % of link (wire), whole run | % of link, sustained | link carried % | copied % | time s | lat p50/p99/p99.9 ms | CPU s/GB | RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = FMT
    for r in results:
        s = r["summary"]
        lat = "/".join(str(s[k]["median"]) if k in s else "n/a" for k in ("lat_p50_ms", "lat_p99_ms", "lat_p999_ms"))
        lines.append(f"| {r['profile']['rtt_ms']} | {r['profile']['loss_pct']} | {r['contender']} | {fmt(s, 'goodput_MBps')} | "
                     f"{fmt(s, 'link_pct')} | {fmt(s, 'steady_link_pct')} | {fmt(s, 'carried_link_pct')} | {fmt(s, 'copied_pct')} | {fmt(s, 'time_s')} | {lat} | {fmt(s, 'total_cpu_s_per_GB' if 'total_cpu_s_per_GB' in s else 'cpu_s_per_GB')} | {fmt(s, 'peak_rss_MB')} |")
    lines += dup_note(results, "Duplicate records at the destination (per run)",
                      lambda pr: f"{pr['rtt_ms']:g} ms / {pr['loss_pct']:g} %")
    return "\n".join(lines) + ("\n\nBrokers: %s in both DCs. Each cell: median (min–max) of %d runs. Link cap %s Mbit/s; dataset %d MB; catch-up capped at %d s. "
         "Whole run: stored batch bytes copied / wall time from process start to exit. Sustained: the same bytes over the time "
         "the link carried the middle 80 %% of the run's traffic (start-up and tail left out). "
         "Link carried: everything the emulated link delivered towards the destination during the run (headers, retransmissions, "
         "answers thrown away) over the same wall time. Copied: records at the destination, of the source's. "
         "wanmirror-quic reads through `wanmirror serve` in the source DC; its CPU is both processes'.\n") % (
        args.broker, args.runs, args.rate_mbit, args.dataset_mb, args.cap_secs)


def dup_note(results, title, where):
    """A line under a table naming each contender and profile with duplicates."""
    dups = [f"{r['contender']} at {where(r['profile'])}: " + ", ".join(str(x.get("duplicates", 0)) for x in r["runs"])
            for r in results if any(x.get("duplicates") for x in r["runs"])]
    return ["", f"{title}: " + "; ".join(dups) + "."] if dups else []


def live_table(results, args):
    lines = ["| RTT ms | loss % | load % of link | contender | latency p50 ms | p99 ms | p99.9 ms | max ms | mirror's own p50 / p99 ms | lag at load stop, s of load | drain s | copied % | CPU s/GB | RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fmt = FMT
    for r in results:
        s, pr = r["summary"], r["profile"]
        undrained = sum(1 for x in r["runs"] if x.get("drain_s") is None)
        drain = fmt(s, "drain_s") + (f" ({undrained} of {len(r['runs'])} never drained)" if undrained else "")
        lines.append(f"| {pr['rtt_ms']:g} | {pr['loss_pct']:g} | {pr['live_pct']:g} | {r['contender']} | {fmt(s, 'lat_p50_ms')} | "
                     f"{fmt(s, 'lat_p99_ms')} | {fmt(s, 'lat_p999_ms')} | {fmt(s, 'lat_max_ms')} | "
                     f"{fmt(s, 'mirror_lat_p50_ms')} / {fmt(s, 'mirror_lat_p99_ms')} | {fmt(s, 'lag_at_stop_s')} | "
                     f"{drain} | {fmt(s, 'copied_pct')} | {fmt(s, 'cpu_s_per_GB')} | {fmt(s, 'peak_rss_MB')} |")
    lines += dup_note(results, "Records read twice at the destination (per run)",
                      lambda pr: f"{pr['loss_pct']:g} % loss / {pr['live_pct']:g} % load")
    wait = results[0]["runs"][0].get("tail_wait_ms")
    return "\n".join(lines) + ("\n\nLive profiles. Brokers: %s in both DCs; fetch wait at the source's end %s ms for every contender. "
         "Each cell: median (min–max) of %d runs. Link cap %s Mbit/s; %d partitions; %d-byte random records written at the load's "
         "share of the link rate (payload) for %d s, stamped with their send time; latency is read time in the destination DC "
         "minus that stamp (records that never arrived are not in it: see copied). Lag at load stop: records not yet read when "
         "the load stopped (never-arrived ones included), in seconds of load. Drain: seconds from "
         "the load's end until the last record was read (a run that never drained waited %d s). Mirror's own: the mirror's "
         "wanmirror_replication_latency_seconds read when the load stopped (a batch's producer timestamp to the destination's "
         "acknowledgement, over its last 30-60 s): the end-to-end figure without the reading consumer's polls.\n") % (
        args.broker, wait, args.runs, args.rate_mbit, args.partitions, args.live_record_bytes, args.live_secs, args.live_drain_cap)


def goodput_chart(plt, results, args, path):
    rtts = sorted({r["profile"]["rtt_ms"] for r in results})
    fig, axes = plt.subplots(1, len(rtts), figsize=(4 * len(rtts), 3.6), squeeze=False, sharey=True)
    for ax, rtt in zip(axes[0], rtts):
        for c in ALL_CONTENDERS:
            pts = sorted((r["profile"]["loss_pct"], r["summary"]["wire_Mbps"]["median"])
                         for r in results if r["profile"]["rtt_ms"] == rtt and r["contender"] == c)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=c)
        ax.axhline(args.rate_mbit, color="grey", linestyle="--", label="link capacity")
        ax.set_title(f"RTT {rtt} ms")
        ax.set_xlabel("loss %")
        ax.set_xscale("symlog", linthresh=0.1)
    axes[0][0].set_ylabel("goodput on the wire, Mbit/s")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def latency_chart(plt, results, path):
    """One panel per live profile: each contender's latency CDF, from the run whose
    p99 is the median of its runs."""
    profiles = sorted({(r["profile"]["rtt_ms"], r["profile"]["loss_pct"], r["profile"]["live_pct"]) for r in results})
    fig, axes = plt.subplots(1, len(profiles), figsize=(4.2 * len(profiles), 3.6), squeeze=False)
    for ax, (rtt, loss, load) in zip(axes[0], profiles):
        for r in results:
            pr = r["profile"]
            if (pr["rtt_ms"], pr["loss_pct"], pr["live_pct"]) != (rtt, loss, load):
                continue
            runs = sorted((x for x in r["runs"] if x.get("cdf")), key=lambda x: x["lat_p99_ms"])
            if not runs:
                continue
            cdf = runs[len(runs) // 2]["cdf"]
            ax.plot([max(v, 1) for _, v in cdf], [q for q, _ in cdf], label=r["contender"])
        ax.set_xscale("log")
        # A panel spanning less than two decades would label its minor ticks too, in
        # overlapping scientific notation: decades only.
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set_title(f"RTT {rtt:g} ms, loss {loss:g} %, load {load:g} %", fontsize=9)
        ax.set_xlabel("latency, ms")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("share of the records read")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def merge(args):
    """One table and chart from several runs of the same settings (each profile's
    contenders were measured in the same run; profiles in different runs)."""
    results, sources = [], []
    union = {"rtts": [], "losses": [], "contenders": []}
    for d in args.merge.split(","):
        j = json.loads((Path(d) / "results.json").read_text())
        for k, v in j["args"].items():
            if k in union:
                union[k] += [x for x in str(v).split(",") if x not in union[k]]
            elif k not in ("out", "logs", "merge", "resume"):
                setattr(args, k, v)
        results += j["results"]
        sources.append(Path(d).name)
    for k, v in union.items():
        setattr(args, k, ",".join(v))
    args.merged_from = ",".join(sources)
    # The results record where they came from by directory name, never by path.
    args.merge = args.merged_from
    write_outputs(results, args, Path(args.out))


def main():
    # A kill (SIGTERM, as from `timeout` or a CI runner) unwinds through the `finally`
    # blocks like Ctrl-C does, so brokers, contenders and the link are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rtts", default="0,50,100,200", help="round-trip times in ms, comma-separated")
    ap.add_argument("--losses", default="0,0.1,1", help="loss rates in %%, comma-separated (applied in both directions)")
    ap.add_argument("--rate-mbit", type=int, default=200, help="link rate cap, Mbit/s")
    ap.add_argument("--max-mbit", type=int, default=0, help="transport.max_mbit of the wanmirror-capped contender (default: half of --rate-mbit)")
    ap.add_argument("--runs", type=int, default=3, help="runs per contender and profile (median, min, max reported)")
    ap.add_argument("--dataset-mb", type=int, default=20, help="payload MB preloaded into the source per run")
    ap.add_argument("--partitions", type=int, default=8, help="partitions of the preloaded topic")
    ap.add_argument("--cap-secs", type=int, default=45, help="catch-up time cap; goodput then counts what was copied")
    ap.add_argument("--latency-secs", type=int, default=5, help="seconds of tailing-latency measurement (0 = skip)")
    ap.add_argument("--latency-rate", type=int, default=100, help="records/s produced during the latency phase")
    ap.add_argument("--contenders", default=",".join(CONTENDERS),
                    help="comma-separated, of: " + ", ".join(ALL_CONTENDERS) + " (default: all but mm2)")
    ap.add_argument("--broker", choices=["tansu", "kafka"], default="tansu",
                    help="brokers in both DCs: tansu (memory storage) or Apache Kafka (single-node KRaft)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"), help="output directory")
    ap.add_argument("--mirror-extra", default="", help="TOML lines added under [mirror] for wanmirror (e.g. 'in_flight_bytes = 1073741824')")
    ap.add_argument("--diff", action="store_true", help="after each complete wanmirror copy, time `wanmirror diff` of it")
    ap.add_argument("--logs", default="", help="keep each contender's log in this directory")
    ap.add_argument("--smoke", action="store_true", help="one small profile, one run")
    ap.add_argument("--resume", action="store_true", help="keep results already in --out and run only the missing ones")
    ap.add_argument("--live", default="", help="live profiles instead of the catch-up: loads as %% of the link rate, "
                    "comma-separated (e.g. 10,40,70); each contender tails while the load runs")
    ap.add_argument("--live-secs", type=int, default=60, help="seconds of load in a live profile")
    ap.add_argument("--live-drain-cap", type=int, default=120, help="seconds after the load stops that a live run waits for the rest")
    ap.add_argument("--live-record-bytes", type=int, default=1024, help="record size in the live profiles (random bytes)")
    ap.add_argument("--quic-congestion", choices=["bbr", "cubic", "newreno"], default="bbr",
                    help="congestion control of wanmirror-quic's peer connections (both ends)")
    ap.add_argument("--peer-connections", type=int, default=8, help="most QUIC connections of wanmirror-quic (1-8; the pool adapts)")
    ap.add_argument("--merge", default="", help="run nothing: combine the results of these result directories "
                    "(comma-separated, same dataset and cap) into one table and chart in --out")
    args = ap.parse_args()
    if args.merge:
        if Path(args.out).resolve() == (ROOT / "bench" / "results").resolve():
            ap.error("--merge needs --out: a directory of its own for the combined results")
        return merge(args)
    global MIRROR_EXTRA, BROKER, MAX_MBIT, QUIC_CONGESTION, PEER_CONNECTIONS
    QUIC_CONGESTION, PEER_CONNECTIONS = args.quic_congestion, args.peer_connections
    MIRROR_EXTRA = args.mirror_extra.replace("\\n", "\n")
    MAX_MBIT = args.max_mbit or args.rate_mbit // 2
    BROKER = args.broker
    for c in args.contenders.split(","):
        if c not in ALL_CONTENDERS:
            ap.error(f"unknown contender {c}")
    if BROKER == "kafka" or "mm2" in args.contenders.split(","):
        kafka_setup()
    if args.smoke:
        args.rtts, args.losses, args.runs, args.dataset_mb = "20", "0.1", 1, 2
        args.cap_secs, args.latency_secs, args.latency_rate = 30, 3, 50
    results = []
    out = Path(args.out)
    if args.resume and (out / "results.json").exists():
        results = json.loads((out / "results.json").read_text())["results"]
        print(f"resuming: {len(results)} profile/contender results kept", flush=True)
    key = lambda prof, c: (prof["rtt_ms"], prof["loss_pct"], prof.get("live_pct"), c)
    done = {key(r["profile"], r["contender"]) for r in results
            if r["profile"].get("broker", "tansu") == args.broker}
    loads = [float(x) for x in args.live.split(",")] if args.live else [None]
    cfgdir = Path(sh(["mktemp", "-d"]).strip())
    try:
        for rtt in [float(x) for x in args.rtts.split(",")]:
            for loss in [float(x) for x in args.losses.split(",")]:
                for load in loads:
                    profile = {"rtt_ms": rtt, "loss_pct": loss, "rate_mbit": args.rate_mbit, "broker": args.broker}
                    if load is not None:
                        profile["live_pct"] = load
                    for c in args.contenders.split(","):
                        if key(profile, c) in done:
                            continue
                        runs = []
                        for i in range(args.runs):
                            r = live_run(profile, c, args, cfgdir) if load is not None else one_run(profile, c, args, cfgdir)
                            shown = {k: v for k, v in r.items() if k != "cdf"}
                            print(f"rtt={rtt} loss={loss} load={load} {c} run {i + 1}: {json.dumps(shown)}", flush=True)
                            runs.append(r)
                        results.append({"profile": profile, "contender": c, "runs": runs, "summary": summarise(runs)})
                        write_outputs(results, args, Path(args.out))
    finally:
        link_down()
        shutil.rmtree(cfgdir, ignore_errors=True)
    ok = all(r["summary"].get("goodput_MBps" if "live_pct" not in r["profile"] else "copied_pct", {}).get("median", 0) > 0
             for r in results)
    sys.exit(0 if ok and results else 1)


if __name__ == "__main__":
    main()

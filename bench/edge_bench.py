"""``make bench``: the edge against nginx ``proxy_cache``, same origin, same machine. Prints, never asserts.

What it measures (medians over ``--rounds`` rounds, except memory peaks: the max over rounds):

1. cache hits for 1 KiB, 100 KiB, 1 MiB and 10 MiB objects: requests/s, p50/p99 latency.  Each
   object is warmed first and the origin stub's counter for it is read before and after every
   round, so a "hit" figure with origin fetches in it is flagged, not silently reported;
2. the miss path: every request a new URL (miss + store; unique in the query, so the stub's cost per
   object name stays out of it), plus the origin stub alone as a ceiling;
3. the thundering herd: N concurrent clients ask for one slow, uncached object; how many requests
   reached the origin and when the last client had the whole (verified) body;
4. memory: peak RSS (and PSS) of the whole server (supervisor/master + workers, sampled from
   /proc) while 32 and then 256 connections fetch 10 MiB hits: does it stay flat?
5. the same for nginx (``bench/nginx.conf.template``) when it is installed or installable, and the
   ratio edge/nginx next to the targets of the issue.

Load comes from ``wrk`` when available (installed with apt when running as root, see
``--install-tools``), else from a multi-process aiohttp client.  Everything shares the machine's
cores (load generator, origin stub, edge, nginx), so per scenario the CPU each one used is printed
too: it says what limited the figure.  Every load is bounded in time (and the Python client also in
requests); every process started here is stopped by its PID.  The table is also written as JSON
to ``.bench/results.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

KIB = 1024
MIB = 1024 * 1024
PROJECT_ROOT = Path(__file__).resolve().parent.parent
NGINX_TEMPLATE = PROJECT_ROOT / "bench" / "nginx.conf.template"
HIT_SIZES = (1 * KIB, 100 * KIB, 1 * MIB, 10 * MIB)
MISS_SIZE = 1 * KIB
MAX_AGE = 3600
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // KIB
# The targets: edge/nginx ratio per scenario (None: no target stated).
TARGETS: dict[str, float] = {
    "hit 1 KiB": 0.5, "hit 100 KiB": 0.5, "hit 1 MiB": 1.0, "hit 10 MiB": 1.0, "miss 1 KiB": 0.5,
}  # fmt: skip
TARGETS_TEXT = (
    "pinned, medians: 1 KiB and 100 KiB hits >= 0.5x nginx, 1 MiB and 10 MiB >= 1.0x with memory flat as "
    "connections grow, 1 KiB misses >= 0.5x; herd: one origin request, the last client within 1.1x the origin's time"
)
HERD_TARGET = 1.1
# "Flat" memory: growth per extra connection far below one object (a copy per connection would be
# 10 MiB each).  256 KiB/connection is the line drawn here; the raw figures are printed anyway.
FLAT_KIB_PER_CONN = 256


def human_size(size: int) -> str:
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    if size >= KIB and size % KIB == 0:
        return f"{size // KIB} KiB"
    return f"{size} B"


def log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


# --------------------------------------------------------------------------------------------
# /proc: process trees, CPU time, resident memory


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 = state, 1 = ppid, 11 = utime)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """*root* and all its descendants (the edge supervisor and its workers, nginx master and workers)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        fields = _proc_stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def machine_ticks() -> tuple[int, int]:
    """(busy, idle) clock ticks of the whole machine so far, from the ``cpu`` line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, idle


def background_cores(seconds: float = 1.0) -> float:
    """Cores busy on the machine while we do nothing: other people's work shares our cores."""
    busy0, _ = machine_ticks()
    time.sleep(seconds)
    busy1, _ = machine_ticks()
    return (busy1 - busy0) / CLK_TCK / seconds


def wait_for_quiet(limit_s: float, threshold: float = 0.25) -> tuple[float, float]:
    """Wait up to *limit_s* for the machine to be (nearly) idle; (cores busy at start, seconds waited)."""
    began = time.monotonic()
    busy = background_cores()
    while busy > threshold and time.monotonic() - began < limit_s:
        busy = background_cores()
    return busy, time.monotonic() - began


def memory_kib(pids: Sequence[int]) -> tuple[int, int]:
    """(summed RSS, summed PSS) in KiB.  RSS counts pages shared by forked workers once per
    process; PSS splits them, so it is the fairer sum for a pre-fork server."""
    rss = pss = 0
    for pid in pids:
        with suppress(OSError, ValueError, IndexError):
            rss += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
        with suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
                    break
    return rss, pss


# --------------------------------------------------------------------------------------------
# Processes we start (and stop, by PID)


@dataclass
class Server:
    """A server under test (or the origin): where it answers and the root of its process tree."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tree(self) -> list[int]:
        return process_tree(self.pid)


def pinned_to(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child (and everything it forks) to ``cpus``."""
    if not cpus:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


def start_process(
    cmd: Sequence[str], log_path: Path, env: dict[str, str] | None = None, cpus: set[int] | None = None
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as out:
        return subprocess.Popen(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            preexec_fn=pinned_to(cpus),
        )  # fmt: skip


def wait_for_log(process: subprocess.Popen[bytes], log_path: Path, pattern: str, timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, log_path.read_text(errors="replace"))
        if match:
            return match
        if process.poll() is not None:
            break
        time.sleep(0.05)
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{process.args!r} did not start (exit {process.poll()}):\n{tail}")


def wait_http(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:
                resp.read()
                return
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s")


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Signal the process by PID and wait; if it hangs, kill its own session (started by us)."""
    if process.poll() is None:
        with suppress(ProcessLookupError):
            os.kill(process.pid, sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


# --------------------------------------------------------------------------------------------
# Tools: wrk and nginx (installed with apt when allowed)


@dataclass
class Tools:
    wrk: str | None = None
    wrk_version: str = ""
    nginx: str | None = None
    nginx_version: str = ""
    actions: list[str] = field(default_factory=list)


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/local/sbin") / name) if p.exists()), None
    )


def _apt_install(packages: Sequence[str], actions: list[str], updated: list[bool]) -> bool:
    """``apt-get install -y PKG`` (one ``apt-get update`` and a retry if the lists are stale)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    policy = Path("/usr/sbin/policy-rc.d")
    # Debian starts a freshly installed nginx as a system service on port 80; a bench must not leave
    # a daemon behind, so service starts are refused (policy-rc.d exit 101) during the install.
    made_policy = False
    if not policy.exists():
        with suppress(OSError):
            policy.write_text("#!/bin/sh\n# temporary, written by edgecache bench\nexit 101\n")
            policy.chmod(0o755)
            made_policy = True
    try:
        for attempt in range(2):
            cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
            try:
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
            except (OSError, subprocess.TimeoutExpired) as exc:
                actions.append(f"`{' '.join(cmd)}` failed: {exc}")
                return False
            if done.returncode == 0:
                actions.append(f"installed {' '.join(packages)} (`{' '.join(cmd)}`)")
                return True
            reason = (done.stderr.strip().splitlines() or ["?"])[-1]
            actions.append(f"`{' '.join(cmd)}` failed: {reason}")
            if attempt == 0 and not updated[0]:
                updated[0] = True
                upd = subprocess.run(
                    ["apt-get", "update"], env=env, capture_output=True, text=True, timeout=300, check=False
                )
                actions.append(f"ran `apt-get update` (exit {upd.returncode})")
                continue
            return False
        return False
    finally:
        if made_policy:
            with suppress(OSError):
                policy.unlink()


def find_tools(install: bool, want_nginx: bool, want_wrk: bool) -> Tools:
    tools = Tools(wrk=_which("wrk") if want_wrk else None, nginx=_which("nginx") if want_nginx else None)
    can_install = install and shutil.which("apt-get") is not None
    updated = [False]
    if want_wrk and tools.wrk is None:
        if can_install and _apt_install(["wrk"], tools.actions, updated):
            tools.wrk = _which("wrk")
        elif not install:
            tools.actions.append("wrk not installed (not installing: --no-install-tools or not root)")
    if want_nginx and tools.nginx is None:
        if can_install and (
            _apt_install(["nginx-light"], tools.actions, updated) or _apt_install(["nginx"], tools.actions, updated)
        ):
            tools.nginx = _which("nginx")
        elif not install:
            tools.actions.append("nginx not installed (not installing: --no-install-tools or not root)")
    if tools.wrk:
        out = subprocess.run([tools.wrk, "-v"], capture_output=True, text=True, timeout=10, check=False)
        first = ((out.stdout + out.stderr).strip().splitlines() or [""])[0]
        tools.wrk_version = first.split(" Copyright")[0].strip()
    if tools.nginx:
        out = subprocess.run([tools.nginx, "-v"], capture_output=True, text=True, timeout=10, check=False)
        tools.nginx_version = (out.stdout + out.stderr).strip().removeprefix("nginx version: ")
    return tools


# --------------------------------------------------------------------------------------------
# Load generation: wrk, or the Python client in several processes


@dataclass
class LoadSpec:
    url: str  # with "{n}" where a unique part goes when unique=True
    connections: int
    seconds: float
    unique: bool = False
    max_requests: int = 2_000_000
    timeout_s: float = 10.0


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    bytes: int
    p50_ms: float
    p99_ms: float
    x_cache: dict[str, int] = field(default_factory=dict)
    cores: dict[str, float] = field(default_factory=dict)  # CPU used per party, in cores
    peak_rss_kib: int = 0
    peak_pss_kib: int = 0
    # Cores used by each process of a server, busiest first: shows whether the workers share the load.
    split: dict[str, list[float]] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def mib_s(self) -> float:
        return self.bytes / MIB / self.seconds if self.seconds else 0.0


_WRK_UNIQUE_LUA = """\
-- edgecache bench: every request a new path (a cache miss + store), at most max_requests per thread.
local counter = 0
local tag = "u"
local cap = 1000000
local next_id = 0
function setup(thread)
  next_id = next_id + 1
  thread:set("tid", next_id)
end
function init(args)
  tag = args[1] or tag
  cap = tonumber(args[2]) or cap
end
function request()
  counter = counter + 1
  if counter > cap then wrk.thread:stop() end
  return wrk.format(nil, string.format(path_format, tag .. "-" .. tid .. "-" .. counter))
end
"""

_DURATION = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}
_BYTES = {"B": 1, "KB": KIB, "MB": MIB, "GB": 1024 * MIB, "TB": 1024 * 1024 * MIB}


def parse_wrk(text: str) -> LoadResult:
    """Read requests, duration, bytes, errors and the p50/p99 of ``wrk --latency`` output."""

    def duration_ms(value: str) -> float:
        match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", value)
        if not match:
            raise ValueError(f"unexpected wrk duration {value!r}")
        return float(match[1]) * _DURATION[match[2]]

    total = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+)(\w+) read", text)
    if not total:
        raise ValueError(f"unexpected wrk output:\n{text}")
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)", text, re.MULTILINE))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return LoadResult(
        requests=int(total[1]),
        errors=errors + (int(non_2xx[1]) if non_2xx else 0),
        seconds=duration_ms(total[2]) / 1000,
        bytes=int(float(total[3]) * _BYTES.get(total[4], 1)),
        p50_ms=duration_ms(percentiles["50"]) if "50" in percentiles else 0.0,
        p99_ms=duration_ms(percentiles["99"]) if "99" in percentiles else 0.0,
    )


async def _client_load(spec: dict[str, Any], proc_index: int) -> dict[str, Any]:
    """One client process: keep-alive connections, each a loop of GETs, bounded in count and time."""
    import aiohttp

    latencies: list[float] = []
    x_cache: Counter[str] = Counter()
    errors = issued = received = 0
    deadline = time.perf_counter() + float(spec["seconds"])
    max_requests = int(spec["max_requests"])

    async def worker(client: aiohttp.ClientSession) -> None:
        nonlocal errors, issued, received
        while issued < max_requests and time.perf_counter() < deadline:
            issued += 1
            url = spec["url"].replace("{n}", f"{spec['tag']}-p{proc_index}-{issued}") if spec["unique"] else spec["url"]
            started = time.perf_counter()
            try:
                async with client.get(url) as resp:
                    body = await resp.read()  # not `received += len(await ...)`: that loses updates
                    received += len(body)
                    x_cache[resp.headers.get("X-Cache", "-")] += 1
                    if resp.status >= 400:
                        errors += 1
            except (TimeoutError, aiohttp.ClientError):
                errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=float(spec["timeout_s"]))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(int(spec["connections"]))))
        elapsed = time.perf_counter() - began
    return {"seconds": elapsed, "bytes": received, "errors": errors, "latencies": latencies, "x_cache": x_cache}


async def _client_herd(spec: dict[str, Any]) -> dict[str, Any]:
    """N clients, each on its own connection, GET one URL at the same moment; when did each finish?"""
    import aiohttp

    from origin_stub.body import expected_body

    expected = expected_body(spec["name"], int(spec["size"]))
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=float(spec["timeout_s"]))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False) as client:
        began = time.perf_counter()

        async def one() -> tuple[int, bool, str, float]:
            async with client.get(spec["url"]) as resp:
                body = await resp.read()
                finished = time.perf_counter() - began
                return resp.status, body == expected, resp.headers.get("X-Cache", "-"), finished

        outcomes = await asyncio.gather(*(one() for _ in range(int(spec["clients"]))), return_exceptions=True)
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    return {
        "clients": len(outcomes),
        "ok": sum(1 for status, good, _, _ in done if status == 200 and good),
        "failures": [repr(o)[:200] for o in outcomes if isinstance(o, BaseException)][:3],
        "x_cache": Counter(x for _, _, x, _ in done),
        "first_s": min((t for *_, t in done), default=0.0),
        "all_s": max((t for *_, t in done), default=0.0),
    }


def client_main(argv: Sequence[str]) -> None:
    """Entry point of a Python load-client process: ``MODE SPEC_JSON [INDEX]``, prints JSON."""
    spec = json.loads(argv[1])
    try:
        import uvloop

        runner: Callable[[Any], Any] = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    coroutine = _client_herd(spec) if argv[0] == "herd" else _client_load(spec, int(argv[2]))
    result = runner(coroutine)
    print(json.dumps(result))


def _client_cmd(mode: str, spec: dict[str, Any], index: int = 0) -> list[str]:
    code = "import sys; from bench.edge_bench import client_main; client_main(sys.argv[1:])"
    return [sys.executable, "-c", code, mode, json.dumps(spec), str(index)]


class Watcher:
    """CPU per party and the peak memory of one server, around one load run."""

    def __init__(self, parties: dict[str, Server], memory_of: Server | None, cpus: set[int] | None = None) -> None:
        self.cpus = cpus
        self.trees = {name: server.tree() for name, server in parties.items()}
        self.memory_of = memory_of
        self.peak_rss = self.peak_pss = 0
        self.split: dict[str, list[float]] = {}

    def sample_memory(self) -> None:
        if self.memory_of is not None:
            rss, pss = memory_kib(self.memory_of.tree())
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def run(self, cmds: Sequence[Sequence[str]], timeout: float) -> tuple[list[str], dict[str, float]]:
        """Run the load processes to completion, sampling memory every 50 ms meanwhile."""
        cpu0 = {pid: cpu_seconds([pid]) for tree in self.trees.values() for pid in tree}
        gen0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy0, idle0 = machine_ticks()
        began = time.monotonic()
        procs = [
            subprocess.Popen(
                list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                preexec_fn=pinned_to(self.cpus),
            )
            for cmd in cmds
        ]
        try:
            deadline = began + timeout
            while any(p.poll() is None for p in procs):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"load generator exceeded {timeout:.0f} s")
                self.sample_memory()
                time.sleep(0.05)
            outputs = []
            for p in procs:
                out, err = p.communicate(timeout=10)
                if p.returncode != 0:
                    raise RuntimeError(f"load generator failed (exit {p.returncode}): {err.decode()[-1500:]}")
                outputs.append(out.decode())
        finally:
            for p in procs:
                stop_process(p, signal.SIGKILL, 5)
        wall = time.monotonic() - began
        gen1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy1, idle1 = machine_ticks()
        per_pid = {pid: (cpu_seconds([pid]) - cpu0[pid]) / wall for tree in self.trees.values() for pid in tree}
        cores = {name: sum(per_pid[pid] for pid in tree) for name, tree in self.trees.items()}
        cores["loadgen"] = (gen1.ru_utime + gen1.ru_stime - gen0.ru_utime - gen0.ru_stime) / wall
        # "other": busy CPU not charged to any process above: other programs on the machine, and
        # kernel work (softirq network processing) not charged to a process.
        cores["other"] = max(0.0, (busy1 - busy0) / CLK_TCK / wall - sum(cores.values()))
        cores["idle"] = (idle1 - idle0) / CLK_TCK / wall
        self.split = {
            name: sorted((round(per_pid[pid], 2) for pid in tree), reverse=True) for name, tree in self.trees.items()
        }
        return outputs, cores


@dataclass
class Loader:
    wrk: str | None
    wrk_threads: int
    client_procs: int
    workdir: Path
    parties: dict[str, Server] = field(default_factory=dict)
    quiet_budget_s: float = 0.0  # total time we may wait, over the run, for other programs to go quiet
    quiet_waited_s: float = 0.0
    cpus: set[int] | None = None  # where load generators run (pinned mode)

    @property
    def name(self) -> str:
        return "wrk" if self.wrk else f"python aiohttp client x{self.client_procs} processes"

    def gate(self, threshold: float = 0.4) -> None:
        """Before a load: if other programs keep the cores busy, wait a little (within the budget)."""
        while self.quiet_waited_s < self.quiet_budget_s:
            if background_cores(0.3) <= threshold:
                return
            time.sleep(0.7)
            self.quiet_waited_s += 1.0

    def run(self, spec: LoadSpec, memory_of: Server | None = None, tag: str = "u") -> LoadResult:
        self.gate()
        watcher = Watcher(self.parties, memory_of, self.cpus)
        watcher.sample_memory()
        if self.wrk:
            seconds = max(1, round(spec.seconds))
            cmd = [
                self.wrk,
                f"-t{min(self.wrk_threads, spec.connections)}",
                f"-c{spec.connections}",
                f"-d{seconds}s",
                f"--timeout={max(1, round(spec.timeout_s))}s",
                "--latency",
            ]
            if spec.unique:
                base, _, path = spec.url.partition("://")[2].partition("/")
                script = self.workdir / "unique.lua"
                lua_format = ("/" + path).replace("%", "%%").replace("{n}", "%s")
                script.write_text(f"path_format = {json.dumps(lua_format)}\n" + _WRK_UNIQUE_LUA)
                per_thread = spec.max_requests // min(self.wrk_threads, spec.connections) + 1
                cmd += ["-s", str(script), f"http://{base}/", "--", tag, str(per_thread)]
            else:
                cmd.append(spec.url)
            outputs, cores = watcher.run([cmd], timeout=seconds + spec.timeout_s + 30)
            result = parse_wrk(outputs[0])
        else:
            procs = max(1, min(self.client_procs, spec.connections))
            cmds = [
                _client_cmd(
                    "load",
                    {
                        "url": spec.url,
                        "unique": spec.unique,
                        "tag": tag,
                        "seconds": spec.seconds,
                        "max_requests": max(1, spec.max_requests // procs),
                        "connections": spec.connections // procs + (i < spec.connections % procs),
                        "timeout_s": spec.timeout_s,
                    },
                    i,
                )
                for i in range(procs)
            ]
            outputs, cores = watcher.run(cmds, timeout=spec.seconds + spec.timeout_s + 60)
            parts = [json.loads(out) for out in outputs]
            latencies = sorted(x for part in parts for x in part["latencies"])
            x_cache: Counter[str] = Counter()
            for part in parts:
                x_cache.update(part["x_cache"])
            result = LoadResult(
                requests=len(latencies),
                errors=sum(part["errors"] for part in parts),
                seconds=max(part["seconds"] for part in parts),
                bytes=sum(part["bytes"] for part in parts),
                p50_ms=latencies[len(latencies) // 2] if latencies else 0.0,
                p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else 0.0,
                x_cache=dict(x_cache),
            )
        watcher.sample_memory()
        result.cores = {name: round(value, 2) for name, value in cores.items()}
        result.split = watcher.split
        result.peak_rss_kib, result.peak_pss_kib = watcher.peak_rss, watcher.peak_pss
        return result

    def herd(self, url: str, name: str, size: int, clients: int, timeout_s: float) -> dict[str, Any]:
        spec = {"url": url, "name": name, "size": size, "clients": clients, "timeout_s": timeout_s}
        self.gate()
        outputs, cores = Watcher(self.parties, None, self.cpus).run([_client_cmd("herd", spec)], timeout=timeout_s + 30)
        result: dict[str, Any] = json.loads(outputs[0])
        result["cores"] = {k: round(v, 2) for k, v in cores.items()}
        return result


# --------------------------------------------------------------------------------------------
# The origin, the edge and nginx


def origin_count(origin: str, path: str) -> int:
    with urllib.request.urlopen(f"{origin}/_stub/counters?path={path}", timeout=10) as resp:
        return int(json.load(resp)["count"])


def origin_total(origin: str) -> int:
    with urllib.request.urlopen(f"{origin}/_stub/counters", timeout=30) as resp:
        return int(json.load(resp)["total"])


def origin_reset(origin: str) -> None:
    request = urllib.request.Request(f"{origin}/_stub/reset", method="POST", data=b"")
    with urllib.request.urlopen(request, timeout=30) as resp:
        resp.read()


def fetch(url: str, timeout: float = 30.0) -> tuple[int, str, int]:
    """(status, X-Cache, body length) of one GET on a fresh connection."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.headers.get("X-Cache", "-"), len(resp.read())


def start_origin(workdir: Path, cpus: set[int] | None = None) -> Server:
    log_path = workdir / "origin.log"
    process = start_process(
        [sys.executable, "-m", "origin_stub", "--host", "127.0.0.1", "--port", "0"], log_path, cpus=cpus
    )
    match = wait_for_log(process, log_path, r"origin_stub listening on (http://\S+)", 30)
    return Server("origin", match[1], process, log_path)


def start_edge(
    workdir: Path, origin: Server, workers: int, access_log: bool, cpus: set[int] | None = None, name: str = "edge"
) -> tuple[Server, str]:
    log_path = workdir / f"{name}.log"
    cmd = [
        sys.executable, "-m", "edge",
        "--origin", origin.url,
        "--listen", "127.0.0.1:0",
        "--admin-listen", "127.0.0.1:0",
        "--cache-dir", str(workdir / f"{name}-cache"),
        "--workers", str(workers),
        "--log-level", "warning",
    ]  # fmt: skip
    env = dict(os.environ)
    if access_log:
        env["EDGE_ACCESS_LOG_FILE"] = str(workdir / f"{name}-access.log")
    else:
        env["EDGE_ACCESS_LOG"] = "off"
    process = start_process(cmd, log_path, env=env, cpus=cpus)
    match = wait_for_log(process, log_path, r"listening on (http://\S+) \(admin (http://[^)\s]+)\)", 60)
    server = Server("edge", match[1], process, log_path)
    wait_http(f"{match[2]}/readyz", 60)
    return server, match[2]


def render_nginx_config(
    workdir: Path, origin: Server, workers: int, port: int, access_log: bool, name: str = "nginx"
) -> Path:
    text = NGINX_TEMPLATE.read_text()
    values = {
        "dir": str(workdir / name),
        "workers": str(workers),
        "origin": origin.url.removeprefix("http://").rstrip("/"),
        "listen": f"127.0.0.1:{port}",
        # As root the master would drop workers to "nobody", who cannot write our temp dir.
        "user_directive": "user root;" if os.geteuid() == 0 else "",
        # Both servers log every request, or neither (--no-access-log): the edge logs by default.
        "access_log": f"access_log {workdir / name / 'access.log'} combined;" if access_log else "access_log off;",
    }
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    if "{{" in text:
        raise RuntimeError(f"unfilled placeholder in {NGINX_TEMPLATE}: {text[text.index('{{') :][:40]}")
    prefix = workdir / name
    for sub in ("tmp", "cache"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    config = prefix / "nginx.conf"
    config.write_text(text)
    return config


def start_nginx(
    binary: str, workdir: Path, origin: Server, workers: int, access_log: bool, cpus: set[int] | None = None,
    name: str = "nginx",
) -> Server:  # fmt: skip
    port = free_port()
    config = render_nginx_config(workdir, origin, workers, port, access_log, name)
    prefix = config.parent
    log_path = workdir / f"{name}.log"
    cmd = [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", "nginx.conf", "-g", "daemon off;"]
    process = start_process(cmd, log_path, cpus=cpus)
    server = Server("nginx", f"http://127.0.0.1:{port}", process, log_path)
    try:
        wait_http(f"{server.url}/obj/nginx-ready?size=1&max_age=0", 20)
    except RuntimeError:
        error_log = prefix / "error.log"
        detail = error_log.read_text(errors="replace")[-1500:] if error_log.exists() else ""
        stop_process(process, signal.SIGQUIT)
        raise RuntimeError(f"nginx did not start: {log_path.read_text(errors='replace')[-1500:]}{detail}") from None
    return server


STATIC_ORIGIN_CONF = """\
# nginx serving one 1 KiB file for every /obj/ URL: the origin of the miss rows, so that what is
# measured is the cache's miss path, not the origin's speed (the stub spends ~0.3 ms per answer).
{user}
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {dir}/access.log;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {dir}/www;
        location /obj/ {{
            try_files /object =404;
            add_header Cache-Control "max-age={max_age}";
            default_type application/octet-stream;
        }}
    }}
}}
"""


class StaticOrigin:
    """The miss rows' origin: nginx, counted by its access log (or the origin stub, by its counters)."""

    def __init__(self, server: Server, log: Path | None) -> None:
        self.server = server
        self.log = log

    @property
    def url(self) -> str:
        return self.server.url

    def reset(self) -> None:
        if self.log is None:
            origin_reset(self.server.url)
        else:
            self.log.write_bytes(b"")
            os.kill(self.server.pid, signal.SIGUSR1)  # nginx reopens its log

    def total(self) -> int:
        if self.log is None:
            return origin_total(self.server.url)
        deadline = time.monotonic() + 2.0
        count = -1
        while time.monotonic() < deadline:  # nginx writes its log lines when each request ends
            now = self.log.read_bytes().count(b"\n")
            if now == count:
                break
            count = now
            time.sleep(0.2)
        return count


def start_static_origin(binary: str, workdir: Path, cpus: set[int] | None) -> StaticOrigin:
    prefix = workdir / "static-origin"
    (prefix / "www").mkdir(parents=True, exist_ok=True)
    (prefix / "www" / "object").write_bytes(os.urandom(MISS_SIZE))
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        STATIC_ORIGIN_CONF.format(user=user, dir=prefix, port=port, max_age=MAX_AGE), encoding="utf-8"
    )
    log_path = workdir / "static-origin.log"
    cmd = [binary, "-p", str(prefix), "-e", str(prefix / "error.log"), "-c", "nginx.conf", "-g", "daemon off;"]
    process = start_process(cmd, log_path, cpus=cpus)
    server = Server("origin", f"http://127.0.0.1:{port}", process, log_path)
    wait_http(f"{server.url}/obj/ready", 20)
    return StaticOrigin(server, prefix / "access.log")


# --------------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Summary:
    """One server in one scenario: medians over rounds, plus the per-round figures."""

    rps: float
    mib_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    cores: dict[str, float]
    check: str
    rounds: list[dict[str, float]]
    spread_pct: float  # (max - min) / 2 of the rounds' req/s, in % of the median: the noise
    split: list[float]  # cores per process of the server under test (workers, supervisor), busiest first

    @classmethod
    def of(cls, results: Sequence[LoadResult], check: str, server: str) -> Summary:
        parties = sorted({name for r in results for name in r.cores})
        splits = [r.split.get(server, []) for r in results]
        width = max((len(x) for x in splits), default=0)
        split = [round(median([x[i] for x in splits if i < len(x)]), 2) for i in range(width)]
        rates = [r.rps for r in results]
        return cls(
            rps=round(median([r.rps for r in results]), 1),
            mib_s=round(median([r.mib_s for r in results]), 1),
            p50_ms=round(median([r.p50_ms for r in results]), 3),
            p99_ms=round(median([r.p99_ms for r in results]), 3),
            errors=sum(r.errors for r in results),
            requests=sum(r.requests for r in results),
            cores={name: round(median([r.cores.get(name, 0.0) for r in results]), 2) for name in parties},
            check=check,
            rounds=[{"rps": round(r.rps, 1), "p50_ms": r.p50_ms, "p99_ms": r.p99_ms} for r in results],
            spread_pct=round(50 * (max(rates) - min(rates)) / median(rates), 1) if median(rates) else 0.0,
            split=split,
        )


@dataclass
class Config:
    rounds: int
    seconds: float
    connections: int
    workers: int
    herd_clients: int
    memory_connections: tuple[int, int]
    memory_seconds: float
    wrk_threads: int
    quick: bool


class Bench:
    def __init__(self, config: Config, loader: Loader, origin: Server, targets: list[Server]) -> None:
        self.config = config
        self.loader = loader
        self.origin = origin
        self.targets = targets
        self.run_tag = f"r{os.getpid()}"

    def _order(self, round_index: int) -> list[Server]:
        """Alternate which server goes first each round, so drift in the machine hits both alike."""
        return self.targets if round_index % 2 == 0 else list(reversed(self.targets))

    def _load_spec(self, url: str, connections: int | None = None, **kw: Any) -> LoadSpec:
        return LoadSpec(url=url, connections=connections or self.config.connections, seconds=self.config.seconds, **kw)

    def hits(self, size: int) -> dict[str, Summary]:
        """Warm one object per server, then load it; the origin counter must not move."""
        name = f"hit-{size}-{self.run_tag}"
        path = f"/obj/{name}"
        query = f"?size={size}&max_age={MAX_AGE}"
        warm: dict[str, str] = {}
        for target in self.targets:
            # A name per server, so one server's origin fetches never show in the other's check.
            url = f"{target.url}{path}-{target.name}{query}"
            statuses = [fetch(url) for _ in range(4 * self.config.workers)]
            if any(status != 200 or length != size for status, _, length in statuses):
                raise RuntimeError(f"warming {url} failed: {statuses}")
            warm[target.name] = statuses[-1][1]
        results: dict[str, list[LoadResult]] = {t.name: [] for t in self.targets}
        fetched: dict[str, int] = dict.fromkeys(results, 0)
        for index in range(self.config.rounds):
            for target in self._order(index):
                target_path = f"{path}-{target.name}"
                before = origin_count(self.origin.url, target_path)
                result = self.loader.run(self._load_spec(f"{target.url}{target_path}{query}", timeout_s=30.0))
                fetched[target.name] += origin_count(self.origin.url, target_path) - before
                results[target.name].append(result)
                log(f"hit {human_size(size)} {target.name} round {index + 1}: {result.rps:,.0f} req/s")
        summaries = {}
        for server, runs in results.items():
            x_cache = Counter[str]()
            for r in runs:
                x_cache.update(r.x_cache)
            seen = ", ".join(f"X-Cache {k} x{v}" for k, v in x_cache.items()) or f"X-Cache {warm[server]} (warm)"
            check = f"{seen}, {fetched[server]} origin fetches"
            summaries[server] = Summary.of(runs, check, server)
        return summaries

    def misses(self, servers: Sequence[Server], origin: StaticOrigin | None = None) -> dict[str, Summary]:
        """Every request a new URL: the full miss + store path (origin counters confirm each one)."""
        counted = origin or StaticOrigin(self.origin, None)
        results: dict[str, list[LoadResult]] = {s.name: [] for s in servers}
        origin_requests: dict[str, int] = dict.fromkeys(results, 0)
        order = list(servers)
        for index in range(self.config.rounds):
            for server in order if index % 2 == 0 else reversed(order):
                counted.reset()
                tag = f"{self.run_tag}-{index}"
                # Unique in the query, not the path: the stub derives a body from the path name at
                # ~2 ms of CPU per new name, which would make this a benchmark of the stub.
                url = f"{server.url}/obj/miss-{server.name}?size={MISS_SIZE}&max_age={MAX_AGE}&n={{n}}"
                result = self.loader.run(self._load_spec(url, unique=True), tag=tag)
                origin_requests[server.name] += counted.total()
                results[server.name].append(result)
                log(f"miss {server.name} round {index + 1}: {result.rps:,.0f} req/s")
        summaries = {}
        for name, runs in results.items():
            done = sum(r.requests for r in runs)
            per = origin_requests[name] / done if done else 0.0
            summaries[name] = Summary.of(runs, f"{per:.2f} origin fetches/response", name)
        return summaries

    def herd(self) -> dict[str, Any]:
        """N clients at once on one slow uncached object: origin requests and time to the last body."""
        size, delay_ms, chunk_delay_ms = 1 * MIB, 500, 20
        query = f"?size={size}&max_age={MAX_AGE}&delay_ms={delay_ms}&chunk_delay_ms={chunk_delay_ms}"
        began = time.perf_counter()
        status, _, length = fetch(f"{self.origin.url}/obj/herd-alone-{self.run_tag}{query}")
        alone_s = time.perf_counter() - began
        if status != 200 or length != size:
            raise RuntimeError(f"origin herd object: status {status}, {length} bytes")
        per_server: dict[str, list[dict[str, Any]]] = {t.name: [] for t in self.targets}
        for index in range(self.config.rounds):
            for target in self._order(index):
                name = f"herd-{target.name}-{self.run_tag}-{index}"
                result = self.loader.herd(
                    f"{target.url}/obj/{name}{query}", name, size, self.config.herd_clients, timeout_s=60.0
                )
                result["origin_requests"] = origin_count(self.origin.url, f"/obj/{name}")
                per_server[target.name].append(result)
                log(
                    f"herd {target.name} round {index + 1}: {result['origin_requests']} origin requests, "
                    f"all done in {result['all_s']:.2f} s"
                )
        summary: dict[str, Any] = {
            "clients": self.config.herd_clients,
            "object": f"{human_size(size)}, origin delay {delay_ms} ms + {size // 65536 - 1} x {chunk_delay_ms} ms",
            "origin_alone_s": round(alone_s, 3),
            "servers": {},
        }
        for server, runs in per_server.items():
            summary["servers"][server] = {
                "origin_requests": median([r["origin_requests"] for r in runs]),
                "origin_requests_max": max(r["origin_requests"] for r in runs),
                "all_s": round(median([r["all_s"] for r in runs]), 3),
                "first_s": round(median([r["first_s"] for r in runs]), 3),
                "ok_bodies": min(r["ok"] for r in runs),
                "failures": [f for r in runs for f in r["failures"]][:3],
                "rounds": [
                    {"origin_requests": r["origin_requests"], "all_s": round(r["all_s"], 3), "ok": r["ok"]}
                    for r in runs
                ],
            }
        return summary

    def memory(self) -> dict[str, Any]:
        """Peak RSS/PSS of each server while C connections fetch 10 MiB hits.

        Runs first, on fresh servers: resident memory is sticky (allocators keep freed memory), so
        "idle" is taken right after warming, then all low-connection rounds, then all high ones.
        Peaks are the maximum over rounds."""
        size = 10 * MIB
        low, high = self.config.memory_connections
        out: dict[str, Any] = {"object": human_size(size), "connections": [low, high], "servers": {}}
        samples: dict[str, dict[int, list[LoadResult]]] = {t.name: {low: [], high: []} for t in self.targets}
        for target in self.targets:
            url = f"{target.url}/obj/hit-{size}-{self.run_tag}-{target.name}?size={size}&max_age={MAX_AGE}"
            for _ in range(4 * self.config.workers):
                fetch(url)
        idle: dict[str, tuple[int, int]] = {t.name: memory_kib(t.tree()) for t in self.targets}
        for connections in (low, high):
            for index in range(self.config.rounds):
                for target in self._order(index):
                    url = f"{target.url}/obj/hit-{size}-{self.run_tag}-{target.name}?size={size}&max_age={MAX_AGE}"
                    spec = LoadSpec(url, connections, self.config.memory_seconds, timeout_s=60.0)
                    result = self.loader.run(spec, memory_of=target)
                    samples[target.name][connections].append(result)
                    log(
                        f"memory {target.name} {connections} conns round {index + 1}: "
                        f"peak RSS {result.peak_rss_kib / KIB:.0f} MiB, {result.mib_s:,.0f} MiB/s"
                    )
        for server, by_conns in samples.items():
            entry: dict[str, Any] = {"idle_rss_mib": round(idle[server][0] / KIB, 1)}
            entry["idle_pss_mib"] = round(idle[server][1] / KIB, 1)
            for connections, runs in by_conns.items():
                entry[str(connections)] = {
                    "peak_rss_mib": round(max(r.peak_rss_kib for r in runs) / KIB, 1),
                    "peak_pss_mib": round(max(r.peak_pss_kib for r in runs) / KIB, 1),
                    "rps": round(median([r.rps for r in runs]), 1),
                    "mib_s": round(median([r.mib_s for r in runs]), 1),
                    "errors": sum(r.errors for r in runs),
                }
            entry["idle_to_low_mib"] = round(entry[str(low)]["peak_rss_mib"] - entry["idle_rss_mib"], 1)
            growth_mib = entry[str(high)]["peak_rss_mib"] - entry[str(low)]["peak_rss_mib"]
            entry["growth_mib"] = round(growth_mib, 1)
            entry["growth_kib_per_conn"] = round(growth_mib * KIB / (high - low), 1)
            entry["flat"] = entry["growth_kib_per_conn"] <= FLAT_KIB_PER_CONN
            out["servers"][server] = entry
        return out


# --------------------------------------------------------------------------------------------
# Report


def _limit_note(cores: dict[str, float], server: str, total_cores: int) -> str:
    """Which party used the most CPU, when the machine was (nearly) saturated."""
    used = sum(v for k, v in cores.items() if k != "idle")
    notes = []
    if cores.get("origin", 0.0) >= 0.85 and server != "origin":
        notes.append("origin-bound")
    if cores.get("other", 0.0) >= 0.3:
        notes.append(f"{cores['other']:.1f} cores busy outside the bench")
    if used >= 0.85 * total_cores:
        notes.append(f"CPU full ({used:.1f}/{total_cores} cores)")
    return ", ".join(notes)


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    add = lines.append
    m, cfg = results["machine"], results["config"]
    add("=" * 118)
    add(
        f"edgecache bench, {results.get('mode', '?').upper()}  {results['when']}  "
        f"({'QUICK smoke run' if cfg['quick'] else 'full run'})"
    )
    add(f"placement: {results.get('placement', '')}; caches: {results.get('caches', '')}")
    add(f"miss rows: origin = {results.get('miss_origin', 'the origin stub')}")
    add(
        f"machine: {m['system']}, {m['cores']} cores, Python {m['python']}.  The load generator, origin stub, edge "
        f"and nginx all share these {m['cores']} cores."
    )
    add(
        f"busy before the run (other programs, 1 s sample after waiting {results['waited_for_quiet_s']:g} s "
        f"for quiet): {results['background_cores']:.2f} cores; column 'other' = the same during each load"
    )
    if results.get("quiet_waited_s"):
        add(f"waited {results['quiet_waited_s']:.0f} s in all, before loads, for other programs to go quiet")
    add(f"edge: {cfg['workers']} workers; {results['edge_cache']}")
    add(f"nginx: {results['nginx']}")
    add(
        f"load: {results['loader']}, {cfg['connections']} connections, {cfg['seconds']:g} s per round, "
        f"{cfg['rounds']} round(s), medians; CPU columns = cores used (of {m['cores']})"
    )
    logging_text = (
        "on for both (edge JSON lines, nginx combined; to files)" if results["access_log"] else "off for both"
    )
    add(f"access log: {logging_text}")
    add(f"targets (issue): {TARGETS_TEXT}")
    for action in results["tools"]["actions"]:
        add(f"tools: {action}")
    add("")
    header = (
        f"{'scenario':<20}{'server':<8}{'req/s':>10}{'±%':>5}{'MiB/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'err':>5}"
        f"{'srv':>6}{'orig':>6}{'load':>6}{'other':>6}{'idle':>6}  check / limit"
    )
    add(header)
    add("-" * len(header))
    for row in results["throughput"]:
        first = True
        for server, s in row["servers"].items():
            cores = s["cores"]
            note = _limit_note(cores, server, m["cores"])
            busy = [f"{c:.2f}" for c in s["split"] if c >= 0.01]
            procs = f"procs {'/'.join(busy)}; " if len(s["split"]) > 1 and busy else ""
            add(
                f"{row['scenario'] if first else '':<20}{server:<8}{s['rps']:>10,.0f}{s['spread_pct']:>5.0f}"
                f"{s['mib_s']:>9,.1f}"
                f"{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}{s['errors']:>5}{cores.get(server, 0.0):>6.2f}"
                f"{cores.get('origin', 0.0):>6.2f}{cores.get('loadgen', 0.0):>6.2f}{cores.get('other', 0.0):>6.2f}"
                f"{cores.get('idle', 0.0):>6.2f}  {procs}{s['check']}" + (f" | {note}" if note else "")
            )
            first = False
        if row.get("ratio") is not None:
            target = row.get("target")
            met = target is not None and row["ratio"] >= target
            verdict = "" if target is None else f"   target >= {target:g}x: {'MET' if met else 'NOT met'}"
            add(f"{'':<20}{'edge/nginx':<18}{row['ratio']:>8.2f}x{verdict}")
    add("±% = half the range of the rounds' req/s, in % of the median (run-to-run noise)")
    add(
        "srv/orig/load = cores used by the server under test / origin stub / load generator; other = busy cores not "
        "charged to those (other programs, kernel); miss 'origin fetches/response' > 1: requests still in flight "
        "when the load stopped had reached the origin"
    )
    herd = results.get("herd")
    if herd:
        add("")
        add(
            f"herd: {herd['clients']} concurrent clients, one uncached object ({herd['object']}; "
            f"origin alone answers in {herd['origin_alone_s']:.2f} s)"
        )
        add(
            f"{'server':<8}{'origin requests (max)':>22}{'first body s':>14}{'all bodies s':>14}{'verified bodies':>17}"
            "   (medians over rounds)"
        )
        for server, h in herd["servers"].items():
            alone = herd["origin_alone_s"] or 1.0
            met = h["origin_requests_max"] == 1 and h["all_s"] <= HERD_TARGET * alone
            add(
                f"{server:<8}{h['origin_requests']:>16g} ({h['origin_requests_max']:>2}){h['first_s']:>14.2f}"
                f"{h['all_s']:>14.2f}"
                f"{h['ok_bodies']:>11}/{herd['clients']}   last/origin {h['all_s'] / alone:.2f}x "
                f"(target: 1 request, <= {HERD_TARGET:g}x: {'MET' if met else 'NOT met'})"
                + (f"  failures: {h['failures']}" if h["failures"] else "")
            )
    mem = results.get("memory")
    if mem:
        low, high = mem["connections"]
        add("")
        add(
            f"memory: {mem['object']} hits, {cfg['memory_seconds']:g} s x {cfg['rounds']} rounds per connection count, "
            "first thing on fresh servers; MiB of summed RSS (PSS) of supervisor/master + workers, sampled every "
            "50 ms, max over rounds"
        )
        add(
            f"{'server':<8}{'idle':>13}{f'@{low} conns':>15}{f'@{high} conns':>15}{f'idle->@{low}':>13}"
            f"{f'@{low}->@{high}':>12}{'per extra conn':>16}{f'MiB/s @{low}/@{high}':>20}  verdict"
        )
        for server, e in mem["servers"].items():
            a, b = e[str(low)], e[str(high)]
            add(
                f"{server:<8}{e['idle_rss_mib']:>6.0f} ({e['idle_pss_mib']:>4.0f})"
                f"{a['peak_rss_mib']:>8.0f} ({a['peak_pss_mib']:>4.0f})"
                f"{b['peak_rss_mib']:>8.0f} ({b['peak_pss_mib']:>4.0f})"
                f"{e['idle_to_low_mib']:>+12.0f}M{e['growth_mib']:>+11.0f}M{e['growth_kib_per_conn']:>+12.0f} KiB"
                f"{a['mib_s']:>10,.0f}/{b['mib_s']:<9,.0f}  "
                f"{'flat' if e['flat'] else 'GROWS'} (<= {FLAT_KIB_PER_CONN} KiB/extra conn)"
                + (f"  errors {a['errors']}/{b['errors']}" if a["errors"] or b["errors"] else "")
            )
    for note in results.get("notes", []):
        add(f"note: {note}")
    add("=" * 118)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Main


@contextmanager
def terminate_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into SystemExit so the ``finally`` that stops our processes runs."""

    def handler(signum: int, frame: FrameType | None) -> None:
        print("bench.edge_bench: terminated; stopping the processes it started", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    parser = argparse.ArgumentParser(
        prog="python -m bench.edge_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round of 1 s per scenario: a smoke run")
    parser.add_argument(
        "--mode", choices=["both", "pinned", "unpinned"], default="both",
        help="pinned: servers on core 0 (1 worker), load and origin on core 1, caches on tmpfs (default: both)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default 3; medians are reported)")
    parser.add_argument("--seconds", type=float, help="seconds per load round (default 3)")
    parser.add_argument("--connections", type=int, default=64, help="connections for req/s figures (default 64)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="edge workers = nginx workers")
    parser.add_argument("--herd", type=int, default=200, help="concurrent clients in the herd test (default 200)")
    parser.add_argument("--memory-connections", default="32,256", help="LOW,HIGH connections for the memory test")
    parser.add_argument("--wrk-threads", type=int, default=2, help="wrk -t (default 2)")
    parser.add_argument("--client-procs", type=int, default=2, help="Python client processes when wrk is missing")
    parser.add_argument("--no-nginx", action="store_true", help="skip the nginx comparison")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load client even if wrk exists")
    parser.add_argument(
        "--install-tools",
        action=argparse.BooleanOptionalAction,
        default=is_root,
        help="apt-get install wrk and nginx when missing (default: on when running as root)",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="both servers write an access log line per request, to a file (default: on, the edge's default)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        help="wait up to this many seconds for other programs to leave the cores idle (default 30, --quick 0)",
    )
    parser.add_argument(
        "--quiet-budget",
        type=float,
        default=45.0,
        help="seconds the run may spend, in total, waiting before a load for other programs to go quiet (default 45)",
    )
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / ".bench" / "results.json", help="JSON output")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the temp dir (logs, caches, nginx.conf)")
    return parser.parse_args(argv)


def edge_cache_summary(workers: int) -> str:
    try:
        from edge.config import load_settings

        cache = load_settings(None, {"origin": "http://127.0.0.1:1"}).cache
    except Exception as exc:  # a broken environment override shows up when the edge starts
        return f"(cache settings unreadable: {exc})"
    return (
        f"memory tier {human_size(cache.memory_max_bytes)}/worker for objects <= "
        f"{human_size(cache.memory_max_object_bytes)} (larger ones are served from the shared disk tier)"
    )


@dataclass
class Mode:
    """How one table is measured: unpinned (everything shares the cores, N workers) or pinned (each
    server on core 0 with one worker, the load generator and the origin on core 1, caches on tmpfs)."""

    name: str
    workers: int
    server_cpus: set[int] | None
    load_cpus: set[int] | None
    cache_root: Path | None  # where the caches live (None: the system temp dir)
    wrk_threads: int
    disk_root: Path | None = None  # pinned: a second miss row with the caches on this (real) disk


def modes_for(args: argparse.Namespace) -> list[Mode]:
    cores = os.cpu_count() or 1
    unpinned = Mode("unpinned", args.workers, None, None, None, args.wrk_threads)
    tmpfs = Path("/dev/shm")
    pinned = Mode(
        "pinned", 1, {0}, {1}, tmpfs if tmpfs.is_dir() else None, 1,
        disk_root=PROJECT_ROOT / ".bench",
    )  # fmt: skip
    if cores < 2 and args.mode != "unpinned":
        print("fewer than 2 cores: no pinned run", flush=True)
        return [unpinned]
    return {"both": [unpinned, pinned], "pinned": [pinned], "unpinned": [unpinned]}[args.mode]


def run_mode(mode: Mode, args: argparse.Namespace, base: Config, tools: Tools, notes: list[str]) -> dict[str, Any]:
    config = Config(**{**asdict(base), "workers": mode.workers, "wrk_threads": mode.wrk_threads})
    cores = os.cpu_count() or 1
    if mode.cache_root is not None:
        mode.cache_root.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"edgecache-bench-{mode.name}-", dir=mode.cache_root))
    started: list[Server] = []
    loader: Loader | None = None
    placement = (
        f"servers pinned to core(s) {sorted(mode.server_cpus)}, load generator and origin to {sorted(mode.load_cpus)}"
        if mode.server_cpus and mode.load_cpus else "nothing pinned: every process shares the cores"
    )  # fmt: skip
    results: dict[str, Any] = {
        "mode": mode.name,
        "placement": placement,
        "caches": f"{workdir} ({'tmpfs' if str(workdir).startswith('/dev/shm') else 'disk'})",
        "when": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": {
            "cores": cores,
            "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(),
        },
        "config": asdict(config),
        "access_log": args.access_log,
        "tools": asdict(tools),
        "edge_cache": edge_cache_summary(config.workers),
        "nginx": "not available",
        "targets": {"text": TARGETS_TEXT, "ratios": TARGETS, "flat_kib_per_conn": FLAT_KIB_PER_CONN},
        "throughput": [],
        "notes": list(notes),
    }
    try:
        with terminate_on_sigterm():
            origin = start_origin(workdir, mode.load_cpus)
            started.append(origin)
            edge, _admin = start_edge(workdir, origin, config.workers, args.access_log, mode.server_cpus)
            started.append(edge)
            targets = [edge]
            static: StaticOrigin | None = None
            if tools.nginx:
                try:
                    nginx = start_nginx(tools.nginx, workdir, origin, config.workers, args.access_log, mode.server_cpus)
                    static = start_static_origin(tools.nginx, workdir, mode.load_cpus)
                    started.append(static.server)
                except RuntimeError as exc:
                    print(f"nginx not available: {exc}", flush=True)
                    results["notes"].append("nginx failed to start: no comparison")
                else:
                    started.append(nginx)
                    targets.append(nginx)
                    results["nginx"] = (
                        f"{tools.nginx_version}, worker_processes {config.workers}, proxy_cache, "
                        "sendfile off, proxy_cache_lock on, no proxy_cache_valid (Cache-Control decides); "
                        f"config: {NGINX_TEMPLATE.relative_to(PROJECT_ROOT)}"
                    )
            loader = Loader(tools.wrk, config.wrk_threads, args.client_procs, workdir, cpus=mode.load_cpus)
            loader.parties = {s.name: s for s in [origin, *targets]}
            loader.quiet_budget_s = 0.0 if args.quick else args.quiet_budget
            results["loader"] = f"{loader.name} ({tools.wrk_version})" if tools.wrk else loader.name
            bench = Bench(config, loader, origin, targets)

            def add_row(scenario: str, summaries: dict[str, Summary], target_key: str | None = None) -> None:
                row: dict[str, Any] = {"scenario": scenario, "servers": {k: asdict(v) for k, v in summaries.items()}}
                if "edge" in summaries and "nginx" in summaries and summaries["nginx"].rps:
                    row["ratio"] = round(summaries["edge"].rps / summaries["nginx"].rps, 3)
                    row["target"] = TARGETS.get(target_key or scenario)
                results["throughput"].append(row)

            results["memory"] = bench.memory()  # first: fresh processes give a meaningful "idle"
            for size in HIT_SIZES:
                add_row(f"hit {human_size(size)}", bench.hits(size))
            if static is not None:
                results["miss_origin"] = "nginx static files (fresh edge and nginx in front of it)"
                rows = _static_misses(workdir, "tmp", args, config, tools, static, loader, mode.server_cpus)
                add_row(f"miss {human_size(MISS_SIZE)}", rows)
                if mode.disk_root is not None:
                    mode.disk_root.mkdir(parents=True, exist_ok=True)
                    disk = Path(tempfile.mkdtemp(prefix="edgecache-bench-disk-", dir=mode.disk_root))
                    try:
                        rows = _static_misses(disk, "disk", args, config, tools, static, loader, mode.server_cpus)
                    finally:
                        shutil.rmtree(disk, ignore_errors=True)
                    add_row(f"miss {human_size(MISS_SIZE)} (disk)", rows, f"miss {human_size(MISS_SIZE)}")
            else:
                results["miss_origin"] = "the origin stub"
                add_row(f"miss {human_size(MISS_SIZE)}", bench.misses(targets))
            add_row("origin alone", bench.misses([static.server if static is not None else origin], static))
            results["herd"] = bench.herd()
            if "nginx" not in [t.name for t in targets]:
                results["notes"].append("no nginx figures: ratios omitted")
    finally:
        for server in reversed(started):
            stop_process(server.process)
        if args.keep_workdir:
            print(f"workdir kept: {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["quiet_waited_s"] = loader.quiet_waited_s if loader else 0.0
    return results


def _static_misses(
    workdir: Path, tag: str, args: argparse.Namespace, config: Config, tools: Tools, static: StaticOrigin,
    loader: Loader, cpus: set[int] | None,
) -> dict[str, Summary]:  # fmt: skip
    """Misses through an edge and an nginx whose origin is nginx serving a static file, caches in ``workdir``."""
    assert tools.nginx is not None
    started: list[Server] = []
    parties = loader.parties
    try:
        edge, _ = start_edge(workdir, static.server, config.workers, args.access_log, cpus, name=f"edge-{tag}")
        started.append(edge)
        nginx = start_nginx(tools.nginx, workdir, static.server, config.workers, args.access_log, cpus,
                            name=f"nginx-{tag}")  # fmt: skip
        started.append(nginx)
        loader.parties = {"origin": static.server, "edge": edge, "nginx": nginx}
        return Bench(config, loader, static.server, [edge, nginx]).misses([edge, nginx], static)
    finally:
        loader.parties = parties
        for server in reversed(started):
            stop_process(server.process)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    low, _, high = args.memory_connections.partition(",")
    base = Config(
        rounds=args.rounds or (1 if args.quick else 3),
        seconds=args.seconds or (1.0 if args.quick else 3.0),
        connections=args.connections,
        workers=args.workers,
        herd_clients=min(args.herd, 50) if args.quick else args.herd,
        memory_connections=(int(low), int(high)),
        memory_seconds=args.seconds or (1.0 if args.quick else 3.0),
        wrk_threads=args.wrk_threads,
        quick=args.quick,
    )
    cores = os.cpu_count() or 1
    print(f"edgecache bench: {cores} cores; progress on stderr", flush=True)
    tools = find_tools(args.install_tools, want_nginx=not args.no_nginx, want_wrk=not args.no_wrk)
    for action in tools.actions:
        print(f"tools: {action}", flush=True)
    notes: list[str] = []
    if not args.no_nginx and tools.nginx is None:
        print("nginx not available: skipping the comparison", flush=True)
        notes.append("nginx not available: no comparison")
    if not args.no_wrk and tools.wrk is None:
        notes.append("wrk not available: Python load client used (it costs far more CPU per request)")
    wait_s = args.wait_quiet if args.wait_quiet is not None else (0.0 if args.quick else 30.0)
    busy_before, waited = wait_for_quiet(wait_s) if wait_s > 0 else (background_cores(), 0.0)
    if busy_before > 0.25:
        print(f"warning: {busy_before:.2f} cores busy with other programs: figures will be lower and noisier")
    runs: dict[str, Any] = {}
    tables: list[str] = []
    for mode in modes_for(args):
        print(f"-- {mode.name} run", file=sys.stderr, flush=True)
        results = run_mode(mode, args, base, tools, notes)
        results["background_cores"] = round(busy_before, 2)
        results["waited_for_quiet_s"] = round(waited, 1)
        table = render(results)
        print(table, flush=True)
        results["table"] = table.splitlines()
        runs[mode.name] = results
        tables.append(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(runs, indent=2) + "\n")
    print(f"results written to {args.json}", flush=True)


if __name__ == "__main__":
    main()

"""Multi-process load: the same guilds in 1 bot process and spread over N processes, side by side in one run.

Run: `python -m bench.e2e --processes 2` (or `scripts/bench processes --processes 2 --guilds 40 --seconds 20`).

Each configuration is a set of worker processes, one per bot process. A worker is the per-process bench of
`bench.e2e` (real conversations on the production path: kids as DAVE parties sending RTP over loopback UDP
into voice-recv, replies through discord.py's player, Opus, DAVE and UDP to the kids' socket) over the guilds
of its own shard (`(guild_id >> 22) % N`), and all workers share one SQLite file in WAL mode and one fake Live
server in its own process — what N sharded bot processes on one machine share. Each worker runs its own
harness (voice servers, kids' clients), so a process's CPU includes its kids'; workers do not run py-spy
(it costs a core at this size and only `bench.e2e`'s single-process table uses it). Workers start
talking together (READY/GO over stdin/stdout) and hand back their raw samples as JSON; this runner merges
them (p95 over all guilds' samples, underruns summed) and prints each configuration's CPU per process.

The layer is separate from how one process is measured: it uses four names of `bench.e2e` —
`serve_fake_live`, `settings_for`, `run_guilds(..., guild_ids=, db_path=, before_talking=)` and `RunResult` —
so a rebuilt per-process bench only has to keep those.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench import e2e


def guild_ids_for(worker: int, workers: int, guilds: int) -> list[int]:
    """`guilds` real-looking guild ids that Discord's rule puts on shard `worker` of `workers`."""
    return [((g * workers + worker) << 22) | 1 for g in range(guilds)]


# ----- worker: one bot process ----------------------------------------------------------------------------


async def run_worker(args: argparse.Namespace) -> None:
    server = SimpleNamespace(url=args.live_url, ca_file=args.live_ca, api_key=os.environ["BENCH_LIVE_KEY"])
    loop = asyncio.get_running_loop()

    async def ready_then_wait() -> None:
        print("READY", flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if line.strip() != "GO":
            raise SystemExit("bench worker: the runner went away")

    result = await e2e.run_guilds(
        args.guilds, args.seconds, args.speakers, e2e.settings_for(server), Path(args.db).parent,
        guild_ids=guild_ids_for(args.index, args.of, args.guilds), db_path=Path(args.db),
        before_talking=ready_then_wait, use_profiler=False)
    print("RESULT " + json.dumps(asdict(result)), flush=True)


# ----- runner ---------------------------------------------------------------------------------------------


def open_log(path: Path) -> Any:
    return path.open("wb")


async def run_configuration(processes: int, guilds: int, args: argparse.Namespace, server: Any,
                            tmp: Path) -> list[e2e.RunResult]:
    """`processes` workers sharing `guilds` guilds and one database; returns each worker's result."""
    db = tmp / f"tutor-{processes}p-{time.monotonic_ns()}.sqlite3"
    share, extra = divmod(guilds, processes)
    env = {**os.environ, "BENCH_LIVE_KEY": server.api_key}
    workers, logs = [], [open_log(tmp / f"worker-{processes}p-{index}.err") for index in range(processes)]
    for index, stderr in enumerate(logs):
        count = share + (1 if index < extra else 0)
        workers.append(await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.processes", "--worker", "--index", str(index), "--of", str(processes),
            "--guilds", str(count), "--seconds", str(args.seconds), "--speakers", str(args.speakers),
            "--db", str(db), "--live-url", server.url, "--live-ca", str(server.ca_file),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=env))
    try:
        for worker in workers:  # every worker has started its conversations: now they all talk at once
            await expect(worker, "READY", tmp)
        for worker in workers:
            worker.stdin.write(b"GO\n")
            await worker.stdin.drain()
        lines = [await expect(worker, "RESULT ", tmp) for worker in workers]
        await asyncio.gather(*(worker.wait() for worker in workers))
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
        for log in logs:
            log.close()
    return [e2e.RunResult(**json.loads(line.removeprefix("RESULT "))) for line in lines]


async def expect(worker: asyncio.subprocess.Process, prefix: str, tmp: Path) -> str:
    while True:
        line = (await worker.stdout.readline()).decode()
        if not line:
            errors = worker_errors(tmp)
            raise RuntimeError(f"a bench worker exited before {prefix.strip()}:\n{errors}")
        if line.startswith(prefix):
            return line.rstrip("\n")


def worker_errors(tmp: Path) -> str:
    """The end of every worker's stderr, for the message when one dies."""
    return "".join(path.read_text()[-1500:] for path in sorted(tmp.glob("worker-*.err")))


def merged(results: list[e2e.RunResult]) -> dict[str, Any]:
    """One configuration's figures: latency samples pooled over every guild, counts summed, CPU per process."""
    pool = {name: [v for r in results for v in getattr(r, name)] for name in ("input_ms", "output_ms", "loop_lag_ms")}
    return {
        **pool, "guilds": sum(r.guilds for r in results), "processes": len(results),
        "cpu": [r.cpu_percent for r in results], "underruns": sum(r.underruns for r in results),
        "dropped": sum(r.dropped for r in results), "turns": sum(r.turns_stored for r in results),
        "replies": sum(r.replies_heard for r in results),
        "reidentified": sum(r.reidentified for r in results),
        "rss": [r.rss_end_mb for r in results],
    }


def print_report(rows: list[dict[str, Any]], args: argparse.Namespace, load: tuple[float, float],
                 server_cpu: float) -> None:
    pct = e2e.pct
    print(f"Multi-process end to end: {args.guilds} guilds × {args.speakers} kids, {args.seconds:g} s talking per "
          f"configuration, one shared SQLite (WAL) file, fake Live in its own process; {os.cpu_count()} cores, "
          f"load average {load[0]:.2f} before / {load[1]:.2f} after\n")
    print(f"{'processes':>9} {'guilds':>6} {'in ms p50/p95':>14} {'out ms p50/p95':>15} {'loop lag p99':>12} "
          f"{'underruns':>9} {'replies':>7} {'drop':>5} {'CPU % per process':>22} {'RSS MB each':>14} {'turns':>6}")
    for row in rows:
        cpu = " + ".join(f"{c:.0f}" for c in row["cpu"])
        rss = " / ".join(f"{m:.0f}" for m in row["rss"])
        print(f"{row['processes']:>9} {row['guilds']:>6} "
              f"{pct(row['input_ms'], 50):6.1f} /{pct(row['input_ms'], 95):6.1f} "
              f"{pct(row['output_ms'], 50):6.1f} /{pct(row['output_ms'], 95):6.1f} "
              f"{pct(row['loop_lag_ms'], 99):12.1f} {row['underruns']:>9} {row['replies']:>7} {row['dropped']:>5} "
              f"{cpu:>22} "
              f"{rss:>14} {row['turns']:>6}")
    by_processes: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_processes.setdefault(row["processes"], []).append(row)
    one, many = by_processes.get(1), by_processes.get(args.processes)
    if one and many and args.processes > 1:
        def ratio(key: str, p: float) -> str:
            a = sum(pct(r[key], p) for r in one) / len(one)
            b = sum(pct(r[key], p) for r in many) / len(many)
            return f"×{b / a:.2f}" if a else "n/a"
        def per_reply(rows: list[dict[str, Any]]) -> str:
            return f"{sum(r['underruns'] for r in rows) / max(1, sum(r['replies'] for r in rows)):.2f}"
        underruns = (f"{sum(r['underruns'] for r in one)} → {sum(r['underruns'] for r in many)} "
                     f"({per_reply(one)} → {per_reply(many)} per reply heard)")
        print(f"\n{args.processes} processes vs 1 (same run): in p95 {ratio('input_ms', 95)}, "
              f"out p95 {ratio('output_ms', 95)}, loop lag p99 {ratio('loop_lag_ms', 99)}, underruns {underruns}")
    print(f"(in: a kid's last packet of a spurt leaving its socket → the message carrying that audio written to "
          f"the Live socket; out: a reply's first chunk parsed → its first packet at the kid's socket; drop: kid "
          f"packets lost or undecryptable; voice reconnects with a fresh DAVE welcome: "
          f"{', '.join(str(row['reidentified']) for row in rows)}; CPU per process includes its harness (kids, voice "
          f"servers); fake server CPU {server_cpu:.0f} % of a core, not counted above; the load average includes "
          f"other work on the machine)")


async def run_all(args: argparse.Namespace, server: Any) -> list[dict[str, Any]]:
    order = [1, args.processes] * args.rounds
    with tempfile.TemporaryDirectory(prefix="bench-processes-") as tmp:
        return [merged(await run_configuration(p, args.guilds, args, server, Path(tmp))) for p in order]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", type=int, default=2, help="bot processes to compare with 1 (default 2)")
    parser.add_argument("--guilds", default="40", help="guilds in total (default 40; with a list, the largest)")
    parser.add_argument("--seconds", type=float, default=20.0, help="talking time per configuration (default 20)")
    parser.add_argument("--speakers", type=int, default=2, help="kids per guild (default 2)")
    parser.add_argument("--think-ms", type=float, default=200.0, help="fake model's think time (default 200)")
    parser.add_argument("--reply-ms", type=float, default=1500.0, help="reply audio length (default 1500)")
    parser.add_argument("--rounds", type=int, default=1, help="alternate 1 and N processes this often (default 1)")
    worker = parser.add_argument_group("worker (started by the runner)")
    worker.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    worker.add_argument("--index", type=int, default=0, help=argparse.SUPPRESS)
    worker.add_argument("--of", type=int, default=1, help=argparse.SUPPRESS)
    worker.add_argument("--db", help=argparse.SUPPRESS)
    worker.add_argument("--live-url", help=argparse.SUPPRESS)
    worker.add_argument("--live-ca", help=argparse.SUPPRESS)
    args = parser.parse_known_args(argv)[0]  # `bench.e2e --processes N` passes its own options too
    args.guilds = max(int(n) for n in str(args.guilds).split(","))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    e2e.discord.opus._load_default()
    if args.worker:
        asyncio.run(run_worker(args))
        return
    if not e2e.discord.opus.is_loaded():
        raise SystemExit("libopus is not loadable: install libopus0 (apt-get install libopus0)")
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    child = context.Process(target=e2e.serve_fake_live, args=(theirs, args.think_ms / 1000, args.reply_ms),
                            daemon=True)
    child.start()
    server = SimpleNamespace(**ours.recv())
    load_before, started = os.getloadavg()[0], time.monotonic()
    try:
        rows = asyncio.run(run_all(args, server))
    finally:
        ours.send("stop")
        report = ours.recv() if ours.poll(10) else {"cpu_s": float("nan")}
        child.join(5)
    print_report(rows, args, (load_before, os.getloadavg()[0]), report["cpu_s"] / (time.monotonic() - started) * 100)


if __name__ == "__main__":
    main()

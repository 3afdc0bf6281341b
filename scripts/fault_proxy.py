"""A bad network between robots and `auras serve`: a fault-injecting proxy (auras.bridge.faults) until Ctrl-C.

    python scripts/fault_proxy.py --server tcp://127.0.0.1:5555 --bind tcp://127.0.0.1:6555 \\
        --drop 0.05 --duplicate 0.02 --reorder 0.05 --reorder-ms 40 --delay-ms 10 [--seed 0]
    # robots then connect to tcp://127.0.0.1:6555 instead of :5555

The rates apply to both directions (observations robot -> server, actions and status server -> robot);
``--obs-*`` / ``--action-*`` override one direction. ``--spawn "ARGS"`` starts ``auras serve --bind SERVER
ARGS`` itself, and with ``--kill-every S`` kills it (SIGKILL) every S seconds and restarts it at once,
printing when it was killed and when it answered again. Counters are printed every ``--every`` seconds.
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time

from auras.bridge.faults import FaultProxy, Faults, ServerProcess

RATES = ("drop", "duplicate", "reorder", "delay_ms", "reorder_ms")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="tcp://127.0.0.1:5555", help="the service endpoint of auras serve")
    parser.add_argument("--bind", default="tcp://127.0.0.1:6555",
                        help="the proxy's service endpoint (its data endpoints: PORT+1, PORT+2)")
    parser.add_argument("--drop", type=float, default=0.0, help="probability a message is dropped")
    parser.add_argument("--duplicate", type=float, default=0.0, help="probability a message is sent twice")
    parser.add_argument("--reorder", type=float, default=0.0, help="probability a message is held back")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="extra delay of every message")
    parser.add_argument("--reorder-ms", type=float, default=50.0, help="how long a reordered message is held")
    for side in ("obs", "action"):
        for rate in RATES:
            parser.add_argument(f"--{side}-{rate.replace('_', '-')}", type=float, default=None,
                                help=f"{rate} for the {side} direction only")
    parser.add_argument("--seed", type=int, default=0, help="observations use SEED, actions SEED + 1")
    parser.add_argument("--spawn", default=None, metavar="ARGS",
                        help='start `auras serve --bind SERVER ARGS` here (e.g. "--policy tiny-dp")')
    parser.add_argument("--kill-every", type=float, default=None, metavar="S",
                        help="with --spawn: SIGKILL and restart the server every S seconds")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between counter reports")
    args = parser.parse_args(argv)
    if args.kill_every is not None and args.spawn is None:
        parser.error("--kill-every needs --spawn")
    return args


def faults_of(args: argparse.Namespace, side: str, seed: int) -> Faults:
    values = {}
    for rate in RATES:
        own = getattr(args, f"{side}_{rate}")
        values[rate] = own if own is not None else getattr(args, rate)
    return Faults(**values, seed=seed)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        observations, actions = faults_of(args, "obs", args.seed), faults_of(args, "action", args.seed + 1)
    except ValueError as exc:
        print(f"fault_proxy: {exc}", file=sys.stderr)
        return 2
    server = None
    if args.spawn is not None:
        server = ServerProcess(shlex.split(args.spawn), args.server).start()
        print(f"server: {' '.join(server.command)} (log {server.log_path})", flush=True)
        print(f"server: ready at {server.wait_ready(120):.3f}", flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    proxy = FaultProxy(args.server, args.bind, observations, actions)
    try:
        with proxy:
            print(f"proxy: robots connect to {proxy.bind} (data {proxy.obs_bind}, {proxy.action_bind}); "
                  f"server {args.server}; faults {json.dumps(proxy.stats()['faults'])}", flush=True)
            next_report = time.monotonic() + args.every
            next_kill = time.monotonic() + args.kill_every if args.kill_every else None
            while True:
                time.sleep(0.1)
                now = time.monotonic()
                if next_kill is not None and now >= next_kill and server is not None:
                    killed = time.time()
                    server.restart()
                    back = server.wait_ready(120)
                    print(f"server: killed at {killed:.3f}, back at {back:.3f} ({back - killed:.2f} s down)",
                          flush=True)
                    next_kill = time.monotonic() + args.kill_every
                if now >= next_report:
                    print(f"{time.strftime('%H:%M:%S')} {json.dumps(proxy.counters)}", flush=True)
                    next_report = now + args.every
    except KeyboardInterrupt:
        print(f"final {json.dumps(proxy.counters)}", flush=True)
    finally:
        if server is not None:
            server.stop()
    return 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    raise SystemExit(main())

"""A stand-in for a program you did not write: it simulates work, printing its progress.

    python simulate.py --steps 5 --delay 0.1 --output result.txt

Prints ``step 3/5 (60%)`` lines on stdout and a note on stderr, then writes a one-line
result to ``--output``. ``--input FILE`` is read and counted first. To show what goes
wrong with real programs: ``--fail CODE`` exits with that code after a message on stderr,
``--hang`` never finishes (``--ignore-term`` also ignores SIGTERM), ``--spawn`` starts a
grandchild that keeps its stdout and stderr open and writes its PID to ``grandchild.pid``,
``--exit-code CODE`` exits with CODE once done, ``--chatty N`` prints N extra lines,
``--binary BYTES`` writes that many random bytes to ``--output`` instead of text.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description="Simulate a long computation, printing progress.")
    parser.add_argument("--steps", type=int, default=5, help="how many steps to take (default: 5)")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per step (default: 0.05)")
    parser.add_argument("--output", default="result.txt", help="the file to write the result to")
    parser.add_argument("--input", help="a text file to read first; its words are counted")
    parser.add_argument("--label", default="run", help="a name written into the result")
    parser.add_argument("--fail", type=int, metavar="CODE", help="exit with CODE after half the steps")
    parser.add_argument("--exit-code", type=int, default=0, metavar="CODE", help="exit with CODE once done")
    parser.add_argument("--hang", action="store_true", help="never finish")
    parser.add_argument("--ignore-term", action="store_true", help="ignore SIGTERM (only SIGKILL stops it)")
    parser.add_argument("--spawn", action="store_true", help="start a grandchild that holds the pipes")
    parser.add_argument("--chatty", type=int, default=0, metavar="N", help="print N more lines")
    parser.add_argument("--binary", type=int, default=0, metavar="BYTES", help="write BYTES random bytes")
    args = parser.parse_args()

    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    words = 0
    if args.input:
        with open(args.input, encoding="utf-8") as f:
            words = len(f.read().split())
    print(f"simulate: {args.label}, {args.steps} steps", file=sys.stderr, flush=True)
    if args.spawn:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        with open("grandchild.pid", "w") as f:
            f.write(str(child.pid))
        print(f"started grandchild {child.pid}", flush=True)
    for i in range(args.chatty):
        print(f"chatter {i} " + "x" * 200)
    for step in range(1, args.steps + 1):
        time.sleep(args.delay)
        print(f"step {step}/{args.steps} ({100 * step // args.steps}%)", flush=True)
        if args.fail is not None and step * 2 >= args.steps:
            print(f"error: the simulation diverged at step {step}", file=sys.stderr, flush=True)
            return args.fail
    while args.hang or args.spawn:
        time.sleep(0.1)
    if args.binary:
        with open(args.output, "wb") as f:
            f.write(os.urandom(args.binary))
    else:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(f"{args.label}: {args.steps} steps done, {words} words read\n")
    print("done", flush=True)
    if args.exit_code:
        print(f"error: asked to exit with {args.exit_code}", file=sys.stderr, flush=True)
    return args.exit_code


if __name__ == "__main__":
    sys.exit(main())

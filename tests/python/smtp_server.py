#!/usr/bin/python3
"""A real SMTP server for the smtp_check test (tests/tests/checker_peers.rs).

Runs aiosmtpd (Debian's python3-aiosmtpd, so run it with /usr/bin/python3) on the given
address and port, accepting and discarding mail. Prints "ready" on stdout once it listens,
then serves until its stdin reaches EOF (the test holds the pipe), or --max-seconds pass.
"""

import argparse
import sys
import threading

from aiosmtpd.controller import Controller


class Discard:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    controller = Controller(Discard(), hostname=args.host, port=args.port)
    controller.start()
    print("ready", flush=True)
    done = threading.Event()

    def wait_stdin():
        sys.stdin.read()
        done.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    done.wait(args.max_seconds)
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""AMQP 0-9-1 client for the real-RabbitMQ system test (tests/tests/rabbitmq_system.rs).

It uses pika (Debian's python3-pika, so run it with /usr/bin/python3) and prints JSON, one
object per line, on stdout. Every node of the test sets its `cluster_name` to its own tag
(real1, real2, ...), which RabbitMQ sends in the server properties of connection.start, so each
report names the node that answered.

Two commands:

  cycles  N times: connect, declare an exclusive queue, publish M messages with publisher
          confirms, consume them back (checking every body), close. One line per cycle:
          {"event": "cycle", "ok": true, "node": "real2", "published": M, "consumed": M, ...}
          or {"event": "cycle", "ok": false, "error": "..."}. Exit status 0 unless the
          arguments are wrong: the caller judges the results.

  hold    Opens K long-lived connections, then every PERIOD seconds publishes one message on
          each and gets it back. A connection that fails (an error, a wrong or missing
          message) is reported as broken and reconnected, one attempt per round, like an
          application with a reconnect loop. Events:
          {"event": "ready", "conns": [{"conn": 0, "node": "real1"}, ...]}
          {"event": "broken", "conn": i, "node": "real2", "error": "...", "t": secs}
          {"event": "reconnected", "conn": i, "node": "real3", "attempts": n, "after": secs}
          It stops when its stdin reaches EOF or reads "stop", closes its connections and
          prints {"event": "summary", "conns": [...]}, each with the nodes it was on, its
          successful exchanges, and how many exchanges it made since its last (re)connect.

Every blocking step has a timeout, and the whole run is bounded by --max-seconds.
"""

import argparse
import json
import signal
import sys
import threading
import time

import pika


def emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def describe(exc):
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


def connect(args):
    params = pika.ConnectionParameters(
        host=args.host,
        port=args.port,
        credentials=pika.PlainCredentials(args.user, args.password),
        connection_attempts=1,
        socket_timeout=3,
        stack_timeout=5,
        blocked_connection_timeout=5,
        client_properties={"connection_name": f"lb-xdp test {args.command}"},
    )
    conn = pika.BlockingConnection(params)
    # pika keeps the server properties of connection.start on the underlying connection.
    props = getattr(conn._impl, "server_properties", None) or {}
    node = props.get("cluster_name")
    if isinstance(node, bytes):
        node = node.decode()
    return conn, node or "?"


def local_address(conn):
    """The connection's local ip:port, when pika's internals expose it."""
    try:
        host, port = conn._impl._transport._sock.getsockname()[:2]
        return f"{host}:{port}"
    except Exception:  # pylint: disable=broad-except
        return None


def open_channel(conn):
    channel = conn.channel()
    channel.confirm_delivery()
    queue = channel.queue_declare(queue="", exclusive=True).method.queue
    return channel, queue


def get_one(conn, channel, queue, timeout):
    """basic.get until a message arrives or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
        method, _props, body = channel.basic_get(queue=queue, auto_ack=False)
        if method is not None:
            channel.basic_ack(method.delivery_tag)
            return body
        if time.monotonic() > deadline:
            return None
        conn.sleep(0.01)


def cycles(args):
    for i in range(args.count):
        started = time.monotonic()
        result = {"event": "cycle", "cycle": i, "ok": False}
        conn = None
        try:
            conn, node = connect(args)
            result["node"] = node
            result["local"] = local_address(conn)
            channel, queue = open_channel(conn)
            bodies = [f"cycle {i} message {n}".encode() for n in range(args.messages)]
            for body in bodies:
                # mandatory + confirms: an unroutable or refused message raises.
                channel.basic_publish("", queue, body, mandatory=True)
            result["published"] = len(bodies)
            consumed = 0
            for body in bodies:
                got = get_one(conn, channel, queue, 3.0)
                if got != body:
                    raise RuntimeError(f"expected {body!r}, got {got!r}")
                consumed += 1
            result["consumed"] = consumed
            conn.close()
            conn = None
            result["ok"] = True
        except Exception as exc:  # pylint: disable=broad-except
            result["error"] = describe(exc)
        finally:
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # pylint: disable=broad-except
                    pass
        result["ms"] = round((time.monotonic() - started) * 1000)
        emit(result)


class Held:
    """One long-lived connection of `hold`."""

    def __init__(self, index):
        self.index = index
        self.conn = None
        self.channel = None
        self.queue = None
        self.node = None
        self.nodes = []
        self.exchanges = 0
        self.since_connect = 0
        self.seq = 0
        self.broken_at = None
        self.attempts = 0
        self.errors = []

    def open(self, args):
        conn, node = connect(args)
        try:
            self.channel, self.queue = open_channel(conn)
        except Exception:
            conn.close()
            raise
        self.conn, self.node = conn, node
        self.nodes.append(node)
        self.since_connect = 0

    def exchange(self):
        self.seq += 1
        body = f"held {self.index} seq {self.seq}".encode()
        self.channel.basic_publish("", self.queue, body, mandatory=True)
        got = get_one(self.conn, self.channel, self.queue, 2.0)
        if got != body:
            raise RuntimeError(f"expected {body!r}, got {got!r}")
        self.exchanges += 1
        self.since_connect += 1

    def drop(self):
        conn, self.conn, self.channel, self.queue = self.conn, None, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # pylint: disable=broad-except
                pass


def hold(args):
    stop = threading.Event()

    def watch_stdin():
        for line in sys.stdin:
            if line.strip() == "stop":
                break
        stop.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    started = time.monotonic()
    held = [Held(i) for i in range(args.conns)]
    for h in held:
        h.open(args)
        h.exchange()
    emit(
        {
            "event": "ready",
            "conns": [
                {"conn": h.index, "node": h.node, "local": local_address(h.conn)}
                for h in held
            ],
        }
    )
    while not stop.is_set() and time.monotonic() - started < args.max_seconds:
        round_started = time.monotonic()
        for h in held:
            now = time.monotonic()
            if h.conn is not None:
                try:
                    h.exchange()
                except Exception as exc:  # pylint: disable=broad-except
                    error = describe(exc)
                    h.errors.append(error)
                    emit(
                        {
                            "event": "broken",
                            "conn": h.index,
                            "node": h.node,
                            "error": error,
                            "t": round(now - started, 3),
                        }
                    )
                    h.drop()
                    h.broken_at, h.attempts = now, 0
                continue
            # Broken: one reconnect attempt per round.
            h.attempts += 1
            try:
                h.open(args)
                h.exchange()
            except Exception as exc:  # pylint: disable=broad-except
                h.drop()
                if h.attempts <= 3 or h.attempts % 10 == 0:
                    emit(
                        {
                            "event": "reconnect_failed",
                            "conn": h.index,
                            "attempt": h.attempts,
                            "error": describe(exc),
                        }
                    )
                continue
            emit(
                {
                    "event": "reconnected",
                    "conn": h.index,
                    "node": h.node,
                    "attempts": h.attempts,
                    "after": round(time.monotonic() - h.broken_at, 3),
                    "t": round(time.monotonic() - started, 3),
                }
            )
        elapsed = time.monotonic() - round_started
        if elapsed < args.period:
            stop.wait(args.period - elapsed)
    conns = [
        {
            "conn": h.index,
            "nodes": h.nodes,
            "exchanges": h.exchanges,
            "since_connect": h.since_connect,
            "connected": h.conn is not None,
            "errors": h.errors,
        }
        for h in held
    ]
    for h in held:
        h.drop()
    emit({"event": "summary", "conns": conns})


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["cycles", "hold"])
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, default=5672)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--count", type=int, default=1, help="cycles: how many")
    parser.add_argument("--messages", type=int, default=10, help="cycles: per cycle")
    parser.add_argument("--conns", type=int, default=2, help="hold: connections")
    parser.add_argument("--period", type=float, default=0.2, help="hold: seconds")
    parser.add_argument("--max-seconds", type=float, default=240.0)
    args = parser.parse_args()
    # Never outlive the test, whatever blocks.
    signal.alarm(int(args.max_seconds) + 30)
    if args.command == "cycles":
        cycles(args)
    else:
        hold(args)


if __name__ == "__main__":
    main()

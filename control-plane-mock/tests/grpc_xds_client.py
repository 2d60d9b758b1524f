"""gRPC's own xDS client (grpcio's C core) against the control-plane mock.

Driven by tests/it/grpcio.rs over stdin/stdout:
  script -> "PORTS <a> <b>"   two echo servers are up (they answer b"A" / b"B")
  test   -> "GO"              the mock serves a snapshot routing to server A
  script -> "GOT A"           an RPC on xds:///echo.test reached A
  test   -> "NEXT"            the mock now sends server B's endpoint
  script -> "GOT B"           the channel followed the update
Every wait is bounded; any failure exits non-zero with the reason on stderr.
"""

import json
import os
import sys
import tempfile
import time
from concurrent import futures

import grpc

MOCK = sys.argv[1]  # host:port of the mock's xDS server
TARGET = "xds:///echo.test"
DEADLINE_S = 60


def fail(msg):
    print("FAIL " + msg, flush=True)
    sys.stderr.write(msg + "\n")
    sys.exit(1)


def echo_server(reply):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.unary_unary_rpc_method_handler(lambda req, ctx: reply)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("echo.Echo", {"Say": handler}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


def read_line(expected):
    line = sys.stdin.readline().strip()
    if line != expected:
        fail("expected %r from the test, got %r" % (expected, line))


def call_until(say, want):
    """Calls until the reply is `want`; returns the replies seen."""
    seen = []
    end = time.monotonic() + DEADLINE_S
    while time.monotonic() < end:
        try:
            got = say(b"hi", timeout=3, wait_for_ready=True)
            seen.append(got)
            if got == want:
                return seen
        except grpc.RpcError as e:
            seen.append("%s: %s" % (e.code(), e.details()))
        time.sleep(0.1)
    fail("no %r within %ss on %s; replies: %r" % (want, DEADLINE_S, TARGET, seen[-5:]))


def main():
    server_a, port_a = echo_server(b"A")
    server_b, port_b = echo_server(b"B")
    print("PORTS %d %d" % (port_a, port_b), flush=True)
    read_line("GO")

    bootstrap = {
        "xds_servers": [
            {
                "server_uri": MOCK,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": "grpc-python", "cluster": "test", "locality": {"zone": "z"}},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(bootstrap, f)
    os.environ["GRPC_XDS_BOOTSTRAP"] = f.name

    channel = grpc.insecure_channel(TARGET)
    say = channel.unary_unary("/echo.Echo/Say")
    call_until(say, b"A")
    print("GOT A", flush=True)
    read_line("NEXT")
    call_until(say, b"B")
    print("GOT B", flush=True)
    channel.close()
    server_a.stop(0)
    server_b.stop(0)
    os.unlink(f.name)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""A second, independent client for gocp-xds-server: grpcio with the Envoy
protos as the gRPC project publishes them on PyPI (xds-protos), so nothing
on this side comes from go-control-plane.

    python3 -m venv /tmp/xdspy && /tmp/xdspy/bin/pip install xds-protos
    /tmp/xdspy/bin/python probe_grpcio.py ADDR NODE_ID sotw|delta [UPDATES]

Subscribes to all clusters over ADS, prints each response, ACKs it, and
exits 0 after 1+UPDATES responses (a 10 s deadline otherwise).
"""
import queue
import sys

import grpc
from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

CDS = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


def main() -> int:
    if len(sys.argv) not in (4, 5) or sys.argv[3] not in ("sotw", "delta"):
        print(__doc__, file=sys.stderr)
        return 2
    addr, node_id, mode = sys.argv[1:4]
    want = 1 + (int(sys.argv[4]) if len(sys.argv) == 5 else 0)
    node = base_pb2.Node(id=node_id, cluster="grpcio-probe")
    outq: "queue.Queue" = queue.Queue()

    def requests():
        while True:
            item = outq.get()
            if item is None:
                return
            yield item

    with grpc.insecure_channel(addr) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        if mode == "sotw":
            outq.put(discovery_pb2.DiscoveryRequest(node=node, type_url=CDS))
            responses = stub.StreamAggregatedResources(requests(), timeout=10)
        else:
            outq.put(discovery_pb2.DeltaDiscoveryRequest(node=node, type_url=CDS))
            responses = stub.DeltaAggregatedResources(requests(), timeout=10)
        got = 0
        try:
            for resp in responses:
                got += 1
                if got > want:
                    continue
                if mode == "sotw":
                    names = []
                    for res in resp.resources:
                        c = cluster_pb2.Cluster()
                        res.Unpack(c)
                        names.append(c.name)
                    print(f"RESPONSE sotw version={resp.version_info} nonce={resp.nonce} clusters={sorted(names)}")
                    outq.put(discovery_pb2.DiscoveryRequest(
                        type_url=CDS, version_info=resp.version_info, response_nonce=resp.nonce))
                else:
                    names = sorted(r.name for r in resp.resources)
                    print(f"RESPONSE delta system_version={resp.system_version_info} nonce={resp.nonce} "
                          f"clusters={names} removed={list(resp.removed_resources)}")
                    outq.put(discovery_pb2.DeltaDiscoveryRequest(type_url=CDS, response_nonce=resp.nonce))
                if got == want:
                    # Half-close after the last ACK; the server then ends the
                    # stream, which ends this loop once the ACK has been sent.
                    outq.put(None)
        except grpc.RpcError as e:
            print(f"stream failed after {got} responses: {e.code()} {e.details()}", file=sys.stderr)
            return 1
        finally:
            outq.put(None)  # harmless if already closed
    print("GRPCIO PROBE OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

// gocp-xds-probe: a minimal ADS client used to check the test server by hand
// (and in smoke.sh). It subscribes to resource types over one ADS stream,
// SotW or delta, prints every response, ACKs it (or NACKs the first one of
// each type with -nack-first), and exits once each type has been answered
// 1+updates times, or fails after -timeout. With -per-type it uses the type's
// own service (CDS, EDS, ...) instead of ADS.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/anypb"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// buildInfo is set by build.sh (-ldflags -X): the Debian package versions.
var buildInfo = "unknown (not built by build.sh)"

var typeAliases = map[string]string{
	"cds": resourcev3.ClusterType,
	"eds": resourcev3.EndpointType,
	"lds": resourcev3.ListenerType,
	"rds": resourcev3.RouteType,
	"sds": resourcev3.SecretType,
}

func names(anys []*anypb.Any) []string {
	out := []string{}
	for _, a := range anys {
		m, err := a.UnmarshalNew()
		if err != nil {
			out = append(out, "?"+a.GetTypeUrl())
			continue
		}
		out = append(out, cachev3.GetResourceName(m))
	}
	sort.Strings(out)
	return out
}

type sotwStream interface {
	Send(*discovery.DiscoveryRequest) error
	Recv() (*discovery.DiscoveryResponse, error)
	CloseSend() error
}

type deltaStream interface {
	Send(*discovery.DeltaDiscoveryRequest) error
	Recv() (*discovery.DeltaDiscoveryResponse, error)
	CloseSend() error
}

// openStreams opens the ADS stream, or with perType the type's own service
// (CDS, EDS, LDS, RDS, SDS) for the single type asked for.
func openStreams(ctx context.Context, conn *grpc.ClientConn, perType bool, typeURL string) (func() (sotwStream, error), func() (deltaStream, error), error) {
	if !perType {
		c := discovery.NewAggregatedDiscoveryServiceClient(conn)
		return func() (sotwStream, error) { return c.StreamAggregatedResources(ctx) },
			func() (deltaStream, error) { return c.DeltaAggregatedResources(ctx) }, nil
	}
	switch typeURL {
	case resourcev3.ClusterType:
		c := clusterservice.NewClusterDiscoveryServiceClient(conn)
		return func() (sotwStream, error) { return c.StreamClusters(ctx) },
			func() (deltaStream, error) { return c.DeltaClusters(ctx) }, nil
	case resourcev3.EndpointType:
		c := endpointservice.NewEndpointDiscoveryServiceClient(conn)
		return func() (sotwStream, error) { return c.StreamEndpoints(ctx) },
			func() (deltaStream, error) { return c.DeltaEndpoints(ctx) }, nil
	case resourcev3.ListenerType:
		c := listenerservice.NewListenerDiscoveryServiceClient(conn)
		return func() (sotwStream, error) { return c.StreamListeners(ctx) },
			func() (deltaStream, error) { return c.DeltaListeners(ctx) }, nil
	case resourcev3.RouteType:
		c := routeservice.NewRouteDiscoveryServiceClient(conn)
		return func() (sotwStream, error) { return c.StreamRoutes(ctx) },
			func() (deltaStream, error) { return c.DeltaRoutes(ctx) }, nil
	case resourcev3.SecretType:
		c := secretservice.NewSecretDiscoveryServiceClient(conn)
		return func() (sotwStream, error) { return c.StreamSecrets(ctx) },
			func() (deltaStream, error) { return c.DeltaSecrets(ctx) }, nil
	}
	return nil, nil, fmt.Errorf("-per-type: no per-type service for %q in this probe", typeURL)
}

func short(t string) string { return strings.TrimPrefix(t, resourcev3.APITypePrefix) }

func run() error {
	server := flag.String("server", "127.0.0.1:18000", "xDS server address")
	nodeID := flag.String("node-id", "", "node id to send (required)")
	mode := flag.String("mode", "sotw", "sotw or delta (both over ADS)")
	typesFlag := flag.String("types", "cds,lds", "comma-separated: cds,eds,lds,rds,sds or full type URLs")
	resNames := flag.String("names", "", "comma-separated resource names to subscribe to (default: wildcard)")
	updates := flag.Int("updates", 0, "after the first response of each type, wait for this many more")
	nackFirst := flag.Bool("nack-first", false, "NACK the first response of each type instead of ACKing it")
	perType := flag.Bool("per-type", false, "use the type's own service (e.g. ClusterDiscoveryService) instead of ADS; one type only")
	timeout := flag.Duration("timeout", 10*time.Second, "give up after this long")
	showVersion := flag.Bool("version", false, "print the versions built against and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(buildInfo)
		return nil
	}
	if *nodeID == "" {
		return errors.New("-node-id is required")
	}
	var typeURLs []string
	for _, t := range strings.Split(*typesFlag, ",") {
		t = strings.TrimSpace(t)
		if full, ok := typeAliases[t]; ok {
			t = full
		}
		if cachev3.GetResponseType(t) == types.UnknownType {
			return fmt.Errorf("unknown resource type %q", t)
		}
		typeURLs = append(typeURLs, t)
	}
	var subNames []string
	if *resNames != "" {
		subNames = strings.Split(*resNames, ",")
	}

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	conn, err := grpc.NewClient(*server, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	if *perType && len(typeURLs) != 1 {
		return errors.New("-per-type takes exactly one type")
	}
	openSotw, openDelta, err := openStreams(ctx, conn, *perType, typeURLs[0])
	if err != nil {
		return err
	}
	node := &core.Node{Id: *nodeID, Cluster: "probe"}
	want := map[string]int{}
	for _, t := range typeURLs {
		want[t] = 1 + *updates
	}
	done := func() bool {
		for _, n := range want {
			if n > 0 {
				return false
			}
		}
		return true
	}
	seen := map[string]bool{}

	switch *mode {
	case "sotw":
		st, err := openSotw()
		if err != nil {
			return err
		}
		for i, t := range typeURLs {
			req := &discovery.DiscoveryRequest{TypeUrl: t, ResourceNames: subNames}
			if i == 0 {
				req.Node = node
			}
			if err := st.Send(req); err != nil {
				return err
			}
		}
		acked := map[string]string{}
		for !done() {
			resp, err := st.Recv()
			if err != nil {
				return fmt.Errorf("recv: %w (still waiting for %v)", err, want)
			}
			t := resp.GetTypeUrl()
			fmt.Printf("RESPONSE sotw type=%s version=%s nonce=%s resources=%v\n", short(t), resp.GetVersionInfo(), resp.GetNonce(), names(resp.GetResources()))
			req := &discovery.DiscoveryRequest{TypeUrl: t, ResourceNames: subNames, ResponseNonce: resp.GetNonce()}
			if *nackFirst && !seen[t] {
				req.VersionInfo = acked[t]
				req.ErrorDetail = &status.Status{Code: 3, Message: "probe: deliberate NACK of version " + resp.GetVersionInfo()}
				fmt.Printf("SENT NACK type=%s nonce=%s\n", short(t), resp.GetNonce())
			} else {
				req.VersionInfo = resp.GetVersionInfo()
				acked[t] = resp.GetVersionInfo()
				fmt.Printf("SENT ACK type=%s version=%s nonce=%s\n", short(t), resp.GetVersionInfo(), resp.GetNonce())
			}
			seen[t] = true
			if err := st.Send(req); err != nil {
				return err
			}
			want[t]--
		}
		// Half-close and wait for the server to end the stream, so that the
		// last ACK/NACK is read by it before this process exits.
		if err := st.CloseSend(); err != nil {
			return err
		}
		for {
			if _, err := st.Recv(); err != nil {
				break
			}
		}
	case "delta":
		st, err := openDelta()
		if err != nil {
			return err
		}
		for i, t := range typeURLs {
			req := &discovery.DeltaDiscoveryRequest{TypeUrl: t, ResourceNamesSubscribe: subNames}
			if i == 0 {
				req.Node = node
			}
			if err := st.Send(req); err != nil {
				return err
			}
		}
		for !done() {
			resp, err := st.Recv()
			if err != nil {
				return fmt.Errorf("recv: %w (still waiting for %v)", err, want)
			}
			t := resp.GetTypeUrl()
			var rs []string
			for _, r := range resp.GetResources() {
				rs = append(rs, r.GetName()+"@"+r.GetVersion())
			}
			sort.Strings(rs)
			fmt.Printf("RESPONSE delta type=%s system_version=%s nonce=%s resources=%v removed=%v\n", short(t), resp.GetSystemVersionInfo(), resp.GetNonce(), rs, resp.GetRemovedResources())
			req := &discovery.DeltaDiscoveryRequest{TypeUrl: t, ResponseNonce: resp.GetNonce()}
			if *nackFirst && !seen[t] {
				req.ErrorDetail = &status.Status{Code: 3, Message: "probe: deliberate NACK"}
				fmt.Printf("SENT NACK type=%s nonce=%s\n", short(t), resp.GetNonce())
			} else {
				fmt.Printf("SENT ACK type=%s nonce=%s\n", short(t), resp.GetNonce())
			}
			seen[t] = true
			if err := st.Send(req); err != nil {
				return err
			}
			want[t]--
		}
		if err := st.CloseSend(); err != nil {
			return err
		}
		for {
			if _, err := st.Recv(); err != nil {
				break
			}
		}
	default:
		return fmt.Errorf("-mode must be sotw or delta, not %q", *mode)
	}
	fmt.Println("PROBE OK")
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gocp-xds-probe:", err)
		os.Exit(1)
	}
}

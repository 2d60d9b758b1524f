// gocp-xds-server: a test xDS v3 management server for legate's integration
// tests. The xDS protocol handling (SotW and delta, ADS and per-type services,
// REST fetch) is go-control-plane's (pkg/server/v3 over the snapshot cache in
// pkg/cache/v3), as packaged by Debian. This file only reads snapshots from a
// JSON file, hands them to the cache for one node id, reloads them on request,
// and logs/records what the client sends (ACK/NACK) and what it is sent.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	extensionconfigservice "github.com/envoyproxy/go-control-plane/envoy/service/extension/v3"
	listenerservice "github.com/envoyproxy/go-control-plane/envoy/service/listener/v3"
	routeservice "github.com/envoyproxy/go-control-plane/envoy/service/route/v3"
	runtimeservice "github.com/envoyproxy/go-control-plane/envoy/service/runtime/v3"
	secretservice "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"

	// Types that may appear inside the resources (typed_config and other Any
	// fields) must be registered for protojson to decode them.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/network/dns_resolver/cares/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/network/dns_resolver/getaddrinfo/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// buildInfo is set by build.sh (-ldflags -X): the Debian package versions.
var buildInfo = "unknown (not built by build.sh)"

// snapshotFile is the on-disk format: {"version": "...", "resources": [Any...]}
// where each resource is Envoy v3 proto JSON of an Any, i.e. carries "@type".
type snapshotFile struct {
	Version   string            `json:"version"`
	Resources []json.RawMessage `json:"resources"`
}

// loadSnapshot reads and validates the snapshot file. It never panics on bad
// input: every problem comes back as an error naming the resource.
func loadSnapshot(path string) (*cachev3.Snapshot, string, int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", 0, err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f snapshotFile
	if err := dec.Decode(&f); err != nil {
		return nil, "", 0, fmt.Errorf("%s: not a snapshot file: %w", path, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, "", 0, fmt.Errorf("%s: not a snapshot file: data after the top-level object", path)
	}
	version := f.Version
	if version == "" {
		sum := sha256.Sum256(data)
		version = "sha256:" + hex.EncodeToString(sum[:6])
	}
	byType := map[string][]types.Resource{}
	seen := map[string]bool{}
	for i, raw := range f.Resources {
		var a anypb.Any
		if err := protojson.Unmarshal(raw, &a); err != nil {
			return nil, "", 0, fmt.Errorf("resources[%d]: %w", i, err)
		}
		if cachev3.GetResponseType(a.GetTypeUrl()) == types.UnknownType {
			return nil, "", 0, fmt.Errorf("resources[%d]: type %q is not an xDS resource type go-control-plane serves", i, a.GetTypeUrl())
		}
		msg, err := a.UnmarshalNew()
		if err != nil {
			return nil, "", 0, fmt.Errorf("resources[%d]: %w", i, err)
		}
		name := cachev3.GetResourceName(msg)
		if name == "" {
			return nil, "", 0, fmt.Errorf("resources[%d] (%s): has no name", i, a.GetTypeUrl())
		}
		key := a.GetTypeUrl() + "/" + name
		if seen[key] {
			return nil, "", 0, fmt.Errorf("resources[%d]: duplicate %s %q", i, a.GetTypeUrl(), name)
		}
		seen[key] = true
		byType[a.GetTypeUrl()] = append(byType[a.GetTypeUrl()], msg)
	}
	snap, err := cachev3.NewSnapshot(version, byType)
	if err != nil {
		return nil, "", 0, err
	}
	return snap, version, len(f.Resources), nil
}

// event is one observed request or response, kept for GET /events.
type event struct {
	Seq           int64    `json:"seq"`
	Time          string   `json:"time"`
	Stream        int64    `json:"stream"`
	Protocol      string   `json:"protocol"`  // sotw | delta | fetch
	Direction     string   `json:"direction"` // request | response | open | close
	Kind          string   `json:"kind,omitempty"`
	TypeURL       string   `json:"type_url,omitempty"`
	Node          string   `json:"node,omitempty"`
	VersionInfo   string   `json:"version_info,omitempty"`
	Nonce         string   `json:"nonce,omitempty"`
	ResponseNonce string   `json:"response_nonce,omitempty"`
	Names         []string `json:"names,omitempty"`
	Removed       []string `json:"removed,omitempty"`
	Subscribe     []string `json:"subscribe,omitempty"`
	Unsubscribe   []string `json:"unsubscribe,omitempty"`
	ErrorDetail   string   `json:"error_detail,omitempty"`
	Peer          string   `json:"peer,omitempty"`
}

const maxEvents = 20000

type recorder struct {
	mu      sync.Mutex
	seq     int64
	events  []event
	nodes   map[int64]string // stream id -> node id from its first request
	nodeID  string
	verbose bool
}

func (r *recorder) add(e event) {
	r.mu.Lock()
	r.seq++
	e.Seq = r.seq
	e.Time = time.Now().UTC().Format(time.RFC3339Nano)
	r.events = append(r.events, e)
	if len(r.events) > maxEvents {
		r.events = r.events[len(r.events)-maxEvents:]
	}
	r.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "%s stream=%d %s", e.Protocol, e.Stream, e.Direction)
	if e.Kind != "" {
		fmt.Fprintf(&b, " %s", e.Kind)
	}
	if e.TypeURL != "" {
		fmt.Fprintf(&b, " type=%s", shortType(e.TypeURL))
	}
	if e.Node != "" {
		fmt.Fprintf(&b, " node=%q", e.Node)
	}
	if e.VersionInfo != "" {
		fmt.Fprintf(&b, " version=%q", e.VersionInfo)
	}
	if e.Nonce != "" {
		fmt.Fprintf(&b, " nonce=%q", e.Nonce)
	}
	if e.ResponseNonce != "" {
		fmt.Fprintf(&b, " response_nonce=%q", e.ResponseNonce)
	}
	if e.Names != nil {
		fmt.Fprintf(&b, " names=%s", listStr(e.Names))
	}
	if e.Subscribe != nil {
		fmt.Fprintf(&b, " subscribe=%s", listStr(e.Subscribe))
	}
	if e.Unsubscribe != nil {
		fmt.Fprintf(&b, " unsubscribe=%s", listStr(e.Unsubscribe))
	}
	if e.Removed != nil {
		fmt.Fprintf(&b, " removed=%s", listStr(e.Removed))
	}
	if e.ErrorDetail != "" {
		fmt.Fprintf(&b, " error_detail=%q", e.ErrorDetail)
	}
	if e.Peer != "" {
		fmt.Fprintf(&b, " peer=%s", e.Peer)
	}
	log.Print(b.String())
}

func (r *recorder) dump(label string, m proto.Message) {
	if !r.verbose {
		return
	}
	b, err := protojson.Marshal(m)
	if err != nil {
		log.Printf("%s: cannot render: %v", label, err)
		return
	}
	log.Printf("%s: %s", label, b)
}

// node returns the node id for a stream, remembering it from the first
// request that carries one (clients may send the node only once).
func (r *recorder) node(stream int64, n *core.Node) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n != nil {
		if _, ok := r.nodes[stream]; !ok {
			r.nodes[stream] = n.GetId()
			if n.GetId() != r.nodeID {
				log.Printf("WARNING stream=%d node id %q is not the served node id %q: it will get no resources", stream, n.GetId(), r.nodeID)
			}
		}
	}
	return r.nodes[stream]
}

func (r *recorder) forget(stream int64) {
	r.mu.Lock()
	delete(r.nodes, stream)
	r.mu.Unlock()
}

func shortType(t string) string {
	return strings.TrimPrefix(t, "type.googleapis.com/")
}

func listStr(s []string) string {
	if len(s) == 0 {
		return "[]"
	}
	if len(s) > 20 {
		return "[" + strings.Join(s[:20], ",") + fmt.Sprintf(",... (%d)]", len(s))
	}
	return "[" + strings.Join(s, ",") + "]"
}

func peerOf(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// sotwKind tells an initial request, an ACK and a NACK apart.
func sotwKind(req *discovery.DiscoveryRequest) string {
	switch {
	case req.GetErrorDetail() != nil:
		return "NACK"
	case req.GetResponseNonce() == "":
		return "INITIAL"
	default:
		return "ACK"
	}
}

func deltaKind(req *discovery.DeltaDiscoveryRequest) string {
	switch {
	case req.GetErrorDetail() != nil:
		return "NACK"
	case req.GetResponseNonce() == "":
		return "INITIAL"
	case len(req.GetResourceNamesSubscribe()) > 0 || len(req.GetResourceNamesUnsubscribe()) > 0:
		return "ACK+SUBSCRIPTION-CHANGE"
	default:
		return "ACK"
	}
}

func resourceNames(anys []*anypb.Any) []string {
	out := make([]string, 0, len(anys))
	for _, a := range anys {
		msg, err := a.UnmarshalNew()
		if err != nil {
			out = append(out, "?"+a.GetTypeUrl())
			continue
		}
		out = append(out, cachev3.GetResourceName(msg))
	}
	sort.Strings(out)
	return out
}

func errText(s interface {
	GetMessage() string
	GetCode() int32
}) string {
	if s == nil {
		return ""
	}
	return fmt.Sprintf("code=%d %s", s.GetCode(), s.GetMessage())
}

func (r *recorder) callbacks() serverv3.CallbackFuncs {
	return serverv3.CallbackFuncs{
		StreamOpenFunc: func(ctx context.Context, id int64, typeURL string) error {
			r.add(event{Stream: id, Protocol: "sotw", Direction: "open", TypeURL: typeURL, Peer: peerOf(ctx)})
			return nil
		},
		StreamClosedFunc: func(id int64, n *core.Node) {
			r.add(event{Stream: id, Protocol: "sotw", Direction: "close", Node: r.node(id, n)})
			r.forget(id)
		},
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, typeURL string) error {
			r.add(event{Stream: id, Protocol: "delta", Direction: "open", TypeURL: typeURL, Peer: peerOf(ctx)})
			return nil
		},
		DeltaStreamClosedFunc: func(id int64, n *core.Node) {
			r.add(event{Stream: id, Protocol: "delta", Direction: "close", Node: r.node(id, n)})
			r.forget(id)
		},
		StreamRequestFunc: func(id int64, req *discovery.DiscoveryRequest) error {
			e := event{Stream: id, Protocol: "sotw", Direction: "request", Kind: sotwKind(req),
				TypeURL: req.GetTypeUrl(), Node: r.node(id, req.GetNode()), VersionInfo: req.GetVersionInfo(),
				ResponseNonce: req.GetResponseNonce(), Names: append([]string{}, req.GetResourceNames()...)}
			if req.GetErrorDetail() != nil {
				e.ErrorDetail = errText(req.GetErrorDetail())
			}
			r.add(e)
			r.dump("request", req)
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
			r.add(event{Stream: id, Protocol: "sotw", Direction: "response", TypeURL: resp.GetTypeUrl(),
				Node: r.node(id, nil), VersionInfo: resp.GetVersionInfo(), Nonce: resp.GetNonce(),
				Names: resourceNames(resp.GetResources())})
			r.dump("response", resp)
		},
		StreamDeltaRequestFunc: func(id int64, req *discovery.DeltaDiscoveryRequest) error {
			e := event{Stream: id, Protocol: "delta", Direction: "request", Kind: deltaKind(req),
				TypeURL: req.GetTypeUrl(), Node: r.node(id, req.GetNode()), ResponseNonce: req.GetResponseNonce(),
				Subscribe:   append([]string{}, req.GetResourceNamesSubscribe()...),
				Unsubscribe: append([]string{}, req.GetResourceNamesUnsubscribe()...)}
			if len(req.GetInitialResourceVersions()) > 0 {
				keys := make([]string, 0, len(req.GetInitialResourceVersions()))
				for k, v := range req.GetInitialResourceVersions() {
					keys = append(keys, k+"@"+v)
				}
				sort.Strings(keys)
				e.Names = keys
			}
			if req.GetErrorDetail() != nil {
				e.ErrorDetail = errText(req.GetErrorDetail())
			}
			r.add(e)
			r.dump("delta request", req)
			return nil
		},
		StreamDeltaResponseFunc: func(id int64, _ *discovery.DeltaDiscoveryRequest, resp *discovery.DeltaDiscoveryResponse) {
			names := make([]string, 0, len(resp.GetResources()))
			for _, res := range resp.GetResources() {
				names = append(names, res.GetName()+"@"+res.GetVersion())
			}
			sort.Strings(names)
			r.add(event{Stream: id, Protocol: "delta", Direction: "response", TypeURL: resp.GetTypeUrl(),
				Node: r.node(id, nil), VersionInfo: resp.GetSystemVersionInfo(), Nonce: resp.GetNonce(),
				Names: names, Removed: append([]string{}, resp.GetRemovedResources()...)})
			r.dump("delta response", resp)
		},
		FetchRequestFunc: func(ctx context.Context, req *discovery.DiscoveryRequest) error {
			r.add(event{Protocol: "fetch", Direction: "request", TypeURL: req.GetTypeUrl(),
				Node: req.GetNode().GetId(), VersionInfo: req.GetVersionInfo(),
				Names: append([]string{}, req.GetResourceNames()...), Peer: peerOf(ctx)})
			return nil
		},
		FetchResponseFunc: func(_ *discovery.DiscoveryRequest, resp *discovery.DiscoveryResponse) {
			r.add(event{Protocol: "fetch", Direction: "response", TypeURL: resp.GetTypeUrl(),
				VersionInfo: resp.GetVersionInfo(), Names: resourceNames(resp.GetResources())})
		},
	}
}

// reloader owns the snapshot file and pushes its content into the cache.
type reloader struct {
	mu      sync.Mutex
	path    string
	nodeID  string
	cache   cachev3.SnapshotCache
	version string
	mtime   time.Time
	size    int64
	loads   int
}

func (rl *reloader) reload(why string) error {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	st, statErr := os.Stat(rl.path)
	snap, version, n, err := loadSnapshot(rl.path)
	if statErr == nil {
		// Remember what was tried, good or bad, so a bad file is not retried
		// on every poll tick; a fixed file has a new mtime or size.
		rl.mtime, rl.size = st.ModTime(), st.Size()
	}
	if err != nil {
		log.Printf("RELOAD FAILED (%s), still serving version %q: %v", why, rl.version, err)
		return err
	}
	if err := snap.Consistent(); err != nil {
		log.Printf("note: snapshot version %q is not self-consistent (served anyway): %v", version, err)
	}
	if err := rl.cache.SetSnapshot(context.Background(), rl.nodeID, snap); err != nil {
		log.Printf("RELOAD FAILED (%s): cache refused snapshot %q: %v", why, version, err)
		return err
	}
	rl.version = version
	rl.loads++
	log.Printf("SNAPSHOT version=%q resources=%d node=%q loaded (%s)", version, n, rl.nodeID, why)
	return nil
}

func (rl *reloader) changedOnDisk() bool {
	st, err := os.Stat(rl.path)
	if err != nil {
		return false
	}
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return !st.ModTime().Equal(rl.mtime) || st.Size() != rl.size
}

func (rl *reloader) current() (string, int) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return rl.version, rl.loads
}

func loopbackListen(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", addr, err)
	}
	if host != "localhost" {
		ip := net.ParseIP(host)
		if ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("address %q: only loopback addresses are allowed", addr)
		}
	}
	return net.Listen("tcp", addr)
}

func run() error {
	listen := flag.String("listen", "127.0.0.1:18000", "gRPC listen address (loopback only; port 0 picks a free port)")
	nodeID := flag.String("node-id", "", "node id whose snapshot is served (required)")
	snapPath := flag.String("snapshot", "", "snapshot JSON file (required)")
	admin := flag.String("admin", "", "optional HTTP control address (loopback): POST /reload, GET /healthz, GET /events")
	poll := flag.Duration("poll", 200*time.Millisecond, "reload when the snapshot file's mtime/size changes, checked this often (0 disables)")
	ads := flag.Bool("ads", true, "ADS mode of the snapshot cache: hold a response until every named resource requested exists")
	readyFile := flag.String("ready-file", "", "write 'grpc=ADDR admin=ADDR' here once listening")
	verbose := flag.Bool("v", false, "also log full requests/responses as proto JSON and the cache's debug log")
	showVersion := flag.Bool("version", false, "print the versions built against and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println(buildInfo)
		return nil
	}
	if *nodeID == "" || *snapPath == "" {
		flag.Usage()
		return errors.New("-node-id and -snapshot are required")
	}
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %v", flag.Args())
	}
	log.SetFlags(log.LstdFlags | log.Lmicroseconds | log.LUTC)
	log.SetPrefix("gocp-xds ")

	cacheLog := cacheLogger{verbose: *verbose}
	snapCache := cachev3.NewSnapshotCache(*ads, cachev3.IDHash{}, cacheLog)
	rec := &recorder{nodes: map[int64]string{}, nodeID: *nodeID, verbose: *verbose}
	rl := &reloader{path: *snapPath, nodeID: *nodeID, cache: snapCache}
	if err := rl.reload("startup"); err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv := serverv3.NewServer(ctx, snapCache, rec.callbacks())
	gs := grpc.NewServer(grpc.MaxConcurrentStreams(1000))
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, srv)
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, srv)
	listenerservice.RegisterListenerDiscoveryServiceServer(gs, srv)
	routeservice.RegisterRouteDiscoveryServiceServer(gs, srv)
	routeservice.RegisterScopedRoutesDiscoveryServiceServer(gs, srv)
	routeservice.RegisterVirtualHostDiscoveryServiceServer(gs, srv)
	secretservice.RegisterSecretDiscoveryServiceServer(gs, srv)
	runtimeservice.RegisterRuntimeDiscoveryServiceServer(gs, srv)
	extensionconfigservice.RegisterExtensionConfigDiscoveryServiceServer(gs, srv)

	lis, err := loopbackListen(*listen)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(lis) }()
	log.Printf("LISTENING grpc=%s node=%q snapshot=%s ads=%v built with %s", lis.Addr(), *nodeID, *snapPath, *ads, buildInfo)

	adminAddr := ""
	var hs *http.Server
	if *admin != "" {
		alis, err := loopbackListen(*admin)
		if err != nil {
			gs.Stop()
			return err
		}
		adminAddr = alis.Addr().String()
		hs = &http.Server{Handler: adminMux(rl, rec), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := hs.Serve(alis); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
		log.Printf("ADMIN http://%s (POST /reload, GET /healthz, GET /events)", adminAddr)
	}
	if *readyFile != "" {
		line := fmt.Sprintf("grpc=%s admin=%s\n", lis.Addr(), adminAddr)
		tmp := *readyFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(line), 0o644); err != nil {
			gs.Stop()
			return err
		}
		if err := os.Rename(tmp, *readyFile); err != nil {
			gs.Stop()
			return err
		}
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	var tick <-chan time.Time
	if *poll > 0 {
		t := time.NewTicker(*poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case err := <-errc:
			return fmt.Errorf("server stopped: %w", err)
		case <-tick:
			if rl.changedOnDisk() {
				_ = rl.reload("file changed")
			}
		case s := <-sigs:
			if s == syscall.SIGHUP {
				_ = rl.reload("SIGHUP")
				continue
			}
			log.Printf("%v: shutting down", s)
			if hs != nil {
				sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = hs.Shutdown(sctx)
				scancel()
			}
			done := make(chan struct{})
			go func() { gs.GracefulStop(); close(done) }()
			select {
			case <-done:
			case <-time.After(2 * time.Second):
				gs.Stop()
			}
			return nil
		}
	}
}

func adminMux(rl *reloader, rec *recorder) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/reload", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		if err := rl.reload("POST /reload"); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		v, _ := rl.current()
		fmt.Fprintf(w, "version=%s\n", v)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		v, n := rl.current()
		fmt.Fprintf(w, "ok version=%s loads=%d\n", v, n)
	})
	mux.HandleFunc("/events", func(w http.ResponseWriter, _ *http.Request) {
		rec.mu.Lock()
		evs := append([]event{}, rec.events...)
		rec.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		if err := enc.Encode(evs); err != nil {
			log.Printf("GET /events: %v", err)
		}
	})
	return mux
}

type cacheLogger struct{ verbose bool }

func (c cacheLogger) Debugf(f string, a ...interface{}) {
	if c.verbose {
		log.Printf("cache debug: "+f, a...)
	}
}
func (c cacheLogger) Infof(f string, a ...interface{})  { log.Printf("cache: "+f, a...) }
func (c cacheLogger) Warnf(f string, a ...interface{})  { log.Printf("cache WARN: "+f, a...) }
func (c cacheLogger) Errorf(f string, a ...interface{}) { log.Printf("cache ERROR: "+f, a...) }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gocp-xds-server:", err)
		os.Exit(1)
	}
}

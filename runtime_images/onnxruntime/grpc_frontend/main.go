// kinfer-grpc-frontend serves kinfer-ort-server's gRPC port (the GRPCInferenceService of
// the Open Inference Protocol v2, as tritonclient's stubs define it) and hands every call,
// still serialized, to the server over the bridge (bridge.go). The server parses, runs and
// answers it exactly as it does for HTTP; this process only speaks HTTP/2 and gRPC, which
// in Python (grpc.aio) cost more CPU per call than the inference itself.
//
// kinfer-ort-server starts it (--grpc-frontend) and passes its end of a socketpair as
// file descriptor 3; it is not meant to be started by hand.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
)

const (
	service         = "inference.GRPCInferenceService"
	codeUnavailable = uint8(codes.Unavailable)
	// methodStreamInfer tags one message of a ModelStreamInfer stream: the server
	// answers it with a serialized ModelStreamInferResponse (errors inside it).
	methodStreamInfer = 11
)

// methods maps the unary calls the server implements to their bridge tags. The other
// methods of the service (shared memory, statistics, trace, log settings) are answered
// UNIMPLEMENTED here, as the server's grpc.aio frontend does.
var methods = map[string]uint8{
	"ServerLive":            1,
	"ServerReady":           2,
	"ModelReady":            3,
	"ServerMetadata":        4,
	"ModelMetadata":         5,
	"ModelInfer":            6,
	"ModelConfig":           7,
	"RepositoryIndex":       8,
	"RepositoryModelLoad":   9,
	"RepositoryModelUnload": 10,
}

// inbound is a received message, already laid out as a bridge frame (one copy).
type inbound struct{ frame []byte }

// outbound is a serialized response from the server, sent as it is.
type outbound struct{ payload []byte }

// rawCodec replaces the proto codec: messages stay bytes, the server does the protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	out, ok := v.(*outbound)
	if !ok {
		return nil, fmt.Errorf("raw codec cannot marshal %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(out.payload)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	in, ok := v.(*inbound)
	if !ok {
		return fmt.Errorf("raw codec cannot unmarshal into %T", v)
	}
	in.frame = encodeFrame(0, 0, data.Len())
	data.CopyTo(in.frame[headerBytes:])
	return nil
}

func (rawCodec) Name() string { return "proto" }

type frontend struct {
	bridge *bridge
	// maxTensorBytes is the server's --max-request-bytes: the raw tensors of one request.
	maxTensorBytes uint64
}

// roundTrip hands one message to the server and waits for its answer or the caller's end.
func (f *frontend) roundTrip(ctx context.Context, in *inbound, tag uint8) ([]byte, error) {
	in.frame[8] = tag
	id, ch, err := f.bridge.call(in.frame)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	select {
	case r := <-ch:
		if r.code != 0 {
			return nil, status.Error(codes.Code(r.code), string(r.payload))
		}
		return r.payload, nil
	case <-ctx.Done():
		f.bridge.forget(id)
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// handle serves every method of every service (grpc.UnknownServiceHandler).
func (f *frontend) handle(_ any, stream grpc.ServerStream) error {
	fullMethod, _ := grpc.MethodFromServerStream(stream)
	name, known := "", false
	if len(fullMethod) > len(service)+2 && fullMethod[1:len(service)+1] == service && fullMethod[len(service)+1] == '/' {
		name, known = fullMethod[len(service)+2:], true
	}
	ctx := stream.Context()
	if known && name == "ModelStreamInfer" {
		// One response per request, in order; a failed request answers with
		// error_message inside the response and the stream goes on.
		for {
			in := &inbound{}
			if err := stream.RecvMsg(in); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			if err := checkInferRequest(in.frame[headerBytes:], f.maxTensorBytes); err != nil {
				if err := stream.SendMsg(&outbound{streamError(err)}); err != nil {
					return err
				}
				continue
			}
			payload, err := f.roundTrip(ctx, in, methodStreamInfer)
			if err != nil {
				return err
			}
			if err := stream.SendMsg(&outbound{payload}); err != nil {
				return err
			}
		}
	}
	tag, ok := methods[name]
	if !known || !ok {
		return status.Errorf(codes.Unimplemented, "method %s is not implemented by kinfer-ort-server", fullMethod)
	}
	in := &inbound{}
	if err := stream.RecvMsg(in); err != nil {
		return err
	}
	if name == "ModelInfer" {
		if err := checkInferRequest(in.frame[headerBytes:], f.maxTensorBytes); err != nil {
			return err
		}
	}
	payload, err := f.roundTrip(ctx, in, tag)
	if err != nil {
		return err
	}
	return stream.SendMsg(&outbound{payload})
}

func main() {
	listen := flag.String("listen", "0.0.0.0:8001", "gRPC listen address (host:port)")
	bridgeFD := flag.Int("bridge-fd", 3, "file descriptor of the bridge socket, inherited from kinfer-ort-server")
	maxMessage := flag.Int("max-message-bytes", 65*1024*1024, "largest gRPC message received or sent")
	procs := flag.Int("procs", 1, "OS threads running Go code at once (GOMAXPROCS); 0: one per core")
	maxTensorBytes := flag.Uint64("max-request-bytes", 64*1024*1024, "largest raw tensor payload of one inference request (the server's --max-request-bytes)")
	keepaliveTime := flag.Duration("keepalive-time", 2*time.Hour, "ping a client after this long without activity")
	keepaliveTimeout := flag.Duration("keepalive-timeout", 20*time.Second, "close the connection when a ping is not answered within this")
	idleTimeout := flag.Duration("idle-timeout", 5*time.Minute, "close (GOAWAY) a connection with no call in flight for this long (0: never)")
	exitTimeout := flag.Duration("exit-timeout", 30*time.Second, "on SIGTERM: how long in-flight calls may take before the listener is closed anyway")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("kinfer-grpc-frontend: ")
	if *procs > 0 {
		// One thread by default: the frontend's work per call is small, and goroutines
		// handing calls to each other on one thread wake no other thread; the cores stay
		// with the server's model runs (measured in docs/data-plane.md).
		runtime.GOMAXPROCS(*procs)
	}

	file := os.NewFile(uintptr(*bridgeFD), "bridge")
	if file == nil {
		log.Fatalf("no file descriptor %d: kinfer-ort-server passes the bridge socket there", *bridgeFD)
	}
	conn, err := net.FileConn(file)
	if err != nil {
		log.Fatalf("file descriptor %d is not the bridge socket: %v", *bridgeFD, err)
	}
	file.Close()
	// A reply frame holds at most a message plus nothing else; calls are bounded by gRPC.
	b := newBridge(conn, *maxMessage)

	encoding.RegisterCodecV2(rawCodec{})
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("cannot listen for gRPC on %s: %v", *listen, err)
	}
	f := &frontend{bridge: b, maxTensorBytes: *maxTensorBytes}
	params := keepalive.ServerParameters{Time: *keepaliveTime, Timeout: *keepaliveTimeout}
	if *idleTimeout > 0 {
		params.MaxConnectionIdle = *idleTimeout
	}
	server := grpc.NewServer(
		grpc.UnknownServiceHandler(f.handle),
		grpc.MaxRecvMsgSize(*maxMessage),
		grpc.MaxSendMsgSize(*maxMessage),
		grpc.KeepaliveParams(params),
	)
	address := lis.Addr().String()
	hello := encodeFrame(0, 0, len(address))
	copy(hello[headerBytes:], address)
	if err := b.send(hello); err != nil {
		log.Fatalf("bridge: %v", err)
	}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		select {
		case <-signals:
			// Finish in-flight calls (bounded), refuse new ones, then exit.
			stopped := make(chan struct{})
			go func() { server.GracefulStop(); close(stopped) }()
			select {
			case <-stopped:
			case <-time.After(*exitTimeout):
				server.Stop()
			}
		case <-b.done:
			// The server is gone: nothing could answer a call any more.
			log.Printf("stopping: %v", b.err)
			server.Stop()
		}
	}()
	if err := server.Serve(lis); err != nil {
		log.Fatalf("serve: %v", err)
	}
}

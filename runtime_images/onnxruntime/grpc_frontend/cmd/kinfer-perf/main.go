// kinfer-perf is the runtime benchmark's native load client (`kinfer bench runtime
// --client go`), a stand-in for Triton's perf_analyzer, which does not install here: like
// perf_analyzer it sends one prepared request over and over from N concurrent workers on
// one connection (gRPC) or N keep-alive connections (HTTP), so that the client's own cost
// per request is small next to the server's. It prints one JSON object.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
)

// rawCodec sends the prepared request bytes as they are and keeps the response's bytes.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*(v.(*[]byte)))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*(v.(*[]byte)) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "kinfer-perf-raw" }

type result struct {
	Requests      int     `json:"requests"`
	Completed     int     `json:"completed"` // warm-up included
	Failures      int     `json:"failures"`
	DurationS     float64 `json:"duration_s"`
	P50Ms         float64 `json:"p50_ms"`
	P99Ms         float64 `json:"p99_ms"`
	ThroughputRPS float64 `json:"throughput_rps"`
	FirstError    string  `json:"first_error,omitempty"`
}

// sendFunc sends the request once; an error counts as a failure.
type sendFunc func(ctx context.Context) error

func grpcSender(url, model string, body []byte, timeout time.Duration) (sendFunc, func(), error) {
	codec := rawCodec{}
	encoding.RegisterCodecV2(codec)
	conn, err := grpc.NewClient(url, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec), grpc.MaxCallRecvMsgSize(1<<30)))
	if err != nil {
		return nil, nil, err
	}
	send := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		var response []byte
		err := conn.Invoke(ctx, "/inference.GRPCInferenceService/ModelInfer", &body, &response)
		if err == nil && len(response) == 0 {
			err = fmt.Errorf("empty ModelInferResponse")
		}
		return err
	}
	return send, func() { conn.Close() }, nil
}

func httpSender(url, model string, body []byte, jsonSize int, concurrency int, timeout time.Duration) (sendFunc, func(), error) {
	transport := &http.Transport{MaxIdleConns: concurrency, MaxIdleConnsPerHost: concurrency, MaxConnsPerHost: concurrency}
	client := &http.Client{Transport: transport, Timeout: timeout}
	endpoint := "http://" + url + "/v2/models/" + model + "/infer"
	send := func(ctx context.Context) error {
		request, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
		if err != nil {
			return err
		}
		request.Header.Set("Content-Type", "application/octet-stream")
		if jsonSize >= 0 {
			request.Header.Set("Inference-Header-Content-Length", strconv.Itoa(jsonSize))
		}
		response, err := client.Do(request)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, response.Body)
		response.Body.Close()
		if err == nil && response.StatusCode != http.StatusOK {
			err = fmt.Errorf("HTTP %d", response.StatusCode)
		}
		return err
	}
	return send, transport.CloseIdleConnections, nil
}

// load runs `concurrency` workers: warm-up, then the measured window; bounded by maxRequests.
func load(send sendFunc, concurrency int, warmup, duration time.Duration, maxRequests int) result {
	start := time.Now()
	measureFrom := start.Add(warmup)
	stopAt := measureFrom.Add(duration)
	var mu sync.Mutex
	var latencies []time.Duration
	failures := 0
	completed := 0
	firstError := ""
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, 4096)
			localFailures := 0
			localCompleted := 0
			localError := ""
			for {
				began := time.Now()
				if !began.Before(stopAt) || len(local) >= maxRequests/concurrency+1 {
					break
				}
				err := send(context.Background())
				if err != nil {
					localFailures++
					if localError == "" {
						localError = err.Error()
					}
					continue
				}
				localCompleted++
				if !began.Before(measureFrom) {
					local = append(local, time.Since(began))
				}
			}
			mu.Lock()
			latencies = append(latencies, local...)
			failures += localFailures
			completed += localCompleted
			if firstError == "" {
				firstError = localError
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(measureFrom)
	if elapsed > duration {
		elapsed = duration
	}
	sort.Slice(latencies, func(i, j int) bool { return latencies[i] < latencies[j] })
	res := result{Requests: len(latencies), Completed: completed, Failures: failures, DurationS: elapsed.Seconds(), FirstError: firstError}
	if n := len(latencies); n > 0 {
		res.P50Ms = float64(latencies[n/2].Nanoseconds()) / 1e6
		res.P99Ms = float64(latencies[(n*99)/100].Nanoseconds()) / 1e6
		res.ThroughputRPS = float64(n) / elapsed.Seconds()
	}
	return res
}

func main() {
	protocol := flag.String("protocol", "grpc", "grpc or http")
	url := flag.String("url", "", "host:port of the server")
	model := flag.String("model", "", "model name (HTTP path)")
	requestFile := flag.String("request", "", "file holding the request: a serialized ModelInferRequest (grpc) or the HTTP body")
	jsonSize := flag.Int("json-size", -1, "HTTP: Inference-Header-Content-Length (the JSON header's length in the body); -1: JSON only")
	concurrency := flag.Int("concurrency", 1, "concurrent requests")
	warmup := flag.Duration("warmup", time.Second, "unmeasured warm-up")
	duration := flag.Duration("duration", 4*time.Second, "measured window")
	maxRequests := flag.Int("max-requests", 1000000, "cap on requests")
	timeout := flag.Duration("timeout", 60*time.Second, "per-request timeout")
	flag.Parse()
	log.SetFlags(0)
	log.SetPrefix("kinfer-perf: ")
	if *url == "" || *requestFile == "" || *concurrency < 1 {
		log.Fatal("--url, --request and --concurrency >= 1 are required")
	}
	body, err := os.ReadFile(*requestFile)
	if err != nil {
		log.Fatal(err)
	}
	var send sendFunc
	var closeFn func()
	switch *protocol {
	case "grpc":
		send, closeFn, err = grpcSender(*url, *model, body, *timeout)
	case "http":
		if *model == "" {
			log.Fatal("--model is required for http")
		}
		send, closeFn, err = httpSender(*url, *model, body, *jsonSize, *concurrency, *timeout)
	default:
		log.Fatalf("--protocol=%s: valid: grpc, http", *protocol)
	}
	if err != nil {
		log.Fatal(err)
	}
	defer closeFn()
	out, _ := json.Marshal(load(send, *concurrency, *warmup, *duration, *maxRequests))
	fmt.Println(string(out))
}

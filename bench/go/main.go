// Command bench-go: the Go contenders of bench/ (see bench/README.md).
//
//	bench-go {storj|grpc} server --addr 127.0.0.1:0   prints "ADDR host:port", serves until stdin closes
//	bench-go {storj|grpc} client --addr A --workload W [--size N] [--concurrency N]
//	    [--streams N] [--calls N] [--warmup S] [--duration S] [--reps N] [--server-pid PID]
//
// storj = storj.io/drpc v1.0.0 (sequential: one stream per connection, so
// concurrency comes from a pool of connections, one per concurrent caller);
// grpc = grpc-go over one HTTP/2 connection. Both carry raw bytes through a
// pass-through codec, like every other contender.
package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

type params struct {
	addr, workload                    string
	size, concurrency, streams, calls int
	reps                              int
	warmup, duration                  time.Duration
	serverPid                         int
}

// stack is one RPC implementation. Workers are what one concurrent caller
// uses: for grpc they share one connection, for storj each has its own.
type stack interface {
	worker() worker
	conns() int
	serverAllocs() uint64
	close()
}

type worker interface {
	unary(data []byte) []byte
	serverStream(req []byte) (msgs, bytes uint64)
	bidi() bidiStream
}

type bidiStream interface {
	rt(data []byte)
	finish()
}

func emit(v map[string]any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func pctUs(sorted []int64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p/100*float64(len(sorted)-1) + 0.5)
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return float64(sorted[i]) / 1000
}

func rssKB(pid int) uint64 {
	path := "/proc/self/status"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/status", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			f := strings.Fields(l)
			n, _ := strconv.ParseUint(f[1], 10, 64)
			return n
		}
	}
	return 0
}

func mallocs() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.Mallocs
}

func streamRequest(size int, d time.Duration) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, uint64(size))
	binary.BigEndian.PutUint64(b[8:], uint64(d.Milliseconds()))
	return b
}

func parseStreamRequest(b []byte) (int, time.Duration) {
	return int(binary.BigEndian.Uint64(b)), time.Duration(binary.BigEndian.Uint64(b[8:])) * time.Millisecond
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 0x5a
	}
	return b
}

func serveUntilStdinCloses(addr string) {
	fmt.Printf("ADDR %s\n", addr)
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

func latencyReps(p params, warm func(), call func()) {
	end := time.Now().Add(p.warmup)
	for time.Now().Before(end) {
		warm()
	}
	for rep := 0; rep < p.reps; rep++ {
		lat := make([]int64, 0, 100000)
		start := time.Now()
		end := start.Add(p.duration)
		for {
			t := time.Now()
			if !t.Before(end) {
				break
			}
			call()
			lat = append(lat, int64(time.Since(t)))
		}
		secs := time.Since(start).Seconds()
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		emit(map[string]any{"rep": rep, "calls": len(lat), "secs": secs,
			"p50_us": pctUs(lat, 50), "p99_us": pctUs(lat, 99)})
	}
}

func run(s stack, p params) {
	data := payload(p.size)
	switch p.workload {
	case "unary_lat":
		w := s.worker()
		f := func() { w.unary(data) }
		latencyReps(p, f, f)
	case "unary_tput":
		workers := make([]worker, p.concurrency)
		for i := range workers {
			workers[i] = s.worker()
		}
		for rep := 0; rep <= p.reps; rep++ {
			d := p.duration
			if rep == 0 {
				d = p.warmup
			}
			start := time.Now()
			end := start.Add(d)
			var total uint64
			var mu sync.Mutex
			var wg sync.WaitGroup
			for _, w := range workers {
				wg.Add(1)
				go func(w worker) {
					defer wg.Done()
					var n uint64
					for time.Now().Before(end) {
						w.unary(data)
						n++
					}
					mu.Lock()
					total += n
					mu.Unlock()
				}(w)
			}
			wg.Wait()
			if rep > 0 {
				emit(map[string]any{"rep": rep - 1, "calls": total, "secs": time.Since(start).Seconds(), "conns": s.conns()})
			}
		}
	case "stream":
		w := s.worker()
		w.serverStream(streamRequest(p.size, p.warmup))
		for rep := 0; rep < p.reps; rep++ {
			start := time.Now()
			n, b := w.serverStream(streamRequest(p.size, p.duration))
			emit(map[string]any{"rep": rep, "msgs": n, "bytes": b, "secs": time.Since(start).Seconds()})
		}
	case "bidi":
		st := s.worker().bidi()
		f := func() { st.rt(data) }
		latencyReps(p, f, f)
		st.finish()
	case "mux":
		w0 := s.worker()
		w0.unary(nil)
		time.Sleep(200 * time.Millisecond)
		cb, sb := rssKB(0), rssKB(p.serverPid)
		t0 := time.Now()
		streams := make([]bidiStream, p.streams)
		var wg sync.WaitGroup
		for i := range streams {
			w := w0
			if i > 0 {
				w = s.worker()
			}
			wg.Add(1)
			go func(i int, w worker) {
				defer wg.Done()
				st := w.bidi()
				st.rt(data)
				streams[i] = st
			}(i, w)
		}
		wg.Wait()
		openSecs := time.Since(t0).Seconds()
		time.Sleep(200 * time.Millisecond)
		ca, sa := rssKB(0), rssKB(p.serverPid)
		emit(map[string]any{"event": "mem", "streams": p.streams, "open_secs": openSecs, "conns": s.conns(),
			"client_rss_kb_before": cb, "client_rss_kb_after": ca,
			"server_rss_kb_before": sb, "server_rss_kb_after": sa})
		for rep := 0; rep <= p.reps; rep++ {
			d := p.duration
			if rep == 0 {
				d = p.warmup
			}
			start := time.Now()
			end := start.Add(d)
			var total uint64
			var mu sync.Mutex
			for _, st := range streams {
				wg.Add(1)
				go func(st bidiStream) {
					defer wg.Done()
					var n uint64
					for time.Now().Before(end) {
						st.rt(data)
						n++
					}
					mu.Lock()
					total += n
					mu.Unlock()
				}(st)
			}
			wg.Wait()
			if rep > 0 {
				emit(map[string]any{"rep": rep - 1, "calls": total, "secs": time.Since(start).Seconds()})
			}
		}
		for _, st := range streams {
			wg.Add(1)
			go func(st bidiStream) { defer wg.Done(); st.finish() }(st)
		}
		wg.Wait()
	case "count":
		w := s.worker()
		for i := 0; i < 200; i++ {
			w.unary(data)
		}
		s0 := s.serverAllocs()
		s1 := s.serverAllocs()
		a0 := mallocs()
		start := time.Now()
		for i := 0; i < p.calls; i++ {
			w.unary(data)
		}
		secs := time.Since(start).Seconds()
		a1 := mallocs()
		s2 := s.serverAllocs()
		srv := float64(s2-s1) - float64(s1-s0)
		if srv < 0 {
			srv = 0
		}
		// ReadMemStats itself does not allocate; a0..a1 is the calls only.
		emit(map[string]any{"calls": p.calls, "secs": secs,
			"client_allocs_per_call": float64(a1-a0) / float64(p.calls),
			"server_allocs_per_call": srv / float64(p.calls)})
	default:
		panic("unknown workload " + p.workload)
	}
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: bench-go {storj|grpc} {server|client} [--key value]...")
		os.Exit(2)
	}
	kv := map[string]string{}
	for i := 3; i+1 < len(os.Args); i += 2 {
		kv[strings.TrimPrefix(os.Args[i], "--")] = os.Args[i+1]
	}
	num := func(k string, d int) int {
		if v, ok := kv[k]; ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				panic(err)
			}
			return n
		}
		return d
	}
	secs := func(k string, d float64) time.Duration {
		if v, ok := kv[k]; ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				panic(err)
			}
			d = f
		}
		return time.Duration(d * float64(time.Second))
	}
	addr := kv["addr"]
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	workload := kv["workload"]
	if workload == "" {
		workload = "unary_lat"
	}
	p := params{addr: addr, workload: workload,
		size: num("size", 0), concurrency: num("concurrency", 1), streams: num("streams", 1),
		calls: num("calls", 1000), reps: num("reps", 3), warmup: secs("warmup", 0.5),
		duration: secs("duration", 1), serverPid: num("server-pid", 0)}
	switch os.Args[1] + " " + os.Args[2] {
	case "storj server":
		serveUntilStdinCloses(storjServer(addr))
	case "grpc server":
		serveUntilStdinCloses(grpcServer(addr))
	case "storj client":
		s := newStorj(addr)
		run(s, p)
		s.close()
	case "grpc client":
		s := newGrpc(addr)
		run(s, p)
		s.close()
	default:
		fmt.Fprintln(os.Stderr, "unknown contender/role")
		os.Exit(2)
	}
}

package main

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// fakeServer is the server's end of the bridge: it reads n calls, then answers them (in
// reverse order when asked), each with its own payload reversed. done closes once it has
// answered.
func fakeServer(t *testing.T, conn net.Conn, n int, reverse bool, done chan struct{}) {
	defer close(done)
	r := bufio.NewReader(conn)
	header := make([]byte, headerBytes)
	type call struct {
		id      uint32
		payload []byte
	}
	calls := make([]call, 0, n)
	for len(calls) < n {
		id, _, payload, err := readFrame(r, header, 1<<20)
		if err != nil {
			t.Errorf("fake server read: %v", err)
			return
		}
		calls = append(calls, call{id, payload})
	}
	for i := range calls {
		c := calls[i]
		if reverse {
			c = calls[len(calls)-1-i]
		}
		out := encodeFrame(c.id, 0, len(c.payload))
		for j, b := range c.payload {
			out[headerBytes+len(c.payload)-1-j] = b
		}
		if _, err := conn.Write(out); err != nil {
			t.Errorf("fake server write: %v", err)
			return
		}
	}
}

func waitServed(t *testing.T, served chan struct{}) {
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Error("the fake server did not answer every call")
	}
}

// expectUnavailable waits (bounded) for the call's reply and checks it is UNAVAILABLE.
func expectUnavailable(t *testing.T, ch chan reply, timeoutMessage string) {
	t.Helper()
	select {
	case r := <-ch:
		if r.code != codeUnavailable {
			t.Errorf("got code %d, want UNAVAILABLE", r.code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal(timeoutMessage)
	}
}

func request(payload string) []byte {
	frame := encodeFrame(0, 6, len(payload))
	copy(frame[headerBytes:], payload)
	return frame
}

func TestRepliesAnsweredOutOfOrderReachTheirCalls(t *testing.T) {
	ours, theirs := net.Pipe()
	defer ours.Close()
	b := newBridge(ours, 1<<20)
	payloads := []string{"first", "second", "third", "fourth"}
	served := make(chan struct{})
	go fakeServer(t, theirs, len(payloads), true, served)
	defer waitServed(t, served)
	channels := make([]chan reply, len(payloads))
	for i, p := range payloads {
		_, ch, err := b.call(request(p))
		if err != nil {
			t.Fatalf("call: %v", err)
		}
		channels[i] = ch
	}
	for i, p := range payloads {
		select {
		case r := <-channels[i]:
			want := []byte(p)
			for l, h := 0, len(want)-1; l < h; l, h = l+1, h-1 {
				want[l], want[h] = want[h], want[l]
			}
			if r.code != 0 || string(r.payload) != string(want) {
				t.Errorf("call %d got (%d, %q), want (0, %q)", i, r.code, r.payload, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("call %d got no reply", i)
		}
	}
}

func TestAClosedBridgeFailsPendingAndLaterCallsAsUnavailable(t *testing.T) {
	ours, theirs := net.Pipe()
	b := newBridge(ours, 1<<20)
	go func() { // read the call, then hang up without answering
		r := bufio.NewReader(theirs)
		readFrame(r, make([]byte, headerBytes), 1<<20)
		theirs.Close()
	}()
	_, ch, err := b.call(request("x"))
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	expectUnavailable(t, ch, "the pending call never failed")
	<-b.done
	if _, _, err := b.call(request("y")); err == nil {
		t.Error("a call on a closed bridge succeeded")
	}
}

func TestAnOversizeReplyFrameClosesTheBridge(t *testing.T) {
	ours, theirs := net.Pipe()
	defer theirs.Close()
	b := newBridge(ours, 16)
	go func() {
		r := bufio.NewReader(theirs)
		id, _, _, _ := readFrame(r, make([]byte, headerBytes), 1<<20)
		theirs.Write(encodeFrame(id, 0, 17))
	}()
	_, ch, err := b.call(request("x"))
	if err != nil {
		t.Fatalf("call: %v", err)
	}
	expectUnavailable(t, ch, "the oversize frame did not close the bridge")
}

func TestForgottenCallsDropTheirReply(t *testing.T) {
	ours, theirs := net.Pipe()
	defer ours.Close()
	b := newBridge(ours, 1<<20)
	served := make(chan struct{})
	go fakeServer(t, theirs, 2, false, served)
	defer waitServed(t, served)
	id, first, _ := b.call(request("gone"))
	b.forget(id)
	_, second, _ := b.call(request("kept"))
	select {
	case r := <-second:
		if string(r.payload) != "tpek" {
			t.Errorf("got %q", r.payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no reply")
	}
	// Replies are handled in order: "gone"'s was read before "kept"'s arrived.
	select {
	case r := <-first:
		t.Errorf("a forgotten call got a reply: %q", r.payload)
	default:
	}
}

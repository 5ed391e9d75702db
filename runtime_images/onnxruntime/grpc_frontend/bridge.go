package main

// The bridge to kinfer-ort-server: one stream socket (a Unix socketpair the server
// passes as a file descriptor) carrying length-prefixed frames both ways.
//
//	call  (frontend -> server): u32 payload length | u32 call id | u8 method | payload
//	reply (server -> frontend): u32 payload length | u32 call id | u8 gRPC code | payload
//
// Integers are little-endian. A call's payload is the serialized request message; a
// reply's is the serialized response when the code is 0 (OK), else the error's UTF-8
// details. Call id 0 is the server's: the frontend's hello (method 0, payload the gRPC
// address it listens on) once its listener is bound. Calls are answered in any order,
// so many are in flight on the one socket.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

const headerBytes = 9

// reply is the server's answer to one call.
type reply struct {
	code    uint8
	payload []byte
}

// errBridgeClosed answers every call once the server's end of the socket is gone.
var errBridgeClosed = errors.New("kinfer-ort-server closed the bridge")

// bridge multiplexes calls over the socket. A caller writes its own frame when no write
// is under way (no hand-off to another goroutine when idle); while one is, frames queue
// and the writing caller sends them all in one writev before it returns. One reader
// goroutine hands replies to their callers.
type bridge struct {
	conn     net.Conn
	maxFrame int
	nextID   atomic.Uint32

	writeMu sync.Mutex
	queued  net.Buffers
	writing bool

	mu      sync.Mutex
	pending map[uint32]chan reply
	closed  bool
	done    chan struct{}
	err     error
}

func newBridge(conn net.Conn, maxFrame int) *bridge {
	b := &bridge{
		conn:     conn,
		maxFrame: maxFrame,
		pending:  make(map[uint32]chan reply),
		done:     make(chan struct{}),
	}
	go b.readLoop()
	return b
}

// encodeFrame lays out a frame whose payload space the caller fills (one allocation).
func encodeFrame(id uint32, tag uint8, payloadLen int) []byte {
	frame := make([]byte, headerBytes+payloadLen)
	binary.LittleEndian.PutUint32(frame[0:4], uint32(payloadLen))
	binary.LittleEndian.PutUint32(frame[4:8], id)
	frame[8] = tag
	return frame
}

// readFrame reads one frame: (id, tag, payload).
func readFrame(r io.Reader, header []byte, maxFrame int) (uint32, uint8, []byte, error) {
	if _, err := io.ReadFull(r, header); err != nil {
		return 0, 0, nil, err
	}
	size := int(binary.LittleEndian.Uint32(header[0:4]))
	if size > maxFrame {
		return 0, 0, nil, fmt.Errorf("bridge frame of %d bytes is over the %d byte limit", size, maxFrame)
	}
	payload := make([]byte, size)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, 0, nil, err
	}
	return binary.LittleEndian.Uint32(header[4:8]), header[8], payload, nil
}

// call sends a prepared frame (its id bytes are filled here) and returns its reply
// channel. Cancel with forget when the caller stops waiting.
func (b *bridge) call(frame []byte) (uint32, chan reply, error) {
	id := b.nextID.Add(1)
	if id == 0 { // 0 is the hello's; skip it when the counter wraps
		id = b.nextID.Add(1)
	}
	binary.LittleEndian.PutUint32(frame[4:8], id)
	ch := make(chan reply, 1)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return 0, nil, b.err
	}
	b.pending[id] = ch
	b.mu.Unlock()
	if err := b.write(frame); err != nil {
		b.forget(id)
		return 0, nil, err
	}
	return id, ch, nil
}

// forget drops a call whose caller has gone (cancelled, deadline): its reply is discarded.
func (b *bridge) forget(id uint32) {
	b.mu.Lock()
	delete(b.pending, id)
	b.mu.Unlock()
}

// send writes a frame that expects no reply (the hello).
func (b *bridge) send(frame []byte) error {
	return b.write(frame)
}

// write queues the frame; unless another caller is writing, it writes everything queued
// (its own frame and those queued meanwhile) until the queue is empty.
func (b *bridge) write(frame []byte) error {
	b.writeMu.Lock()
	b.queued = append(b.queued, frame)
	if b.writing {
		b.writeMu.Unlock()
		return nil // the writing caller sends it
	}
	b.writing = true
	for len(b.queued) > 0 {
		batch := b.queued
		b.queued = nil
		b.writeMu.Unlock()
		_, err := batch.WriteTo(b.conn)
		b.writeMu.Lock()
		if err != nil {
			b.writing = false
			b.queued = nil
			b.writeMu.Unlock()
			b.close(err)
			return err
		}
	}
	b.writing = false
	b.writeMu.Unlock()
	return nil
}

func (b *bridge) readLoop() {
	r := bufio.NewReaderSize(b.conn, 256*1024)
	header := make([]byte, headerBytes)
	for {
		id, code, payload, err := readFrame(r, header, b.maxFrame)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				err = errBridgeClosed
			}
			b.close(err)
			return
		}
		b.mu.Lock()
		ch, ok := b.pending[id]
		delete(b.pending, id)
		b.mu.Unlock()
		if ok {
			ch <- reply{code: code, payload: payload}
		}
	}
}

// close fails every pending call and makes later ones fail at once.
func (b *bridge) close(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return
	}
	b.closed = true
	b.err = err
	close(b.done)
	for id, ch := range b.pending {
		delete(b.pending, id)
		ch <- reply{code: codeUnavailable, payload: []byte(err.Error())}
	}
}

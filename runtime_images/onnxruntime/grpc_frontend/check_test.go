package main

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// inferRequest serializes a ModelInferRequest with one input per (name, datatype, shape)
// and the raw contents given.
func inferRequest(inputs []inputTensor, raw ...[]byte) []byte {
	msg := protowire.AppendTag(nil, 1, protowire.BytesType)
	msg = protowire.AppendString(msg, "mlp")
	for _, in := range inputs {
		var tensor []byte
		tensor = protowire.AppendTag(tensor, fieldName, protowire.BytesType)
		tensor = protowire.AppendString(tensor, in.name)
		tensor = protowire.AppendTag(tensor, fieldDatatype, protowire.BytesType)
		tensor = protowire.AppendString(tensor, in.datatype)
		var packed []byte
		for _, d := range in.shape {
			packed = protowire.AppendVarint(packed, uint64(d))
		}
		tensor = protowire.AppendTag(tensor, fieldShape, protowire.BytesType)
		tensor = protowire.AppendBytes(tensor, packed)
		msg = protowire.AppendTag(msg, fieldInputs, protowire.BytesType)
		msg = protowire.AppendBytes(msg, tensor)
	}
	for _, r := range raw {
		msg = protowire.AppendTag(msg, fieldRawInputs, protowire.BytesType)
		msg = protowire.AppendBytes(msg, r)
	}
	return msg
}

func TestCheckInferRequest(t *testing.T) {
	const limit = 1 << 20
	fp32 := func(shape ...int64) []inputTensor { return []inputTensor{{"input", "FP32", shape}} }
	cases := []struct {
		name string
		msg  []byte
		code codes.Code // codes.OK: passed on to the server
		word string
	}{
		{"valid", inferRequest(fp32(1, 64), make([]byte, 256)), codes.OK, ""},
		{"typed-contents", inferRequest(fp32(1, 64)), codes.OK, ""},
		{"wrong-shape-for-the-model", inferRequest(fp32(1, 63), make([]byte, 252)), codes.OK, ""},
		{"raw-size", inferRequest(fp32(1, 64), make([]byte, 10)), codes.InvalidArgument, "10 raw bytes"},
		{"negative-dim", inferRequest(fp32(1, -64), make([]byte, 256)), codes.InvalidArgument, "inputs[0].shape"},
		{"overflowing-shape", inferRequest(fp32(1<<40, 1<<40), make([]byte, 4)), codes.InvalidArgument, "inputs[0].shape"},
		{"huge-shape", inferRequest(fp32(1<<30, 64)), codes.InvalidArgument, "--max-request-bytes"},
		{"unknown-datatype", inferRequest([]inputTensor{{"input", "FP8", []int64{1}}}, []byte{0}), codes.InvalidArgument, "inputs[0].datatype"},
		{"strings", inferRequest([]inputTensor{{"input", "BYTES", []int64{1}}}, []byte{0}), codes.InvalidArgument, "'BYTES'"},
		{"raw-count", inferRequest(fp32(1, 64), make([]byte, 256), make([]byte, 4)), codes.InvalidArgument, "2 raw_input_contents for 1 inputs"},
		{"oversize", inferRequest(fp32(4097, 64), make([]byte, 4097*64*4)), codes.ResourceExhausted, "--max-request-bytes"},
		{"not-protobuf", []byte{0xff, 0xff, 0xff}, codes.InvalidArgument, "malformed ModelInferRequest"},
		{"truncated", inferRequest(fp32(1, 64), make([]byte, 256))[:20], codes.InvalidArgument, "malformed ModelInferRequest"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := checkInferRequest(c.msg, limit)
			if got := status.Code(err); got != c.code {
				t.Fatalf("code %v, want %v (%v)", got, c.code, err)
			}
			if c.word != "" && !strings.Contains(status.Convert(err).Message(), c.word) {
				t.Errorf("%q does not name %q", status.Convert(err).Message(), c.word)
			}
		})
	}
}

func TestStreamErrorIsAModelStreamInferResponse(t *testing.T) {
	payload := streamError(status.Error(codes.InvalidArgument, "inputs[0].shape: bad"))
	num, typ, n := protowire.ConsumeTag(payload)
	if num != 1 || typ != protowire.BytesType || n < 0 {
		t.Fatalf("field %d type %d, want error_message (1, bytes)", num, typ)
	}
	message, _ := protowire.ConsumeString(payload[n:])
	if message != "inputs[0].shape: bad" {
		t.Errorf("error_message %q", message)
	}
}

func FuzzCheckInferRequest(f *testing.F) {
	f.Add(inferRequest([]inputTensor{{"input", "FP32", []int64{1, 64}}}, make([]byte, 256)))
	f.Add([]byte{0x2a, 0x00})
	f.Fuzz(func(t *testing.T, msg []byte) {
		err := checkInferRequest(msg, 1<<20)
		if code := status.Code(err); code != codes.OK && code != codes.InvalidArgument && code != codes.ResourceExhausted {
			t.Fatalf("code %v", code)
		}
	})
}

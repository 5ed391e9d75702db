package main

// Checks on a ModelInferRequest before it crosses the bridge: what the server would refuse
// without knowing the model (an unknown datatype, a negative or overflowing shape, raw
// bytes that do not match the shape, tensors over --max-request-bytes, a message that is
// no protobuf) is refused here, so that such a payload never reaches the server's process.
// The message is read with protowire, field by field, without building the request: the
// frontend still passes the bytes on unparsed.
//
// Field numbers, from inference.GRPCInferenceService's grpc_service.proto:
//
//	ModelInferRequest:  inputs = 5 (InferInputTensor), raw_input_contents = 7 (bytes)
//	InferInputTensor:   name = 1, datatype = 2, shape = 3 (repeated int64)

import (
	"fmt"
	"math"
	"math/bits"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// itemBytes is the size of one element of each datatype the server serves (BYTES is not).
var itemBytes = map[string]uint64{
	"BOOL": 1, "UINT8": 1, "INT8": 1,
	"UINT16": 2, "INT16": 2, "FP16": 2,
	"UINT32": 4, "INT32": 4, "FP32": 4,
	"UINT64": 8, "INT64": 8, "FP64": 8,
}

const (
	fieldInputs    = 5
	fieldRawInputs = 7
	fieldName      = 1
	fieldDatatype  = 2
	fieldShape     = 3
)

type inputTensor struct {
	name     string
	datatype string
	shape    []int64
}

// checkInferRequest returns the gRPC status error the server would answer for msg, or nil
// when the request may go on to the server (which checks it against the model).
func checkInferRequest(msg []byte, maxTensorBytes uint64) error {
	var inputs []inputTensor
	var raw [][]byte
	err := eachField(msg, func(num protowire.Number, typ protowire.Type, value []byte) error {
		switch {
		case num == fieldInputs && typ == protowire.BytesType:
			tensor, err := parseInput(value)
			if err != nil {
				return err
			}
			inputs = append(inputs, tensor)
		case num == fieldRawInputs && typ == protowire.BytesType:
			raw = append(raw, value)
		}
		return nil
	})
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "malformed ModelInferRequest (not a protobuf message): %v", err)
	}
	var total uint64
	for _, r := range raw {
		total += uint64(len(r))
	}
	if total > maxTensorBytes {
		return status.Errorf(codes.ResourceExhausted, "request tensors of %d bytes exceed --max-request-bytes=%d", total, maxTensorBytes)
	}
	if len(raw) > 0 && len(raw) != len(inputs) {
		return status.Errorf(codes.InvalidArgument, "%d raw_input_contents for %d inputs", len(raw), len(inputs))
	}
	for i, tensor := range inputs {
		if err := checkInput(i, tensor, raw, maxTensorBytes); err != nil {
			return err
		}
	}
	return nil
}

func checkInput(i int, tensor inputTensor, raw [][]byte, maxTensorBytes uint64) error {
	size, known := itemBytes[tensor.datatype]
	if !known {
		return status.Errorf(codes.InvalidArgument, "inputs[%d].datatype: input '%s': datatype '%s' is not supported; valid: %s", i, tensor.name, tensor.datatype, validDatatypes())
	}
	count := uint64(1)
	for _, dim := range tensor.shape {
		if dim < 0 {
			return status.Errorf(codes.InvalidArgument, "inputs[%d].shape: input '%s': shape %s has a negative dimension", i, tensor.name, shapeString(tensor.shape))
		}
		hi, lo := bits.Mul64(count, uint64(dim))
		if hi != 0 {
			count = math.MaxUint64
			break
		}
		count = lo
	}
	hi, need := bits.Mul64(count, size)
	if hi != 0 || need > maxTensorBytes {
		return status.Errorf(codes.InvalidArgument, "inputs[%d].shape: input '%s': shape %s of %s needs more than --max-request-bytes=%d", i, tensor.name, shapeString(tensor.shape), tensor.datatype, maxTensorBytes)
	}
	if len(raw) > 0 && uint64(len(raw[i])) != need {
		return status.Errorf(codes.InvalidArgument, "inputs[%d]: input '%s': %d raw bytes but shape %s of %s needs %d", i, tensor.name, len(raw[i]), shapeString(tensor.shape), tensor.datatype, need)
	}
	return nil
}

func parseInput(msg []byte) (inputTensor, error) {
	var tensor inputTensor
	err := eachField(msg, func(num protowire.Number, typ protowire.Type, value []byte) error {
		switch {
		case num == fieldName && typ == protowire.BytesType:
			tensor.name = string(value)
		case num == fieldDatatype && typ == protowire.BytesType:
			tensor.datatype = string(value)
		case num == fieldShape && typ == protowire.BytesType: // packed
			for len(value) > 0 {
				v, n := protowire.ConsumeVarint(value)
				if n < 0 {
					return protowire.ParseError(n)
				}
				tensor.shape = append(tensor.shape, int64(v))
				value = value[n:]
			}
		case num == fieldShape && typ == protowire.VarintType: // unpacked
			v, _ := protowire.ConsumeVarint(value)
			tensor.shape = append(tensor.shape, int64(v))
		}
		return nil
	})
	return tensor, err
}

// eachField calls fn with each field of msg; value is the field's payload for length-
// delimited fields and its encoded bytes for the rest.
func eachField(msg []byte, fn func(protowire.Number, protowire.Type, []byte) error) error {
	for len(msg) > 0 {
		num, typ, n := protowire.ConsumeTag(msg)
		if n < 0 {
			return protowire.ParseError(n)
		}
		msg = msg[n:]
		var value []byte
		if typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(msg)
			if m < 0 {
				return protowire.ParseError(m)
			}
			value, n = v, m
		} else {
			n = protowire.ConsumeFieldValue(num, typ, msg)
			if n < 0 {
				return protowire.ParseError(n)
			}
			value = msg[:n]
		}
		if err := fn(num, typ, value); err != nil {
			return err
		}
		msg = msg[n:]
	}
	return nil
}

func shapeString(shape []int64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func validDatatypes() string {
	return "BOOL, FP16, FP32, FP64, INT16, INT32, INT64, INT8, UINT16, UINT32, UINT64, UINT8"
}

// streamError is a serialized ModelStreamInferResponse carrying only error_message (field
// 1): a stream's answer to a request the frontend refused; the stream goes on.
func streamError(err error) []byte {
	message := status.Convert(err).Message()
	return protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), message)
}

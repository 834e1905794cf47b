package main

// gRPC modes: DTM's gRPC client (github.com/dtm-labs/client/dtmgrpc, unchanged)
// against Concord's gRPC API; -dtm is then the gRPC address, host:port. The
// branches are HTTP (test/helpers' bank and saga services): DTM's gRPC API
// takes HTTP branch URLs, and calls them with the payload bytes as the body.
//
//	grpc-new-gid           MustGenGid; prints the gid on a line of its own
//	grpc-submit            msg: TransOut, TransIn with payload {"amount":30}; Submit
//	grpc-prepare-submit    the same, Prepare(busi/QueryPrepared) first
//	grpc-prepare-abort     Prepare(busi/QueryPrepared), then Abort
//	grpc-msg-bytes         msg with one step, busi/raw, whose payload is the protobuf
//	                       wrapperspb.Bytes{0x00, 0xff, 0x10, 0x00} (0a 04 00 ff 10 00):
//	                       bytes with NUL that are not UTF-8
//	grpc-saga              saga s1, s2 (busi/sN/action, busi/sN/compensate, {"amount":30})
//	grpc-saga-wait         the same with WaitResult
//	grpc-saga-concurrent   three steps, EnableConcurrent, AddBranchOrder(2, [0, 1])
//	grpc-saga-headers      WithBranchHeaders {"test_header": "x"}
//	grpc-tcc               TccGlobalTransaction2 over gRPC with HTTP branches: each
//	                       branch registered with RegisterBranch (Confirm and Cancel
//	                       URLs, BusiPayload {"amount":30}) and its Try called over
//	                       HTTP as dtmcli's TCC does (dtmgrpc's CallBranch calls Trys
//	                       over gRPC only); a Try that fails makes the client Abort
//
// -token T adds the metadata "authorization: Bearer T" to every call
// (dtmgrpc.AddUnaryInterceptor). The payloads of JSON steps are set as bytes:
// dtmgrpc's Add marshals a proto.Message, and an HTTP branch wants JSON.

import (
	"context"
	"fmt"
	"strings"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/dtm-labs/client/dtmcli/dtmimp"
	"github.com/dtm-labs/client/dtmgrpc"
	"github.com/dtm-labs/client/dtmgrpc/dtmgimp"
	"github.com/dtm-labs/client/dtmgrpc/dtmgpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

var jsonAmount = []byte(`{"amount":30}`)

func runGrpc(mode, dtm, gid, base string, opts options, token string) error {
	if token != "" {
		dtmgrpc.AddUnaryInterceptor(func(ctx context.Context, method string, req, reply interface{}, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
			return invoker(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token), method, req, reply, cc, o...)
		})
	}
	if mode == "grpc-new-gid" {
		g := dtmgrpc.MustGenGid(dtm)
		fmt.Println(g)
		finish(result{Ok: true, Gid: g})
	}
	if base == "" {
		return fmt.Errorf("-busi is required for mode %s", mode)
	}
	if gid == "" {
		gid = dtmgrpc.MustGenGid(dtm)
	}
	switch {
	case strings.HasPrefix(mode, "grpc-saga"):
		return runGrpcSaga(mode, dtm, gid, base, opts)
	case mode == "grpc-tcc":
		return runGrpcTcc(dtm, gid, base, opts)
	}
	return runGrpcMsg(mode, dtm, gid, base, opts)
}

func runGrpcMsg(mode, dtm, gid, base string, opts options) error {
	msg := dtmgrpc.NewMsgGrpc(dtm, gid)
	opts.apply(&msg.TransBase)
	if mode == "grpc-msg-bytes" {
		msg.Add(base+"/raw", wrapperspb.Bytes([]byte{0x00, 0xff, 0x10, 0x00}))
		return msg.Submit()
	}
	for _, path := range []string{"/TransOut", "/TransIn"} {
		msg.Steps = append(msg.Steps, map[string]string{"action": base + path})
		msg.BinPayloads = append(msg.BinPayloads, jsonAmount)
	}
	queryPrepared := base + "/QueryPrepared"
	switch mode {
	case "grpc-submit":
		return msg.Submit()
	case "grpc-prepare-submit":
		if err := msg.Prepare(queryPrepared); err != nil {
			return err
		}
		return msg.Submit()
	case "grpc-prepare-abort":
		if err := msg.Prepare(queryPrepared); err != nil {
			return err
		}
		return dtmgimp.DtmGrpcCall(&msg.TransBase, "Abort")
	}
	usage(mode)
	return nil
}

func runGrpcSaga(mode, dtm, gid, base string, opts options) error {
	var topts []dtmgrpc.TransBaseOption
	if mode == "grpc-saga-headers" {
		topts = append(topts, dtmgrpc.WithBranchHeaders(map[string]string{"test_header": "x"}))
	}
	saga := dtmgrpc.NewSagaGrpc(dtm, gid, topts...)
	steps := 2
	if mode == "grpc-saga-concurrent" {
		steps = 3
	}
	for i := 1; i <= steps; i++ {
		step := fmt.Sprintf("%s/s%d", base, i)
		saga.Steps = append(saga.Steps, map[string]string{"action": step + "/action", "compensate": step + "/compensate"})
		saga.BinPayloads = append(saga.BinPayloads, jsonAmount)
	}
	opts.apply(&saga.TransBase)
	saga.RetryLimit = opts.retryLimit
	switch mode {
	case "grpc-saga", "grpc-saga-headers":
	case "grpc-saga-wait":
		saga.WaitResult = true
	case "grpc-saga-concurrent":
		saga.EnableConcurrent()
		saga.AddBranchOrder(2, []int{0, 1})
	default:
		usage(mode)
	}
	return saga.Submit()
}

func runGrpcTcc(dtm, gid, base string, opts options) error {
	return dtmgrpc.TccGlobalTransaction2(dtm, gid, func(t *dtmgrpc.TccGrpc) { opts.apply(&t.TransBase) }, func(t *dtmgrpc.TccGrpc) error {
		for _, side := range []string{"Out", "In"} {
			url := base + "/Trans" + side
			branchID := t.NewSubBranchID()
			_, err := dtmgimp.MustGetDtmClient(t.Dtm).RegisterBranch(context.Background(), &dtmgpb.DtmBranchRequest{
				Gid:         t.Gid,
				TransType:   t.TransType,
				BranchID:    branchID,
				BusiPayload: jsonAmount,
				Data:        map[string]string{"confirm": url + "Confirm", "cancel": url + "Cancel"},
			})
			if err != nil {
				return err
			}
			resp, err := dtmimp.TransRequestBranch(&t.TransBase, "POST", map[string]interface{}{"amount": 30}, branchID, dtmimp.OpTry, url+"Try")
			if err == nil {
				err = dtmcli.HTTPResp2DtmError(resp)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

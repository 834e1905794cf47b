package main

// gRPC branches: a branch service written with DTM's Go client library
// (mode grpcb-busi), and the modes that drive DTM's gRPC client (dtmgrpc)
// through transactions whose branches are its methods (grpcb-*). -busi is
// the service's host:port; a branch URL is <busi>/busi.Busi/<Method>.
//
// The service needs no protoc: its grpc.ServiceDesc is written by hand, and
// every method takes a google.protobuf.BytesValue and answers
// google.protobuf.Empty. It keeps its state in the test's Postgres database
// (-db), in tables the test makes (test/helpers/grpc-busi.ts):
//
//	busi_calls(gid, branch_id, op, method, payload, metadata, started, ended, answer)
//	                    every call, with its DTM metadata and all the metadata as JSON
//	busi_effects(gid, branch_id, op, method)
//	                    one row per business effect, written inside DTM's barrier
//	                    (dtmgrpc.BarrierFromGrpc + CallWithDB), so duplicates and
//	                    null compensations leave none
//	busi_plan(gid, method, result, times)
//	                    what a method answers for a gid: failure (Aborted), ongoing
//	                    (FailedPrecondition) or error (Unavailable), times more
//	                    times (null: always); no row: OK
//
// Methods: TransOut, TransIn, TransFee, each with the suffixes Revert (saga
// compensation), Try, Confirm, Cancel (TCC); XaTransOut and XaTransIn
// (dtmgrpc.XaLocalTransaction: the effect is written inside the XA
// transaction); QueryPrepared (bb.QueryPrepared on the barrier);
// TransInNestedTry (TccFromGrpc, then CallBranch of TransInTry as sub-branch
// 0201) with TransInNestedConfirm and TransInNestedCancel; and
// DTM's workflow service (workflow.InitGrpc), which resumes grpcb-wf and
// grpcb-wf-tcc.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/dtm-labs/client/dtmcli/dtmimp"
	"github.com/dtm-labs/client/dtmgrpc"
	"github.com/dtm-labs/client/dtmgrpc/dtmgimp"
	"github.com/dtm-labs/client/dtmgrpc/dtmgpb"
	"github.com/dtm-labs/client/workflow"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

const busiService = "busi.Busi"

// busiPayload is every step's request: the BytesValue {"amount":30}.
var busiPayload = wrapperspb.Bytes(jsonAmount)

type busiHandler func(ctx context.Context, method string, req *wrapperspb.BytesValue) error

type busi struct {
	db   *sql.DB
	conf dtmcli.DBConf
}

// openBusiDB opens -db (postgres://…) for the barrier, and says so to dtmcli.
func openBusiDB(raw string) (*sql.DB, dtmcli.DBConf, error) {
	conf, err := dbConf(raw)
	if err != nil {
		return nil, conf, err
	}
	if conf.Driver != dtmimp.DBTypePostgres {
		return nil, conf, fmt.Errorf("-db: grpcb modes take postgres://")
	}
	dtmcli.SetCurrentDBType(conf.Driver)
	db, err := dtmimp.PooledDB(conf)
	return db, conf, err
}

// unaryMethod adapts a handler to a grpc.MethodDesc, as protoc's generated code does.
func unaryMethod(name string, h busiHandler) grpc.MethodDesc {
	call := func(ctx context.Context, req interface{}) (interface{}, error) {
		return &emptypb.Empty{}, h(ctx, name, req.(*wrapperspb.BytesValue))
	}
	return grpc.MethodDesc{MethodName: name, Handler: func(_ interface{}, ctx context.Context, dec func(interface{}) error, icpt grpc.UnaryServerInterceptor) (interface{}, error) {
		in := new(wrapperspb.BytesValue)
		if err := dec(in); err != nil {
			return nil, err
		}
		if icpt == nil {
			return call(ctx, in)
		}
		return icpt(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/" + busiService + "/" + name}, call)
	}}
}

// record writes the call to busi_calls, and returns a function recording its answer.
func (b *busi) record(ctx context.Context, method string, req *wrapperspb.BytesValue) func(error) {
	md, _ := metadata.FromIncomingContext(ctx)
	tb := dtmgimp.TransBaseFromGrpc(ctx)
	all, _ := json.Marshal(md)
	var id int64
	err := b.db.QueryRow(`insert into busi_calls (gid, branch_id, op, method, payload, metadata, started)
		values ($1, $2, $3, $4, $5, $6, clock_timestamp()) returning id`,
		tb.Gid, tb.BranchID, tb.Op, method, req.Value, string(all)).Scan(&id)
	if err != nil {
		fmt.Fprintln(os.Stderr, "busi: recording a call:", err)
	}
	return func(answer error) {
		_, _ = b.db.Exec(`update busi_calls set ended = clock_timestamp(), answer = $2 where id = $1`, id, fmt.Sprint(status.Code(answer)))
	}
}

// planned is what busi_plan says the method answers this time (nil: OK).
func (b *busi) planned(gid, method string) error {
	var result string
	err := b.db.QueryRow(`update busi_plan set times = times - 1
		where gid = $1 and method = $2 and (times is null or times > 0) returning result`, gid, method).Scan(&result)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil
	case err != nil:
		return status.Error(codes.Internal, err.Error())
	case result == "failure":
		return status.Error(codes.Aborted, "planned FAILURE")
	case result == "ongoing":
		return status.Error(codes.FailedPrecondition, "planned ONGOING")
	}
	return status.Error(codes.Unavailable, "planned error")
}

func (b *busi) effect(tx *sql.Tx, gid, branchID, op, method string) error {
	_, err := tx.Exec(`insert into busi_effects (gid, branch_id, op, method) values ($1, $2, $3, $4)`, gid, branchID, op, method)
	return err
}

// barrierBranch is a saga / TCC / workflow branch: the plan first, then the effect inside DTM's barrier.
func (b *busi) barrierBranch(ctx context.Context, method string, req *wrapperspb.BytesValue) (err error) {
	done := b.record(ctx, method, req)
	defer func() { done(err) }()
	bb, err := dtmgrpc.BarrierFromGrpc(ctx)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if err := b.planned(bb.Gid, method); err != nil {
		return err
	}
	return dtmgrpc.DtmError2GrpcError(bb.CallWithDB(b.db, func(tx *sql.Tx) error {
		return b.effect(tx, bb.Gid, bb.BranchID, bb.Op, method)
	}))
}

// xaBranch is an XA branch: phase one writes the effect inside the local XA transaction.
func (b *busi) xaBranch(ctx context.Context, method string, req *wrapperspb.BytesValue) (err error) {
	done := b.record(ctx, method, req)
	defer func() { done(err) }()
	return dtmgrpc.DtmError2GrpcError(dtmgrpc.XaLocalTransaction(ctx, b.conf, func(db *sql.DB, xa *dtmgrpc.XaGrpc) error {
		if err := b.planned(xa.Gid, method); err != nil {
			return dtmgrpc.GrpcError2DtmError(err)
		}
		_, err := db.Exec(`insert into busi_effects (gid, branch_id, op, method) values ($1, $2, $3, $4)`, xa.Gid, xa.BranchID, xa.Op, method)
		return err
	}))
}

// queryPrepared is the msg check-back: the barrier says whether the local transaction committed.
func (b *busi) queryPrepared(ctx context.Context, method string, req *wrapperspb.BytesValue) (err error) {
	done := b.record(ctx, method, req)
	defer func() { done(err) }()
	bb, err := dtmgrpc.BarrierFromGrpc(ctx)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if err := b.planned(bb.Gid, method); err != nil {
		return err
	}
	return dtmgrpc.DtmError2GrpcError(bb.QueryPrepared(b.db))
}

// nestedTry is a TCC Try that nests: it continues the global TCC with
// TccFromGrpc and calls TransInTry (Confirm, Cancel) as its sub-branch, 0201.
func (b *busi) nestedTry(addr string) busiHandler {
	return func(ctx context.Context, method string, req *wrapperspb.BytesValue) (err error) {
		done := b.record(ctx, method, req)
		defer func() { done(err) }()
		tcc, err := dtmgrpc.TccFromGrpc(ctx)
		if err != nil {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		url := func(m string) string { return addr + "/" + busiService + "/" + m }
		return tcc.CallBranch(req, url("TransInTry"), url("TransInConfirm"), url("TransInCancel"), &emptypb.Empty{})
	}
}

// serveGrpcBusi serves busi.Busi and DTM's workflow service on -listen (default
// a free loopback port), prints host:port on a line of its own, and serves until killed.
func serveGrpcBusi(dtm, rawDB, listen string) error {
	db, conf, err := openBusiDB(rawDB)
	if err != nil {
		return err
	}
	b := &busi{db: db, conf: conf}
	desc := grpc.ServiceDesc{ServiceName: busiService, HandlerType: (*interface{})(nil), Metadata: "busi.proto"}
	for _, base := range []string{"TransOut", "TransIn", "TransFee"} {
		for _, suffix := range []string{"", "Revert", "Try", "Confirm", "Cancel"} {
			desc.Methods = append(desc.Methods, unaryMethod(base+suffix, b.barrierBranch))
		}
	}
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	addr := ln.Addr().String()
	desc.Methods = append(desc.Methods, unaryMethod("XaTransOut", b.xaBranch), unaryMethod("XaTransIn", b.xaBranch),
		unaryMethod("QueryPrepared", b.queryPrepared), unaryMethod("TransInNestedTry", b.nestedTry(addr)),
		unaryMethod("TransInNestedConfirm", b.barrierBranch), unaryMethod("TransInNestedCancel", b.barrierBranch))
	s := grpc.NewServer(grpc.UnaryInterceptor(dtmgimp.GrpcServerLog))
	s.RegisterService(&desc, struct{}{})
	workflow.InitGrpc(dtm, addr, s) // the coordinator resumes grpcb-wf here
	if err := registerGrpcWorkflows(addr, 0, options{}); err != nil {
		return err
	}
	fmt.Println(addr)
	return s.Serve(ln)
}

// The workflows: grpcb-wf, saga-style, and grpcb-wf-tcc, TCC-style.
const grpcWfName, grpcWfTccName = "grpcb-wf", "grpcb-wf-tcc"

// registerGrpcWorkflows registers the two workflows, whose branches are
// busi's gRPC methods called through workflow.Interceptor. grpcb-wf: TransOut
// (OnRollback TransOutRevert), then TransIn (OnRollback TransInRevert).
// grpcb-wf-tcc: TransOutTry (OnCommit TransOutConfirm, OnRollback
// TransOutCancel), then TransInTry likewise. crashAfter 1 SIGKILLs the
// process once branch 1 is recorded.
func registerGrpcWorkflows(busiAddr string, crashAfter int, opts options) error {
	conn, err := grpc.Dial(busiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUnaryInterceptor(workflow.Interceptor))
	if err != nil {
		return err
	}
	call := func(ctx context.Context, method string, data []byte) error {
		req := &wrapperspb.BytesValue{}
		if err := proto.Unmarshal(data, req); err != nil {
			return fmt.Errorf("workflow input: %w", err)
		}
		return conn.Invoke(ctx, "/"+busiService+"/"+method, req, &emptypb.Empty{})
	}
	for _, name := range []string{grpcWfName, grpcWfTccName} {
		tcc := name == grpcWfTccName
		err := workflow.Register(name, func(wf *workflow.Workflow, data []byte) error {
			for i, base := range []string{"TransOut", "TransIn"} {
				base, action := base, base
				if tcc {
					action = base + "Try"
					wf.NewBranch().OnRollback(func(bb *dtmcli.BranchBarrier) error { return call(wf.Context, base+"Cancel", data) })
					wf.OnCommit(func(bb *dtmcli.BranchBarrier) error { return call(wf.Context, base+"Confirm", data) })
				} else {
					wf.NewBranch().OnRollback(func(bb *dtmcli.BranchBarrier) error { return call(wf.Context, base+"Revert", data) })
				}
				if err := call(wf.Context, action, data); err != nil {
					return err
				}
				if crashAfter == i+1 {
					_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				}
			}
			return nil
		}, func(wf *workflow.Workflow) { opts.apply(wf.TransBase) })
		if err != nil {
			return err
		}
	}
	return nil
}

type grpcbFlags struct {
	dtm, gid, busi, busi2, db string
	crashAfter                int
	tcc, headers              bool
	opts                      options
}

// setup applies the option flags, and -headers: WithBranchHeaders {"test_header": "x"}.
func (f grpcbFlags) setup(t *dtmimp.TransBase) {
	f.opts.apply(t)
	if f.headers {
		dtmgrpc.WithBranchHeaders(map[string]string{"test_header": "x"})(t)
	}
}

// runGrpcBusi drives one grpcb-* mode (see test/compat/README.md).
func runGrpcBusi(mode string, f grpcbFlags) error {
	if f.busi == "" {
		return fmt.Errorf("-busi (host:port of the gRPC busi) is required for mode %s", mode)
	}
	if f.gid == "" {
		f.gid = dtmgrpc.MustGenGid(f.dtm)
	}
	url := func(method string) string { return f.busi + "/" + busiService + "/" + method }
	var empty emptypb.Empty
	switch mode {
	case "grpcb-msg", "grpcb-msg-prepare", "grpcb-msg-prepare-only":
		msg := dtmgrpc.NewMsgGrpc(f.dtm, f.gid).Add(url("TransOut"), busiPayload).Add(url("TransIn"), busiPayload)
		f.setup(&msg.TransBase)
		if mode == "grpcb-msg" {
			return msg.Submit()
		}
		if err := msg.Prepare(url("QueryPrepared")); err != nil || mode == "grpcb-msg-prepare-only" {
			return err
		}
		return msg.Submit()
	case "grpcb-topic": // subscribe TransOut and TransIn to topic t-<gid>, then a msg to the topic
		topic := "t-" + f.gid
		for _, m := range []string{"TransOut", "TransIn"} {
			req := &dtmgpb.DtmTopicRequest{Topic: topic, URL: url(m), Remark: "compat"}
			if _, err := dtmgimp.MustGetDtmClient(f.dtm).Subscribe(context.Background(), req); err != nil {
				return err
			}
		}
		msg := dtmgrpc.NewMsgGrpc(f.dtm, f.gid).AddTopic(topic, busiPayload)
		f.setup(&msg.TransBase)
		return msg.Submit()
	case "grpcb-do-and-submit", "grpcb-do-and-submit-failure", "grpcb-do-and-submit-error", "grpcb-do-and-crash":
		db, _, err := openBusiDB(f.db)
		if err != nil {
			return err
		}
		msg := dtmgrpc.NewMsgGrpc(f.dtm, f.gid).Add(url("TransOut"), busiPayload).Add(url("TransIn"), busiPayload)
		f.setup(&msg.TransBase)
		local := func(tx *sql.Tx) error {
			if _, err := tx.Exec(`insert into busi_effects (gid, branch_id, op, method) values ($1, '00', 'msg', 'local')`, f.gid); err != nil {
				return err
			}
			switch mode {
			case "grpcb-do-and-submit-failure":
				return fmt.Errorf("compat-client: local transaction refused %w", dtmcli.ErrFailure)
			case "grpcb-do-and-submit-error":
				return errLocal
			}
			return nil
		}
		if mode == "grpcb-do-and-crash" { // DoAndSubmit's steps, dying between the commit and Submit
			bb, err := dtmcli.BarrierFrom(msg.TransType, msg.Gid, dtmimp.MsgDoBranch0, dtmimp.MsgDoOp)
			if err == nil {
				err = msg.Prepare(url("QueryPrepared"))
			}
			if err == nil {
				err = bb.CallWithDB(db, local)
			}
			if err == nil {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
			return err
		}
		return msg.DoAndSubmitDB(url("QueryPrepared"), db, local)
	case "grpcb-saga", "grpcb-saga-wait", "grpcb-saga-concurrent", "grpcb-saga-headers", "grpcb-mixed-saga":
		f.headers = f.headers || mode == "grpcb-saga-headers"
		saga := dtmgrpc.NewSagaGrpc(f.dtm, f.gid)
		if mode == "grpcb-mixed-saga" { // step 1 over HTTP (the saga service's s1), with JSON bytes
			saga.Steps = append(saga.Steps, map[string]string{"action": f.busi2 + "/s1/action", "compensate": f.busi2 + "/s1/compensate"})
			saga.BinPayloads = append(saga.BinPayloads, jsonAmount)
		} else {
			saga.Add(url("TransOut"), url("TransOutRevert"), busiPayload)
		}
		saga.Add(url("TransIn"), url("TransInRevert"), busiPayload)
		f.setup(&saga.TransBase)
		saga.RetryLimit = f.opts.retryLimit
		switch mode {
		case "grpcb-saga-wait":
			saga.WaitResult = true
		case "grpcb-saga-concurrent":
			saga.Add(url("TransFee"), url("TransFeeRevert"), busiPayload)
			saga.EnableConcurrent()
			saga.AddBranchOrder(2, []int{0, 1})
		}
		return saga.Submit()
	case "grpcb-tcc", "grpcb-tcc-nested":
		second := "TransIn"
		if mode == "grpcb-tcc-nested" {
			second = "TransInNested" // its Try nests TransIn, as sub-branch 0201
		}
		return dtmgrpc.TccGlobalTransaction2(f.dtm, f.gid, func(t *dtmgrpc.TccGrpc) { f.setup(&t.TransBase) }, func(t *dtmgrpc.TccGrpc) error {
			for _, name := range []string{"TransOut", second} {
				if err := t.CallBranch(busiPayload, url(name+"Try"), url(name+"Confirm"), url(name+"Cancel"), &empty); err != nil {
					return err
				}
			}
			return nil
		})
	case "grpcb-xa":
		return dtmgrpc.XaGlobalTransaction2(f.dtm, f.gid, func(x *dtmgrpc.XaGrpc) { f.setup(&x.TransBase) }, func(x *dtmgrpc.XaGrpc) error {
			if err := x.CallBranch(busiPayload, url("XaTransOut"), &empty); err != nil {
				return err
			}
			return x.CallBranch(busiPayload, url("XaTransIn"), &empty)
		})
	case "grpcb-workflow":
		// The resume URL is the busi's: this process's server is never served, so a
		// workflow it leaves unfinished (-crash-after) is finished there.
		workflow.InitGrpc(f.dtm, f.busi, grpc.NewServer())
		if err := registerGrpcWorkflows(f.busi, f.crashAfter, f.opts); err != nil {
			return err
		}
		name := grpcWfName
		if f.tcc {
			name = grpcWfTccName
		}
		return workflow.Execute(name, f.gid, dtmgimp.MustProtoMarshal(busiPayload))
	}
	usage(mode)
	return nil
}

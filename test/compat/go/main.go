// Command compat-client drives Concord's two-phase message ("msg") and saga
// with DTM's own Go client (github.com/dtm-labs/client/dtmcli, v1.17.3), so
// the tests can check that an unchanged DTM client works against Concord.
//
// Build (what test/compat/setup.ts runs):
//
//	cd test/compat/go && go build -o compat-client .
//
// go.sum is kept next to go.mod, so a plain `go build` (default
// -mod=readonly, default GOPROXY and GOSUMDB=sum.golang.org) works; no
// GOSUMDB=off or GOFLAGS=-mod=mod is needed (checked on go1.26.8 with empty
// module and build caches: 1-2 min cold on 2 cores, downloads plus compile;
// ~3 s warm). setup.ts still builds with `-mod=mod -buildvcs=false` and
// GOTOOLCHAIN=local, so a missing go.sum line is filled in instead of failing
// the build. The module proxy serves v1.17.3 by exact version only (its
// version list answers 403), so bump the version by naming it exactly.
// The go directive stays at 1.21 so no newer toolchain is ever downloaded.
//
// Usage:
//
//	compat-client -dtm http://127.0.0.1:PORT/api/dtmsvr -busi http://127.0.0.1:PORT2 -mode MODE [-gid GID]
//	  [-timeout-to-fail S] [-retry-interval S] [-request-timeout S] [-wait-result] [-delay S] [-retry-limit N]
//
// Msg modes (the message always has two steps, busi/TransOut and busi/TransIn,
// each with payload {"amount":30}; busi/QueryPrepared is the check-back URL):
//
//	submit                 Add, Add, Submit
//	prepare-submit         Add, Add, Prepare(QueryPrepared), Submit
//	prepare-only           Add, Add, Prepare(QueryPrepared), exit (a crash before submit)
//	prepare-abort          Add, Add, Prepare(QueryPrepared), abort
//	new-gid                prints the gid from MustGenGid on a line of its own
//	do-and-submit          DoAndSubmit(QueryPrepared) with a local transaction that succeeds:
//	                       prepare, submit
//	do-and-submit-failure  DoAndSubmit with a local transaction returning ErrFailure:
//	                       prepare, abort; prints ok:false with that error
//	do-and-submit-error    DoAndSubmit with a local transaction returning another error:
//	                       prepare, then the client itself GETs QueryPrepared
//	                       (?dtm&gid&trans_type=msg&branch_id=00&op=msg) and
//	                       aborts on FAILURE / submits on 200; prints ok:false
//	                       with the local error either way
//
// Saga modes (step i, named s1, s2, s3, has action busi/si/action and
// compensate busi/si/compensate, payload {"amount":30}; the paths of
// test/helpers/saga-service.ts):
//
//	saga                   NewSaga, Add(s1), Add(s2), Submit
//	saga-wait              the same with WaitResult = true (as -wait-result): the
//	                       coordinator answers when the saga ended, 409 if it failed;
//	                       prints ok:false with the coordinator's answer then
//	saga-concurrent        three steps, SetConcurrent(), AddBranchOrder(2, []int{0, 1}):
//	                       s1 and s2 at once, s3 after both
//	saga-headers           BranchHeaders {"test_header": "x"}: the coordinator adds it
//	                       to every branch call
//
// -retry-limit sets the saga's RetryLimit (saga modes only).
//
// TCC mode (branches busi/TransOut{Try,Confirm,Cancel} and
// busi/TransIn{Try,Confirm,Cancel}, payload {"amount":30}; the paths of
// test/helpers/bank-service.ts):
//
//	tcc                    TccGlobalTransaction2: prepare, CallBranch(TransOut),
//	                       CallBranch(TransIn), submit; a Try that fails makes the
//	                       client abort (rollback_reason = its error) and print ok:false
//	tcc-nested             nested TCC: CallBranch(TransOut), then CallBranch of a Try
//	                       that this process serves itself on a loopback port
//	                       (/TransInNestedTry): it continues the TCC with
//	                       TccFromQuery and calls CallBranch(TransIn), branch 0201;
//	                       branch 02's Confirm and Cancel are busi/TransInNested{Confirm,Cancel}
//	tcc-nested-busi        the same, but branch 02's Try is busi/TransInNestedTry (the
//	                       business service nests, e.g. with the TypeScript SDK)
//
// Workflow modes (github.com/dtm-labs/client/workflow, HTTP). The workflow
// "compat-wf" has two branches, each an HTTP step recorded by the client
// (wf.NewRequest) with its compensation registered beside it (OnRollback):
// busi/TransOut (rollback busi/TransOutCancel), then busi/TransIn (rollback
// busi/TransInCancel), body = the workflow's input {"amount":30}. The
// callback the coordinator calls to resume it is -callback (default
// busi/workflow/resume). They run outside the panic guard of the other
// modes, so a reply the client cannot read crashes the process (exit code
// 2, no result line) instead of printing an error.
//
//	workflow               Execute("compat-wf", gid, input)
//	                       -fail-local: a third, local branch (wf.Do) returns
//	                       ErrFailure, so both compensations run, TransIn's first
//	                       -tcc: TCC branches instead: busi/TransOutTry as the
//	                       step, OnCommit busi/TransOutConfirm, OnRollback
//	                       busi/TransOutCancel (TransIn likewise)
//	                       -crash-after 1: the process SIGKILLs itself right after
//	                       branch 1 is recorded (a client dying mid-workflow)
//	workflow-serve         serves -callback's path on -listen (host:port) with
//	                       workflow.ExecuteByQS, printing "listening" once it
//	                       accepts; runs until killed
//
// XA modes (test/helpers/xa-bank.ts's paths: each bank serves POST <base>/Trans,
// body {"account","amount"}; see xa.go):
//
//	xa                     XaGlobalTransaction2: prepare, CallBranch(busi/Trans,
//	                       alice -amount), CallBranch(busi2/Trans, bob +amount),
//	                       submit; a branch that fails makes the client abort and
//	                       print ok:false
//	xa-busi                a branch server on -db (mysql://… or postgres://…) whose
//	                       handler is XaLocalTransaction; prints its base URL on a
//	                       line of its own and serves until killed (-dtm unused)
//
// gRPC modes (grpc-new-gid, grpc-submit, grpc-saga, grpc-tcc, ...; -dtm is
// then host:port of the gRPC API): see grpc.go.
//
// Without -gid, a gid is fetched with MustGenGid first. The last stdout line
// is always one JSON object: {"ok":true} (plus "gid" for new-gid) or
// {"ok":false,"error":"..."}; the exit code is 0 or 1 accordingly (2 for bad
// usage).
//
// The Go msg type has no Abort method in v1.17.3: DoAndSubmit aborts through
// dtmimp.TransCallDtm(&msg.TransBase, "abort"), and prepare-abort does the
// same, which sends the whole msg object to /abort.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/dtm-labs/client/dtmcli/dtmimp"
	"github.com/dtm-labs/client/workflow"
	"github.com/dtm-labs/logger"
	"github.com/go-resty/resty/v2"
)

type result struct {
	Ok    bool   `json:"ok"`
	Gid   string `json:"gid,omitempty"`
	Error string `json:"error,omitempty"`
}

func finish(r result) {
	enc := json.NewEncoder(os.Stdout) // one line, ends with \n
	enc.SetEscapeHTML(false)
	_ = enc.Encode(r)
	if r.Ok {
		os.Exit(0)
	}
	os.Exit(1)
}

var errLocal = errors.New("compat-client: simulated local transaction error")

// options are the TransOptions flags, the same for every mode.
type options struct {
	timeoutToFail, retryInterval, requestTimeout, retryLimit int64
	waitResult                                               bool
}

func (o options) apply(t *dtmimp.TransBase) {
	t.TimeoutToFail = o.timeoutToFail
	t.RetryInterval = o.retryInterval
	t.RequestTimeout = o.requestTimeout
	t.WaitResult = o.waitResult
}

func isSaga(mode string) bool { return strings.HasPrefix(mode, "saga") }

func main() {
	dtm := flag.String("dtm", "", "DTM API base, e.g. http://127.0.0.1:36789/api/dtmsvr")
	busi := flag.String("busi", "", "business server base; msg: TransOut, TransIn and QueryPrepared are appended; saga: s1/action, s1/compensate, ...")
	mode := flag.String("mode", "", "submit | prepare-submit | prepare-only | prepare-abort | new-gid | do-and-submit | do-and-submit-failure | do-and-submit-error | saga | saga-wait | saga-concurrent | saga-headers")
	gid := flag.String("gid", "", "global transaction id (fetched with newGid when empty)")
	var opts options
	flag.Int64Var(&opts.timeoutToFail, "timeout-to-fail", 0, "TimeoutToFail option in seconds (0: not sent)")
	flag.Int64Var(&opts.retryInterval, "retry-interval", 0, "RetryInterval option in seconds (0: not sent)")
	flag.Int64Var(&opts.requestTimeout, "request-timeout", 0, "RequestTimeout option in seconds (0: not sent)")
	flag.BoolVar(&opts.waitResult, "wait-result", false, "WaitResult option")
	flag.Int64Var(&opts.retryLimit, "retry-limit", 0, "saga RetryLimit option (0: not sent; saga modes only)")
	busi2 := flag.String("busi2", "", "xa: the second branch's server")
	amount := flag.Int("amount", 30, "xa: the amount moved")
	db := flag.String("db", "", "xa-busi: the branch database, mysql://user:pw@host:port/db or postgres://…")
	barrierTable := flag.String("barrier-table", "", "xa-busi: DTM's barrier table (default dtm_barrier.barrier)")
	callback := flag.String("callback", "", "workflow modes: the URL the coordinator calls to resume (default busi/workflow/resume)")
	listen := flag.String("listen", "", "workflow-serve: host:port to serve the callback on")
	crashAfter := flag.Int("crash-after", 0, "workflow: SIGKILL this process after branch N is recorded (0: never)")
	tccSteps := flag.Bool("tcc", false, "workflow: TCC branches (Try as the step, OnCommit Confirm, OnRollback Cancel)")
	failLocal := flag.Bool("fail-local", false, "workflow: a third branch fails (ErrFailure), so every compensation runs")
	token := flag.String("token", "", "gRPC modes: send the metadata authorization: Bearer <token>")
	delay := flag.Uint64("delay", 0, "SetDelay in seconds, sent as custom_data {\"delay\":N} on submit (0: none; msg modes only)")
	flag.Parse()

	// dtm-labs/logger writes to stdout by default; send it to stderr so stdout
	// carries only the result line. Level from LOG_LEVEL, default debug (the
	// client then logs every request it sends, handy when a test fails).
	logger.InitLog2(dtmimp.OrString(os.Getenv("LOG_LEVEL"), "debug"), logger.StdErr, 0, "")

	if *dtm == "" || *mode == "" {
		fmt.Fprintln(os.Stderr, "usage: compat-client -dtm URL -busi URL -mode MODE [-gid GID]")
		flag.PrintDefaults()
		os.Exit(2)
	}
	if isSaga(*mode) && *delay > 0 || !isSaga(*mode) && opts.retryLimit > 0 {
		fmt.Fprintln(os.Stderr, "-delay is for msg modes, -retry-limit for saga modes")
		os.Exit(2)
	}

	if *mode == "xa-busi" {
		if err := serveXaBusi(*db, *barrierTable); err != nil {
			finish(result{Ok: false, Error: err.Error()})
		}
	}

	if strings.HasPrefix(*mode, "workflow") {
		base := strings.TrimSuffix(*busi, "/")
		if base == "" || *mode == "workflow" && *gid == "" || *mode == "workflow-serve" && *listen == "" {
			fmt.Fprintln(os.Stderr, "mode workflow needs -busi and -gid; workflow-serve needs -busi and -listen")
			os.Exit(2)
		}
		wf := wfFlags{base: base, callback: dtmimp.OrString(*callback, base+"/workflow/resume"), crashAfter: *crashAfter, failLocal: *failLocal, tcc: *tccSteps, opts: opts}
		registerWorkflow(*dtm, wf)
		if *mode == "workflow-serve" {
			serveWorkflow(*listen, wf.callback)
		}
		if err := workflow.Execute(wfName, *gid, []byte(`{"amount":30}`)); err != nil {
			finish(result{Ok: false, Error: err.Error()})
		}
		finish(result{Ok: true})
	}

	err := dtmimp.CatchP(func() {
		if strings.HasPrefix(*mode, "grpc-") { // grpc.go: -dtm is a gRPC address
			if err := runGrpc(*mode, *dtm, *gid, strings.TrimSuffix(*busi, "/"), opts, *token); err != nil {
				panic(err)
			}
			return
		}
		if *mode == "new-gid" {
			g := dtmcli.MustGenGid(*dtm)
			fmt.Println(g)
			finish(result{Ok: true, Gid: g})
		}
		if *busi == "" {
			panic(errors.New("-busi is required for mode " + *mode))
		}
		if *gid == "" {
			*gid = dtmcli.MustGenGid(*dtm)
		}
		base := strings.TrimSuffix(*busi, "/")
		var err error
		if isSaga(*mode) {
			err = runSaga(*mode, *dtm, *gid, base, opts)
		} else if *mode == "tcc" {
			err = runTcc(*dtm, *gid, base, opts)
		} else if *mode == "xa" {
			err = runXa(*dtm, *gid, base, strings.TrimSuffix(*busi2, "/"), *amount, opts)
		} else if strings.HasPrefix(*mode, "tcc-nested") {
			err = runTccNested(*mode, *dtm, *gid, base, opts)
		} else {
			err = runMsg(*mode, *dtm, *gid, base, opts, *delay)
		}
		if err != nil {
			panic(err)
		}
	})
	if err != nil {
		finish(result{Ok: false, Error: err.Error()})
	}
	finish(result{Ok: true})
}

func usage(mode string) {
	fmt.Fprintln(os.Stderr, "unknown mode: "+mode)
	os.Exit(2)
}

func runMsg(mode, dtm, gid, base string, opts options, delay uint64) error {
	req := map[string]interface{}{"amount": 30}
	msg := dtmcli.NewMsg(dtm, gid).
		Add(base+"/TransOut", req).
		Add(base+"/TransIn", req)
	opts.apply(&msg.TransBase)
	if delay > 0 {
		msg.SetDelay(delay)
	}
	queryPrepared := base + "/QueryPrepared"

	switch mode {
	case "submit":
		return msg.Submit()
	case "prepare-submit":
		if err := msg.Prepare(queryPrepared); err != nil {
			return err
		}
		return msg.Submit()
	case "prepare-only":
		return msg.Prepare(queryPrepared)
	case "prepare-abort":
		if err := msg.Prepare(queryPrepared); err != nil {
			return err
		}
		return dtmimp.TransCallDtm(&msg.TransBase, "abort")
	case "do-and-submit":
		return msg.DoAndSubmit(queryPrepared, func(bb *dtmcli.BranchBarrier) error { return nil })
	case "do-and-submit-failure":
		return msg.DoAndSubmit(queryPrepared, func(bb *dtmcli.BranchBarrier) error {
			return fmt.Errorf("compat-client: simulated business failure %w", dtmcli.ErrFailure)
		})
	case "do-and-submit-error":
		return msg.DoAndSubmit(queryPrepared, func(bb *dtmcli.BranchBarrier) error { return errLocal })
	}
	usage(mode)
	return nil
}

func runSaga(mode, dtm, gid, base string, opts options) error {
	req := map[string]interface{}{"amount": 30}
	saga := dtmcli.NewSaga(dtm, gid)
	steps := 2
	if mode == "saga-concurrent" {
		steps = 3
	}
	for i := 1; i <= steps; i++ {
		step := fmt.Sprintf("%s/s%d", base, i)
		saga.Add(step+"/action", step+"/compensate", req)
	}
	opts.apply(&saga.TransBase)
	saga.RetryLimit = opts.retryLimit

	switch mode {
	case "saga":
	case "saga-wait":
		saga.WaitResult = true
	case "saga-concurrent":
		saga.SetConcurrent()
		saga.AddBranchOrder(2, []int{0, 1})
	case "saga-headers":
		saga.BranchHeaders = map[string]string{"test_header": "x"}
	default:
		usage(mode)
	}
	return saga.Submit()
}

const wfName = "compat-wf"

type wfFlags struct {
	base, callback string
	crashAfter     int
	failLocal, tcc bool
	opts           options
}

// registerWorkflow registers compat-wf: two recorded HTTP branches with their rollbacks.
func registerWorkflow(dtm string, f wfFlags) {
	workflow.InitHTTP(dtm, f.callback)
	err := workflow.Register(wfName, func(wf *workflow.Workflow, data []byte) error {
		post := func(url string) error {
			_, err := wf.NewRequest().SetHeader("Content-Type", "application/json").SetBody(data).Post(url)
			return err
		}
		for i, name := range []string{"TransOut", "TransIn"} {
			url := f.base + "/" + name
			branch := wf.NewBranch().OnRollback(func(bb *dtmcli.BranchBarrier) error { return post(url + "Cancel") })
			action := url
			if f.tcc {
				branch.OnCommit(func(bb *dtmcli.BranchBarrier) error { return post(url + "Confirm") })
				action = url + "Try"
			}
			if err := post(action); err != nil {
				return err
			}
			if f.crashAfter == i+1 {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
		}
		if f.failLocal {
			_, err := wf.NewBranch().Do(func(bb *dtmcli.BranchBarrier) ([]byte, error) {
				return nil, fmt.Errorf("compat-client: local branch refused %w", dtmcli.ErrFailure)
			})
			return err
		}
		return nil
	}, func(wf *workflow.Workflow) { f.opts.apply(wf.TransBase) })
	if err != nil {
		panic(err)
	}
}

// serveWorkflow answers the coordinator's resume calls as a DTM service would: 200,
// 409 for ErrFailure (the workflow rolled back), 425 for ErrOngoing, 500 otherwise.
func serveWorkflow(listen, callback string) {
	u, err := url.Parse(callback)
	if err != nil {
		panic(err)
	}
	http.HandleFunc(u.Path, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		err := workflow.ExecuteByQS(r.URL.Query(), body)
		switch {
		case err == nil:
			_, _ = w.Write([]byte(`{"dtm_result":"SUCCESS"}`))
		case errors.Is(err, dtmcli.ErrFailure):
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"dtm_result":"FAILURE"}`))
		case errors.Is(err, dtmcli.ErrOngoing):
			w.WriteHeader(http.StatusTooEarly)
			_, _ = w.Write([]byte(`{"dtm_result":"ONGOING"}`))
		default:
			w.WriteHeader(http.StatusInternalServerError)
			_, _ = w.Write([]byte(err.Error()))
		}
	})
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		panic(err)
	}
	fmt.Println("listening")
	panic(http.Serve(ln, nil))
}

func runTcc(dtm, gid, base string, opts options) error {
	req := map[string]interface{}{"amount": 30}
	return dtmcli.TccGlobalTransaction2(dtm, gid, func(t *dtmcli.Tcc) { opts.apply(&t.TransBase) },
		func(t *dtmcli.Tcc) (*resty.Response, error) {
			for _, name := range []string{"TransOut", "TransIn"} {
				url := base + "/" + name
				if _, err := t.CallBranch(req, url+"Try", url+"Confirm", url+"Cancel"); err != nil {
					return nil, err
				}
			}
			return nil, nil
		})
}

// runTccNested calls TransOut, then a Try that nests TransIn inside it (branch 02,
// sub-branch 0201); in mode tcc-nested that Try is served here, with TccFromQuery.
func runTccNested(mode, dtm, gid, base string, opts options) error {
	nestedTry := base + "/TransInNestedTry"
	if mode == "tcc-nested" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		mux := http.NewServeMux()
		mux.HandleFunc("/TransInNestedTry", func(w http.ResponseWriter, r *http.Request) {
			var body map[string]interface{}
			err := json.NewDecoder(r.Body).Decode(&body)
			var tcc *dtmcli.Tcc
			if err == nil {
				tcc, err = dtmcli.TccFromQuery(r.URL.Query())
			}
			if err == nil {
				_, err = tcc.CallBranch(body, base+"/TransInTry", base+"/TransInConfirm", base+"/TransInCancel")
			}
			// DTM's own mapping: 409 FAILURE, 425 ONGOING, 500 other errors, 200 success.
			code, res := dtmcli.Result2HttpJSON(err)
			w.Header().Set("content-type", "application/json")
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(res)
		})
		go func() { _ = http.Serve(ln, mux) }()
		nestedTry = "http://" + ln.Addr().String() + "/TransInNestedTry"
	} else if mode != "tcc-nested-busi" {
		usage(mode)
	}
	req := map[string]interface{}{"amount": 30}
	return dtmcli.TccGlobalTransaction2(dtm, gid, func(t *dtmcli.Tcc) { opts.apply(&t.TransBase) },
		func(t *dtmcli.Tcc) (*resty.Response, error) {
			if _, err := t.CallBranch(req, base+"/TransOutTry", base+"/TransOutConfirm", base+"/TransOutCancel"); err != nil {
				return nil, err
			}
			return t.CallBranch(req, nestedTry, base+"/TransInNestedConfirm", base+"/TransInNestedCancel")
		})
}

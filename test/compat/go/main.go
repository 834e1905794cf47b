// Command compat-client drives Concord's two-phase message ("msg") with DTM's
// own Go client (github.com/dtm-labs/client/dtmcli, v1.17.3), so the tests
// can check that an unchanged DTM client works against Concord.
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
//	  [-timeout-to-fail S] [-retry-interval S] [-request-timeout S] [-wait-result] [-delay S]
//
// Modes (the message always has two steps, busi/TransOut and busi/TransIn,
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
	"os"
	"strings"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/dtm-labs/client/dtmcli/dtmimp"
	"github.com/dtm-labs/logger"
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

func main() {
	dtm := flag.String("dtm", "", "DTM API base, e.g. http://127.0.0.1:36789/api/dtmsvr")
	busi := flag.String("busi", "", "business server base; TransOut, TransIn and QueryPrepared are appended")
	mode := flag.String("mode", "", "submit | prepare-submit | prepare-only | prepare-abort | new-gid | do-and-submit | do-and-submit-failure | do-and-submit-error")
	gid := flag.String("gid", "", "global transaction id (fetched with newGid when empty)")
	timeoutToFail := flag.Int64("timeout-to-fail", 0, "TimeoutToFail option in seconds (0: not sent)")
	retryInterval := flag.Int64("retry-interval", 0, "RetryInterval option in seconds (0: not sent)")
	requestTimeout := flag.Int64("request-timeout", 0, "RequestTimeout option in seconds (0: not sent)")
	waitResult := flag.Bool("wait-result", false, "WaitResult option")
	delay := flag.Uint64("delay", 0, "SetDelay in seconds, sent as custom_data {\"delay\":N} on submit (0: none)")
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

	err := dtmimp.CatchP(func() {
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
		req := map[string]interface{}{"amount": 30}
		msg := dtmcli.NewMsg(*dtm, *gid).
			Add(base+"/TransOut", req).
			Add(base+"/TransIn", req)
		msg.TimeoutToFail = *timeoutToFail
		msg.RetryInterval = *retryInterval
		msg.RequestTimeout = *requestTimeout
		msg.WaitResult = *waitResult
		if *delay > 0 {
			msg.SetDelay(*delay)
		}
		queryPrepared := base + "/QueryPrepared"

		var err error
		switch *mode {
		case "submit":
			err = msg.Submit()
		case "prepare-submit":
			err = msg.Prepare(queryPrepared)
			if err == nil {
				err = msg.Submit()
			}
		case "prepare-only":
			err = msg.Prepare(queryPrepared)
		case "prepare-abort":
			err = msg.Prepare(queryPrepared)
			if err == nil {
				err = dtmimp.TransCallDtm(&msg.TransBase, "abort")
			}
		case "do-and-submit":
			err = msg.DoAndSubmit(queryPrepared, func(bb *dtmcli.BranchBarrier) error { return nil })
		case "do-and-submit-failure":
			err = msg.DoAndSubmit(queryPrepared, func(bb *dtmcli.BranchBarrier) error {
				return fmt.Errorf("compat-client: simulated business failure %w", dtmcli.ErrFailure)
			})
		case "do-and-submit-error":
			err = msg.DoAndSubmit(queryPrepared, func(bb *dtmcli.BranchBarrier) error { return errLocal })
		default:
			fmt.Fprintln(os.Stderr, "unknown mode: "+*mode)
			os.Exit(2)
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

"""Drives Concord's two-phase message ("msg") and saga with DTM's own Python client.

Uses PyPI dtmcli 1.7.7.0 (see requirements.txt) unchanged, so the tests can
check that it works against Concord. Same command line and output as the Go
driver in ../go/main.go:

    python compat_client.py -dtm http://127.0.0.1:PORT/api/dtmsvr \
        -busi http://127.0.0.1:PORT2 -mode MODE [-gid GID] \
        [-timeout-to-fail S] [-retry-interval S] [-request-timeout S] [-wait-result]

Msg modes (two steps, busi/TransOut and busi/TransIn, each with payload
{"amount": 30}; busi/QueryPrepared is the check-back URL):

    submit                 add, add, submit
    prepare-submit         add, add, prepare(QueryPrepared), submit
    prepare-only           add, add, prepare(QueryPrepared), exit (a crash before submit)
    prepare-abort          add, add, prepare(QueryPrepared), abort
    new-gid                prints the gid from utils.gen_gid on a line of its own
    do-and-submit          do_and_submit with a local transaction that succeeds
    do-and-submit-failure  do_and_submit, local transaction raises DTMFailureError:
                           prepare, abort; prints ok:false
    do-and-submit-error    do_and_submit, local transaction raises another error:
                           prepare, the client GETs QueryPrepared itself, then
                           abort on 409 / submit on 200; prints ok:false

Saga modes (steps s1 and s2: action busi/si/action, compensate
busi/si/compensate, payload {"amount": 30}; the paths of
test/helpers/saga-service.ts):

    saga                   Saga, add(s1), add(s2), submit
    saga-wait              the same with trans_base.wait_result = True (as
                           -wait-result; dtmcli-py's Saga has no setter): the
                           coordinator answers when the saga ended, 409 if it
                           failed (DTMFailureError); prints ok:false then
    saga-headers           trans_base.branch_headers = {"test_header": "x"}

TCC mode (branches busi/TransOut{Try,Confirm,Cancel} and busi/TransIn{Try,Confirm,Cancel},
payload {"amount": 30}; the paths of test/helpers/bank-service.ts):

    tcc                    tcc_global_transaction: prepare, call_branch(TransOut),
                           call_branch(TransIn), submit; when a Try fails the client
                           aborts and returns "": prints ok:false, error "aborted"

dtmcli 1.7.7.0's concurrent saga is broken client-side (add_branch_order and
build_custom_options use attributes Saga never sets), so there is no
saga-concurrent mode; its TransBase has no retry_limit, so -retry-limit is
refused like -delay.

dtmcli 1.7.7.0 has no Msg.abort: like its own do_and_submit, prepare-abort
posts the whole message object to /abort with dtmimp.trans_call_dtm. It has
no delay option either, so -delay is refused.

Without -gid a gid is fetched with utils.gen_gid first. The last stdout line
is one JSON object, {"ok": true} (plus "gid" for new-gid) or
{"ok": false, "error": "..."}; exit code 0 or 1 (2 for bad usage).
"""

import argparse
import json
import sys
import traceback

import requests
from dtmcli import dtmimp, msg, saga, tcc, utils

_send = requests.Session.send


def _logged_send(self, request, **kwargs):
    """Log each request dtmcli sends and its answer to stderr (sent unchanged)."""
    body = request.body.decode() if isinstance(request.body, bytes) else request.body
    sys.stderr.write("requesting: %s %s %s\n" % (request.method, request.url, body))
    resp = _send(self, request, **kwargs)
    sys.stderr.write("answer: %s %s\n" % (resp.status_code, resp.text))
    return resp


requests.Session.send = _logged_send

MODES = [
    "submit",
    "prepare-submit",
    "prepare-only",
    "prepare-abort",
    "new-gid",
    "do-and-submit",
    "do-and-submit-failure",
    "do-and-submit-error",
    "saga",
    "saga-wait",
    "saga-headers",
    "tcc",
]


def apply_options(tb, args):
    """The option flags, on a TransBase (0 / unset: leave dtmcli's default)."""
    if args.timeout_to_fail:
        tb.timeout_to_fail = args.timeout_to_fail
    if args.retry_interval:
        tb.retry_interval = args.retry_interval
    if args.request_timeout:
        tb.request_timeout = args.request_timeout
    if args.wait_result:
        tb.wait_result = True


def run_saga(args, gid, base):
    s = saga.Saga(args.dtm, gid)
    for step in ("s1", "s2"):
        # argument order of dtmcli-py: add(body, action, compensate)
        s.add({"amount": 30}, "%s/%s/action" % (base, step), "%s/%s/compensate" % (base, step))
    tb = s.trans_base
    apply_options(tb, args)
    if args.mode == "saga-wait":
        tb.wait_result = True
    elif args.mode == "saga-headers":
        tb.branch_headers = {"test_header": "x"}
    s.submit()


def run_tcc(args, gid, base):
    req = {"amount": 30}

    def body(t):
        for name in ("TransOut", "TransIn"):
            url = "%s/%s" % (base, name)
            t.call_branch(req, url + "Try", url + "Confirm", url + "Cancel")

    if tcc.tcc_global_transaction(args.dtm, gid, body) == "":
        raise RuntimeError("aborted")


def finish(ok, error=None, gid=None):
    out = {"ok": ok}
    if gid is not None:
        out["gid"] = gid
    if error is not None:
        out["error"] = error
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    sys.exit(0 if ok else 1)


def run(args):
    if args.mode == "new-gid":
        gid = utils.gen_gid(args.dtm)
        print(gid)
        return gid
    if not args.busi:
        raise ValueError("-busi is required for mode " + args.mode)
    if args.delay:
        raise ValueError("-delay is not supported by dtmcli 1.7.7.0")
    if args.retry_limit:
        raise ValueError("-retry-limit is not supported by dtmcli 1.7.7.0")
    gid = args.gid or utils.gen_gid(args.dtm)
    base = args.busi.rstrip("/")
    if args.mode.startswith("saga"):
        run_saga(args, gid, base)
        return None
    if args.mode == "tcc":
        run_tcc(args, gid, base)
        return None
    req = {"amount": 30}
    m = msg.Msg(args.dtm, gid)
    # note the argument order of dtmcli-py: add(body, url)
    m.add(req, base + "/TransOut").add(req, base + "/TransIn")
    tb = m.trans_base
    apply_options(tb, args)
    query_prepared = base + "/QueryPrepared"

    if args.mode == "submit":
        m.submit()
    elif args.mode == "prepare-submit":
        m.prepare(query_prepared)
        m.submit()
    elif args.mode == "prepare-only":
        m.prepare(query_prepared)
    elif args.mode == "prepare-abort":
        m.prepare(query_prepared)
        dtmimp.trans_call_dtm(args.dtm, tb.__dict__, "abort", tb.request_timeout)
    elif args.mode == "do-and-submit":
        m.do_and_submit(query_prepared, lambda bb: None)
    elif args.mode == "do-and-submit-failure":

        def fail(bb):
            raise utils.DTMFailureError("compat-client: simulated business failure FAILURE")

        m.do_and_submit(query_prepared, fail)
    elif args.mode == "do-and-submit-error":

        def error(bb):
            raise RuntimeError("compat-client: simulated local transaction error")

        m.do_and_submit(query_prepared, error)
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-dtm", required=True)
    p.add_argument("-busi", default="")
    p.add_argument("-mode", required=True, choices=MODES)
    p.add_argument("-gid", default="")
    p.add_argument("-timeout-to-fail", dest="timeout_to_fail", type=int, default=0)
    p.add_argument("-retry-interval", dest="retry_interval", type=int, default=0)
    p.add_argument("-request-timeout", dest="request_timeout", type=int, default=0)
    p.add_argument("-wait-result", dest="wait_result", action="store_true")
    p.add_argument("-delay", type=int, default=0)
    p.add_argument("-retry-limit", dest="retry_limit", type=int, default=0)
    args = p.parse_args()
    try:
        gid = run(args)
    except Exception as e:  # noqa: BLE001 - every client error becomes the result line
        traceback.print_exc(file=sys.stderr)
        finish(False, error="%s: %s" % (type(e).__name__, e))
    finish(True, gid=gid)


if __name__ == "__main__":
    main()

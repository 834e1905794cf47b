package main

// XA modes: the global side (XaGlobalTransaction2 with two CallBranch) and a
// branch server whose handler is XaLocalTransaction on a real MySQL/MariaDB or
// Postgres database, both from github.com/dtm-labs/client/dtmcli, unchanged.

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/dtm-labs/client/dtmcli"
	"github.com/dtm-labs/client/dtmcli/dtmimp"
	"github.com/go-resty/resty/v2"
	_ "github.com/go-sql-driver/mysql" // XaLocalTransaction opens the database by driver name
	_ "github.com/lib/pq"
)

// runXa moves 30 from account alice at busi/Trans to account bob at busi2/Trans.
func runXa(dtm, gid, busi, busi2 string, amount int, opts options) error {
	return dtmcli.XaGlobalTransaction2(dtm, gid, func(x *dtmcli.Xa) { opts.apply(&x.TransBase) },
		func(x *dtmcli.Xa) (*resty.Response, error) {
			if _, err := x.CallBranch(map[string]interface{}{"account": "alice", "amount": -amount}, busi+"/Trans"); err != nil {
				return nil, err
			}
			return x.CallBranch(map[string]interface{}{"account": "bob", "amount": amount}, busi2+"/Trans")
		})
}

// dbConf reads mysql://user:password@host:port/db or postgres://user:password@host:port/db.
func dbConf(raw string) (dtmcli.DBConf, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return dtmcli.DBConf{}, err
	}
	port, err := strconv.ParseInt(u.Port(), 10, 64)
	if err != nil {
		return dtmcli.DBConf{}, fmt.Errorf("-db needs a port: %w", err)
	}
	password, _ := u.User.Password()
	conf := dtmcli.DBConf{Host: u.Hostname(), Port: port, User: u.User.Username(), Password: password, Db: strings.TrimPrefix(u.Path, "/")}
	switch u.Scheme {
	case "mysql":
		conf.Driver = dtmimp.DBTypeMysql
	case "postgres", "postgresql":
		conf.Driver = dtmimp.DBTypePostgres
		conf.Schema = "public"
		if password == "" {
			// GetDsn writes "password= dbname=…", which lib/pq reads as a password and no
			// dbname; a server that trusts the user ignores the placeholder.
			conf.Password = "unused"
		}
	default:
		return conf, fmt.Errorf("-db scheme %q: mysql or postgres", u.Scheme)
	}
	return conf, nil
}

// serveXaBusi serves POST /Trans with XaLocalTransaction: the action adds
// amount to account (refused with ErrFailure when the balance would go
// negative); op commit/rollback is phase two. It prints its base URL on
// stdout, then serves until killed.
func serveXaBusi(rawDB, barrierTable string) error {
	conf, err := dbConf(rawDB)
	if err != nil {
		return err
	}
	if barrierTable != "" {
		dtmcli.SetBarrierTableName(barrierTable)
	}
	http.HandleFunc("/Trans", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Account string `json:"account"`
			Amount  int    `json:"amount"`
		}
		_ = json.NewDecoder(r.Body).Decode(&body) // phase two has no body
		err := dtmcli.XaLocalTransaction(r.URL.Query(), conf, func(db *sql.DB, xa *dtmcli.Xa) error {
			n, err := dtmimp.DBExec(conf.Driver, db, "update accounts set balance = balance + ? where id = ? and balance + ? >= 0",
				body.Amount, body.Account, body.Amount)
			if err == nil && n == 0 {
				return fmt.Errorf("account %s cannot take %d: %w", body.Account, body.Amount, dtmcli.ErrFailure)
			}
			return err
		})
		w.Header().Set("Content-Type", "application/json")
		switch {
		case err == nil:
			_, _ = w.Write([]byte(`{"dtm_result":"SUCCESS"}`))
		case errors.Is(err, dtmcli.ErrFailure):
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"dtm_result":"FAILURE"}`))
		default:
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		}
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stdout, "http://%s\n", ln.Addr().String())
	return http.Serve(ln, nil)
}

// Concord's admin UI (docs/admin-ui.md): Preact components written with htm tagged templates, loaded
// by the browser as ES modules, no build step. Every call carries the operator token as a Bearer.
import { h, render } from 'preact';
import { useCallback, useEffect, useState } from 'preact/hooks';
import htm from 'htm';

const html = htm.bind(h);
const statuses = ['prepared', 'submitted', 'aborting', 'succeed', 'failed', 'needs_attention'];
const types = ['msg', 'saga', 'tcc', 'xa', 'workflow'];
const tokenKey = 'concord.operatorToken';
// ?limit=N in the page's URL changes the page size (1 to 1000).
const pageSize = Number(new URLSearchParams(location.search).get('limit')) || 50;
const countsEveryMs = 5000;
// The page may be served as /admin/ or /t/<token>/admin/: the API sits beside "admin".
const base = location.pathname.slice(0, location.pathname.lastIndexOf('/admin/'));

class ApiError extends Error {
  constructor(status, body) {
    super(body?.message ?? `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, { body, query } = {}) {
  const token = sessionStorage.getItem(tokenKey);
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const search = query ? `?${new URLSearchParams(Object.entries(query).filter(([, v]) => v !== '' && v !== undefined))}` : '';
  const response = await fetch(`${base}${path}${search}`, {
    method: body ? 'POST' : 'GET',
    headers: body ? { ...headers, 'content-type': 'application/json' } : headers,
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const json = await response.json().catch(() => undefined);
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

const time = (iso) => (iso ? new Date(iso).toLocaleString() : '');
const Status = ({ value }) => html`<span class=${`status status-${value}`} data-status=${value}>${value}</span>`;

function decodePayload(b64) {
  try {
    const text = new TextDecoder('utf-8', { fatal: true }).decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
    try {
      return JSON.stringify(JSON.parse(text), null, 2);
    } catch {
      return text;
    }
  } catch {
    return `(binary, base64) ${b64}`;
  }
}

function useHash() {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const onChange = () => setHash(location.hash);
    addEventListener('hashchange', onChange);
    return () => removeEventListener('hashchange', onChange);
  }, []);
  return hash;
}

function TokenForm({ message, onToken }) {
  const [token, setToken] = useState('');
  const submit = (e) => {
    e.preventDefault();
    sessionStorage.setItem(tokenKey, token.trim());
    onToken();
  };
  return html`<section>
    <h2>Operator token</h2>
    <p>This coordinator asks for an operator token (docs/security.md). It is kept in this tab only (sessionStorage).</p>
    ${message && html`<p class="error" id="token-error">${message}</p>`}
    <form onSubmit=${submit}>
      <input id="token" type="password" autocomplete="off" size="40" value=${token} onInput=${(e) => setToken(e.target.value)} />
      <button id="token-submit" type="submit">Open</button>
    </form>
  </section>`;
}

function Counts({ onPick }) {
  const [counts, setCounts] = useState();
  useEffect(() => {
    let stopped = false;
    const load = () =>
      api('/api/concord/admin/counts')
        .then((c) => !stopped && setCounts(c))
        .catch(() => {});
    load();
    const timer = setInterval(load, countsEveryMs);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, []);
  if (!counts) return null;
  return html`<div class="counts" id="counts">
    ${statuses.map(
      (s) =>
        html`<span class="count" data-count=${s} onClick=${() => onPick(s)}
          ><${Status} value=${s} /><b>${counts.counts[s] >= counts.cap ? `${counts.cap}+` : counts.counts[s]}</b></span
        >`,
    )}
  </div>`;
}

const emptyFilter = { status: '', transType: '', gidPrefix: '', destination: '', from: '', to: '' };

function Transactions({ filter, setFilter }) {
  const [draft, setDraft] = useState(filter);
  // Remounted per filter (its key), so a new filter starts on the newest page.
  // positions[i] is where page i starts: '' for the newest page, then each page's next_position.
  const [positions, setPositions] = useState(['']);
  const [page, setPage] = useState();
  const [error, setError] = useState();
  const position = positions.at(-1);
  useEffect(() => {
    let current = true;
    const epoch = (local) => (local ? String(new Date(local).getTime()) : '');
    api('/api/dtmsvr/all', {
      query: {
        limit: pageSize,
        position,
        status: filter.status,
        transType: filter.transType,
        gidPrefix: filter.gidPrefix,
        destination: filter.destination,
        createTimeStart: epoch(filter.from),
        createTimeEnd: epoch(filter.to),
      },
    })
      .then((p) => {
        if (!current) return;
        setPage(p);
        setError(undefined);
      })
      .catch((e) => current && setError(e.message));
    // An answer to an older query (the filter or page changed since) is dropped.
    return () => (current = false);
  }, [filter, position]);
  const field = (name) => (e) => setDraft({ ...draft, [name]: e.target.value });
  const apply = (e) => {
    e.preventDefault();
    setPositions(['']);
    setFilter(draft);
  };
  const choose = (name, values) =>
    html`<select id=${`filter-${name}`} value=${draft[name]} onChange=${field(name)}>
      <option value="">any</option>
      ${values.map((v) => html`<option value=${v}>${v}</option>`)}
    </select>`;
  const rows = page?.transactions ?? [];
  return html`<section>
      <form class="filters" onSubmit=${apply}>
        <label>Status ${choose('status', statuses)}</label>
        <label>Type ${choose('transType', types)}</label>
        <label>Gid starts with <input id="filter-gid" value=${draft.gidPrefix} onInput=${field('gidPrefix')} /></label>
        <label
          >Destination starts with
          <input
            id="filter-destination"
            placeholder="http://billing, kafka://main/orders"
            value=${draft.destination}
            onInput=${field('destination')}
        /></label>
        <label>Created from <input id="filter-from" type="datetime-local" value=${draft.from} onInput=${field('from')} /></label>
        <label>to <input id="filter-to" type="datetime-local" value=${draft.to} onInput=${field('to')} /></label>
        <button id="filter-apply" type="submit">Filter</button>
        <button type="button" onClick=${() => (setPositions(['']), setFilter(emptyFilter))}>Clear</button>
      </form>
    </section>
    <section>
      ${error && html`<p class="error">${error}</p>`}
      <table id="transactions">
        <thead>
          <tr>
            <th>gid</th>
            <th>type</th>
            <th>status</th>
            <th>created</th>
            <th>updated</th>
            <th>retries</th>
            <th>reason</th>
          </tr>
        </thead>
        <tbody>
          ${rows.map(
            (t) =>
              html`<tr data-gid=${t.gid}>
                <td><a href=${`#/trans/${encodeURIComponent(t.gid)}`}>${t.gid}</a></td>
                <td>${t.trans_type}</td>
                <td><${Status} value=${t.status} /></td>
                <td>${time(t.create_time)}</td>
                <td>${time(t.update_time)}</td>
                <td>${t.retry_count}</td>
                <td>${t.attention_reason ?? t.rollback_reason ?? ''}</td>
              </tr>`,
          )}
        </tbody>
      </table>
      ${page && rows.length === 0 && html`<p id="no-transactions">No transactions match.</p>`}
      <p>
        <button id="page-newer" disabled=${positions.length === 1} onClick=${() => setPositions(positions.slice(0, -1))}>← Newer</button>
        <button id="page-older" disabled=${!page?.next_position} onClick=${() => setPositions([...positions, page.next_position])}>
          Older →
        </button>
      </p>
    </section>`;
}

/** Asks before an action; `reason` adds a required text field whose value is passed on. */
function Confirm({ action, onDone }) {
  const [reason, setReason] = useState('');
  const [error, setError] = useState();
  const [busy, setBusy] = useState(false);
  const run = async () => {
    setBusy(true);
    try {
      await action.run(reason);
      onDone(`${action.label}: done`);
    } catch (e) {
      setError(e.message);
      setBusy(false);
    }
  };
  return html`<div class="modal" id="confirm">
    <div>
      <strong>${action.label}?</strong>
      <span>${action.explain}</span>
      ${
        action.reason &&
        html`<label>Reason <textarea id="confirm-reason" rows="3" value=${reason} onInput=${(e) => setReason(e.target.value)} /></label>`
      }
      ${error && html`<p class="error" id="confirm-error">${error}</p>`}
      <p>
        <button id="confirm-ok" class="danger" disabled=${busy || (action.reason && reason.trim() === '')} onClick=${run}>
          ${action.label}
        </button>
        ${' '}<button id="confirm-cancel" onClick=${() => onDone()}>Cancel</button>
      </p>
    </div>
  </div>`;
}

function actionsFor(t) {
  const gid = t.gid;
  const list = [];
  if (t.status === 'needs_attention') {
    list.push({
      id: 'redrive',
      label: 'Redrive',
      explain: `Compensate saga ${gid} again, from the compensation that kept failing (fix its cause first).`,
      run: () => api('/api/dtmsvr/redrive', { body: { gid } }),
    });
  }
  if (['prepared', 'submitted', 'aborting'].includes(t.status)) {
    list.push({
      id: 'retry',
      label: 'Retry now',
      explain: `Call the pending branches of ${gid} now instead of at their next retry.`,
      run: () => api('/api/concord/admin/retry', { body: { gid } }),
    });
  }
  if (['prepared', 'submitted', 'aborting', 'needs_attention'].includes(t.status)) {
    list.push({
      id: 'stop',
      label: 'Force-stop',
      explain: `End ${gid} as failed now. Nothing more is called: no compensation runs, so undo by hand what its branches did.`,
      reason: true,
      run: (reason) => api('/api/concord/admin/stop', { body: { gid, reason } }),
    });
  }
  return list;
}

/** Who did what to a subject and when (operator_actions), newest first. */
function History({ kind, subject, version }) {
  const [actions, setActions] = useState();
  useEffect(() => {
    api('/api/concord/admin/actions', { query: { kind, subject } })
      .then((r) => setActions(r.actions))
      .catch(() => setActions(undefined));
  }, [kind, subject, version]);
  if (!actions) return null;
  return html`<h3>Operator actions</h3>
    ${
      actions.length === 0
        ? html`<p class="no-actions">None.</p>`
        : html`<table class="history">
            <thead>
              <tr>
                <th>when</th>
                <th>action</th>
                <th>operator</th>
                <th>detail</th>
              </tr>
            </thead>
            <tbody>
              ${actions.map(
                (a) =>
                  html`<tr data-action=${a.action}>
                    <td>${time(a.at)}</td>
                    <td>${a.action}</td>
                    <td class="operator">${a.operator}</td>
                    <td>${a.detail}</td>
                  </tr>`,
              )}
            </tbody>
          </table>`
    }`;
}

function Transaction({ gid }) {
  const [data, setData] = useState();
  const [version, setVersion] = useState(0);
  const [error, setError] = useState();
  const [shown, setShown] = useState({});
  const [action, setAction] = useState();
  const [notice, setNotice] = useState();
  const load = useCallback(
    () =>
      api('/api/dtmsvr/query', { query: { gid } })
        .then((d) => (setData(d), setVersion((v) => v + 1)))
        .catch((e) => setError(e.message)),
    [gid],
  );
  useEffect(() => void load(), [load]);
  if (error) return html`<section><p class="error">${error}</p></section>`;
  if (!data) return html`<section>Loading…</section>`;
  const t = data.transaction;
  if (!t) return html`<section><p id="not-found">No transaction with gid ${gid}.</p></section>`;
  const done = (message) => {
    setAction(undefined);
    if (message) {
      setNotice(message);
      void load();
    }
  };
  return html`<section id="transaction" data-gid=${t.gid}>
      <p><a href="#/">← Transactions</a></p>
      <h2>${t.gid} <${Status} value=${t.status} /></h2>
      <dl>
        <dt>type</dt>
        <dd>${t.trans_type}</dd>
        <dt>created</dt>
        <dd>${time(t.create_time)}</dd>
        <dt>updated</dt>
        <dd>${time(t.update_time)}</dd>
        ${
          t.finish_time &&
          html`<dt>finished</dt>
            <dd>${time(t.finish_time)}</dd>`
        }
        <dt>next retry</dt>
        <dd id="next-retry">${t.next_cron_time ? time(t.next_cron_time) : 'none scheduled'}</dd>
        <dt>retries</dt>
        <dd>${t.retry_count}</dd>
        <dt>lease held by</dt>
        <dd>${t.owner || 'nobody'}</dd>
        ${
          t.rollback_reason &&
          html`<dt>rollback reason</dt>
            <dd>${t.rollback_reason}</dd>`
        }
        ${
          t.attention_reason &&
          html`<dt>needs attention</dt>
            <dd id="attention-reason">${t.attention_reason}</dd>`
        }
      </dl>
      <p>
        ${actionsFor(t).map((a) => html`<button id=${`action-${a.id}`} onClick=${() => setAction(a)}>${a.label}</button> `)}
        <button onClick=${() => void load()}>Reload</button>
      </p>
      ${notice && html`<p class="notice" id="notice">${notice}</p>`}
      <h3>Branches</h3>
      <ol class="timeline" id="branches">
        ${data.branches.map(
          (b) =>
            html`<li data-branch=${`${b.branch_id}.${b.op}`}>
              <strong>${b.branch_id} ${b.op}</strong> <${Status} value=${b.status} />
              <dl>
                <dt>url</dt>
                <dd>${b.url}</dd>
                <dt>attempts</dt>
                <dd class="attempts">${b.attempts}</dd>
                ${
                  b.last_error &&
                  html`<dt>last error</dt>
                    <dd class="last-error">${b.last_error}</dd>`
                }
                ${
                  b.next_retry_time &&
                  html`<dt>next retry</dt>
                    <dd class="next-retry" data-time=${b.next_retry_time}>${time(b.next_retry_time)}</dd>`
                }
                <dt>created</dt>
                <dd>${time(b.create_time)}</dd>
                <dt>updated</dt>
                <dd>${time(b.update_time)}</dd>
                ${
                  b.finish_time &&
                  html`<dt>finished</dt>
                    <dd>${time(b.finish_time)}</dd>`
                }
              </dl>
              <button class="show-payload" onClick=${() => setShown({ ...shown, [b.id]: !shown[b.id] })}>
                ${shown[b.id] ? 'Hide payload' : 'Show payload'}
              </button>
              ${shown[b.id] && html`<pre class="payload">${decodePayload(b.bin_data)}</pre>`}
            </li>`,
        )}
      </ol>
      <${History} kind="transaction" subject=${t.gid} version=${version} />
    </section>
    ${action && html`<${Confirm} action=${action} onDone=${done} />`}`;
}

/** The broker connections (up, down with the reason, or not used yet) and the topics with their subscribers. */
function Brokers() {
  const [data, setData] = useState();
  const [error, setError] = useState();
  useEffect(() => {
    const load = () =>
      api('/api/concord/admin/brokers')
        .then(setData)
        .catch((e) => setError(e.message));
    void load();
    const timer = setInterval(load, 5000);
    return () => clearInterval(timer);
  }, []);
  if (error) return html`<section><p class="error">${error}</p></section>`;
  if (!data) return html`<section>Loading…</section>`;
  return html`<section id="brokers">
      <h2>Broker connections</h2>
      ${
        data.connections.length === 0
          ? html`<p id="no-connections">No broker connection is configured (kafkaBrokers, amqpUrl, connections).</p>`
          : html`<table>
              <thead>
                <tr>
                  <th>kind</th>
                  <th>name</th>
                  <th>state</th>
                  <th>error</th>
                </tr>
              </thead>
              <tbody>
                ${data.connections.map(
                  (c) =>
                    html`<tr data-connection=${`${c.kind}:${c.name}`}>
                      <td>${c.kind}</td>
                      <td>${c.name}</td>
                      <td class=${`state state-${c.state}`}>${c.state === 'unused' ? 'not used yet' : c.state}</td>
                      <td class="error">${c.error ?? ''}</td>
                    </tr>`,
                )}
              </tbody>
            </table>`
      }
    </section>
    <section id="topics">
      <h2>Topics</h2>
      ${
        data.topics.length === 0
          ? html`<p>No topic has subscribers (POST /api/dtmsvr/subscribe).</p>`
          : html`<table>
              <thead>
                <tr>
                  <th>topic</th>
                  <th>subscribers</th>
                </tr>
              </thead>
              <tbody>
                ${data.topics.map(
                  (t) =>
                    html`<tr data-topic=${t.name}>
                      <td>${t.name}</td>
                      <td>${t.subscribers.map((s) => html`<div>${s.url}${s.remark ? ` (${s.remark})` : ''}</div>`)}</td>
                    </tr>`,
                )}
              </tbody>
            </table>`
      }
    </section>`;
}

/** The outbox drains this coordinator runs (config outboxes): lag, problems, parked rows and their redrive. */
function Outboxes() {
  const [list, setList] = useState();
  const [error, setError] = useState();
  const [parked, setParked] = useState({});
  const [redrives, setRedrives] = useState(0);
  const [action, setAction] = useState();
  const [notice, setNotice] = useState();
  const load = useCallback(
    () =>
      api('/api/outboxes')
        .then((r) => setList(r.outboxes))
        .catch((e) => (e.status === 404 ? setList([]) : setError(e.message))),
    [],
  );
  useEffect(() => void load(), [load]);
  const showParked = (name) =>
    api(`/api/outboxes/${encodeURIComponent(name)}/parked`, { query: { limit: 100 } })
      .then((r) => setParked((p) => ({ ...p, [name]: r.parked })))
      .catch((e) => setError(e.message));
  const redrive = (name) => ({
    id: 'redrive-parked',
    label: 'Redrive parked rows',
    explain: `Publish every parked row of outbox ${name} again; delivered rows leave the parked table.`,
    run: async () => {
      const result = await api(`/api/outboxes/${encodeURIComponent(name)}/redrive`, { body: {} });
      setNotice(`${name}: ${result.delivered.length} delivered, ${result.failed.length} still failing`);
    },
  });
  const done = (message) => {
    setAction(undefined);
    if (message) {
      void load();
      setRedrives((n) => n + 1);
      for (const name of Object.keys(parked)) void showParked(name);
    }
  };
  if (error) return html`<section><p class="error">${error}</p></section>`;
  if (!list) return html`<section>Loading…</section>`;
  if (list.length === 0) return html`<section><p id="no-outboxes">This coordinator drains no outbox (config outboxes).</p></section>`;
  return html`<section id="outboxes">
      <h2>Outbox drains</h2>
      ${notice && html`<p class="notice" id="notice">${notice}</p>`}
      <table>
        <thead>
          <tr>
            <th>name</th>
            <th>table</th>
            <th>parts held</th>
            <th>members</th>
            <th>published</th>
            <th>parked</th>
            <th>lag</th>
            <th>problem</th>
            <th></th>
          </tr>
        </thead>
        <tbody>
          ${list.map(
            (o) =>
              html`<tr data-outbox=${o.name}>
                <td>${o.name}</td>
                <td>${o.table}</td>
                <td>${o.held.length}/${o.partitions}</td>
                <td>${o.members}</td>
                <td>${o.published}</td>
                <td class="parked-count">${o.parked}</td>
                <td>
                  ${o.lagSeconds === null ? '' : `${o.lagSeconds.toFixed(1)} s`}${o.lagThreshold !== null ? ` (threshold ${o.lagThreshold} s)` : ''}
                </td>
                <td class="error">${o.problem ?? ''}</td>
                <td><button class="show-parked" onClick=${() => showParked(o.name)}>Parked rows</button></td>
              </tr>`,
          )}
        </tbody>
      </table>
    </section>
    ${Object.entries(parked).map(
      ([name, rows]) =>
        html`<section data-parked=${name}>
          <h3>Parked rows of ${name}</h3>
          ${
            rows.length === 0
              ? html`<p class="none-parked">None.</p>`
              : html`<p><button class="redrive-parked" onClick=${() => setAction(redrive(name))}>Redrive parked rows</button></p>
                  <table>
                    <thead>
                      <tr>
                        <th>row</th>
                        <th>message id</th>
                        <th>attempts</th>
                        <th>parked at</th>
                        <th>error</th>
                      </tr>
                    </thead>
                    <tbody>
                      ${rows.map(
                        (r) =>
                          html`<tr data-row=${r.rowId}>
                            <td>${r.rowId}</td>
                            <td>${r.messageId}</td>
                            <td>${r.attempts}</td>
                            <td>${time(r.parkedAt)}</td>
                            <td>${r.error}</td>
                          </tr>`,
                      )}
                    </tbody>
                  </table>`
          }
          <${History} kind="outbox" subject=${name} version=${redrives} />
        </section>`,
    )}
    ${action && html`<${Confirm} action=${action} onDone=${done} />`}`;
}

/**
 * Messages consumers parked in their own databases, as they report them: redrive asks the consumer
 * to run one again (it takes the request with its next report, every 10 s by default).
 */
function Consumers() {
  const [state, setState] = useState('');
  const [list, setList] = useState();
  const [error, setError] = useState();
  const [action, setAction] = useState();
  const [notice, setNotice] = useState();
  const load = useCallback(
    () =>
      api('/api/concord/admin/consumers/parked', { query: { state, limit: 200 } })
        .then((r) => (setList(r.parked), setError(undefined)))
        .catch((e) => setError(e.message)),
    [state],
  );
  useEffect(() => {
    void load();
    // Redrives end in the consumer: the list follows its reports.
    const timer = setInterval(load, 2000);
    return () => clearInterval(timer);
  }, [load]);
  const redrive = (m) => ({
    id: 'redrive-message',
    label: 'Redrive message',
    explain: `Ask consumer ${m.consumer} to run message ${m.messageId} again from its parked store (fix the cause first). It does so with its next report; a message it has applied meanwhile is not applied twice.`,
    run: () => api('/api/concord/admin/consumers/redrive', { body: { consumer: m.consumer, messageId: m.messageId } }),
  });
  const done = (message) => {
    setAction(undefined);
    if (message) {
      setNotice(message);
      void load();
    }
  };
  return html`<section id="consumers">
      <h2>Parked consumer messages</h2>
      <p>Messages whose handler gave up, kept in each consumer's own database and reported here by the consumer SDK.</p>
      <p>
        <label
          >State${' '}
          <select id="consumers-state" value=${state} onChange=${(e) => setState(e.target.value)}>
            <option value="">any</option>
            ${['parked', 'redrive', 'redriven', 'cleared'].map((v) => html`<option value=${v}>${v}</option>`)}
          </select></label
        >
      </p>
      ${notice && html`<p class="notice" id="notice">${notice}</p>`} ${error && html`<p class="error">${error}</p>`}
      ${
        list &&
        (list.length === 0
          ? html`<p id="no-parked-messages">No parked consumer message.</p>`
          : html`<table>
              <thead>
                <tr>
                  <th>consumer</th>
                  <th>message id</th>
                  <th>source</th>
                  <th>attempts</th>
                  <th>last failure</th>
                  <th>error</th>
                  <th>state</th>
                  <th>redrive</th>
                  <th></th>
                </tr>
              </thead>
              <tbody>
                ${list.map(
                  (m) =>
                    html`<tr data-parked-message=${`${m.consumer}/${m.messageId}`}>
                      <td>${m.consumer}</td>
                      <td>${m.messageId}</td>
                      <td>${m.source}</td>
                      <td class="attempts">${m.attempts}</td>
                      <td>${time(m.lastFailure)}</td>
                      <td class="error">${m.error}</td>
                      <td class="state" data-state=${m.state}>${m.state}</td>
                      <td class="redrive-by">
                        ${m.redriveBy && `asked by ${m.redriveBy} at ${time(m.redriveAt)}`}${m.resolvedAt ? `; gone ${time(m.resolvedAt)}` : ''}
                      </td>
                      <td>
                        ${m.state === 'parked' && html`<button class="redrive-message" onClick=${() => setAction(redrive(m))}>Redrive</button>`}
                      </td>
                    </tr>`,
                )}
              </tbody>
            </table>`)
      }
    </section>
    ${action && html`<${Confirm} action=${action} onDone=${done} />`}`;
}

function App() {
  // 'checking' until the first call answers; 'locked' shows the token form.
  const [state, setState] = useState({ phase: 'checking' });
  const [filter, setFilter] = useState(emptyFilter);
  const hash = useHash();
  const check = useCallback(() => {
    api('/api/concord/admin/counts')
      .then(() => setState({ phase: 'open' }))
      .catch((e) =>
        setState({
          phase: 'locked',
          message: e.status === 401 || e.status === 403 ? (sessionStorage.getItem(tokenKey) ? e.message : undefined) : e.message,
        }),
      );
  }, []);
  useEffect(check, [check]);
  if (state.phase === 'checking') return html`<section>Loading…</section>`;
  const header = html`<header>
    <h1><a href="#/">Concord</a></h1>
    ${
      state.phase === 'open' &&
      html`<a href="#/">Transactions</a> <a id="nav-outboxes" href="#/outboxes">Outboxes</a>
        <a id="nav-consumers" href="#/consumers">Consumers</a> <a id="nav-brokers" href="#/brokers">Brokers</a>`
    }
    ${
      state.phase === 'open' &&
      sessionStorage.getItem(tokenKey) &&
      html`<button id="forget-token" onClick=${() => (sessionStorage.removeItem(tokenKey), setState({ phase: 'locked' }))}>
        Forget token
      </button>`
    }
  </header>`;
  if (state.phase === 'locked') return html`${header}<${TokenForm} message=${state.message} onToken=${check} />`;
  if (hash === '#/outboxes') return html`${header}<${Outboxes} />`;
  if (hash === '#/brokers') return html`${header}<${Brokers} />`;
  if (hash === '#/consumers') return html`${header}<${Consumers} />`;
  const detail = /^#\/trans\/(.+)$/.exec(hash);
  if (detail) return html`${header}<${Transaction} key=${detail[1]} gid=${decodeURIComponent(detail[1])} />`;
  return html`${header}
    <section><${Counts} onPick=${(status) => setFilter({ ...emptyFilter, status })} /></section>
    <${Transactions} key=${JSON.stringify(filter)} filter=${filter} setFilter=${setFilter} />`;
}

const root = document.getElementById('app');
root.textContent = ''; // the "Loading…" shown until this module ran
render(html`<${App} />`, root);

// Switchyard console: reads the admin and KPI APIs of the server that serves it and draws sinks,
// reconciliation, KPIs and the audit log. Plain browser JavaScript, no dependencies.
'use strict';

const TOKEN_KEY = 'switchyard.adminToken';
const POLL_MS = 5000;
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  tokenPrompt: null,
  previous: null, // {time, delivered: {sink: n}} from the last poll, for rates
  busy: false,
};

const $ = (selector, root = document) => root.querySelector(selector);

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function svg(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, String(value));
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ---------- API access: the browser's own Authorization header first, a prompted token on 401 ----------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function askForToken() {
  if (state.tokenPrompt) return state.tokenPrompt;
  const dialog = $('#token-dialog');
  state.tokenPrompt = new Promise((resolve, reject) => {
    const form = $('#token-form');
    let settled = false;
    const submit = (event) => {
      event.preventDefault();
      const token = $('#token-input').value.trim();
      if (!token) return;
      settled = true;
      state.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
      dialog.close();
      resolve(token);
    };
    // Escape (or any close without a token) gives up: the calls waiting on it fail with 401, and
    // the next call that needs a token asks again.
    const closed = () => {
      form.removeEventListener('submit', submit);
      state.tokenPrompt = null;
      if (!settled) reject(new ApiError(401, 'An admin token is needed to see this.'));
    };
    form.addEventListener('submit', submit);
    dialog.addEventListener('close', closed, { once: true });
    dialog.showModal();
  });
  return state.tokenPrompt;
}

async function api(path, options = {}, retried = false) {
  const headers = Object.assign({ Accept: 'application/json' }, options.headers || {});
  const sentToken = state.token;
  if (sentToken) headers.Authorization = 'Bearer ' + sentToken;
  let response;
  try {
    response = await fetch(path, Object.assign({}, options, { headers }));
  } catch (error) {
    throw new ApiError(0, 'Switchyard cannot be reached: ' + error.message);
  }
  if (response.status === 401 && !retried) {
    // Forget the token this call used, unless a newer one was entered meanwhile.
    if (sentToken && state.token === sentToken) {
      state.token = null;
      sessionStorage.removeItem(TOKEN_KEY);
    }
    if (!state.token) await askForToken();
    return api(path, options, true);
  }
  const type = response.headers.get('content-type') || '';
  const body = type.includes('json') ? await response.json().catch(() => null) : await response.text();
  if (!response.ok) {
    const message = body && body.error ? body.error.message : 'HTTP ' + response.status;
    throw new ApiError(response.status, message);
  }
  return body;
}

// ---------- formatting ----------

const numberFormat = new Intl.NumberFormat('en-US');
const fmt = (n) => (n === null || n === undefined ? '—' : numberFormat.format(n));
const pct = (x, digits = 1) => (x === null || x === undefined ? '—' : (x * 100).toFixed(digits) + '%');
function seconds(s) {
  if (s === null || s === undefined) return '—';
  if (s < 60) return s.toFixed(1) + ' s';
  if (s < 3600) return (s / 60).toFixed(1) + ' min';
  return (s / 3600).toFixed(1) + ' h';
}
const isoDay = (date) => date.toISOString().slice(0, 10);
function duration(totalSeconds) {
  for (const [unit, size] of [['d', 86400], ['h', 3600], ['min', 60]]) {
    if (totalSeconds >= size && totalSeconds % size === 0) return `${totalSeconds / size} ${unit}`;
  }
  return `${totalSeconds} s`;
}

function setState(node, text, isError = false) {
  node.hidden = !text;
  node.textContent = text || '';
  node.classList.toggle('error', isError);
}

// ---------- sinks ----------

function sparkline(values) {
  const width = 120, height = 24;
  const max = Math.max(1, ...values);
  const step = values.length > 1 ? width / (values.length - 1) : width;
  const points = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - (v / max) * (height - 4)).toFixed(1)}`).join(' ');
  return svg('svg', { class: 'spark', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'delivered per hour' },
    svg('title', {}, 'Delivered per hour, last 24 h: ' + values.join(', ')),
    svg('polyline', { points }));
}

function hourlyDelivered(reportSink) {
  const now = Math.floor(Date.now() / 3600000);
  const byHour = new Map((reportSink ? reportSink.hours : []).map((h) => [Math.floor(Date.parse(h.hour) / 3600000), h.delivered]));
  const values = [];
  for (let hour = now - 23; hour <= now; hour++) values.push(byHour.get(hour) || 0);
  return values;
}

function confirmAction(text) {
  const dialog = $('#confirm-dialog');
  $('#confirm-text').textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.returnValue = 'cancel';
    dialog.showModal();
  });
}

async function setRollout(sink, percent, current) {
  const action = percent === 0
    ? `Stop sending events to "${sink}" (rollout 0%)? From now on its events count as dropped by rollout; dial it back up any time, and replay to backfill.`
    : `Change the rollout of "${sink}" from ${current}% to ${percent}%?`;
  if (!(await confirmAction(action))) return;
  try {
    await api(`/admin/sinks/${encodeURIComponent(sink)}/rollout`, {
      method: 'PUT',
      headers: { 'Content-Type': 'application/json', 'X-Switchyard-Caller': 'console' },
      body: JSON.stringify({ percent }),
    });
  } catch (error) {
    setState($('#sinks-state'), `Rollout of ${sink} not changed: ${error.message}`, true);
    return;
  }
  if (document.activeElement) document.activeElement.blur();
  editing = false;
  await Promise.all([refreshSinks(), refreshAudit()]);
}

function rolloutControls(sink) {
  const current = sink.rollout.percent;
  const slider = element('input', { type: 'range', min: 0, max: 100, step: 1, value: current, 'aria-label': `Rollout of ${sink.name}` });
  const exact = element('input', { type: 'number', min: 0, max: 100, step: 0.01, value: current, class: 'rollout-input', 'aria-label': `Rollout percent of ${sink.name}` });
  slider.addEventListener('input', () => { exact.value = slider.value; });
  exact.addEventListener('input', () => { slider.value = exact.value; });
  const apply = element('button', {
    type: 'button', class: 'apply', text: 'Apply',
    onclick: () => {
      const percent = Number(exact.value);
      if (!Number.isFinite(percent) || percent < 0 || percent > 100) {
        setState($('#sinks-state'), 'A rollout is a percent from 0 to 100.', true);
        return;
      }
      setRollout(sink.name, Math.round(percent * 100) / 100, current);
    },
  });
  const kill = element('button', {
    type: 'button', class: 'danger kill', text: 'Kill', disabled: current === 0,
    title: 'Set the rollout to 0% at once', onclick: () => setRollout(sink.name, 0, current),
  });
  return element('div', { class: 'rollout-controls' }, slider, exact, apply, kill);
}

// The periodic refresh does not redraw the table under a user moving a slider or typing a percent.
let editing = false;
document.addEventListener('focusin', (e) => { editing = !!e.target.closest('.rollout-controls'); });
document.addEventListener('focusout', () => { editing = false; });

async function refreshSinks() {
  const stateNode = $('#sinks-state');
  let status, report;
  try {
    const since = new Date(Date.now() - 24 * 3600 * 1000).toISOString();
    [status, report] = await Promise.all([api('/admin/sinks'), api('/admin/report?since=' + encodeURIComponent(since))]);
  } catch (error) {
    setState(stateNode, 'Cannot load sinks: ' + error.message, true);
    return;
  }
  renderReconciliation(report);
  const now = Date.now();
  const rates = {};
  for (const sink of status.sinks) {
    const before = state.previous ? state.previous.delivered[sink.name] : undefined;
    if (before !== undefined) rates[sink.name] = (sink.counters.delivered - before) / ((now - state.previous.time) / 1000);
  }
  state.previous = { time: now, delivered: Object.fromEntries(status.sinks.map((s) => [s.name, s.counters.delivered])) };
  $('#updated').textContent = 'Updated ' + new Date(now).toLocaleTimeString();
  $('#log-summary').textContent = `Ingest log: head ${fmt(status.log.head)}, ${fmt(status.log.used_bytes)} bytes${status.log.durable ? ' on disk' : ' in memory'}.`;
  if (editing) return;
  if (!status.sinks.length) {
    setState(stateNode, 'No sinks are configured.');
    $('#sinks-table').hidden = true;
    return;
  }
  if (!stateNode.classList.contains('error')) setState(stateNode, '');
  const reportBySink = new Map(report.sinks.map((s) => [s.name, s]));
  const body = $('#sinks-table tbody');
  body.replaceChildren(...status.sinks.map((sink) => {
    const c = sink.counters;
    const errors = c.dead_lettered + c.failed_attempts;
    const rate = rates[sink.name];
    return element('tr', { 'data-sink': sink.name },
      element('td', {}, element('strong', { text: sink.name })),
      element('td', { text: sink.type }),
      element('td', { class: 'rollout' },
        element('span', { class: 'rollout-percent', text: sink.rollout.percent + '%' }), ' ',
        element('span', { class: 'badge ' + sink.rollout.mode, text: sink.rollout.mode })),
      element('td', {}, element('span', { class: 'badge breaker ' + c.breaker, text: c.breaker.replace('_', '-') })),
      element('td', {}, sparkline(hourlyDelivered(reportBySink.get(sink.name)))),
      element('td', { class: 'num', text: rate === undefined ? '—' : rate.toFixed(1) + '/s' }),
      element('td', { class: 'num lag', text: fmt(sink.lag_records) }),
      element('td', { class: 'num', title: c.last_error || '' , text: errors ? `${fmt(errors)}` : '0' },
        c.last_error ? element('span', { class: 'error', text: ' ⚠' }) : null),
      element('td', {}, rolloutControls(sink)));
  }));
  $('#sinks-table').hidden = false;
}

// ---------- reconciliation ----------

let lastReport = null;
function renderReconciliation(report) {
  lastReport = report || lastReport;
  if (!lastReport) return;
  const threshold = Number($('#threshold').value) / 100;
  const rows = [];
  for (const sink of lastReport.sinks) {
    if (!sink.reference) continue;
    for (const hour of sink.hours.slice().reverse()) {
      if (hour.expected === undefined) continue;
      const diff = hour.relative_difference;
      const beyond = diff !== undefined && diff !== null && Math.abs(diff) > threshold;
      rows.push(element('tr', { class: beyond ? 'beyond' : '', 'data-sink': sink.name },
        element('td', { text: sink.name }), element('td', { text: sink.reference }),
        element('td', { text: hour.hour.replace('T', ' ').slice(0, 16) }),
        element('td', { class: 'num', text: fmt(hour.delivered) }),
        element('td', { class: 'num', text: fmt(Math.round(hour.expected * 10) / 10) }),
        element('td', { class: 'num diff', text: diff === undefined || diff === null ? '—' : (diff >= 0 ? '+' : '') + pct(diff, 2) })));
    }
  }
  const stateNode = $('#reconciliation-state');
  if (!rows.length) {
    setState(stateNode, 'Nothing to compare yet: a sink below 100% or in shadow mode with compare_with set shows here once it has delivered.');
    $('#reconciliation-table').hidden = true;
    return;
  }
  setState(stateNode, '');
  $('#reconciliation-table tbody').replaceChildren(...rows);
  $('#reconciliation-table').hidden = false;
}

// ---------- audit log ----------

async function refreshAudit() {
  const stateNode = $('#audit-state');
  let answer;
  try {
    answer = await api('/admin/audit?limit=50');
  } catch (error) {
    setState(stateNode, 'Cannot load the audit log: ' + error.message, true);
    return;
  }
  if (!answer.records.length) {
    setState(stateNode, 'No changes recorded yet.');
    $('#audit-table').hidden = true;
    return;
  }
  setState(stateNode, '');
  $('#audit-table tbody').replaceChildren(...answer.records.map((r) => {
    let change = '';
    if (r.action === 'rollout') change = `${r.old ? r.old.percent + '%' : '?'} → ${r.new ? r.new.percent + '%' : '?'}${r.new && r.old && r.new.mode !== r.old.mode ? ' (' + r.new.mode + ')' : ''}`;
    else if (r.changes) change = JSON.stringify(r.changes);
    else if (r.since) change = 'since ' + r.since;
    return element('tr', {},
      element('td', { text: String(r.time || '').replace('T', ' ').slice(0, 19) }),
      element('td', { text: r.action || '' }), element('td', { text: r.sink || '' }),
      element('td', { text: change }), element('td', { text: r.caller || '' }));
  }));
  $('#audit-table').hidden = false;
}

// ---------- KPI charts ----------

function chartFrame(values, labels, draw, format = fmtShort) {
  const width = 600, height = 180, left = 44, bottom = 20, top = 8;
  const max = Math.max(...values.filter((v) => v !== null), 0) || 1;
  const plotWidth = width - left - 8, plotHeight = height - top - bottom;
  const y = (v) => top + plotHeight - (v / max) * plotHeight;
  const root = svg('svg', { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img' },
    svg('line', { class: 'axis', x1: left, y1: top + plotHeight, x2: width - 8, y2: top + plotHeight }),
    svg('text', { class: 'label', x: left - 6, y: top + 10, 'text-anchor': 'end' }, format(max)),
    svg('text', { class: 'label', x: left - 6, y: top + plotHeight, 'text-anchor': 'end' }, '0'),
    svg('text', { class: 'label', x: left, y: height - 4 }, labels[0] || ''),
    svg('text', { class: 'label', x: width - 8, y: height - 4, 'text-anchor': 'end' }, labels[labels.length - 1] || ''));
  draw(root, { left, plotWidth, plotHeight, top, y });
  return root;
}

function fmtShort(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(1) + 'M';
  if (n >= 1e4) return (n / 1e3).toFixed(0) + 'k';
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function barChart(series, format) {
  const values = series.map((p) => p.value);
  return chartFrame(values, series.map((p) => p.date), (root, g) => {
    const slot = g.plotWidth / Math.max(1, values.length);
    series.forEach((p, i) => {
      const height = g.top + g.plotHeight - g.y(p.value || 0);
      root.append(svg('rect', { class: 'bar', x: g.left + i * slot + slot * 0.1, y: g.y(p.value || 0), width: Math.max(1, slot * 0.8), height },
        svg('title', {}, `${p.date}: ${format(p.value)}`)));
    });
  }, format);
}

function lineChart(series, format) {
  const values = series.map((p) => p.value);
  return chartFrame(values, series.map((p) => p.date), (root, g) => {
    const step = series.length > 1 ? g.plotWidth / (series.length - 1) : 0;
    const points = [];
    series.forEach((p, i) => {
      if (p.value === null) return;
      const x = g.left + i * step, yy = g.y(p.value);
      points.push(`${x.toFixed(1)},${yy.toFixed(1)}`);
      root.append(svg('circle', { class: 'dot', cx: x, cy: yy, r: 2.5 }, svg('title', {}, `${p.date}: ${format(p.value)}`)));
    });
    root.insertBefore(svg('polyline', { class: 'line', points: points.join(' ') }), root.firstChild);
  }, format);
}

// Week over week: the last 7 days against the 7 before, when the range has both.
function weekOverWeek(series, combine) {
  if (series.length < 14) return null;
  const last = series.slice(-7).map((p) => p.value).filter((v) => v !== null);
  const before = series.slice(-14, -7).map((p) => p.value).filter((v) => v !== null);
  if (!last.length || !before.length) return null;
  const a = combine(last), b = combine(before);
  if (!b) return null;
  return (a - b) / b;
}
const sum = (xs) => xs.reduce((a, b) => a + b, 0);
const mean = (xs) => sum(xs) / xs.length;

function showDelta(card, delta, label) {
  const node = $('.delta', card);
  node.replaceChildren();
  if (delta === null) { node.textContent = label ? label : ''; return; }
  node.append(element('span', { class: delta >= 0 ? 'up' : 'down', text: (delta >= 0 ? '▲ +' : '▼ ') + pct(delta) }), ' week over week', label ? ' · ' + label : '');
}

function range() {
  return { start: $('#range-start').value, end: $('#range-end').value };
}

function kpiPath(metric, extra = {}) {
  const params = new URLSearchParams(Object.assign(range(), extra));
  return `/api/kpis/${metric}?${params}`;
}

// Each card shows the answer to its latest request only: a slow older answer is dropped.
const cardGeneration = {};

async function loadCard(id, metric, extra, render) {
  const card = $('#' + id);
  const chart = $('.chart', card);
  const generation = (cardGeneration[id] || 0) + 1;
  cardGeneration[id] = generation;
  const current = () => cardGeneration[id] === generation;
  card.classList.add('loading');
  card.dataset.state = 'loading';
  if (!chart.firstChild) chart.textContent = 'Loading…';
  try {
    const answer = await api(kpiPath(metric, extra));
    if (!current()) return;
    const empty = !answer.series.length || answer.series.every((p) => !p.value);
    chart.replaceChildren();
    if (empty) {
      chart.append(element('p', { class: 'state', text: 'No events in this range.' }));
      showDelta(card, null);
      card.dataset.state = 'empty';
    } else {
      render(answer, chart, card);
      card.dataset.state = 'ready';
    }
  } catch (error) {
    if (!current()) return;
    chart.replaceChildren(element('p', { class: 'state error', text: error.message }),
      element('button', { type: 'button', text: 'Retry', onclick: () => loadCard(id, metric, extra, render) }));
    showDelta(card, null);
    card.dataset.state = 'error';
  } finally {
    if (current()) card.classList.remove('loading');
  }
}

function loadKpis() {
  const { start, end } = range();
  const problem = !start || !end ? 'Pick a start and an end date.' : start > end ? 'The start date is after the end date.' : '';
  setState($('#kpis-state'), problem, !!problem);
  if (problem) return;
  const grain = $('#active-grain').value;
  loadCard('card-active-users', 'active-users', { grain }, (answer, chart, card) => {
    chart.append(lineChart(answer.series, fmt));
    const last = answer.series[answer.series.length - 1];
    showDelta(card, grain === 'day' ? weekOverWeek(answer.series, mean) : null, `latest ${fmt(last.value)}`);
  });
  const event = $('#events-filter').value.trim();
  loadCard('card-events', 'events', event ? { event } : {}, (answer, chart, card) => {
    chart.append(barChart(answer.series, fmt));
    showDelta(card, weekOverWeek(answer.series, sum), `${fmt(sum(answer.series.map((p) => p.value)))} in range`);
  });
  const stat = $('#sessions-metric').value;
  const format = stat === 'count' ? fmt : seconds;
  loadCard('card-sessions', 'sessions', { metric: stat }, (answer, chart, card) => {
    chart.append(lineChart(answer.series, format));
    showDelta(card, weekOverWeek(answer.series, stat === 'count' ? sum : mean));
  });
  loadCard('card-funnel', 'funnel', { steps: $('#funnel-steps').value, window: $('#funnel-window').value }, (answer, chart, card) => {
    const first = answer.series[0].value || 1;
    for (const step of answer.series) {
      const bar = element('div', { class: 'funnel-bar', title: `${fmt(step.value)} people` });
      bar.style.width = ((step.value / first) * 100).toFixed(1) + '%';
      chart.append(element('div', { class: 'funnel-row', 'data-step': step.step },
        element('span', { text: step.step }), bar,
        element('span', { class: 'num', text: `${fmt(step.value)} · ${pct(step.conversion)}` })));
    }
    const lastStep = answer.series[answer.series.length - 1];
    showDelta(card, null, `${pct(lastStep.conversion)} converted within ${duration(answer.params.window_secs)}`);
  });
  loadCard('card-retention', 'retention', { cohort: 'week' }, (answer, chart, card) => {
    const cohorts = new Map();
    for (const p of answer.series) {
      if (!cohorts.has(p.date)) cohorts.set(p.date, []);
      cohorts.get(p.date).push(p);
    }
    const periods = Math.max(...answer.series.map((p) => p.period)) + 1;
    const head = element('tr', {}, element('th', { text: 'Cohort (week of)' }), element('th', { text: 'People' }),
      ...Array.from({ length: periods }, (_, i) => element('th', { text: 'Week ' + i })));
    const rows = [...cohorts.entries()].map(([cohort, points]) => element('tr', { 'data-cohort': cohort },
      element('td', { text: cohort }), element('td', { text: fmt(points[0].cohort_size) }),
      ...Array.from({ length: periods }, (_, i) => {
        const p = points.find((x) => x.period === i);
        if (!p) return element('td', {});
        const cell = element('td', { class: 'cell' + (p.rate < 0.35 ? ' light' : ''), title: `${fmt(p.value)} of ${fmt(p.cohort_size)}`, text: pct(p.rate, 0) });
        cell.style.background = `rgba(47, 111, 222, ${(0.08 + 0.92 * p.rate).toFixed(2)})`;
        return cell;
      })));
    chart.append(element('div', { class: 'table-wrap' }, element('table', { class: 'retention' }, element('thead', {}, head), element('tbody', {}, rows))));
    showDelta(card, null, `${cohorts.size} cohorts`);
  });
}

async function downloadCsv(metric) {
  const extra = {
    'active-users': { grain: $('#active-grain').value },
    events: $('#events-filter').value.trim() ? { event: $('#events-filter').value.trim() } : {},
    sessions: { metric: $('#sessions-metric').value },
    funnel: { steps: $('#funnel-steps').value, window: $('#funnel-window').value },
    retention: { cohort: 'week' },
  }[metric];
  try {
    const text = await api(kpiPath(metric, Object.assign({ format: 'csv' }, extra)), { headers: { Accept: 'text/csv' } });
    const href = URL.createObjectURL(new Blob([text], { type: 'text/csv' }));
    const link = element('a', { href, download: `switchyard-${metric}-${range().start}-${range().end}.csv` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(href), 10000);
  } catch (error) {
    setState($('#kpis-state'), 'CSV export failed: ' + error.message, true);
  }
}

function setRangeDays(days) {
  const end = new Date();
  const start = new Date(end.getTime() - (days - 1) * 86400000);
  $('#range-start').value = isoDay(start);
  $('#range-end').value = isoDay(end);
}

// ---------- start ----------

function start() {
  const params = new URLSearchParams(location.search);
  if (params.get('start') && params.get('end')) {
    $('#range-start').value = params.get('start');
    $('#range-end').value = params.get('end');
  } else {
    setRangeDays(28);
  }
  $('#range-form').addEventListener('submit', (event) => { event.preventDefault(); loadKpis(); });
  for (const button of document.querySelectorAll('[data-days]')) {
    button.addEventListener('click', () => { setRangeDays(Number(button.dataset.days)); loadKpis(); });
  }
  for (const button of document.querySelectorAll('[data-csv]')) {
    button.addEventListener('click', () => downloadCsv(button.dataset.csv));
  }
  for (const control of ['#active-grain', '#sessions-metric', '#events-filter', '#funnel-steps', '#funnel-window']) {
    $(control).addEventListener('change', loadKpis);
  }
  $('#threshold').addEventListener('input', () => renderReconciliation(null));
  refreshSinks().then(() => { refreshAudit(); loadKpis(); });
  setInterval(() => { if (!document.hidden) refreshSinks(); }, POLL_MS);
}

document.addEventListener('DOMContentLoaded', start);

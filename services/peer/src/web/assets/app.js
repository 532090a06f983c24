// hive peer web UI: one event stream per page keeps it live; buttons and
// the fetch form act in place through the JSON API. Without this script
// every form still works (it posts and comes back).
(() => {
  'use strict';
  const csrf = document.querySelector('meta[name="hive-csrf"]').content;
  const page = document.body.dataset.page;
  const message = document.getElementById('message');
  const seg = encodeURIComponent;

  function say(text) {
    message.textContent = text;
    message.hidden = !text;
  }

  async function call(method, url, body) {
    const headers = { 'X-Hive-Csrf': csrf };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await fetch(url, {
      method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    });
    let answer = null;
    try { answer = await r.json(); } catch (_) { /* not JSON */ }
    if (!r.ok) {
      const why = answer && answer.message ? answer.message : r.status + ' ' + r.statusText;
      say(why);
      throw new Error(why);
    }
    say('');
    return answer;
  }

  function human(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let u = 0;
    while (n >= 1024 && u < units.length - 1) { n /= 1024; u++; }
    return u === 0 ? n + ' B' : n.toFixed(1) + ' ' + units[u];
  }

  function events(file) {
    const url = '/api/v1/events' + (file ? '?file=' + seg(file) : '');
    return new EventSource(url);
  }

  // --- The transfers page -------------------------------------------------
  const APPLIES = {
    pause: ['queued', 'running', 'stalled'],
    resume: ['paused', 'failed'],
    cancel: ['queued', 'running', 'stalled', 'paused', 'done', 'failed'],
  };

  function findTransfer(name) {
    for (const el of document.querySelectorAll('[data-transfer]')) {
      if (el.dataset.transfer === name) return el;
    }
    return null;
  }

  function renderTransfer(el, t) {
    el.dataset.transfer = t.name;
    el.dataset.state = t.state;
    const link = el.querySelector('a.chunks');
    link.textContent = t.name;
    link.href = '/files/' + seg(t.name);
    el.querySelector('.state').textContent = t.state;
    const bar = el.querySelector('progress');
    bar.max = Math.max(t.chunk_count, 1);
    bar.value = t.chunks_done;
    const pct = t.chunk_count ? Math.floor(t.chunks_done * 100 / t.chunk_count) : 0;
    el.querySelector('.pct').textContent = pct + '%';
    el.querySelector('.size').textContent = human(t.size);
    el.querySelector('.rate').textContent = human(t.rate) + '/s';
    el.querySelector('.eta').textContent = t.eta_seconds > 0 ? t.eta_seconds + 's' : '–';
    el.querySelector('.holders').textContent = t.holders_active + ' of ' + t.holders;
    el.querySelector('.reason').textContent = t.reason;
    for (const b of el.querySelectorAll('button[data-action]')) {
      b.hidden = !APPLIES[b.dataset.action].includes(t.state);
      b.form.action = '/transfers/' + seg(t.name) + '/' + b.dataset.action;
    }
  }

  function showTransfers(list) {
    const box = document.getElementById('transfers');
    const template = document.getElementById('transfer-template');
    const seen = new Set();
    for (const t of list) {
      seen.add(t.name);
      let el = findTransfer(t.name);
      if (!el) {
        el = template.content.firstElementChild.cloneNode(true);
        box.appendChild(el);
      }
      renderTransfer(el, t);
    }
    for (const el of box.querySelectorAll('[data-transfer]')) {
      if (!seen.has(el.dataset.transfer)) el.remove();
    }
    const empty = box.querySelector('.empty');
    if (empty) empty.hidden = list.length > 0;
  }

  function showStatus(s) {
    const cap = r => (r ? human(r) + '/s' : 'none');
    const set = (id, text) => { const el = document.getElementById(id); if (el) el.textContent = text; };
    set('served', human(s.bytes_served));
    set('fetched', human(s.bytes_fetched));
    set('cap-up', cap(s.max_upload_rate));
    set('cap-down', cap(s.max_download_rate));
  }

  function transfersPage() {
    const box = document.getElementById('transfers');
    box.addEventListener('click', ev => {
      const b = ev.target.closest('button[data-action]');
      if (!b) return;
      ev.preventDefault();
      const name = b.closest('[data-transfer]').dataset.transfer;
      call('POST', '/api/v1/transfers/' + seg(name) + '/' + b.dataset.action)
        .then(t => { const el = findTransfer(t.name); if (el) renderTransfer(el, t); })
        .catch(() => {});
    });
    const form = document.getElementById('fetch');
    form.addEventListener('submit', ev => {
      // A rate with a unit is parsed by the server: let the form go.
      if (form.elements.max_rate.value.trim()) return;
      ev.preventDefault();
      const name = form.elements.name.value;
      call('POST', '/api/v1/transfers', { name })
        .then(t => { form.reset(); if (t && t.state) showTransfers(mergeOne(t)); })
        .catch(() => {});
    });
    const source = events();
    source.addEventListener('transfers', e => showTransfers(JSON.parse(e.data)));
    source.addEventListener('status', e => showStatus(JSON.parse(e.data)));
  }

  // The list shown, with `t` added or replaced (until the stream says more).
  function mergeOne(t) {
    const list = [];
    for (const el of document.querySelectorAll('#transfers [data-transfer]')) {
      if (el.dataset.transfer !== t.name) list.push(readTransfer(el));
    }
    list.push(t);
    return list;
  }

  function readTransfer(el) {
    const bar = el.querySelector('progress');
    return {
      name: el.dataset.transfer, state: el.dataset.state, chunk_count: +bar.max,
      chunks_done: +bar.value, size: 0, rate: 0, eta_seconds: 0, holders_active: 0,
      holders: 0, reason: el.querySelector('.reason').textContent,
    };
  }

  // --- A file's chunk map -------------------------------------------------
  function chunkPage() {
    const map = document.getElementById('chunk-map');
    const name = map.dataset.name;

    function count() {
      const held = map.querySelectorAll('.chunk.held').length;
      map.dataset.held = held;
      document.getElementById('held-count').textContent = held;
    }

    function setCell(c) {
      const el = map.children[c.chunk - 1];
      if (!el) return false;
      el.className = 'chunk ' + c.state;
      el.title = c.title;
      return true;
    }

    async function reload() {
      const m = await call('GET', '/api/v1/files/' + seg(name) + '/chunks').catch(() => null);
      if (!m) return;
      map.replaceChildren();
      for (const c of m.chunks) {
        const el = document.createElement('span');
        map.appendChild(el);
        setCell(c);
      }
      map.dataset.total = m.chunk_count;
      document.getElementById('total-count').textContent = m.chunk_count;
      count();
    }

    const source = events(name);
    source.addEventListener('chunks', e => {
      const batch = JSON.parse(e.data);
      let ok = true;
      for (const c of batch.chunks) ok = setCell(c) && ok;
      if (ok) count(); else reload();
    });
    source.addEventListener('resync', () => reload());
    source.addEventListener('transfers', e => {
      const t = JSON.parse(e.data).find(x => x.name === name);
      if (t && t.chunk_count !== +map.dataset.total) reload();
      else if (t && t.state === 'done' && +map.dataset.held !== t.chunk_count) reload();
    });
  }

  if (page === 'transfers') transfersPage();
  if (page === 'chunks') chunkPage();
})();

// Settings → API Keys: the page's behaviour. It only calls the router's JSON routes.
// A new key's plaintext lives in the dialog's input while the dialog is open, and nowhere
// else: closing the dialog empties it.
'use strict';

(() => {
  const base = document.body.dataset.base;
  const $ = (id) => document.getElementById(id);
  const DAY = 86400000;
  let keys = [];
  // Keys come a page at a time (the cursor of the next is `next`); a refresh keeps as
  // many as were shown.
  const PAGE = 25;
  let next = null;
  let keysAllowed = true;
  // The key whose row gets the focus once the dialog showing its secret closes.
  let shownKeyId = null;
  // The key a rotate or delete dialog is about.
  let pending = null;

  class ApiError extends Error {
    constructor(status, problem) {
      super((problem && problem.detail) || `The server answered ${status}.`);
      this.status = status;
      this.problem = problem;
    }
  }

  async function api(method, path, body) {
    const init = { method, headers: { accept: 'application/json' }, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      init.headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await fetch(base + path, init);
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function announce(text) {
    $('announce').textContent = text;
  }

  function clearError() {
    const box = $('error');
    box.hidden = true;
    box.replaceChildren();
  }

  function showError(error) {
    const box = $('error');
    const lines = [error.status === 401 ? 'You are signed out: sign in again, then reload this page.' : error.message];
    const fields = (error.problem && error.problem.errors) || [];
    box.replaceChildren(...lines.map((line) => element('p', line)));
    if (fields.length) {
      box.append(element('ul', null, fields.map((f) => element('li', `${f.field}: ${f.reason}`))));
    }
    box.hidden = false;
    box.focus();
  }

  function element(tag, text, children, attributes) {
    const node = document.createElement(tag);
    if (text != null) node.textContent = text;
    if (children) node.append(...children);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
    return node;
  }

  function when(iso) {
    if (!iso) return element('span', '—');
    return element('time', new Date(iso).toLocaleString(), null, { datetime: iso });
  }

  function badge(text, kind) {
    return element('span', text, null, { class: `badge ${kind}` });
  }

  function expiryCell(key) {
    if (!key.expires_at) {
      return [element('span', 'Never'), ' ', badge('Never expires', 'never')];
    }
    const left = new Date(key.expires_at) - Date.now();
    const cell = [when(key.expires_at)];
    if (key.status === 'active' && left <= 7 * DAY) cell.push(' ', badge('Expires within 7 days', 'soon'));
    return cell;
  }

  function statusCell(key) {
    const cell = [badge(key.status[0].toUpperCase() + key.status.slice(1), `status ${key.status}`)];
    const replacement = key.replaced_by && keys.find((k) => k.id === key.replaced_by);
    // The replacement keeps the name: its prefix tells the two apart.
    if (key.replaced_by) cell.push(' ', badge(replacement ? `Replaced by ${replacement.prefix}…` : 'Replaced', 'replaced'));
    if (key.exposure) cell.push(' ', badge('Found in public', 'exposed'), exposureNote(key));
    return cell;
  }

  function networkList(key) {
    if (!key.allowed_networks) return element('span', 'Anywhere');
    return element('ul', null, key.allowed_networks.map((n) => element('li', null, [element('code', n)])), { class: 'networks' });
  }

  // Where a secret scanner found the key: the place as a link only if it is an https URL.
  function exposureNote(key) {
    const { url, source, at } = key.exposure;
    const place = /^https:\/\//.test(url)
      ? element('a', url, null, { href: url, rel: 'noopener noreferrer' })
      : element('code', url);
    const what = key.status === 'disabled' ? 'Disabled: found at ' : 'Found at ';
    return element('p', what, [place, ` (${source}), reported `, when(at), '. Rotate it: delete this key and make a new one.'], { class: 'exposure' });
  }

  const WINDOWS = { 1: 'a second', 60: 'a minute', 3600: 'an hour', 86400: 'a day' };

  // Each limit the key is held to, as a sentence; a quota with how much of its period is
  // used (a meter, and the same as text) and when it starts again.
  function limitList(key) {
    const items = key.rate_limits.map((limit) => {
      const count = limit.requests.toLocaleString();
      const whose = limit.scope === 'account' ? ' for the account' : '';
      if (limit.window_seconds != null) {
        const per = WINDOWS[limit.window_seconds] || `per ${limit.window_seconds.toLocaleString()} seconds`;
        return element('li', `${count} ${per}${whose}`, null, { 'data-limit': 'window' });
      }
      const item = element('li', `${count} a ${limit.period}${whose}`, null, { 'data-limit': limit.period });
      const used = element('span', `${limit.used.toLocaleString()} used, starts again `, [when(limit.resets_at)], { class: 'quota-used' });
      const meter = element('meter', null, null, { min: 0, max: limit.requests, value: Math.min(limit.used, limit.requests), 'aria-label': `${limit.used} of ${limit.requests} used` });
      item.append(' ', meter, ' ', used);
      return item;
    });
    return element('ul', null, items, { class: 'limits' });
  }

  // What the owner should look at, as the server says it (unused, rotation due, …).
  // Each with the action it suggests: delete an unused key; rotate one that holds
  // permissions it does not use, keeping only the others.
  function hintList(key) {
    const items = key.hints.map((hint) => {
      const item = element('li', hint.message, null, { 'data-hint': hint.code });
      if (hint.code === 'unused') {
        item.append(' ', button('Delete it', `Delete ${key.name}`, () => openDelete(key), { class: 'link' }));
      } else if (hint.code === 'unused_permissions' && !key.replaced_by) {
        const keep = key.permissions.filter((p) => !hint.permissions.includes(p));
        if (keep.length) {
          item.append(' ', button(`Rotate with ${keep.join(', ')} only`, `Rotate ${key.name} with ${keep.join(', ')} only`, () => openRotate(key, keep), { class: 'link', 'data-action': 'narrow' }));
        }
      }
      return item;
    });
    const list = element('ul', null, items, { class: 'hints' });
    list.hidden = key.hints.length === 0;
    return list;
  }

  // Requests refused after authentication, all reasons together.
  function refused(bucket) {
    const r = bucket.rejected;
    return r.plan_required + r.missing_permission + r.route_not_allowed + r.rate_limited;
  }

  // The last 7 days' admitted requests as bars drawn here (no library), with the figures
  // as text beside them for every reader.
  async function lastSevenDays(key, td) {
    const from = new Date(Date.now() - 6 * DAY);
    from.setUTCHours(0, 0, 0, 0);
    const usage = await api('GET', `/keys/${encodeURIComponent(key.id)}/usage?granularity=day&from=${from.toISOString()}`);
    const counts = usage.buckets.map((b) => b.admitted);
    const most = Math.max(1, ...counts);
    const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
    svg.setAttribute('viewBox', '0 0 70 20');
    svg.setAttribute('class', 'chart');
    svg.setAttribute('aria-hidden', 'true');
    counts.forEach((n, i) => {
      const bar = document.createElementNS('http://www.w3.org/2000/svg', 'rect');
      const height = n === 0 ? 1 : Math.max(2, Math.round((n / most) * 20));
      bar.setAttribute('x', String(i * 10));
      bar.setAttribute('y', String(20 - height));
      bar.setAttribute('width', '8');
      bar.setAttribute('height', String(height));
      svg.append(bar);
    });
    const total = counts.reduce((a, b) => a + b, 0);
    const text = element('span', `${total} in 7 days`, null, { class: 'chart-total', title: counts.join(', ') });
    td.replaceChildren(svg, ' ', text);
  }

  // The usage view: 24 hours by hour and 30 days by day, as tables.
  async function openUsage(key) {
    clearError();
    try {
      const path = `/keys/${encodeURIComponent(key.id)}/usage`;
      const [hours, days] = await Promise.all([api('GET', `${path}?granularity=hour`), api('GET', `${path}?granularity=day`)]);
      const rows = (buckets, label) => buckets.map((b) => element('tr', null, [
        element('th', label(b.start), null, { scope: 'row' }),
        element('td', String(b.admitted)),
        element('td', String(refused(b))),
      ]));
      $('usage-hours').tBodies[0].replaceChildren(...rows(hours.buckets, (s) => `${s.slice(0, 10)} ${s.slice(11, 16)}`));
      $('usage-days').tBodies[0].replaceChildren(...rows(days.buckets, (s) => s.slice(0, 10)));
      $('usage-name').textContent = key.name;
      pending = key;
      $('usage').showModal();
      $('usage-close').focus();
    } catch (error) {
      showError(error);
    }
  }
  $('usage-close').addEventListener('click', () => $('usage').close());
  $('usage').addEventListener('close', () => {
    if (pending) focusRow(pending.id, 'usage');
  });

  function cell(label, content) {
    const td = element('td', null, Array.isArray(content) ? content : [content]);
    td.dataset.label = label;
    return td;
  }

  function button(text, label, onClick, attributes) {
    const b = element('button', text, null, { type: 'button', 'aria-label': label, ...attributes });
    b.addEventListener('click', onClick);
    return b;
  }

  function row(key) {
    const tr = element('tr');
    tr.dataset.keyId = key.id;
    const name = element('th', key.name, null, { scope: 'row', tabindex: '-1', class: 'name' });
    name.dataset.label = 'Name';
    const permissions = element('ul', null, key.permissions.map((p) => element('li', null, [element('code', p)])), { class: 'permissions' });
    const toggle = key.status === 'disabled'
      ? button('Enable', `Enable ${key.name}`, () => setDisabled(key, false), { 'data-action': 'enable' })
      : button('Disable', `Disable ${key.name}`, () => setDisabled(key, true), { 'data-action': 'disable' });
    const rotate = button('Rotate', `Rotate ${key.name}`, () => openRotate(key), { 'data-action': 'rotate' });
    // A rotated key has its replacement already: rotating it again is refused.
    rotate.disabled = !keysAllowed || key.replaced_by != null;
    const remove = button('Delete', `Delete ${key.name}`, () => openDelete(key), { 'data-action': 'delete', class: 'danger' });
    const usage = button('Usage', `Usage of ${key.name}`, () => openUsage(key), { 'data-action': 'usage' });
    const chart = cell('Last 7 days', element('span', '…'));
    lastSevenDays(key, chart).catch(() => chart.replaceChildren(element('span', '—')));
    tr.append(
      name,
      cell('Key', element('code', `${key.prefix}…`)),
      cell('Permissions', permissions),
      cell('Limits', limitList(key)),
      cell('Environment', key.environment ? element('code', key.environment) : element('span', '—')),
      cell('Networks', networkList(key)),
      cell('Created', when(key.created_at)),
      cell('Last used', key.last_used_at ? when(key.last_used_at) : element('span', 'Never used')),
      chart,
      cell('Expires', expiryCell(key)),
      cell('Status', [...statusCell(key), hintList(key)]),
      cell('Actions', element('div', null, [usage, rotate, toggle, remove], { class: 'actions' })),
    );
    return tr;
  }

  function render() {
    $('keys').tBodies[0].replaceChildren(...keys.map(row));
    // The Networks column only when a key has networks: most accounts never set any.
    const anyNetworks = keys.some((k) => k.allowed_networks);
    for (const node of $('keys').querySelectorAll('[data-label="Networks"]')) node.hidden = !anyNetworks;
    $('empty').hidden = keys.length > 0;
    $('keys').hidden = keys.length === 0;
    $('more').hidden = !next;
  }

  const ACTIONS = {
    'account.created': 'Account created',
    'account.plan_changed': 'Plan changed',
    'key.created': 'Key created',
    'key.rotated': 'Key rotated',
    'key.deleted': 'Key deleted',
    'key.disabled': 'Key disabled',
    'key.enabled': 'Key enabled',
    'key.exposed': 'Key found in public',
  };
  const ACTORS = {
    admin: 'by an operator',
    user: 'by a user of this account',
    system: 'by the application',
    scanner: 'by a secret scanner',
  };

  function activity(entries, names) {
    $('activity').replaceChildren(...entries.map((entry) => {
      const what = [element('strong', ACTIONS[entry.action] || entry.action)];
      if (entry.key_id) what.push(' ', element('span', names.get(entry.key_id) || entry.key_id));
      if (entry.action === 'account.plan_changed') what.push(` from ${entry.details.from} to ${entry.details.to}`);
      if (entry.action === 'key.exposed') what.push(' at ', element('code', entry.details.url));
      what.push(` ${ACTORS[entry.actor.kind] || ''}`);
      return element('li', null, [when(entry.at), ' ', ...what]);
    }));
  }

  async function refresh() {
    const shown = Math.min(Math.max(PAGE, keys.length), 500);
    const [listed, log] = await Promise.all([api('GET', `/keys?limit=${shown}`), api('GET', '/audit?limit=20')]);
    keys = listed.keys;
    next = listed.next;
    render();
    const names = new Map(keys.map((key) => [key.id, key.name]));
    for (const entry of log.entries) {
      if (entry.action === 'key.created' && entry.details.name) names.set(entry.key_id, entry.details.name);
    }
    activity(log.entries, names);
  }

  $('more').addEventListener('click', async () => {
    clearError();
    try {
      const page = await api('GET', `/keys?limit=${PAGE}&before=${encodeURIComponent(next)}`);
      keys = keys.concat(page.keys);
      next = page.next;
      render();
      if (page.keys.length) focusRow(page.keys[0].id);
    } catch (error) {
      showError(error);
    }
  });

  function focusRow(id, action) {
    const tr = [...$('keys').tBodies[0].rows].find((r) => r.dataset.keyId === id);
    const target = tr && (action ? tr.querySelector(`[data-action="${action}"]`) : tr.querySelector('.name'));
    (target || $('keys-heading')).focus();
  }

  // The dialog that shows a new key once.
  function showKey(created, message) {
    shownKeyId = created.id;
    $('secret').value = created.key;
    $('copied').textContent = '';
    $('show-key').showModal();
    $('secret').select();
    $('copy').focus();
    announce(message);
  }

  $('copy').addEventListener('click', async () => {
    const secret = $('secret');
    try {
      await navigator.clipboard.writeText(secret.value);
      $('copied').textContent = 'Copied to the clipboard.';
    } catch {
      secret.select();
      $('copied').textContent = 'Press Ctrl+C (⌘C on a Mac) to copy the selected key.';
    }
  });
  function forgetSecret() {
    $('secret').value = '';
    $('copied').textContent = '';
  }
  $('close-key').addEventListener('click', () => {
    forgetSecret();
    $('show-key').close();
  });
  // Escape closes it too: either way the secret leaves the page.
  $('show-key').addEventListener('cancel', forgetSecret);
  $('show-key').addEventListener('close', () => {
    forgetSecret();
    focusRow(shownKeyId);
    shownKeyId = null;
  });

  // Create.
  function toggleCustom() {
    const custom = $('expiration').value === 'custom';
    $('custom-field').hidden = !custom;
    $('custom-date').required = custom;
  }
  $('expiration').addEventListener('change', toggleCustom);

  $('create').addEventListener('submit', async (event) => {
    event.preventDefault();
    clearError();
    const form = event.currentTarget;
    const permissions = [...form.querySelectorAll('input[name="permissions"]:checked')].map((i) => i.value);
    let expiration = $('expiration').value;
    if (expiration === 'custom') {
      const day = $('custom-date').value;
      expiration = day ? `${day}T23:59:59Z` : '';
    }
    const name = $('name').value;
    // Characters as the server counts them (code points, not UTF-16 units).
    if ([...name.trim()].length > 100) {
      showError({ message: 'The name must be at most 100 characters.' });
      return;
    }
    const body = { name, permissions, expiration };
    const environment = $('environment').value.trim();
    if (environment) body.environment = environment;
    const networks = $('networks').value.split(',').map((n) => n.trim()).filter((n) => n);
    if (networks.length) body.allowed_networks = networks;
    try {
      const created = await api('POST', '/keys', body);
      form.reset();
      toggleCustom();
      await refresh();
      showKey(created, `Key ${created.name} created.`);
    } catch (error) {
      showError(error);
    }
  });

  // Rotate.
  // `keep`: the permissions the replacement gets, checked (default all the key's).
  function openRotate(key, keep) {
    clearError();
    pending = key;
    $('rotate-name').textContent = key.name;
    const kept = keep || key.permissions;
    $('rotate-permissions').replaceChildren(...key.permissions.map((p) => element('li', null, [
      element('label', null, [
        element('input', null, null, { type: 'checkbox', name: 'keep', value: p, ...(kept.includes(p) ? { checked: '' } : {}) }),
        ' ',
        element('code', p),
      ]),
    ])));
    $('rotate').returnValue = '';
    $('rotate').showModal();
  }
  $('rotate-cancel').addEventListener('click', () => $('rotate').close());
  $('rotate').addEventListener('close', () => {
    if ($('rotate').returnValue !== 'rotate' && pending) focusRow(pending.id, 'rotate');
  });
  $('rotate-confirm').addEventListener('click', async () => {
    const key = pending;
    const grace = Number(document.querySelector('input[name="grace"]:checked').value);
    const keep = [...document.querySelectorAll('input[name="keep"]:checked')].map((i) => i.value);
    $('rotate').close('rotate');
    const body = { grace_seconds: grace };
    // Fewer than the key holds: the replacement is narrowed to them.
    if (keep.length < key.permissions.length) body.permissions = keep;
    try {
      const created = await api('POST', `/keys/${encodeURIComponent(key.id)}/rotate`, body);
      await refresh();
      showKey(created, `Key ${key.name} rotated.`);
    } catch (error) {
      showError(error);
    }
  });

  // Disable and enable.
  async function setDisabled(key, disabled) {
    clearError();
    try {
      await api('POST', `/keys/${encodeURIComponent(key.id)}/${disabled ? 'disable' : 'enable'}`);
      await refresh();
      announce(`Key ${key.name} ${disabled ? 'disabled' : 'enabled'}.`);
      focusRow(key.id, disabled ? 'enable' : 'disable');
    } catch (error) {
      showError(error);
    }
  }

  // Delete, after a confirmation.
  function openDelete(key) {
    clearError();
    pending = key;
    $('delete-name').textContent = key.name;
    $('delete').returnValue = '';
    $('delete').showModal();
    $('delete-cancel').focus();
  }
  $('delete-cancel').addEventListener('click', () => $('delete').close());
  $('delete').addEventListener('close', () => {
    if ($('delete').returnValue !== 'delete' && pending) focusRow(pending.id, 'delete');
  });
  $('delete-confirm').addEventListener('click', async () => {
    const key = pending;
    $('delete').close('delete');
    try {
      await api('DELETE', `/keys/${encodeURIComponent(key.id)}`);
      await refresh();
      announce(`Key ${key.name} deleted.`);
      $('keys-heading').focus();
    } catch (error) {
      showError(error);
    }
  });

  async function start() {
    try {
      const account = await api('GET', '/account');
      keysAllowed = account.api_keys_allowed;
      $('account').textContent = `${account.name} · ${account.plan} plan`;
      $('plan-name').textContent = account.plan;
      $('plan-notice').hidden = keysAllowed;
      $('create-fields').disabled = !keysAllowed;
      // Only what this user may grant is offered; the router refuses the rest anyway.
      const grantable = new Set(account.grantable_permissions);
      for (const input of document.querySelectorAll('input[name="permissions"]')) {
        input.closest('li').hidden = !grantable.has(input.value);
        input.disabled = !grantable.has(input.value);
      }
      await refresh();
    } catch (error) {
      showError(error);
    }
  }

  toggleCustom();
  start();
})();

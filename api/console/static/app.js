// The console's entry point: log in, the three views (overview, policy,
// users) and the live refresh.
import { APIError, Client, savedToken, saveToken } from './api.js';
import { $, h, say, setText } from './dom.js';
import { Users } from './users.js';

// refreshMs is how often the visible view reloads from the server.
const refreshMs = 2000;

// POLICY_FIELDS are the policy fields the policy form edits (the global
// switch and default_push are on the overview). type: bool, int,
// duration (a Go duration: 72h, 30s), enum (values), code (an integer
// out of values).
const POLICY_FIELDS = [
  { name: 'store_enabled', type: 'bool', label: 'Store messages for offline users' },
  { name: 'max_per_session', type: 'int', label: 'Max messages per push session' },
  { name: 'message_ttl', type: 'duration', label: 'Message lifetime (TTL)' },
  { name: 'max_mailbox', type: 'int', label: 'Max messages per mailbox' },
  { name: 'max_message_size', type: 'int', label: 'Max message size (bytes)' },
  { name: 'encapsulation', type: 'enum', label: 'Encapsulation',
    values: ['auto', 'message/sip', 'message/sipfrag', 'message/cpim', 'message/msrp', 'multipart/mixed'] },
  { name: 'no_encap_fallback', type: 'enum', label: 'When the client takes no encapsulation', values: ['hold', 'bare'] },
  { name: 'push_target', type: 'enum', label: 'Push target', values: ['contact', 'aor'] },
  { name: 'invite_timeout', type: 'duration', label: 'INVITE timeout' },
  { name: 'retry_backoff', type: 'duration', label: 'Retry backoff' },
  { name: 'max_attempts', type: 'int', label: 'Attempts before dead-lettering' },
  { name: 'success_reports', type: 'bool', label: 'Ack on MSRP success REPORTs' },
  { name: 'full_mailbox_reply', type: 'code', label: 'SIP reply when a mailbox is full', values: [486, 480] },
  { name: 'store_disabled_reply', type: 'code', label: 'SIP reply when storing is off', values: [403, 480] },
  { name: 'delivery', type: 'enum', label: 'Delivery (auto: MSRP, SIP MESSAGE when refused)', values: ['auto', 'msrp', 'pager'] },
  { name: 'pager_below', type: 'int', label: 'SIP MESSAGE for mailboxes of at most (auto; 0: never)' },
];

const STATS = [
  ['stored', 'Messages stored'],
  ['pushed', 'Pushed and confirmed'],
  ['failed', 'Failed push attempts'],
  ['expired', 'Expired undelivered'],
  ['dead_lettered', 'Dead-lettered'],
  ['deleted', 'Deleted by an operator'],
  ['mailboxes', 'Mailboxes holding messages'],
  ['held', 'Messages held now'],
  ['pushes_in_progress', 'Pushes in progress (this instance)'],
];

class Console {
  constructor() {
    this.client = null;
    this.readOnly = true;
    this.timer = null;
    this.refreshing = false;
    this.policy = null; // the policy as last read
    this.policyETag = null; // its ETag, if the server gives one
    this.formBase = null; // the policy the form was filled from
    this.formETag = null;
    this.users = new Users(this);
  }

  start() {
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.login($('token').value.trim());
    });
    $('logout').addEventListener('click', () => this.logout(''));
    $('push-switch').addEventListener('click', () => this.toggleSwitch());
    $('default-push').addEventListener('change', () => this.setDefaultPush());
    $('policy-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.savePolicy();
    });
    $('policy-revert').addEventListener('click', () => this.fillPolicyForm(true));
    window.addEventListener('hashchange', () => this.show());
    this.buildPolicyForm();
    this.users.start();
    const token = savedToken();
    if (token) {
      this.login(token);
    } else {
      this.show();
    }
  }

  async login(token) {
    const err = $('login-error');
    setText(err, '');
    if (!token) {
      setText(err, 'Type a token.');
      this.show();
      return;
    }
    const client = new Client(token);
    try {
      const { data } = await client.get('/v1/whoami');
      this.client = client;
      this.readOnly = data.role !== 'admin';
      saveToken(token);
      $('token').value = '';
      setText($('who'), `${data.name} (${data.role})`);
    } catch (e) {
      saveToken('');
      setText(err, e instanceof APIError && e.status === 401 ? 'This token is not valid.' : e.message);
      this.show();
      return;
    }
    document.body.classList.toggle('readonly', this.readOnly);
    this.applyRole(document);
    this.show();
  }

  logout(why) {
    this.client = null;
    saveToken('');
    clearInterval(this.timer);
    this.timer = null;
    setText($('who'), '');
    setText($('login-error'), why);
    this.show();
  }

  // applyRole disables every write control under root for a viewer.
  applyRole(root) {
    for (const el of root.querySelectorAll('.write')) {
      el.disabled = this.readOnly;
      if (this.readOnly) {
        el.title = 'read-only: this token has the viewer role';
      }
    }
  }

  // fail shows err in the message area el; a 401 logs out (the token was
  // removed from the configuration).
  fail(el, err, reload) {
    if (err instanceof APIError && err.status === 401) {
      this.logout('The server no longer takes this token: log in again.');
      return;
    }
    if (err instanceof APIError && err.status === 412) {
      say(el, err.message, 'stale', reload);
      return;
    }
    const code = err instanceof APIError && err.code ? ` (${err.status} ${err.code})` : '';
    say(el, err.message + code, 'error');
  }

  view() {
    const v = location.hash.replace(/^#/, '').split('?')[0];
    return ['overview', 'policy', 'users'].includes(v) ? v : 'overview';
  }

  show() {
    const logged = this.client !== null;
    const view = logged ? this.view() : 'login';
    for (const id of ['login', 'overview', 'policy', 'users']) {
      $(id).hidden = id !== view;
    }
    $('nav').hidden = !logged;
    $('logout').hidden = !logged;
    $('readonly-banner').hidden = !logged || !this.readOnly;
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('active', a.id === 'nav-' + view);
    }
    clearInterval(this.timer);
    this.timer = null;
    if (!logged) {
      $('token').focus();
      return;
    }
    this.refresh();
    this.timer = setInterval(() => this.refresh(), refreshMs);
  }

  async refresh() {
    // A slow server must not pile up refreshes.
    if (!this.client || this.refreshing) {
      return;
    }
    this.refreshing = true;
    try {
      await this.refreshView();
    } finally {
      this.refreshing = false;
    }
  }

  async refreshView() {
    switch (this.view()) {
      case 'overview':
        await Promise.all([this.loadPolicy(), this.loadStats(), this.loadReady()]);
        break;
      case 'policy':
        await this.loadPolicy();
        break;
      case 'users':
        await Promise.all([this.loadPolicy(), this.users.refresh()]);
        break;
    }
  }

  // ---- overview ----

  async loadPolicy() {
    try {
      const { data, etag } = await this.client.get('/v1/policy');
      this.policy = data;
      this.policyETag = etag;
      this.showSwitch();
      this.fillPolicyForm(false);
    } catch (e) {
      this.fail($(this.view() === 'policy' ? 'policy-msg' : 'overview-msg'), e);
    }
  }

  showSwitch() {
    const on = this.policy.push_enabled;
    const b = $('push-switch');
    b.setAttribute('aria-pressed', String(on));
    setText(b, on ? 'Pushing is ON' : 'Pushing is OFF');
    b.dataset.state = on ? 'on' : 'off';
    const sel = $('default-push');
    if (document.activeElement !== sel) {
      sel.value = this.policy.default_push;
    }
  }

  // patchPolicy sends a merge patch with the ETag of the policy the
  // change was made on.
  async patchPolicy(patch, etag) {
    const { data, etag: next } = await this.client.call('PATCH', '/v1/policy', {
      json: patch, contentType: 'application/merge-patch+json', etag,
    });
    this.policy = data;
    this.policyETag = next || null;
    if (!next) {
      await this.loadPolicy(); // the ETag of what is stored now
    }
    this.showSwitch();
    return data;
  }

  async toggleSwitch() {
    if (!this.policy) {
      return;
    }
    const msg = $('overview-msg');
    const want = !this.policy.push_enabled;
    try {
      await this.patchPolicy({ push_enabled: want }, this.policyETag);
      say(msg, want ? 'Pushing switched on.' : 'Pushing switched off: messages are still stored.');
    } catch (e) {
      this.fail(msg, e, () => this.loadPolicy().then(() => setText(msg, '')));
    }
  }

  async setDefaultPush() {
    const msg = $('overview-msg');
    const v = $('default-push').value;
    try {
      await this.patchPolicy({ default_push: v }, this.policyETag);
      say(msg, `Users without settings now follow default push "${v}".`);
    } catch (e) {
      this.fail(msg, e, () => this.loadPolicy().then(() => setText(msg, '')));
      if (this.policy) {
        $('default-push').value = this.policy.default_push;
      }
    }
  }

  async loadStats() {
    try {
      const { data } = await this.client.get('/v1/stats');
      data.held = Math.max(data.stored - data.pushed - data.expired - data.deleted, 0);
      const rows = STATS.map(([k, label]) => h('tr', { 'data-stat': k }, h('th', {}, label), h('td', {}, String(data[k] ?? ''))));
      $('stats').tBodies[0].replaceChildren(...rows);
      setText($('stats-updated'), 'updated ' + new Date().toLocaleTimeString());
    } catch (e) {
      this.fail($('overview-msg'), e);
    }
  }

  async loadReady() {
    const el = $('store-status');
    try {
      const res = await fetch('/readyz', { cache: 'no-store', credentials: 'omit' });
      el.className = 'status ' + (res.ok ? 'ok' : 'bad');
      setText(el, res.ok ? 'Store ready' : 'Store does not answer (/readyz ' + res.status + ')');
    } catch {
      el.className = 'status bad';
      setText(el, 'deferpush does not answer');
    }
  }

  // ---- policy form ----

  buildPolicyForm() {
    const rows = POLICY_FIELDS.map((f) => {
      let input;
      const id = 'policy-' + f.name;
      if (f.type === 'bool') {
        input = h('input', { id, type: 'checkbox', class: 'write' });
      } else if (f.type === 'enum' || f.type === 'code') {
        input = h('select', { id, class: 'write' }, f.values.map((v) => h('option', { value: String(v) }, String(v))));
      } else {
        input = h('input', { id, type: 'text', class: 'write', spellcheck: 'false',
          inputmode: f.type === 'int' ? 'numeric' : 'text' });
      }
      input.addEventListener('input', () => this.markDirty());
      input.addEventListener('change', () => this.markDirty());
      return h('tr', { 'data-field': f.name },
        h('th', {}, h('label', { for: id }, f.label), h('div', { class: 'hint' }, h('code', {}, f.name))),
        h('td', {}, input),
        h('td', { class: 'field-error', id: id + '-error' }));
    });
    $('policy-fields').replaceChildren(...rows);
  }

  // formValue reads a field; an int that does not parse is sent as typed,
  // so that the server names what is wrong with it.
  formValue(f) {
    const el = $('policy-' + f.name);
    switch (f.type) {
      case 'bool':
        return el.checked;
      case 'code':
        return Number(el.value);
      case 'int':
        return /^-?\d+$/.test(el.value.trim()) ? Number(el.value.trim()) : el.value;
      default:
        return el.value.trim();
    }
  }

  changedFields() {
    const patch = {};
    if (!this.formBase) {
      return patch;
    }
    for (const f of POLICY_FIELDS) {
      const v = this.formValue(f);
      if (String(v) !== String(this.formBase[f.name])) {
        patch[f.name] = v;
      }
    }
    return patch;
  }

  markDirty() {
    const patch = this.changedFields();
    for (const f of POLICY_FIELDS) {
      document.querySelector(`tr[data-field="${f.name}"]`).classList.toggle('dirty', f.name in patch);
    }
  }

  // fillPolicyForm shows the policy last read, unless the operator is
  // editing (force: discard the edits).
  fillPolicyForm(force) {
    if (!this.policy || (!force && Object.keys(this.changedFields()).length > 0)) {
      return;
    }
    this.formBase = this.policy;
    this.formETag = this.policyETag;
    for (const f of POLICY_FIELDS) {
      const el = $('policy-' + f.name);
      if (f.type === 'bool') {
        el.checked = Boolean(this.policy[f.name]);
      } else {
        el.value = String(this.policy[f.name]);
      }
      setText($('policy-' + f.name + '-error'), '');
    }
    this.markDirty();
    if (force) {
      setText($('policy-msg'), '');
    }
  }

  async savePolicy() {
    const msg = $('policy-msg');
    for (const f of POLICY_FIELDS) {
      setText($('policy-' + f.name + '-error'), '');
    }
    const patch = this.changedFields();
    if (Object.keys(patch).length === 0) {
      say(msg, 'Nothing to save.');
      return;
    }
    try {
      await this.patchPolicy(patch, this.formETag);
      this.fillPolicyForm(true);
      say(msg, 'Saved: ' + Object.keys(patch).join(', ') + '.');
    } catch (e) {
      if (e instanceof APIError && e.field && $('policy-' + e.field + '-error')) {
        setText($('policy-' + e.field + '-error'), e.message);
      }
      this.fail(msg, e, () => this.loadPolicy().then(() => this.fillPolicyForm(true)));
    }
  }
}

new Console().start();

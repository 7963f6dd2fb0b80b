// The user view: a user's settings, mailbox (paged), one message decoded,
// dead letters, requeue and push now.
import { APIError, userPath } from './api.js';
import { $, confirmClick, fmtTime, h, say, setText } from './dom.js';
import { bytes, parseMSRP, parseSIP, text } from './decode.js';

const pageSize = 20;

export class Users {
  constructor(app) {
    this.app = app;
    this.aor = ''; // the user shown
    this.settings = null;
    this.settingsETag = null;
    this.settingsDirty = false;
    this.offset = { messages: 0, 'dead-letters': 0 };
    // The offsets of the pages before (Prev) and of the next one, as the
    // answer says: a page may hold fewer than pageSize messages (large
    // ones), so offset + pageSize is not where the next one starts.
    this.back = { messages: [], 'dead-letters': [] };
    this.next = { messages: undefined, 'dead-letters': undefined };
    this.messageId = ''; // the message shown in detail
    this.messageETag = null; // its ETag
    this.messagesETag = null; // the mailbox's, from the last listing
  }

  start() {
    $('user-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.open($('aor').value.trim());
    });
    $('settings-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      this.saveSettings();
    });
    for (const id of ['user-push', 'user-max', 'user-delivery', 'user-pager-below']) {
      $(id).addEventListener('input', () => { this.settingsDirty = true; });
    }
    $('settings-reset').addEventListener('click', () => this.resetSettings());
    $('push-now').addEventListener('click', () => this.pushNow());
    confirmClick($('mailbox-delete-all'), () => this.deleteAll());
    $('dead-requeue').addEventListener('click', () => this.requeue());
    $('message-close').addEventListener('click', () => this.closeMessage());
    confirmClick($('message-delete'), () => this.deleteMessage(this.messageId));
    $('mailbox-prev').addEventListener('click', () => this.page('messages', -1));
    $('mailbox-next').addEventListener('click', () => this.page('messages', 1));
    $('dead-prev').addEventListener('click', () => this.page('dead-letters', -1));
    $('dead-next').addEventListener('click', () => this.page('dead-letters', 1));
  }

  get client() {
    return this.app.client;
  }

  msg() {
    return $('user-msg');
  }

  open(aor) {
    if (!aor) {
      return;
    }
    this.aor = aor;
    this.offset = { messages: 0, 'dead-letters': 0 };
    this.back = { messages: [], 'dead-letters': [] };
    this.settingsDirty = false;
    this.closeMessage();
    setText(this.msg(), '');
    this.refresh();
  }

  async refresh() {
    if (!this.aor || !this.client) {
      return;
    }
    try {
      await Promise.all([this.loadSettings(), this.loadList('messages'), this.loadList('dead-letters')]);
      if (this.messageId) {
        await this.loadMessage(this.messageId, false);
      }
      $('user').hidden = false;
    } catch (e) {
      if (e instanceof APIError && e.code === 'invalid_aor') {
        $('user').hidden = true;
      }
      this.app.fail(this.msg(), e);
    }
  }

  // ---- settings ----

  async loadSettings() {
    const { data, etag } = await this.client.get(userPath(this.aor, 'settings'));
    setText($('user-aor'), this.aor);
    const pol = this.app.policy;
    const eff = data.push || (pol ? pol.default_push : 'the policy default');
    setText($('user-effective'), `Push is ${eff}` + (data.push ? ' (set for this user)' : ' (the policy default)') +
      (data.max_per_session ? `, at most ${data.max_per_session} a session` : ''));
    this.settings = data;
    this.settingsETag = etag;
    if (!this.settingsDirty) {
      $('user-push').value = data.push || '';
      $('user-max').value = data.max_per_session ? String(data.max_per_session) : '';
      $('user-delivery').value = data.delivery || '';
      $('user-pager-below').value = data.pager_below ? String(data.pager_below) : '';
    }
  }

  async saveSettings() {
    setText($('settings-error'), '');
    const body = {};
    const push = $('user-push').value;
    const max = $('user-max').value.trim();
    if (push) {
      body.push = push;
    }
    if (max) {
      body.max_per_session = /^-?\d+$/.test(max) ? Number(max) : max;
    }
    const delivery = $('user-delivery').value;
    const below = $('user-pager-below').value.trim();
    if (delivery) {
      body.delivery = delivery;
    }
    if (below) {
      body.pager_below = /^-?\d+$/.test(below) ? Number(below) : below;
    }
    try {
      await this.client.call('PUT', userPath(this.aor, 'settings'), { json: body, etag: this.settingsETag });
      this.settingsDirty = false;
      say(this.msg(), `Settings of ${this.aor} saved` + (push ? `: push ${push}.` : '.'));
      await this.loadSettings();
    } catch (e) {
      if (e instanceof APIError && e.field) {
        setText($('settings-error'), e.message);
      }
      this.app.fail(this.msg(), e, () => this.reloadSettings());
    }
  }

  async resetSettings() {
    try {
      await this.client.call('DELETE', userPath(this.aor, 'settings'), { etag: this.settingsETag });
      this.settingsDirty = false;
      say(this.msg(), `${this.aor} follows the policy again.`);
      await this.loadSettings();
    } catch (e) {
      this.app.fail(this.msg(), e, () => this.reloadSettings());
    }
  }

  async reloadSettings() {
    this.settingsDirty = false;
    setText(this.msg(), '');
    setText($('settings-error'), '');
    await this.refresh();
  }

  async pushNow() {
    try {
      const { data } = await this.client.call('POST', userPath(this.aor, 'push'));
      say(this.msg(), `Push to ${data.contact} started.`);
    } catch (e) {
      this.app.fail(this.msg(), e);
    }
  }

  // ---- listings ----

  page(kind, dir) {
    if (dir > 0) {
      if (this.next[kind] === undefined) {
        return;
      }
      this.back[kind].push(this.offset[kind]);
      this.offset[kind] = this.next[kind];
    } else {
      this.offset[kind] = this.back[kind].pop() ?? 0;
    }
    this.loadList(kind).catch((e) => this.app.fail(this.msg(), e));
  }

  async loadList(kind) {
    const path = userPath(this.aor, kind) + `?offset=${this.offset[kind]}&limit=${pageSize}`;
    const { data, etag } = await this.client.get(path);
    const dead = kind === 'dead-letters';
    if (!dead) {
      // The mailbox's ETag names the messages as listed (every page has
      // it): Delete all sends it, and is refused if any came or went.
      this.messagesETag = etag;
    }
    const ids = dead ? { table: 'dead', count: 'dead-count', page: 'dead-page', prev: 'dead-prev', next: 'dead-next' }
      : { table: 'mailbox', count: 'mailbox-count', page: 'mailbox-page', prev: 'mailbox-prev', next: 'mailbox-next' };
    const cols = dead ? 9 : 8;
    const rows = data.messages.map((m) => {
      const view = h('button', { type: 'button', class: 'view', onclick: () => this.loadMessage(m.id, true) }, 'View');
      const cells = [
        h('td', { class: 'id' }, m.id), h('td', {}, m.state), h('td', {}, m.kind), h('td', {}, m.sender),
        h('td', {}, fmtTime(m.received)), h('td', {}, String(m.size)), h('td', {}, String(m.attempts)),
      ];
      if (dead) {
        cells.push(h('td', {}, m.last_error || ''));
      }
      cells.push(h('td', {}, view));
      return h('tr', { 'data-id': m.id, class: m.id === this.messageId ? 'selected' : '' }, cells);
    });
    if (rows.length === 0) {
      rows.push(h('tr', {}, h('td', { class: 'empty', colspan: cols }, dead ? 'No dead letters.' : 'No messages.')));
    }
    $(ids.table).tBodies[0].replaceChildren(...rows);
    setText($(ids.count), `(${data.total})`);
    const first = data.total === 0 ? 0 : data.offset + 1;
    setText($(ids.page), `${first}–${data.offset + data.messages.length} of ${data.total}`);
    this.next[kind] = data.next;
    $(ids.prev).disabled = data.offset === 0;
    $(ids.next).disabled = data.next === undefined;
    $(dead ? 'dead-requeue' : 'mailbox-delete-all').disabled = this.app.readOnly || data.total === 0;
  }

  async deleteAll() {
    try {
      const { data } = await this.client.call('DELETE', userPath(this.aor, 'messages'), { etag: this.messagesETag });
      say(this.msg(), `Deleted ${data.deleted} messages of ${this.aor}.`);
      this.closeMessage();
      await this.refresh();
    } catch (e) {
      this.app.fail(this.msg(), e, () => this.refresh());
    }
  }

  async requeue() {
    try {
      const { data } = await this.client.call('POST', userPath(this.aor, 'dead-letters', 'requeue'));
      say(this.msg(), `Requeued ${data.requeued} dead letters: they go out with the next push.`);
      await this.refresh();
    } catch (e) {
      this.app.fail(this.msg(), e);
    }
  }

  // ---- one message ----

  closeMessage() {
    this.messageId = '';
    $('message').hidden = true;
    for (const tr of document.querySelectorAll('table.list tr.selected')) {
      tr.classList.remove('selected');
    }
  }

  async loadMessage(id, select) {
    let data;
    let etag;
    try {
      ({ data, etag } = await this.client.get(userPath(this.aor, 'messages', id) + '?body=true'));
    } catch (e) {
      if (e instanceof APIError && e.status === 404 && !select) {
        this.closeMessage(); // delivered or deleted meanwhile
        return;
      }
      this.app.fail(this.msg(), e);
      return;
    }
    if (!select && id !== this.messageId) {
      return;
    }
    this.messageId = id;
    this.messageETag = etag;
    for (const tr of document.querySelectorAll('table.list tbody tr')) {
      tr.classList.toggle('selected', tr.dataset.id === id);
    }
    setText($('message-id'), data.id);
    const meta = [
      ['State', data.state], ['Kind', data.kind], ['Sender', data.sender], ['Recipient', data.recipient],
      ['Received', fmtTime(data.received)], ['Expires', fmtTime(data.expires)], ['Size', `${data.size} bytes`],
      ['Call-ID', data.call_id], ['Message-ID', data.message_id], ['Content-Type', data.content_type],
      ['Attempts', String(data.attempts)], ['Last error', data.last_error],
    ].filter(([, v]) => v !== undefined && v !== '');
    $('message-meta').tBodies[0].replaceChildren(...meta.map(([k, v]) => h('tr', {}, h('th', {}, k), h('td', {}, v))));
    const parts = [];
    if (data.kind === 'msrp-session') {
      parts.push(part('MSRP SEND', parseMSRP(text(bytes(data.raw)))));
      if (data.invite) {
        parts.push(part('The session\'s INVITE', parseSIP(text(bytes(data.invite))), true));
      }
    } else {
      parts.push(part('SIP MESSAGE', parseSIP(text(bytes(data.raw)))));
    }
    $('message-parts').replaceChildren(...parts);
    $('message-delete').disabled = this.app.readOnly;
    $('message').hidden = false;
  }

  async deleteMessage(id) {
    if (!id) {
      return;
    }
    try {
      await this.client.call('DELETE', userPath(this.aor, 'messages', id),
        { etag: id === this.messageId ? this.messageETag : undefined });
      say(this.msg(), `Deleted message ${id}.`);
      this.closeMessage();
      await this.refresh();
    } catch (e) {
      this.app.fail(this.msg(), e, () => this.refresh());
    }
  }
}

// part shows one decoded SIP or MSRP part: start line, headers, body, as
// text.
function part(title, p, headersOnly) {
  const rows = p.headers.map(([k, v]) => h('tr', {}, h('td', {}, k), h('td', {}, v)));
  return h('div', { class: 'part' },
    h('h4', {}, title),
    h('div', { class: 'start' }, p.start),
    h('table', { class: 'headers' }, h('tbody', {}, rows)),
    headersOnly ? null : h('pre', { class: 'body' }, p.body === '' ? '(no body)' : p.body),
    p.end ? h('div', { class: 'start' }, p.end) : null);
}

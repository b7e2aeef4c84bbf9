// The application: boot (configuration → API probe → session), screens and routing.
//
// Boot order matters for the white-screen failure: nothing is drawn from the network
// until the configuration is known, and every failure on the way ends on the error
// screen naming the URL tried. Routing is by hash so the same pages work over http(s),
// file:// and an Electron app scheme.

import { h, replace } from './dom.js';
import { t, setLang, getLang, applyDocumentLang, errorMessage } from './i18n.js';
import { readConfig, probeApi, ConfigError, servedOverHttp } from './config.js';
import { keepShell } from './shell.js';
import { Api } from './api.js';
import { renderFatal } from './views/fatal.js';
import { renderAuth } from './views/auth.js';
import { createHeader, langButton, brand } from './views/header.js';
import { mountToasts, toast } from './views/toast.js';

/** The signed-in part of the app (./workspace.js), loaded once, after the sign-in form. */
let workspace = null;
function loadWorkspace() {
  workspace = workspace || import('./workspace.js').catch((err) => {
    workspace = null; // a failed load is tried again by the next caller
    throw err;
  });
  return workspace;
}

const SESSION_KEY = 'btp.session';
/** History entries a project page shows. */
const HISTORY_SHOWN = 20;
const DEVICE_KEY = 'btp.clientSessionId';

function readJson(key) {
  try { return JSON.parse(localStorage.getItem(key) || 'null'); } catch { return null; }
}

/** One id per device (per browser profile), kept across reloads and sign-ins. */
function clientSessionId(uuid) {
  let id = null;
  try { id = localStorage.getItem(DEVICE_KEY); } catch { /* fall through */ }
  if (!id) {
    id = uuid();
    try { localStorage.setItem(DEVICE_KEY, id); } catch { /* per page load then */ }
  }
  return id;
}

class App {
  constructor(root) {
    this.root = root;
    this.config = null;
    this.api = null;
    this.session = null;
    this.engine = null;
    this.transport = null;
    this.store = null;
    /** The list's search, filter, order and page (its page size comes with the workspace). */
    this.listState = { query: '', status: '', sort: 'newest', limit: 0 };
    /** ./workspace.js's exports, once signed in. */
    this.ws = null;
    this.screen = null;
    /** The open conflict dialog, if any: one at a time, the project on screen first. */
    this.conflictDialog = null;
    window.addEventListener('hashchange', () => this.route());
    // The session is shared by every tab of this browser: signing out (or in as someone
    // else) in one tab does the same in the others.
    window.addEventListener('storage', (ev) => {
      if (ev.key === SESSION_KEY || ev.key === null) this.sessionChangedElsewhere();
    });
  }

  async sessionChangedElsewhere() {
    const next = readJson(SESSION_KEY);
    const nextToken = next && next.token && next.user && next.user.id ? next.token : null;
    const current = this.session && this.session.token;
    if (nextToken === (current || null)) return;
    if (this.engine) await this.signOut({ elsewhere: true });
    if (nextToken && this.config) await this.enter(next);
  }

  async boot() {
    replace(this.root, h('div', { class: 'boot', testid: 'boot-shell' }, h('div', { class: 'boot-logo', 'aria-hidden': 'true' }), h('p', { class: 'boot-text', text: `${t('app.name')}…` })));
    this.config = null;
    try {
      this.config = await readConfig();
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      this.fatal(err);
      return;
    }
    keepShell(this.config);
    this.api = new Api(this.config.apiUrl);
    // Settles to the ConfigError naming what failed, or null.
    const probe = probeApi(this.config).then(() => null, (err) => {
      if (err instanceof ConfigError) return err;
      throw err;
    });
    const session = readJson(SESSION_KEY);
    if (session && session.token && session.user && session.user.id) {
      // Local data first: the list opens from this device's store at once, with or
      // without a network, and edits queue in the outbox until the server answers.
      await this.enter(session);
      probe.then((failed) => { if (failed) this.announceOffline(failed); });
      return;
    }
    // The sign-in form at once; an unreachable server replaces it with the error screen.
    // What follows sign-in loads while the user types.
    this.route();
    loadWorkspace().catch(() => { /* enter() says so, if it is still missing then */ });
    const failed = await probe;
    if (failed && !this.engine) this.fatal(failed);
  }

  /**
   * Signed in, the server did not answer: the app runs from this device. In the desktop
   * app the address itself may be wrong (the server moved): the notice stays, with a way
   * to the address form, which keeps the app as it is until another address answers.
   */
  announceOffline(err) {
    if (servedOverHttp()) {
      toast(t('offline.started'), 'warn', 6000);
      return;
    }
    toast(t('offline.started'), 'warn', 0, {
      label: t('error.serverChange'),
      testid: 'offline-server',
      onClick: () => renderFatal(this.root, err, {
        // A new address: start again from it (one engine, one store, one socket).
        onRetry: () => location.reload(),
        serverUrl: this.config.apiUrl,
        onContinueOffline: () => {
          this.renderShell();
          this.announceOffline(err);
        },
      }),
    });
  }

  /** The error screen naming what failed; in the desktop app, with the server address. */
  fatal(err) {
    this.api = null;
    const electronUrl = globalThis.electron && globalThis.electron.apiUrl;
    renderFatal(this.root, err, {
      onRetry: () => this.boot(),
      serverUrl: servedOverHttp() ? undefined : (this.config ? this.config.apiUrl : electronUrl || ''),
    });
  }

  async signedIn(res) {
    const session = { token: res.token, user: res.user };
    try { localStorage.setItem(SESSION_KEY, JSON.stringify(session)); } catch { /* session lasts this page */ }
    if (location.hash !== '#/') history.replaceState(null, '', '#/');
    await this.enter(session);
  }

  async enter(session) {
    try {
      this.ws = await loadWorkspace();
    } catch (err) {
      this.fatal(new ConfigError('error.code', new URL('workspace.js', import.meta.url).href, err && err.message));
      return;
    }
    if (!this.listState.limit) this.listState.limit = this.ws.LIST_PAGE;
    this.session = session;
    if (!this.api) this.api = new Api(this.config.apiUrl);
    this.api.token = session.token;
    this.store = await this.ws.openStore(session.user.id);
    const deviceId = clientSessionId(this.ws.uuid);
    this.api.sessionId = deviceId;
    this.transport = new this.ws.Transport({ config: this.config, api: this.api, clientSessionId: deviceId, getToken: () => this.session && this.session.token });
    this.engine = new this.ws.SyncEngine({ store: this.store, transport: this.transport, clientSessionId: deviceId, userId: session.user.id });
    this.engine.addEventListener('change', () => this.refresh());
    this.engine.addEventListener('unauthorized', () => this.signOut({ expired: true }));
    this.engine.addEventListener('conflict-gone', () => toast(t('conflict.gone'), 'warn', 6000));
    this.engine.addEventListener('ack', (ev) => {
      const { outcome, error } = ev.detail;
      if (outcome === 'conflict' && error && error.code === 'stale') return; // the dialog asks
      if (outcome === 'conflict') toast(t('toast.conflict'), 'warn');
      else if (outcome === 'rejected') toast(t('toast.rejected', { reason: errorMessage(error && error.code, error && error.field) }), 'error', 6000);
    });
    this.renderShell();
    await this.engine.init();
    this.transport.start();
  }

  renderShell() {
    const user = this.session.user;
    this.header = createHeader({ user, onToggleLang: () => this.toggleLang(), onLogout: () => this.signOut({}) });
    this.main = h('main', { class: 'main', id: 'main' });
    replace(this.root, h('div', { class: 'shell' }, this.header.el, this.main));
    mountToasts(this.root);
    this.route();
  }

  toggleLang() {
    setLang(getLang() === 'fr' ? 'ar' : 'fr');
    if (this.engine) this.renderShell();
    else this.route();
  }

  route() {
    const hash = location.hash.replace(/^#/, '') || '/';
    if (!this.engine) {
      if (!this.api) return;
      renderAuth(this.root, {
        api: this.api,
        mode: hash === '/register' ? 'register' : 'login',
        onSignedIn: (res) => this.signedIn(res),
        header: h('header', { class: 'topbar topbar-plain' }, brand(), h('div', { class: 'topbar-actions' }, langButton(() => this.toggleLang()))),
      });
      return;
    }
    const m = /^\/p\/([^/]+)$/.exec(hash);
    const actions = { engine: this.engine, onEdit: (id) => this.edit(id), onDelete: (id) => this.remove(id) };
    if (m) this.screen = this.ws.createDetail({ id: decodeURIComponent(m[1]), loadHistory: (id) => this.api.history(id, HISTORY_SHOWN), ...actions });
    else this.screen = this.ws.createList({ state: this.listState, onNew: () => this.edit(null), ...actions });
    replace(this.main, this.screen.el);
    this.refresh();
    // A new page announces itself: focus its title, never leave it on <body>.
    if (m) {
      const title = this.main.querySelector('[data-testid="detail-name"]');
      if (title) title.focus();
    }
  }

  refresh() {
    if (!this.engine || !this.header) return;
    this.header.update({ mode: this.transport.mode, lastSyncAt: this.engine.lastSyncAt, pendingCount: this.engine.outbox.length, divergenceResets: this.engine.divergenceResets });
    if (this.screen) this.screen.update();
    this.showConflicts();
  }

  /** Ask about the next conflict, or redraw the open one as the other side moves. */
  showConflicts() {
    const engine = this.engine;
    if (!engine) return;
    const nameOf = (c) => (engine.view().get(c.id) || c.project || {}).name || '';
    if (this.conflictDialog) {
      const open = engine.conflicts.get(this.conflictDialog.id);
      if (open) this.conflictDialog.update(open, nameOf(open));
      else this.conflictDialog.close();
      return;
    }
    if (!engine.conflicts.size) return;
    const m = /^#\/p\/([^/]+)$/.exec(location.hash);
    const c = (m && engine.conflicts.get(decodeURIComponent(m[1]))) || engine.conflicts.values().next().value;
    const dialog = this.ws.openConflict({
      conflict: c,
      name: nameOf(c),
      onKeepMine: () => engine.keepMine(c.id),
      onKeepCurrent: () => engine.keepCurrent(c.id),
    });
    this.conflictDialog = dialog;
    dialog.done.then((choice) => {
      if (this.conflictDialog === dialog) this.conflictDialog = null;
      if (choice && this.engine === engine) toast(t(choice === 'mine' ? 'conflict.sentMine' : 'conflict.keptCurrent'), 'ok');
      this.showConflicts();
    });
  }

  isOnline() {
    return this.transport && (this.transport.mode === 'websocket' || this.transport.mode === 'polling');
  }

  async edit(id) {
    const project = id ? this.engine.view().get(id) : null;
    if (id && !project) return;
    await this.ws.openProjectForm({ engine: this.engine, project, isOnline: () => this.isOnline() });
  }

  async remove(id) {
    const project = this.engine.view().get(id);
    if (!project) return;
    if (!(await this.ws.confirmDelete(project.name))) return;
    // Focus goes where the eye goes: the row that takes the deleted one's place.
    const rows = [...document.querySelectorAll('[data-testid="project-row"]')];
    const at = rows.findIndex((r) => r.dataset.id === id);
    const next = at >= 0 ? (rows[at + 1] || rows[at - 1]) : null;
    await this.engine.mutate('delete', id, null);
    toast(t('toast.deleted'), 'ok');
    if (location.hash.startsWith('#/p/')) {
      location.hash = '#/';
      return;
    }
    const link = next && next.isConnected ? next.querySelector('[data-testid="project-open"]') : null;
    if (link) link.focus();
    else if (this.screen && this.screen.focusSearch) this.screen.focusSearch();
  }

  /**
   * `expired`: the server refused the token (revoked, expired); `elsewhere`: another tab
   * signed out and already told the server and cleared this device's data.
   */
  async signOut({ expired = false, elsewhere = false }) {
    const byUser = !expired && !elsewhere;
    if (byUser && this.engine && (this.engine.outbox.length || this.engine.conflicts.size) && !window.confirm(t('auth.logoutPending'))) return;
    const userId = this.session && this.session.user.id;
    if (byUser && this.api) this.api.logout().catch(() => {});
    if (this.conflictDialog) this.conflictDialog.close();
    if (this.transport) this.transport.stop();
    if (this.engine) this.engine.stop();
    if (this.store) this.store.close();
    this.engine = null;
    this.transport = null;
    this.store = null;
    this.session = null;
    this.header = null;
    this.screen = null;
    if (!elsewhere) {
      try { localStorage.removeItem(SESSION_KEY); } catch { /* nothing to remove */ }
    }
    if (userId && byUser) await this.ws.deleteStore(userId);
    if (this.api) this.api.token = null;
    history.replaceState(null, '', '#/login');
    this.route();
    if (!byUser) {
      mountToasts(this.root);
      toast(t(expired ? 'toast.sessionExpired' : 'toast.signedOutElsewhere'), 'warn', 6000);
    }
  }
}

export async function start(root) {
  applyDocumentLang();
  const app = new App(root);
  try {
    await app.boot();
  } catch (err) {
    renderFatal(root, new ConfigError('error.server', app.config ? app.config.apiUrl : location.href, String(err && err.message || err)), { onRetry: () => location.reload() });
  }
}

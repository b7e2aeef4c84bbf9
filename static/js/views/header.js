// The top bar: brand, the connection indicator (websocket / polling / offline) with the
// time of the last sync and the count of unsynced edits, the language switch, sign-out.
import { h, icon, replace } from '../dom.js';
import { t, getLang } from '../i18n.js';
import { time } from '../format.js';

const MODE_TEXT = { websocket: 'conn.websocket', polling: 'conn.polling', offline: 'conn.offline', connecting: 'conn.connecting' };
const MODE_TITLE = { websocket: 'conn.titleWebsocket', polling: 'conn.titlePolling', offline: 'conn.titleOffline', connecting: 'conn.connecting' };

/**
 * The switch is named by what it shows, the other language's own name (tagged with that
 * language so it is read out right); what it does is its description, in this one.
 */
export function langButton(onToggle) {
  return h('button', {
    class: 'btn btn-ghost btn-sm lang', type: 'button', testid: 'lang-toggle', title: t('lang.switchLabel'), on: { click: onToggle },
  }, icon('globe'), h('span', { lang: getLang() === 'fr' ? 'ar' : 'fr', text: t('lang.switch') }));
}

export function brand() {
  return h('a', { class: 'brand', href: '#/' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }), h('span', { class: 'brand-name', text: t('app.name') }));
}

export function createHeader({ user, onToggleLang, onLogout }) {
  const conn = h('span', { class: 'conn', testid: 'conn-status', role: 'status' });
  const lastSync = h('span', { class: 'last-sync', testid: 'last-sync' });
  const pending = h('span', { class: 'pending', testid: 'pending-count', hidden: true, title: t('sync.pendingTitle') });
  const el = h('header', { class: 'topbar' },
    brand(),
    h('div', { class: 'sync-status' }, conn, lastSync, pending),
    h('div', { class: 'topbar-actions' },
      langButton(onToggleLang),
      h('span', { class: 'user', testid: 'user-name', title: user.email || '' }, icon('user'), h('span', { class: 'user-label', text: user.name || user.email || '' })),
      h('button', { class: 'btn btn-ghost btn-sm', type: 'button', testid: 'logout', 'aria-label': t('auth.logout'), title: t('auth.logout'), on: { click: onLogout } }, icon('logout'), h('span', { class: 'hide-sm', text: t('auth.logout') }))));

  function update({ mode, lastSyncAt, pendingCount, divergenceResets }) {
    lastSync.dataset.divergenceResets = String(divergenceResets);
    conn.dataset.state = mode;
    conn.title = t(MODE_TITLE[mode]);
    replace(conn, h('span', { class: 'dot', 'aria-hidden': 'true' }), h('span', { class: 'conn-text', text: t(MODE_TEXT[mode]) }));
    if (lastSyncAt) {
      lastSync.dataset.ts = String(lastSyncAt);
      lastSync.textContent = t('sync.at', { time: time(lastSyncAt) });
    } else {
      delete lastSync.dataset.ts;
      lastSync.textContent = t('sync.never');
    }
    pending.hidden = pendingCount === 0;
    pending.dataset.count = String(pendingCount);
    pending.textContent = t('sync.pending', { n: pendingCount });
  }

  return { el, update };
}

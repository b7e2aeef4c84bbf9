// One project's page: every field, its sync state, edit and delete, and its history (who
// changed what, from the server: read again whenever the project's version moves).
import { h, icon, replace } from '../dom.js';
import { t } from '../i18n.js';
import { money, date, dateTime, relativeTime } from '../format.js';
import { statusBadge, progressBar } from './list.js';

/** A field's value as the detail view shows it (history, conflicts). */
export function shown(field, value) {
  if (value === null || value === undefined || value === '') return t('empty.dash');
  if (field === 'status') return t(`status.${value}`);
  if (field === 'budget_centimes') return money(value);
  if (field === 'start_date' || field === 'end_date') return date(value);
  if (field === 'progress') return `${value} %`;
  return String(value);
}

const FIELD_LABEL = { budget_centimes: 'field.budget' };

/** A field's label in the user's language. */
export function fieldLabel(field) {
  return t(FIELD_LABEL[field] || `field.${field}`);
}
const HISTORY_RETRY_MS = 5000;

function historyEntry(entry) {
  const changes = Object.entries(entry.fields || {}).map(([field, { from, to }]) =>
    h('li', { class: 'history-change', 'data-field': field },
      h('span', { class: 'label', text: fieldLabel(field) }),
      entry.kind === 'create' ? null : h('bdi', { class: 'history-from', text: shown(field, from) }),
      entry.kind === 'create' ? null : h('span', { 'aria-hidden': 'true', text: ' → ' }),
      h('bdi', { class: 'history-to', text: shown(field, to) })));
  return h('li', { class: 'history-entry', testid: 'history-entry', 'data-kind': entry.kind, 'data-seq': String(entry.seq) },
    h('div', { class: 'history-head' },
      h('strong', { text: t(`history.kind.${entry.kind}`) }),
      h('span', { class: 'history-device', testid: 'history-device', text: entry.device }),
      h('time', { class: 'muted', datetime: entry.at, title: dateTime(entry.at), text: relativeTime(entry.at) })),
    entry.kind === 'create' || changes.length === 0 ? null : h('ul', { class: 'history-changes' }, ...changes));
}

export function createDetail({ id, engine, onEdit, onDelete, loadHistory }) {
  const el = h('section', { class: 'page page-detail', testid: 'project-detail', 'data-id': id });
  // The history panel outlives re-renders of the card; it is fetched again when the
  // project's seq changes.
  const panel = h('section', { class: 'card history-panel', testid: 'history-panel', 'aria-live': 'polite' });
  let historySeq = null;
  let historyState = { status: 'loading', entries: [] };
  let historyFailedAt = 0;

  function renderHistory() {
    const body = historyState.status === 'error'
      ? h('p', { class: 'muted', testid: 'history-unavailable', text: t('history.unavailable') })
      : historyState.status === 'ready' && historyState.entries.length === 0
        ? h('p', { class: 'muted', text: t('history.empty') })
        : h('ol', { class: 'history-list' }, ...historyState.entries.map(historyEntry));
    replace(panel, h('h2', { class: 'label', text: t('history.title') }), body);
    panel.dataset.state = historyState.status;
  }

  function refreshHistory(seq) {
    const retry = historyState.status === 'error' && Date.now() - historyFailedAt > HISTORY_RETRY_MS;
    if (!loadHistory || (seq === historySeq && !retry)) return;
    historySeq = seq;
    historyState = { ...historyState, status: historyState.status === 'error' ? 'error' : 'loading' };
    loadHistory(id).then(
      (res) => {
        if (historySeq !== seq) return;
        historyState = { status: 'ready', entries: Array.isArray(res && res.entries) ? res.entries : [] };
        renderHistory();
      },
      () => {
        if (historySeq !== seq) return;
        // Offline, or a project the server does not have yet: asked again on a later
        // update, at most every few seconds.
        historyState = { status: 'error', entries: [] };
        historyFailedAt = Date.now();
        renderHistory();
      });
  }

  const back = h('a', { class: 'back', href: '#/', testid: 'detail-back' }, icon('back', 'icon icon-flip'), t('detail.back'));
  /** The project's card, built once and then filled in place: a change made elsewhere
   * never takes the focus (on its buttons, say) or the reader's place away. */
  let card = null;

  function buildCard() {
    const dd = (testid) => h('dd', { testid, dir: 'auto' });
    const item = (label, value) => h('div', { class: 'dl-item' }, h('dt', { text: label }), value);
    const c = {
      title: h('h1', { class: 'detail-title', testid: 'detail-name', dir: 'auto', tabindex: '-1' }),
      badges: h('div', { class: 'detail-sub' }),
      progress: h('div', { class: 'detail-progress' }),
      fields: {
        client: dd('detail-client'), city: dd('detail-city'), budget: dd('detail-budget'), start: dd('detail-start'),
        end: dd('detail-end'), created: dd('detail-created'), updated: dd('detail-updated'),
      },
      notes: h('p', { testid: 'detail-notes', dir: 'auto' }),
    };
    const f = c.fields;
    c.el = h('div', { class: 'card detail-card' },
      h('div', { class: 'detail-head' },
        h('div', null, c.title, c.badges),
        h('div', { class: 'detail-actions' },
          h('button', { class: 'btn btn-ghost', type: 'button', testid: 'detail-edit', on: { click: () => onEdit(id) } }, icon('edit'), t('detail.edit')),
          h('button', { class: 'btn btn-danger', type: 'button', testid: 'detail-delete', on: { click: () => onDelete(id) } }, icon('trash'), t('detail.delete')))),
      c.progress,
      h('dl', { class: 'dl' },
        item(t('field.client'), f.client), item(t('field.city'), f.city), item(t('field.budget'), f.budget),
        item(t('field.start_date'), f.start), item(t('field.end_date'), f.end),
        item(t('field.created_at'), f.created), item(t('field.updated_at'), f.updated)),
      h('div', { class: 'detail-notes' }, h('h2', { class: 'label', text: t('field.notes') }), c.notes));
    return c;
  }

  /** Set `node`'s text, touching the document only when it changed. */
  function text(node, value) {
    if (node.textContent !== value) node.textContent = value;
  }

  function fill(c, p, pending) {
    text(c.title, p.name);
    replace(c.badges, statusBadge(p.status, 'detail-status'),
      pending ? h('span', { class: 'chip chip-pending', testid: 'detail-pending', text: t('detail.pending') }) : null);
    replace(c.progress, h('span', { class: 'label', text: t('field.progress') }), progressBar(p.progress));
    const f = c.fields;
    text(f.client, p.client || t('empty.dash'));
    text(f.city, p.city || t('empty.dash'));
    text(f.budget, money(p.budget_centimes));
    text(f.start, date(p.start_date));
    text(f.end, date(p.end_date));
    text(f.created, dateTime(p.created_at));
    text(f.updated, dateTime(p.updated_at));
    c.notes.className = p.notes ? 'notes' : 'notes muted';
    text(c.notes, p.notes || t('detail.noNotes'));
  }

  function update() {
    if (!engine.ready()) {
      replace(el, back, h('div', { class: 'state-loading', testid: 'state-loading' }, h('div', { class: 'sk sk-title' }), h('div', { class: 'sk sk-line' })));
      return;
    }
    const p = engine.view().get(id);
    if (!p) {
      card = null;
      replace(el, back, h('div', { class: 'state state-empty', testid: 'detail-not-found' },
        h('div', { class: 'state-art', 'aria-hidden': 'true' }, icon('search', 'icon icon-xl')),
        h('h2', { text: t('detail.notFoundTitle') }),
        h('p', { text: t('detail.notFoundText') })));
      return;
    }
    if (!card) card = buildCard();
    fill(card, p, engine.isPending(id));
    if (card.el.parentNode !== el) {
      replace(el, back, card.el, panel);
      renderHistory();
    }
    refreshHistory(p.seq);
  }

  update();
  return { el, update };
}

// The projects screen: totals (all and per status, clickable as filters), search and
// status filter, and the list itself with designed loading / empty / no-match states.
// The toolbar is built once and only the totals and rows are redrawn on each change,
// so typing in the search box never loses focus when a sync lands.
import { h, icon, replace, reconcile } from '../dom.js';
import { t, getLang, locale } from '../i18n.js';
import { money, compactMoney, date } from '../format.js';
import { STATUSES, SORTS, matches, totals, compareBy, isOverdue, today } from '../project.js';
import { toCsv, download } from '../csv.js';

const PAGE = 200;

export function statusBadge(status, testid) {
  return h('span', { class: ['badge', `badge-${status}`], testid, 'data-status': status, text: t(`status.${status}`) });
}

export function progressBar(value) {
  const v = Number.isFinite(value) ? Math.max(0, Math.min(100, value)) : 0;
  return h('div', { class: 'progress-wrap' },
    h('progress', { class: 'progress', max: '100', value: String(v), 'aria-label': t('field.progress') }),
    h('span', { class: 'progress-num', text: `${v}%` }));
}

export function createList({ state, engine, onNew, onEdit, onDelete }) {
  const search = h('input', {
    class: 'input search-input', type: 'search', dir: 'auto', testid: 'search-input', placeholder: t('search.placeholder'),
    'aria-label': t('search.label'), value: state.query,
    on: { input: (ev) => { state.query = ev.target.value; state.limit = PAGE; update(); } },
  });
  const filter = h('select', {
    class: 'input select', testid: 'status-filter', 'aria-label': t('filter.label'),
    on: { change: (ev) => { state.status = ev.target.value; state.limit = PAGE; update(); } },
  }, h('option', { value: '', text: t('filter.all') }), STATUSES.map((s) => h('option', { value: s, text: t(`status.${s}`) })));
  filter.value = state.status;
  const sort = h('select', {
    class: 'input select', testid: 'sort-select', 'aria-label': t('sort.label'),
    on: { change: (ev) => { state.sort = ev.target.value; state.limit = PAGE; update(); } },
  }, SORTS.map((s) => h('option', { value: s, text: t(`sort.${s}`) })));
  sort.value = SORTS.includes(state.sort) ? state.sort : 'newest';
  // What the list shows now (filtered and ordered), for the export.
  let shownNow = [];
  const exportCsv = h('button', {
    class: 'btn btn-ghost', type: 'button', testid: 'export-csv', title: t('export.title'),
    on: { click: () => download(toCsv(shownNow, getLang(), t), `projets-${today()}.csv`) },
  }, t('export.csv'));

  const totalsEl = h('div', { class: 'totals', testid: 'totals' });
  const listEl = h('div', { class: 'list', testid: 'project-list', 'aria-live': 'polite' });
  const countEl = h('p', { class: 'list-count', testid: 'list-count' });

  const el = h('section', { class: 'page' },
    h('div', { class: 'page-head' },
      h('h1', { class: 'page-title', text: t('projects.title') }),
      h('button', { class: 'btn btn-primary', type: 'button', testid: 'new-project', on: { click: onNew } }, icon('plus'), t('projects.new'))),
    totalsEl,
    h('div', { class: 'toolbar' },
      h('label', { class: 'search' }, icon('search'), search),
      filter,
      sort,
      exportCsv),
    countEl,
    listEl);

  function totalCard(key, value, label, extra) {
    const active = key !== 'all' && state.status === key;
    return h('button', {
      type: 'button', class: ['total', `total-${key}`, active && 'active'], testid: `totals-${key.replace('_', '-')}`,
      'data-value': String(value), 'aria-pressed': key === 'all' ? String(!state.status) : String(active),
      on: { click: () => { state.status = key === 'all' || active ? '' : key; filter.value = state.status; update(); } },
    },
    h('span', { class: 'total-value', testid: `totals-${key.replace('_', '-')}-value`, text: String(value) }),
    h('span', { class: 'total-label', text: label }),
    extra);
  }

  function row(p, overdue) {
    const pending = engine.isPending(p.id);
    const meta = [p.client, p.city].filter(Boolean);
    return h('article', { class: ['project-row', pending && 'is-pending'], testid: 'project-row', 'data-id': p.id, 'data-name': p.name, 'data-pending': String(pending) },
      h('a', { class: 'row-main', href: `#/p/${encodeURIComponent(p.id)}`, testid: 'project-open' },
        h('div', { class: 'row-title' },
          h('span', { class: 'row-name', testid: 'project-row-name', dir: 'auto', text: p.name }),
          statusBadge(p.status, 'project-row-status'),
          overdue ? h('span', { class: 'badge badge-overdue', testid: 'project-row-overdue', title: t('overdue.title'), text: t('overdue.badge') }) : null,
          pending ? h('span', { class: 'chip chip-pending', testid: 'project-row-pending', title: t('sync.pendingTitle'), text: t('detail.pending') }) : null),
        h('div', { class: 'row-meta' },
          // User text in either script, each part isolated so its punctuation stays put.
          meta.length ? h('span', { class: 'meta-item' }, icon('pin', 'icon icon-sm'), meta.flatMap((m, i) => [i ? ' · ' : null, h('bdi', { text: m })])) : null,
          p.start_date || p.end_date ? h('span', { class: 'meta-item' }, icon('calendar', 'icon icon-sm'), h('bdi', { text: date(p.start_date) }), getLang() === 'ar' ? ' ← ' : ' → ', h('bdi', { text: date(p.end_date) })) : null)),
      h('div', { class: 'row-figures' },
        h('span', { class: 'row-budget', testid: 'project-row-budget', text: money(p.budget_centimes) }),
        progressBar(p.progress)),
      h('div', { class: 'row-actions' },
        h('button', { class: 'btn btn-icon', type: 'button', testid: 'project-edit', title: t('detail.edit'), 'aria-label': `${t('detail.edit')} ${p.name}`, on: { click: () => onEdit(p.id) } }, icon('edit')),
        h('button', { class: 'btn btn-icon btn-danger-ghost', type: 'button', testid: 'project-delete', title: t('detail.delete'), 'aria-label': `${t('detail.delete')} ${p.name}`, on: { click: () => onDelete(p.id) } }, icon('trash'))));
  }

  function stateBox(kind, title, text, action) {
    return h('div', { class: ['state', `state-${kind}`], testid: `state-${kind}` },
      h('div', { class: 'state-art', 'aria-hidden': 'true' }, icon(kind === 'empty' ? 'inbox' : 'search', 'icon icon-xl')),
      h('h2', { text: title }),
      h('p', { text }),
      action);
  }

  function skeleton() {
    const rows = [];
    for (let i = 0; i < 4; i += 1) rows.push(h('div', { class: 'skeleton-row' }, h('div', { class: 'sk sk-title' }), h('div', { class: 'sk sk-line' })));
    return h('div', { class: 'state-loading', testid: 'state-loading', 'aria-busy': 'true' }, h('p', { class: 'sr-only', text: t('projects.loading') }), rows);
  }

  const rowCache = new Map();
  let rendered = false;

  function update() {
    if (!engine.ready()) {
      totalsEl.dataset.ready = 'false';
      replace(totalsEl, ['all', ...STATUSES].map((k) => h('div', { class: ['total', 'total-skeleton'] }, h('span', { class: 'sk sk-num' }), h('span', { class: 'sk sk-label' }))));
      replace(listEl, skeleton());
      countEl.textContent = '';
      return;
    }
    const all = [...engine.view().values()];
    const tot = totals(all);
    totalsEl.dataset.ready = 'true';
    replace(totalsEl,
      totalCard('all', tot.all, t('totals.all'), h('span', { class: 'total-extra', testid: 'totals-budget', title: t('totals.budget'), text: compactMoney(tot.budget) })),
      STATUSES.map((s) => totalCard(s, tot[s], t(`status.${s}`),
        h('span', { class: 'total-extra', text: t('totals.share', { pct: tot.all ? Math.round((tot[s] * 100) / tot.all) : 0 }) }))));

    const shown = all.filter((p) => matches(p, state.query.trim(), state.status)).sort(compareBy(sort.value, locale()));
    const day = today();
    shownNow = shown;
    exportCsv.disabled = !shown.length;
    countEl.textContent = all.length ? t('projects.count', { n: shown.length }) : '';
    if (!all.length) {
      replace(listEl, stateBox('empty', t('projects.emptyTitle'), t('projects.emptyText'),
        h('button', { class: 'btn btn-primary', type: 'button', testid: 'empty-new-project', on: { click: onNew } }, icon('plus'), t('projects.new'))));
      return;
    }
    if (!shown.length) {
      replace(listEl, stateBox('nomatch', t('projects.noMatchTitle'), t('projects.noMatchText'),
        h('button', { class: 'btn btn-ghost', type: 'button', testid: 'clear-filters', on: { click: () => { state.query = ''; state.status = ''; search.value = ''; filter.value = ''; update(); } } }, t('projects.clearFilters'))));
      return;
    }
    // Rows are rebuilt only when their project changed, so a sync landing does not
    // reset hover and focus, and only rows new to this screen get the entry animation.
    const rows = shown.slice(0, state.limit).map((p) => {
      const overdue = isOverdue(p, day);
      const sig = JSON.stringify([p, engine.isPending(p.id), overdue]);
      const cached = rowCache.get(p.id);
      if (cached && cached.sig === sig) return cached.el;
      const el = row(p, overdue);
      if (!cached && rendered) {
        el.classList.add('row-new');
        el.addEventListener('animationend', () => el.classList.remove('row-new'), { once: true });
      }
      rowCache.set(p.id, { sig, el });
      return el;
    });
    rendered = true;
    if (shown.length > state.limit) {
      rows.push(h('button', { class: 'btn btn-ghost btn-block more', type: 'button', testid: 'show-more', on: { click: () => { state.limit += PAGE; update(); } } }, `+ ${shown.length - state.limit}`));
    }
    // Only the rows that changed are replaced: a focused row keeps its focus when
    // another device's change lands.
    reconcile(listEl, rows);
  }

  update();
  return { el, update, focusSearch: () => search.focus() };
}

export const LIST_PAGE = PAGE;

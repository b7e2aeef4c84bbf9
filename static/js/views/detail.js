// One project's page: every field, its sync state, edit and delete.
import { h, icon, replace } from '../dom.js';
import { t } from '../i18n.js';
import { money, date, dateTime } from '../format.js';
import { statusBadge, progressBar } from './list.js';

export function createDetail({ id, engine, onEdit, onDelete }) {
  const el = h('section', { class: 'page page-detail', testid: 'project-detail', 'data-id': id });

  function item(label, value, testid) {
    return h('div', { class: 'dl-item' }, h('dt', { text: label }), h('dd', { testid, text: value }));
  }

  function update() {
    const back = h('a', { class: 'back', href: '#/', testid: 'detail-back' }, icon('back', 'icon icon-flip'), t('detail.back'));
    if (!engine.ready()) {
      replace(el, back, h('div', { class: 'state-loading', testid: 'state-loading' }, h('div', { class: 'sk sk-title' }), h('div', { class: 'sk sk-line' })));
      return;
    }
    const p = engine.view().get(id);
    if (!p) {
      replace(el, back, h('div', { class: 'state state-empty', testid: 'detail-not-found' },
        h('div', { class: 'state-art', 'aria-hidden': 'true' }, icon('search', 'icon icon-xl')),
        h('h2', { text: t('detail.notFoundTitle') }),
        h('p', { text: t('detail.notFoundText') })));
      return;
    }
    const pending = engine.isPending(id);
    replace(el,
      back,
      h('div', { class: 'card detail-card' },
        h('div', { class: 'detail-head' },
          h('div', null,
            h('h1', { class: 'detail-title', testid: 'detail-name', text: p.name }),
            h('div', { class: 'detail-sub' },
              statusBadge(p.status, 'detail-status'),
              pending ? h('span', { class: 'chip chip-pending', testid: 'detail-pending', text: t('detail.pending') }) : null)),
          h('div', { class: 'detail-actions' },
            h('button', { class: 'btn btn-ghost', type: 'button', testid: 'detail-edit', on: { click: () => onEdit(id) } }, icon('edit'), t('detail.edit')),
            h('button', { class: 'btn btn-danger', type: 'button', testid: 'detail-delete', on: { click: () => onDelete(id) } }, icon('trash'), t('detail.delete')))),
        h('div', { class: 'detail-progress' }, h('span', { class: 'label', text: t('field.progress') }), progressBar(p.progress)),
        h('dl', { class: 'dl' },
          item(t('field.client'), p.client || t('empty.dash'), 'detail-client'),
          item(t('field.city'), p.city || t('empty.dash'), 'detail-city'),
          item(t('field.budget'), money(p.budget_centimes), 'detail-budget'),
          item(t('field.start_date'), date(p.start_date), 'detail-start'),
          item(t('field.end_date'), date(p.end_date), 'detail-end'),
          item(t('field.created_at'), dateTime(p.created_at), 'detail-created'),
          item(t('field.updated_at'), dateTime(p.updated_at), 'detail-updated')),
        h('div', { class: 'detail-notes' },
          h('h2', { class: 'label', text: t('field.notes') }),
          h('p', { class: p.notes ? 'notes' : 'notes muted', testid: 'detail-notes', text: p.notes || t('detail.noNotes') }))));
  }

  update();
  return { el, update };
}

// Delete confirmation: a modal <dialog>, focus on Cancel so Enter does not destroy data.
import { h, icon } from '../dom.js';
import { t } from '../i18n.js';

export function confirmDelete(name) {
  return new Promise((resolve) => {
    let result = false;
    const cancel = h('button', { class: 'btn btn-ghost', type: 'button', testid: 'cancel-delete', on: { click: () => dialog.close() } }, t('delete.cancel'));
    const ok = h('button', { class: 'btn btn-danger', type: 'button', testid: 'confirm-delete', on: { click: () => { result = true; dialog.close(); } } }, icon('trash'), t('delete.confirm'));
    const dialog = h('dialog', { class: 'modal modal-sm', testid: 'confirm-dialog', 'aria-labelledby': 'confirm-title' },
      h('div', { class: 'modal-body' },
        h('div', { class: 'confirm-icon', 'aria-hidden': 'true' }, icon('trash', 'icon icon-lg')),
        h('h2', { id: 'confirm-title', class: 'modal-title', text: t('delete.title') }),
        h('p', { class: 'confirm-text', text: t('delete.text', { name }) })),
      h('div', { class: 'modal-foot' }, cancel, ok));
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(result);
    });
    document.body.appendChild(dialog);
    dialog.showModal();
    cancel.focus();
  });
}

// A conflict: the user's edit met a newer one from another device on the same fields
// (or their delete met a change). One modal per project, side by side — "yours" and
// "current" — and the user chooses; nothing is dropped or overwritten without it.
import { h, icon, replace } from '../dom.js';
import { t } from '../i18n.js';
import { shown, fieldLabel } from './detail.js';
import { EDITABLE_FIELDS, sameValue } from '../project.js';

/** What a stale delete shows: the fields that changed since it was made. */
function changedSinceDelete(c) {
  const p = c.project || {};
  const seen = c.seen || {};
  const changed = EDITABLE_FIELDS.filter((f) => f in seen && !sameValue(seen[f], p[f]));
  return changed.length ? changed : ['name', 'progress', 'status'];
}

/**
 * Open the dialog for `conflict` ({ id, kind, fields | project }). `done` resolves when it
 * closes: with 'mine' or 'current' once the user chose, null when closed from outside
 * (`close()`: the conflict went away). `update(conflict, name)` redraws it when the
 * other side moves.
 */
export function openConflict({ conflict, name, onKeepMine, onKeepCurrent }) {
  const deleting = conflict.kind === 'delete';
  const title = h('h2', { id: 'conflict-title', class: 'modal-title', text: t(deleting ? 'conflict.deleteTitle' : 'conflict.title') });
  const text = h('p', { class: 'conflict-text', testid: 'conflict-text' });
  const rows = h('div', { class: 'conflict-rows' });
  const mine = h('button', { class: deleting ? 'btn btn-danger' : 'btn btn-ghost', type: 'button', testid: 'conflict-keep-mine' },
    deleting ? icon('trash') : null, t(deleting ? 'conflict.deleteAnyway' : 'conflict.keepMine'));
  const current = h('button', { class: 'btn btn-primary', type: 'button', testid: 'conflict-keep-current' },
    t(deleting ? 'conflict.keepProject' : 'conflict.keepCurrent'));
  const dialog = h('dialog', {
    class: 'modal modal-conflict', testid: 'conflict-dialog', role: 'alertdialog',
    'aria-labelledby': 'conflict-title', 'aria-describedby': 'conflict-text', 'data-id': conflict.id, 'data-kind': conflict.kind,
  },
  h('div', { class: 'modal-head' }, title),
  h('div', { class: 'modal-body' }, text, rows),
  h('div', { class: 'modal-foot' }, mine, current));
  text.id = 'conflict-text';

  function side(label, value, testid) {
    return h('div', { class: `conflict-side conflict-${testid}` },
      h('span', { class: 'label', text: label }),
      h('span', { class: 'conflict-value', testid: `conflict-${testid}`, dir: 'auto', text: value }));
  }

  function update(c, projectName) {
    text.textContent = t(deleting ? 'conflict.deleteText' : 'conflict.text', { name: projectName || '' });
    if (deleting) {
      const p = c.project || {};
      const seen = c.seen || {};
      replace(rows, ...changedSinceDelete(c).map((f) =>
        h('div', { class: 'conflict-field', testid: 'conflict-field', 'data-field': f },
          h('span', { class: 'conflict-name', text: fieldLabel(f) }),
          f in seen ? side(t('conflict.whenDeleted'), shown(f, seen[f]), 'yours') : null,
          side(t('conflict.current'), shown(f, p[f]), 'current'))));
      return;
    }
    replace(rows, ...Object.entries(c.fields).map(([f, v]) =>
      h('div', { class: 'conflict-field', testid: 'conflict-field', 'data-field': f },
        h('span', { class: 'conflict-name', text: fieldLabel(f) }),
        side(t('conflict.yours'), shown(f, v.yours), 'yours'),
        side(t('conflict.current'), shown(f, v.current), 'current'))));
  }

  update(conflict, name);
  let choice = null;
  let busy = false;
  const choose = (which, fn) => async () => {
    if (busy) return;
    busy = true;
    mine.disabled = true;
    current.disabled = true;
    // Decided before the engine's change can close the dialog from outside.
    choice = which;
    try {
      await fn();
    } catch (err) {
      choice = null;
      throw err;
    } finally {
      dialog.close();
    }
  };
  mine.addEventListener('click', choose('mine', onKeepMine));
  current.addEventListener('click', choose('current', onKeepCurrent));
  // Escape must not decide for the user: the choice is the way out.
  dialog.addEventListener('cancel', (ev) => ev.preventDefault());
  const done = new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(choice);
    });
  });
  document.body.appendChild(dialog);
  dialog.showModal();
  current.focus();
  return { done, update, close: () => dialog.close(), id: conflict.id };
}

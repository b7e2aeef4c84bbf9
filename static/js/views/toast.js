// Short, non-blocking messages (saved, deleted, refused by the server).
import { h } from '../dom.js';

let host = null;

export function mountToasts(parent) {
  host = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite', testid: 'toasts' });
  parent.appendChild(host);
}

/**
 * Show `message` for `ms` (0: until its action is used). `action`, if any, is a button in
 * the toast: { label, testid, onClick }.
 */
export function toast(message, kind = 'info', ms = 2800, action = null) {
  if (!host) return;
  const button = action
    ? h('button', {
      class: 'btn btn-sm toast-action', type: 'button', testid: action.testid,
      on: { click: () => { el.remove(); action.onClick(); } },
    }, action.label)
    : null;
  const el = h('div', { class: ['toast', `toast-${kind}`], testid: 'toast', 'data-kind': kind }, h('span', { text: message }), button);
  host.appendChild(el);
  while (host.children.length > 2) host.firstElementChild.remove();
  if (ms > 0) {
    setTimeout(() => {
      el.classList.add('toast-leave');
      setTimeout(() => el.remove(), 250);
    }, ms);
  }
}

// Short, non-blocking messages (saved, deleted, refused by the server).
import { h } from '../dom.js';

let host = null;

export function mountToasts(parent) {
  host = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite', testid: 'toasts' });
  parent.appendChild(host);
}

export function toast(message, kind = 'info', ms = 2800) {
  if (!host) return;
  const el = h('div', { class: ['toast', `toast-${kind}`], testid: 'toast', 'data-kind': kind, text: message });
  host.appendChild(el);
  while (host.children.length > 2) host.firstElementChild.remove();
  setTimeout(() => {
    el.classList.add('toast-leave');
    setTimeout(() => el.remove(), 250);
  }, ms);
}

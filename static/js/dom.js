// Tiny DOM builder. Every piece of user data reaches the page as a text node, never as
// HTML, and nothing sets inline style attributes (the CSP forbids them).

/**
 * h('button', { class: 'btn', testid: 'x', on: { click: fn }, attrs: {...} }, ...children)
 * Known props: class, testid, text, on, dataset, and anything else is set as an attribute
 * (booleans toggle the attribute; null/undefined/false are skipped).
 */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === 'class') el.className = Array.isArray(value) ? value.filter(Boolean).join(' ') : value;
      else if (key === 'testid') el.setAttribute('data-testid', value);
      else if (key === 'text') el.textContent = value;
      else if (key === 'on') for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
      else if (key === 'dataset') for (const [k, v] of Object.entries(value)) el.dataset[k] = v;
      else if (key === 'value') el.value = value;
      else if (value === true) el.setAttribute(key, '');
      else el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

/**
 * Make `el`'s children exactly `nodes`, in order, touching only what differs: a node
 * already in place stays attached (so focus, hover and scroll inside it survive), a
 * new one is inserted where it belongs, the ones no longer listed are removed.
 */
export function reconcile(el, nodes) {
  const keep = new Set(nodes);
  for (const child of [...el.children]) if (!keep.has(child)) child.remove();
  nodes.forEach((node, i) => {
    const at = el.children[i] || null;
    if (at !== node) el.insertBefore(node, at);
  });
  while (el.children.length > nodes.length) el.lastElementChild.remove();
  return el;
}

/** An inline SVG icon from a small fixed set (paths only; no user data). */
const ICONS = {
  plus: 'M12 5v14M5 12h14',
  search: 'M11 4a7 7 0 1 0 0 14 7 7 0 0 0 0-14zM21 21l-5-5',
  edit: 'M4 20h4L19 9l-4-4L4 16v4zM14 6l4 4',
  trash: 'M4 7h16M9 7V4h6v3M6 7l1 13h10l1-13',
  back: 'M15 5l-7 7 7 7',
  logout: 'M15 4h4v16h-4M10 8l-4 4 4 4M6 12h10',
  globe: 'M12 3a9 9 0 1 0 0 18 9 9 0 0 0 0-18zM3 12h18M12 3c3 3 3 15 0 18M12 3c-3 3-3 15 0 18',
  pin: 'M12 21s-7-6-7-11a7 7 0 0 1 14 0c0 5-7 11-7 11zM12 8a2 2 0 1 0 0 4 2 2 0 0 0 0-4z',
  user: 'M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM4 21c0-4 4-6 8-6s8 2 8 6',
  calendar: 'M4 6h16v14H4zM4 10h16M8 3v4M16 3v4',
  close: 'M6 6l12 12M18 6L6 18',
  refresh: 'M20 11a8 8 0 1 0-2 6M20 4v7h-7',
  cloudoff: 'M3 3l18 18M8 18H7a4 4 0 0 1-1-7.9M10 6.3A6 6 0 0 1 18 10a4 4 0 0 1 2.6 7',
  inbox: 'M3 13l3-8h12l3 8v6H3zM3 13h5l1 2h6l1-2h5',
};

export function icon(name, cls = 'icon') {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', cls);
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', ICONS[name] || '');
  svg.appendChild(path);
  return svg;
}

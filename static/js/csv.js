// The visible list as a spreadsheet file: what Excel and LibreOffice open correctly
// without an import dialog. UTF-8 with a byte order mark (or Excel reads Arabic and
// accents as Latin-1); in French `;` between cells and a decimal comma (Excel's French
// locale expects both); otherwise `,` and a decimal point. Amounts in MAD, dates ISO.
import { STATUSES } from './project.js';

const COLUMNS = ['name', 'client', 'city', 'status', 'budget_mad', 'progress', 'start_date', 'end_date', 'notes'];

/** One cell: quoted when it holds the separator, a quote, a line break or leading space. */
function cell(value, sep) {
  const s = value === null || value === undefined ? '' : String(value);
  // A leading = + - @ would be read as a formula by spreadsheets: neutralized.
  const safe = /^[=+\-@\t\r]/.test(s) ? `'${s}` : s;
  return safe.includes(sep) || /["\r\n]/.test(safe) || /^\s|\s$/.test(safe) ? `"${safe.replaceAll('"', '""')}"` : safe;
}

/** Centimes as MAD with two decimals, in the file's decimal mark. */
function mad(centimes, decimal) {
  if (!Number.isFinite(centimes)) return '';
  const abs = Math.abs(centimes);
  return `${centimes < 0 ? '-' : ''}${Math.trunc(abs / 100)}${decimal}${String(abs % 100).padStart(2, '0')}`;
}

/**
 * `projects` (in display order) as CSV text, BOM included. `lang` picks the separators;
 * `labels(key)` names the columns and statuses in the user's language.
 */
export function toCsv(projects, lang, labels) {
  const sep = lang === 'fr' ? ';' : ',';
  const decimal = lang === 'fr' ? ',' : '.';
  const head = COLUMNS.map((c) => cell(labels(`csv.${c}`), sep)).join(sep);
  const rows = projects.map((p) => [
    p.name, p.client, p.city,
    STATUSES.includes(p.status) ? labels(`status.${p.status}`) : p.status,
    mad(p.budget_centimes, decimal),
    Number.isFinite(p.progress) ? p.progress : '',
    p.start_date || '', p.end_date || '', p.notes,
  ].map((v) => cell(v, sep)).join(sep));
  return `\uFEFF${[head, ...rows].join('\r\n')}\r\n`;
}

/** Offer `text` as a file download named `name`. */
export function download(text, name) {
  const url = URL.createObjectURL(new Blob([text], { type: 'text/csv;charset=utf-8' }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

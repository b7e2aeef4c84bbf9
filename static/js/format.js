// Locale-aware formatting of money (centimes of MAD), dates and times.
import { locale, t } from './i18n.js';

export function money(centimes) {
  if (centimes === null || centimes === undefined || centimes === '') return t('empty.dash');
  return new Intl.NumberFormat(locale(), { style: 'currency', currency: 'MAD', maximumFractionDigits: 2 })
    .format(Number(centimes) / 100);
}

export function compactMoney(centimes) {
  return new Intl.NumberFormat(locale(), { style: 'currency', currency: 'MAD', notation: 'compact', maximumFractionDigits: 1 })
    .format(Number(centimes || 0) / 100);
}

/** An ISO date (YYYY-MM-DD) shown in the user's language; the raw value if it does not parse. */
export function date(iso) {
  if (!iso) return t('empty.dash');
  const m = /^(\d{4})-(\d{2})-(\d{2})/.exec(iso);
  if (!m) return iso;
  const d = new Date(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium', timeZone: 'UTC' }).format(d);
}

export function dateTime(value) {
  if (!value) return t('empty.dash');
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return new Intl.DateTimeFormat(locale(), { dateStyle: 'medium', timeStyle: 'short' }).format(d);
}

export function time(ms) {
  return new Intl.DateTimeFormat(locale(), { hour: '2-digit', minute: '2-digit', second: '2-digit' }).format(new Date(ms));
}

/** How long ago `value` (an ISO time) was, in the user's language ("il y a 5 minutes"). */
export function relativeTime(value, now = Date.now()) {
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  const seconds = Math.round((d.getTime() - now) / 1000);
  const fmt = new Intl.RelativeTimeFormat(locale(), { numeric: 'auto' });
  for (const [unit, size] of [['day', 86400], ['hour', 3600], ['minute', 60]]) {
    if (Math.abs(seconds) >= size) return fmt.format(Math.round(seconds / size), unit);
  }
  return fmt.format(seconds, 'second');
}

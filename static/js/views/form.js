// Create / edit form in a modal dialog. Checks the API's rules first (so an offline edit
// is not queued only to be refused later), sends only the fields that changed (the
// server merges field by field), and when online waits for the server's verdict so a
// refusal shows its message under the field the server named.
import { h, icon } from '../dom.js';
import { t, errorMessage, fieldError } from '../i18n.js';
import { STATUSES, EDITABLE_FIELDS, validate, validateDates, uuid } from '../project.js';
import { toast } from './toast.js';

const ACK_WAIT_MS = 6000;

function centimesToInput(c) {
  if (c === null || c === undefined || c === '') return '';
  const n = Number(c);
  return Number.isInteger(n) && n % 100 === 0 ? String(n / 100) : (n / 100).toFixed(2);
}

/** "12 500,50" → 1250050; '' → null; NaN when it is not an amount. */
export function parseAmount(text) {
  const s = String(text).replace(/[\s\u00a0\u202f]/g, '').replace(',', '.');
  if (!s) return null;
  if (!/^\d+(\.\d{1,2})?$/.test(s)) return Number.NaN;
  return Math.round(Number(s) * 100);
}

export function openProjectForm({ engine, project, isOnline }) {
  const editing = Boolean(project);
  const p = project || { status: 'planned', progress: 0 };
  const inputs = {};
  const errors = {};

  function field(name, control, { wide = false, label = t(`field.${name === 'budget_centimes' ? 'budget' : name}`) } = {}) {
    control.id = `pf-${name}`;
    control.name = name;
    control.setAttribute('data-testid', `project-${name.replace('_centimes', '').replace('_', '-')}`);
    control.setAttribute('aria-describedby', `pf-${name}-error`);
    inputs[name] = control;
    errors[name] = h('p', { class: 'field-error', id: `pf-${name}-error`, testid: `error-${name}`, hidden: true });
    return h('div', { class: ['field', wide && 'field-wide'] }, h('label', { class: 'label', for: control.id, text: label }), control, errors[name]);
  }

  const status = h('select', { class: 'input select' }, STATUSES.map((s) => h('option', { value: s, text: t(`status.${s}`) })));
  status.value = p.status || 'planned';
  const progress = h('input', { class: 'input', type: 'number', min: '0', max: '100', step: '1', inputmode: 'numeric', value: String(p.progress ?? 0) });
  const notes = h('textarea', { class: 'input textarea', dir: 'auto', rows: '4', maxlength: '5000' });
  notes.value = p.notes || '';

  const formError = h('p', { class: 'form-error', testid: 'form-error', role: 'alert', hidden: true });
  const save = h('button', { class: 'btn btn-primary', type: 'submit', testid: 'project-save' }, t('form.save'));
  const cancel = h('button', { class: 'btn btn-ghost', type: 'button', testid: 'project-cancel', on: { click: () => dialog.close() } }, t('form.cancel'));

  const form = h('form', { class: 'project-form', novalidate: true, testid: 'project-form', on: { submit: onSubmit } },
    h('div', { class: 'modal-head' },
      h('h2', { class: 'modal-title', id: 'pf-title', text: t(editing ? 'form.editTitle' : 'form.createTitle') }),
      h('button', { class: 'btn btn-icon', type: 'button', 'aria-label': t('form.cancel'), on: { click: () => dialog.close() } }, icon('close'))),
    h('div', { class: 'modal-body form-grid' },
      field('name', h('input', { class: 'input', type: 'text', dir: 'auto', maxlength: '200', required: true, autocomplete: 'off', value: p.name || '' }), { wide: true }),
      field('client', h('input', { class: 'input', type: 'text', dir: 'auto', autocomplete: 'organization', value: p.client || '' })),
      field('city', h('input', { class: 'input', type: 'text', dir: 'auto', autocomplete: 'address-level2', value: p.city || '' })),
      field('budget_centimes', h('input', { class: 'input', type: 'text', inputmode: 'decimal', placeholder: '0,00', value: centimesToInput(p.budget_centimes) })),
      field('status', status),
      field('start_date', h('input', { class: 'input', type: 'date', value: p.start_date || '' })),
      field('end_date', h('input', { class: 'input', type: 'date', value: p.end_date || '' })),
      field('progress', progress),
      field('notes', notes, { wide: true }),
      formError),
    h('div', { class: 'modal-foot' }, cancel, save));

  const dialog = h('dialog', { class: 'modal', testid: 'project-form-dialog', 'aria-labelledby': 'pf-title' }, form);

  function read() {
    const text = (k) => inputs[k].value.trim();
    const progressText = text('progress');
    return {
      name: text('name'),
      client: text('client'),
      city: text('city'),
      budget_centimes: parseAmount(inputs.budget_centimes.value) ?? 0,
      status: inputs.status.value,
      start_date: text('start_date') || null,
      end_date: text('end_date') || null,
      progress: progressText === '' ? 0 : Number(progressText),
      notes: inputs.notes.value.trim(),
    };
  }

  function showErrors(map, fallback) {
    let first = null;
    for (const name of EDITABLE_FIELDS) {
      const msg = map[name];
      errors[name].textContent = msg || '';
      errors[name].hidden = !msg;
      inputs[name].classList.toggle('invalid', Boolean(msg));
      if (msg) inputs[name].setAttribute('aria-invalid', 'true');
      else inputs[name].removeAttribute('aria-invalid');
      if (msg && !first) first = inputs[name];
    }
    const unplaced = Object.keys(map).filter((k) => !EDITABLE_FIELDS.includes(k));
    const general = fallback || (unplaced.length ? map[unplaced[0]] : '') || (first ? t('form.fixErrors') : '');
    formError.textContent = general;
    formError.hidden = !general;
    if (first) first.focus();
  }

  async function onSubmit(ev) {
    ev.preventDefault();
    const values = read();
    let data = values;
    if (editing) {
      data = {};
      for (const k of EDITABLE_FIELDS) {
        const before = project[k] ?? (k === 'client' || k === 'city' || k === 'notes' ? '' : null);
        if (values[k] !== before) data[k] = values[k];
      }
      if (!Object.keys(data).length) { dialog.close(); toast(t('form.unchanged')); return; }
    }
    const problems = { ...validate(data, { partial: editing }), ...validateDates({ ...(project || {}), ...values }) };
    if (Object.keys(problems).length) {
      showErrors(Object.fromEntries(Object.entries(problems).map(([k, v]) => [k, t(v)])));
      return;
    }
    showErrors({});
    save.disabled = true;
    save.textContent = t('form.saving');
    const id = editing ? project.id : uuid();
    const online = isOnline();
    const pending = await engine.mutate(editing ? 'update' : 'create', id, data, { waitMs: online ? ACK_WAIT_MS : 0 });
    const verdict = online ? await pending.verdict : null;
    if (!verdict) {
      dialog.close();
      toast(t('form.savedOffline'), 'info');
      return;
    }
    if (verdict.outcome === 'rejected') {
      save.disabled = false;
      save.textContent = t('form.save');
      const e = verdict.error || {};
      // The server's field messages are English: each field says what is wrong with it
      // in the user's language instead.
      const map = {};
      for (const f of new Set([...Object.keys(e.fields || {}), ...(e.field ? [e.field] : [])])) map[f] = fieldError(f, 'project');
      const placed = Object.keys(map).some((k) => EDITABLE_FIELDS.includes(k));
      showErrors(map, placed ? '' : errorMessage(e.code, e.field));
      return;
    }
    dialog.close();
    // A stale edit opens the conflict dialog; any other conflict is a deleted project.
    if (verdict.outcome === 'conflict' && verdict.error && verdict.error.code === 'stale') return;
    if (verdict.outcome === 'conflict') toast(t('toast.conflict'), 'warn');
    else toast(t(editing ? 'toast.updated' : 'toast.created'), 'ok');
  }

  return new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve();
    });
    document.body.appendChild(dialog);
    dialog.showModal();
    inputs.name.focus();
  });
}

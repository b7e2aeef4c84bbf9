// Sign-in and sign-up screen. Field errors from the API's 422 (`field`, or a per-field
// map) land under the matching input; anything else is shown above the button.
import { h, icon, replace } from '../dom.js';
import { t, errorMessage, fieldError } from '../i18n.js';
import { ApiError, NetworkError } from '../api.js';

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

function field(id, label, attrs, hint) {
  const input = h('input', { id, name: id, class: 'input', testid: id, ...attrs });
  const error = h('p', { class: 'field-error', id: `${id}-error`, testid: `error-${id}`, hidden: true });
  input.setAttribute('aria-describedby', `${id}-error`);
  return {
    input,
    error,
    el: h('div', { class: 'field' },
      h('label', { class: 'label', for: id, text: label }),
      input,
      hint ? h('p', { class: 'hint', text: hint }) : null,
      error),
  };
}

function setError(f, message) {
  f.error.textContent = message || '';
  f.error.hidden = !message;
  f.input.classList.toggle('invalid', Boolean(message));
  if (message) f.input.setAttribute('aria-invalid', 'true');
  else f.input.removeAttribute('aria-invalid');
}

export function renderAuth(root, { api, mode = 'login', onSignedIn, header }) {
  const isLogin = mode === 'login';
  const prefix = isLogin ? 'login' : 'register';
  const name = isLogin ? null : field('register-name', t('auth.name'), { type: 'text', autocomplete: 'name', required: true, maxlength: 200 });
  const email = field(`${prefix}-email`, t('auth.email'), { type: 'email', autocomplete: 'email', required: true, inputmode: 'email' });
  const password = field(`${prefix}-password`, t('auth.password'), { type: 'password', autocomplete: isLogin ? 'current-password' : 'new-password', required: true, minlength: isLogin ? null : 8 }, isLogin ? null : t('auth.passwordHint'));
  const formError = h('p', { class: 'form-error', testid: 'auth-error', role: 'alert', hidden: true });
  const submit = h('button', { class: 'btn btn-primary btn-block', type: 'submit', testid: `${prefix}-submit` }, t(isLogin ? 'auth.submitLogin' : 'auth.submitRegister'));
  const fields = { name, email, password };

  const form = h('form', { class: 'auth-form', novalidate: true, testid: `${prefix}-form`, on: { submit: onSubmit } },
    name && name.el, email.el, password.el, formError, submit);

  async function onSubmit(ev) {
    ev.preventDefault();
    for (const f of Object.values(fields)) if (f) setError(f, '');
    formError.hidden = true;
    const values = { email: email.input.value.trim(), password: password.input.value, name: name ? name.input.value.trim() : '' };
    let bad = false;
    if (name && !values.name) { setError(name, t('valid.required')); bad = true; }
    if (!EMAIL.test(values.email)) { setError(email, t('valid.email')); bad = true; }
    if (!values.password || (!isLogin && values.password.length < 8)) { setError(password, t(isLogin ? 'valid.required' : 'valid.password')); bad = true; }
    if (bad) return;
    submit.disabled = true;
    submit.textContent = t('auth.busy');
    try {
      const res = isLogin ? await api.login(values.email, values.password) : await api.register(values.email, values.password, values.name);
      if (!res || !res.token || !res.user) throw new ApiError(500, { message: 'unexpected response' });
      await onSignedIn(res);
    } catch (err) {
      submit.disabled = false;
      submit.textContent = t(isLogin ? 'auth.submitLogin' : 'auth.submitRegister');
      if (err instanceof ApiError) {
        let placed = false;
        for (const f of Object.keys(err.fields)) {
          if (fields[f]) { setError(fields[f], err.code === 'validation_failed' ? fieldError(f, 'account') : errorMessage(err.code, f)); placed = true; }
        }
        if (!placed) {
          formError.textContent = err.status === 401 && err.code !== 'unauthorized' ? t('auth.failed') : errorMessage(err.code, err.field);
          formError.hidden = false;
        }
      } else {
        formError.textContent = err instanceof NetworkError ? t('error.server') : String(err.message || err);
        formError.hidden = false;
      }
    }
  }

  const tab = (m, label) => h('a', {
    class: ['tab', m === mode && 'active'], href: `#/${m}`, role: 'tab', 'aria-selected': String(m === mode), testid: `auth-tab-${m}`,
  }, label);

  replace(root,
    h('div', { class: 'auth-page' },
      header,
      h('main', { class: 'auth-main' },
        h('section', { class: 'auth-hero' },
          h('div', { class: 'hero-mark', 'aria-hidden': 'true' }),
          h('h1', { text: t('app.name') }),
          h('p', { text: t('app.tagline') }),
          h('ul', { class: 'hero-points' },
            h('li', null, icon('refresh'), t('conn.titleWebsocket')),
            h('li', null, icon('cloudoff'), t('conn.titleOffline')))),
        h('section', { class: 'auth-card card', testid: 'auth-card' },
          h('nav', { class: 'tabs', role: 'tablist' }, tab('login', t('auth.login')), tab('register', t('auth.register'))),
          form))));
  (name || email).input.focus();
}

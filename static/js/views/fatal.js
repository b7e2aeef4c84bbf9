// The error screen shown instead of a white page when the configuration or the server
// cannot be reached: it names the URL that was tried and offers to retry. In the desktop
// app (no gateway serving the page) it also lets the user enter and test another server
// address, kept on this device.
import { h, icon, replace } from '../dom.js';
import { t } from '../i18n.js';
import { parseServerUrl, probeApi, savedServer, saveServer, ConfigError } from '../config.js';

export function renderFatal(root, err, { onRetry, serverUrl, onContinueOffline } = {}) {
  const retry = h('button', { class: 'btn btn-primary', type: 'button', testid: 'fatal-retry', on: { click: onRetry } }, icon('refresh'), t('error.retry'));
  replace(root, h('main', { class: 'fatal-wrap' },
    h('section', { class: 'fatal', testid: 'fatal-error', role: 'alert', 'data-reason': err.reason },
      h('div', { class: 'fatal-icon', 'aria-hidden': 'true' }, icon('cloudoff', 'icon icon-xl')),
      h('h1', { text: t('error.title') }),
      h('p', { text: t(err.reason) }),
      h('p', { class: 'fatal-label', text: t('error.tried') }),
      h('code', { class: 'fatal-url', testid: 'fatal-url', dir: 'ltr', text: err.url }),
      err.detail ? h('p', { class: 'fatal-detail', testid: 'fatal-detail', dir: 'auto', text: err.detail }) : null,
      h('div', { class: 'fatal-actions' },
        retry,
        onContinueOffline ? h('button', { class: 'btn btn-ghost', type: 'button', testid: 'fatal-offline', on: { click: onContinueOffline } }, t('error.offlineContinue')) : null),
      serverUrl !== undefined ? serverForm(serverUrl, onRetry) : null,
    ),
  ));
  retry.focus();
}

/** Another server address, tested before it is kept: a wrong one is never saved. */
function serverForm(current, onUsed) {
  const id = 'fatal-server-input';
  const input = h('input', {
    id, class: 'input', type: 'url', dir: 'ltr', inputmode: 'url', autocomplete: 'url', spellcheck: 'false',
    required: true, value: current || '', testid: 'fatal-server-input', 'aria-describedby': 'fatal-server-hint fatal-server-message',
  });
  const message = h('p', { class: 'fatal-server-message', id: 'fatal-server-message', testid: 'fatal-server-message', role: 'alert' });
  const use = h('button', { class: 'btn btn-primary', type: 'submit', testid: 'fatal-server-use' }, t('error.serverUse'));
  const reset = savedServer()
    ? h('button', {
      class: 'btn btn-ghost', type: 'button', testid: 'fatal-server-reset',
      on: { click: () => { saveServer(''); onUsed(); } },
    }, t('error.serverReset'))
    : null;

  async function submit(ev) {
    ev.preventDefault();
    const apiUrl = parseServerUrl(input.value);
    if (!apiUrl) {
      message.textContent = t('error.serverInvalid');
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    input.removeAttribute('aria-invalid');
    use.disabled = true;
    message.textContent = t('error.serverTesting');
    try {
      await probeApi({ apiUrl });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      message.textContent = t('error.serverFailed', { url: err.url });
      use.disabled = false;
      input.focus();
      return;
    }
    saveServer(apiUrl);
    onUsed();
  }

  return h('form', { class: 'fatal-server', testid: 'fatal-server', novalidate: true, on: { submit } },
    h('label', { class: 'label', for: id, text: t('error.serverLabel') }),
    input,
    h('p', { class: 'fatal-server-hint', id: 'fatal-server-hint', text: t('error.serverHint') }),
    message,
    h('div', { class: 'fatal-actions' }, use, reset),
  );
}

// The error screen shown instead of a white page when the configuration or the server
// cannot be reached: it names the URL that was tried and offers to retry.
import { h, icon, replace } from '../dom.js';
import { t } from '../i18n.js';

export function renderFatal(root, err, { onRetry, onContinueOffline } = {}) {
  const retry = h('button', { class: 'btn btn-primary', type: 'button', testid: 'fatal-retry', on: { click: onRetry } }, icon('refresh'), t('error.retry'));
  replace(root, h('main', { class: 'fatal-wrap' },
    h('section', { class: 'fatal', testid: 'fatal-error', role: 'alert', 'data-reason': err.reason },
      h('div', { class: 'fatal-icon', 'aria-hidden': 'true' }, icon('cloudoff', 'icon icon-xl')),
      h('h1', { text: t('error.title') }),
      h('p', { text: t(err.reason) }),
      h('p', { class: 'fatal-label', text: t('error.tried') }),
      h('code', { class: 'fatal-url', testid: 'fatal-url', text: err.url }),
      err.detail ? h('p', { class: 'fatal-detail', testid: 'fatal-detail', text: err.detail }) : null,
      h('div', { class: 'fatal-actions' },
        retry,
        onContinueOffline ? h('button', { class: 'btn btn-ghost', type: 'button', testid: 'fatal-offline', on: { click: onContinueOffline } }, t('error.offlineContinue')) : null,
      ),
    ),
  ));
  retry.focus();
}

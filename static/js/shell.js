// The app shell kept on this device by the service worker (../sw.js), registered under
// the version of the static files the gateway serves (`assetsVersion` in /config.json).
// When the page runs an older version, the new one is installed in the background and
// takes over at the next load; the page says so, with a button to reload now.
import { h } from './dom.js';
import { t } from './i18n.js';
import { servedOverHttp } from './config.js';

/** The version in a service worker's script URL (`sw.js?v=`), or ''. */
function versionOf(scriptURL) {
  try { return new URL(scriptURL).searchParams.get('v') || ''; } catch { return ''; }
}

/**
 * Register the service worker for `config.assetsVersion`. Resolves to what happened:
 * 'off' (no service worker here), 'current' (this version already keeps the shell),
 * 'installing' (a first or a new version is being kept). Never throws: the app works
 * without it, only not offline.
 */
export async function keepShell(config) {
  const workers = navigator.serviceWorker;
  if (!workers || !servedOverHttp() || !config.assetsVersion) return 'off';
  const running = workers.controller ? versionOf(workers.controller.scriptURL) : '';
  if (running === config.assetsVersion) return 'current';
  if (running) {
    // The page came from an older version's cache: the new one takes over once it has
    // the whole shell (its install), for the next load.
    workers.addEventListener('controllerchange', () => announceUpdate(), { once: true });
  }
  try {
    const script = new URL(`sw.js?v=${encodeURIComponent(config.assetsVersion)}`, location.href);
    await workers.register(script.href, { scope: './', updateViaCache: 'none' });
  } catch (err) {
    console.warn('service worker not registered:', err);
    return 'off';
  }
  return 'installing';
}

function announceUpdate() {
  if (document.querySelector('[data-testid="update-ready"]')) return;
  const reload = h('button', { class: 'btn btn-primary btn-sm', type: 'button', testid: 'update-reload', on: { click: () => location.reload() } }, t('update.reload'));
  document.body.appendChild(h('div', { class: 'update-ready', testid: 'update-ready', role: 'status' },
    h('p', { text: t('update.ready') }), reload));
}

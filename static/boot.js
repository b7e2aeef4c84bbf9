// Boot loader: a classic script so it runs even where ES modules cannot load, and so a
// failure to load or evaluate the app's modules ends on an error screen instead of a
// white page (the Electron white-screen failure).
(function () {
  'use strict';
  var WATCHDOG_MS = 20000;
  var settled = false;

  function fatal(detail) {
    if (settled) return;
    settled = true;
    var root = document.getElementById('app');
    if (!root) return;
    root.textContent = '';
    var box = document.createElement('section');
    box.className = 'fatal';
    box.setAttribute('data-testid', 'fatal-error');
    box.setAttribute('role', 'alert');
    var title = document.createElement('h1');
    title.textContent = "L'application n'a pas pu démarrer";
    var p = document.createElement('p');
    p.textContent = 'Le code de l’application n’a pas pu être chargé.';
    var code = document.createElement('code');
    code.className = 'fatal-url';
    code.setAttribute('data-testid', 'fatal-url');
    code.textContent = detail;
    var retry = document.createElement('button');
    retry.className = 'btn btn-primary';
    retry.type = 'button';
    retry.setAttribute('data-testid', 'fatal-retry');
    retry.textContent = 'Réessayer';
    retry.addEventListener('click', function () { location.reload(); });
    box.appendChild(title);
    box.appendChild(p);
    box.appendChild(code);
    box.appendChild(retry);
    root.appendChild(box);
  }

  var appUrl = new URL('js/app.js', document.currentScript ? document.currentScript.src : location.href).href;
  var timer = setTimeout(function () { fatal(appUrl + ' (délai dépassé)'); }, WATCHDOG_MS);

  import(appUrl).then(function (mod) {
    clearTimeout(timer);
    settled = true;
    return mod.start(document.getElementById('app'));
  }).catch(function (err) {
    clearTimeout(timer);
    settled = false;
    fatal(appUrl + ' — ' + (err && err.message ? err.message : String(err)));
  });
}());

// Measures cold and warm load times of two web apps (this checkout's static/ and a
// baseline directory) served by the same btp binary over HTTPS/HTTP/2, on the emulated
// phone network of tests/js/lib/loadtime.mjs. Prints one table; see bench/web/run.sh.
import { startSystem, STATIC_ROOT } from '../../tests/js/lib/system.mjs';
import { launch, signUp, createProject, eventually } from '../../tests/js/lib/browser.mjs';
import { coldSignIn, warmList, throttle, timedDevice, median } from '../../tests/js/lib/loadtime.mjs';

const [baselineRoot, baseName] = process.argv.slice(2);
const ROUNDS = Number(process.env.ROUNDS || 5);

async function measure(staticRoot) {
  const system = await startSystem({ name: 'bench-web', tls: true, staticRoot });
  const browser = await launch({ trustSpki: system.spki });
  try {
    const cold = [];
    for (let i = 0; i < ROUNDS; i += 1) cold.push(await coldSignIn(browser, system.tlsUrl));
    const device = await timedDevice(browser, { name: 'warm' });
    await device.page.goto(system.tlsUrl);
    await signUp(device.page, { name: 'Bench Web', email: `bench.${Date.now()}@chantier.ma`, password: 'b3ton-arme!' });
    for (const name of ['Tour Marina', 'Lycée Agdal', 'Pont Bouregreg']) await createProject(device.page, { name, city: 'Rabat' });
    // A service worker, where the app has one, keeps the shell before the first reload.
    await eventually(() => device.page.evaluate(async () => !('serviceWorker' in navigator)
      || !(await navigator.serviceWorker.getRegistration()) || !!navigator.serviceWorker.controller), { timeout: 15000 });
    await throttle(device.context, device.page);
    device.requests.length = 0;
    const warm = [];
    for (let i = 0; i < ROUNDS; i += 1) warm.push(await warmList(device));
    return { cold, warm, coldRequests: median(cold.map((c) => c.requests)), warmRequests: Math.round(device.requests.length / ROUNDS) };
  } finally {
    await browser.close();
    await system.stop();
  }
}

const rows = [[`baseline (${baseName})`, await measure(baselineRoot)], ['this checkout', await measure(STATIC_ROOT)]];
console.log(`\nphone network: 300 ms RTT, 1.6 Mbps down, 750 kbps up (Chromium emulation); HTTPS, HTTP/2; ${ROUNDS} rounds, median`);
console.log('| web app | cold: sign-in form | requests | warm: list | requests | cold rounds (ms) | warm rounds (ms) |');
console.log('|---|---:|---:|---:|---:|---|---|');
for (const [name, r] of rows) {
  console.log(`| ${name} | ${median(r.cold.map((c) => c.ms))} ms | ${r.coldRequests} | ${median(r.warm)} ms | ${r.warmRequests} | ${r.cold.map((c) => c.ms).join(', ')} | ${r.warm.join(', ')} |`);
}
